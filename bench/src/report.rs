//! What a run found: a table of figures, the targets of issue 7 each with
//! its goal and how far off it is, each system's fsync policy, and the same
//! as JSON. Nothing here judges a run as failed: figures are reported, never
//! asserted.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub command: String,
    pub quick: bool,
    /// Whether the skein clusters ran with mutual TLS and HTTPS (`--tls`).
    pub tls: bool,
    pub started_unix: u64,
    pub machine: Machine,
    /// What each system fsyncs before it acknowledges, per run.
    pub fsync_policies: Vec<Policy>,
    pub settings: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    /// Each scenario's full results.
    pub details: serde_json::Map<String, serde_json::Value>,
    pub notes: Vec<String>,
    pub total_secs: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub load_avg_1m_start: Option<f64>,
    pub load_avg_1m_end: Option<f64>,
    pub work_dir: String,
    pub skein_node: String,
    pub nats_server: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Policy {
    pub system: String,
    pub policy: String,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub system: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub target: String,
    pub goal: String,
    pub measured: String,
    /// `None` when not measured in this run (scenario not selected, NATS
    /// missing, or a quick run's scale).
    pub met: Option<bool>,
    /// How far from the goal, in words ("by 12%").
    pub margin: String,
}

impl Report {
    pub fn row(&mut self, scenario: &str, system: &str, metric: &str, value: f64, unit: &str) {
        self.rows.push(Row {
            scenario: scenario.into(),
            system: system.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("bench: {note}");
        self.notes.push(note);
    }

    pub fn detail(&mut self, key: &str, value: impl Serialize) {
        self.details.insert(key.into(), serde_json::to_value(value).unwrap_or(serde_json::Value::Null));
    }

    /// A target where more is better: `measured >= goal`.
    pub fn at_least(&mut self, target: &str, goal_text: &str, measured: Option<f64>, goal: f64, unit: &str) {
        self.push_target(target, goal_text, measured, goal, unit, true);
    }

    /// A target where less is better: `measured <= goal`.
    pub fn at_most(&mut self, target: &str, goal_text: &str, measured: Option<f64>, goal: f64, unit: &str) {
        self.push_target(target, goal_text, measured, goal, unit, false);
    }

    fn push_target(
        &mut self,
        target: &str,
        goal_text: &str,
        measured: Option<f64>,
        goal: f64,
        unit: &str,
        more_is_better: bool,
    ) {
        let (met, margin, text) = match measured {
            None => (None, String::new(), "not measured".to_string()),
            Some(m) => {
                let met = if more_is_better { m >= goal } else { m <= goal };
                let pct = if goal.abs() > f64::EPSILON { (m - goal) / goal * 100.0 } else { 0.0 };
                let margin =
                    if met { format!("met, {:+.0}% vs goal", pct) } else { format!("missed by {:.0}%", pct.abs()) };
                (Some(met), margin, format!("{} {unit}", fmt_num(m)))
            }
        };
        self.targets.push(Target { target: target.into(), goal: goal_text.into(), measured: text, met, margin });
    }

    /// The tables as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("skein-bench{}: {}\n", if self.quick { " (quick)" } else { "" }, self.command));
        out.push_str(&format!(
            "TLS: {}\n",
            if self.tls {
                "on (skein: mutual TLS between nodes, HTTPS with an admin token for the bench's clients)"
            } else {
                "off (skein: plain HTTP on loopback, with an admin token)"
            }
        ));
        out.push_str(&format!(
            "machine: {} CPUs, load average {} at start, {} at end; data in {}\n",
            self.machine.cpus,
            self.machine.load_avg_1m_start.map_or("?".into(), |l| format!("{l:.2}")),
            self.machine.load_avg_1m_end.map_or("?".into(), |l| format!("{l:.2}")),
            self.machine.work_dir
        ));
        for (k, v) in &self.settings {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out.push_str("\nfsync before acknowledging:\n");
        for p in &self.fsync_policies {
            out.push_str(&format!("  {}: {}\n", p.system, p.policy));
        }
        let mut t = Table::new();
        t.load_style(UTF8_FULL_CONDENSED).set_header(vec!["scenario", "system", "metric", "value", "unit"]);
        for r in &self.rows {
            t.add_row(vec![
                Cell::new(&r.scenario),
                Cell::new(&r.system),
                Cell::new(&r.metric),
                Cell::new(fmt_num(r.value)).set_alignment(CellAlignment::Right),
                Cell::new(&r.unit),
            ]);
        }
        out.push_str(&format!("\n{t}\n"));
        let mut t = Table::new();
        t.load_style(UTF8_FULL_CONDENSED).set_header(vec!["target", "goal", "measured", "status"]);
        for g in &self.targets {
            let status = match g.met {
                None => "not measured".to_string(),
                Some(_) => g.margin.clone(),
            };
            t.add_row(vec![Cell::new(&g.target), Cell::new(&g.goal), Cell::new(&g.measured), Cell::new(status)]);
        }
        out.push_str(&format!("\n{t}\n"));
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&format!("total {:.0} s\n", self.total_secs));
        out
    }
}

/// A figure with sensible precision.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
