//! A small, strict parser of the OpenMetrics text format (what
//! `prometheus-client` writes and Prometheus scrapes): descriptors before
//! samples, each family contiguous, sample names that fit their family's
//! type, no series twice, cumulative histogram buckets whose `+Inf` equals
//! `_count`, and `# EOF` at the very end.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: String,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// Every family of an exposition, by name.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// `{a="1",b="x\"y"}` from the start of `s`: the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let key = &rest[..eq];
        if !valid_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in a label value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key:?} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} after a label, at {rest:?}"));
        }
    }
}

/// The suffixes a sample of a family of `kind` may add to its name.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" | "gaugehistogram" => &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"],
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        _ => &[""],
    }
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut current: Option<String> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if eof {
            return Err(at("text after # EOF".into()));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (what, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let arg = parts.next().unwrap_or("");
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if let Some(prev) = current.take() {
                    closed.insert(prev);
                }
                if closed.contains(name) || out.families.contains_key(name) {
                    return Err(at(format!("family {name} appears twice")));
                }
                current = Some(name.to_string());
                out.families.insert(name.to_string(), Family { name: name.to_string(), ..Family::default() });
            }
            let fam = out.families.get_mut(name).ok_or_else(|| at("no family".into()))?;
            if !fam.samples.is_empty() {
                return Err(at("a descriptor after samples".into()));
            }
            match what {
                "HELP" => fam.help = arg.to_string(),
                "TYPE" => {
                    let kinds =
                        ["counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"];
                    if !kinds.contains(&arg) {
                        return Err(at(format!("unknown type {arg:?}")));
                    }
                    fam.kind = arg.to_string();
                }
                "UNIT" => {
                    if !name.ends_with(&format!("_{arg}")) {
                        return Err(at(format!("a family with unit {arg} must end in _{arg}")));
                    }
                    fam.unit = Some(arg.to_string());
                }
                other => return Err(at(format!("unknown descriptor {other:?}"))),
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            return Err(at("a comment or blank line is not allowed".into()));
        }
        // A sample: name, optional labels, a space, the value, an optional timestamp.
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest.strip_prefix(' ').ok_or_else(|| at("expected a space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            parse_value(ts).map_err(at)?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields after the value".into()));
        }
        let fam_name = current.clone().ok_or_else(|| at("a sample before any # TYPE".into()))?;
        let fam = out.families.get_mut(&fam_name).ok_or_else(|| at("no family".into()))?;
        if fam.kind.is_empty() {
            return Err(at(format!("family {fam_name} has no # TYPE")));
        }
        let suffix = name
            .strip_prefix(fam_name.as_str())
            .ok_or_else(|| at(format!("sample {name} outside family {fam_name}")))?;
        if !suffixes(&fam.kind).contains(&suffix) {
            return Err(at(format!("sample {name} does not fit a {} named {fam_name}", fam.kind)));
        }
        let key = format!("{name}{labels:?}");
        if !series.insert(key) {
            return Err(at("the same series twice".into()));
        }
        fam.samples.push(Sample { name: name.to_string(), labels, value });
    }
    if !eof {
        return Err("the exposition does not end with # EOF".into());
    }
    for fam in out.families.values() {
        if fam.kind == "histogram" {
            check_histogram(fam)?;
        }
        if fam.kind == "counter" && fam.samples.iter().any(|s| s.value < 0.0) {
            return Err(format!("counter {} has a negative value", fam.name));
        }
    }
    Ok(out)
}

/// Buckets cumulative, ending at `+Inf` equal to `_count`, per label set.
fn check_histogram(fam: &Family) -> Result<(), String> {
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for s in &fam.samples {
        let mut base = s.labels.clone();
        let le = base.remove("le");
        let key = format!("{base:?}");
        if s.name.ends_with("_bucket") {
            let le = le.ok_or_else(|| format!("{}: a bucket without le", fam.name))?;
            groups.entry(key).or_default().push((parse_value(&le)?, s.value));
        } else if s.name.ends_with("_count") {
            counts.insert(key, s.value);
        }
    }
    for (key, buckets) in &groups {
        if buckets.windows(2).any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1) {
            return Err(format!("{} {key}: buckets not increasing and cumulative: {buckets:?}", fam.name));
        }
        let last = buckets.last().ok_or("no buckets")?;
        if last.0 != f64::INFINITY || Some(&last.1) != counts.get(key) {
            return Err(format!("{} {key}: +Inf bucket {last:?} is not the count {:?}", fam.name, counts.get(key)));
        }
    }
    Ok(())
}

impl Exposition {
    /// Samples named `name` carrying every label of `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families.values().flat_map(|f| f.samples.iter()).filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples [`Exposition::samples`] finds (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).map(|s| s.value).sum()
    }

    /// The one sample with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples(name, labels).filter(|s| s.labels.len() == labels.len());
        let first = found.next()?;
        found.next().is_none().then_some(first.value)
    }
}

#[test]
fn parses_a_valid_exposition_and_rejects_broken_ones() {
    let good = "# HELP a_total Things.\n# TYPE a counter\na_total{q=\"x\\\"y\"} 3\n# HELP h_seconds Time.\n# TYPE h_seconds histogram\n# UNIT h_seconds seconds\nh_seconds_sum 1.5\nh_seconds_count 2\nh_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n# EOF\n";
    let e = parse(good).expect("valid");
    assert_eq!(e.get("a_total", &[("q", "x\"y")]), Some(3.0));
    assert_eq!(e.families["h_seconds"].unit.as_deref(), Some("seconds"));
    for bad in [
        good.replace("# EOF\n", ""),
        good.replace("a_total{", "b_total{"),
        good.replace("counter", "countr"),
        good.replace("le=\"+Inf\"} 2", "le=\"+Inf\"} 3"),
        good.replace("a_total{q=\"x\\\"y\"} 3", "a_total{q=\"x\"} 3\na_total{q=\"x\"} 4"),
        good.replace("# EOF\n", "# EOF\nx 1\n"),
        good.replace(" 3\n", "3\n"),
    ] {
        assert!(parse(&bad).is_err(), "accepted: {bad}");
    }
}
