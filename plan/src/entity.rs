//! Backstage catalog entities (`apiVersion`, `kind`, `metadata`, `spec`),
//! and the migration plan a `spec.type: migration-plan` component carries.
//!
//! An entity is read from JSON (YAML documents are turned into JSON first),
//! checked field by field, and kept whole: skein stores the normalized
//! document (namespace filled in) so that `skein plan show` gives back what
//! was applied. Every error names the origin (file or URL), the entity and
//! the field.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::entity_ref::{EntityRef, DEFAULT_DEPENDENCY_KIND, DEFAULT_NAMESPACE};
use crate::error::PlanError;
use crate::spec::{
    Checksum, Column, Dataset, ExecStep, Format, MigrationSpec, Partitioning, Step, Validation, SOURCE_TABLE,
};

/// The `spec.type` of a migration plan.
pub const PLAN_TYPE: &str = "migration-plan";
/// The annotation naming a plan's queue.
pub const QUEUE_ANNOTATION: &str = "honk/queue";
/// Accepted as well as [`QUEUE_ANNOTATION`].
pub const QUEUE_ANNOTATION_ALT: &str = "skein.dev/queue";

/// An entity's metadata: what skein reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    /// `default` when the document names none.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A catalog entity, checked, with its whole document.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    /// Where it was read from (a file, `-`, a URL), for error messages.
    pub origin: String,
    /// The document, with `metadata.namespace` filled in.
    document: Value,
}

impl Entity {
    /// Reads and checks one entity document. `origin` names where it came
    /// from in errors.
    pub fn from_value(mut document: Value, origin: &str) -> Result<Entity, PlanError> {
        let err = |entity: Option<String>, field: &str, msg: String| PlanError::new(origin, entity, Some(field), msg);
        let Some(obj) = document.as_object_mut() else {
            return Err(PlanError::new(
                origin,
                None,
                None,
                "an entity must be a mapping (apiVersion, kind, metadata, spec)",
            ));
        };
        let name = match obj.get("metadata").and_then(|m| m.get("name")) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(_) => return Err(err(None, "metadata.name", "must be a non-empty string".into())),
            None => return Err(err(None, "metadata.name", "missing".into())),
        };
        let label = Some(name.clone());
        let api_version =
            str_field(obj, "apiVersion").ok_or_else(|| err(label.clone(), "apiVersion", "missing".into()))?;
        if !api_version.contains('/') {
            return Err(err(
                label,
                "apiVersion",
                format!("{api_version:?} is not of the form group/version (e.g. backstage.io/v1alpha1)"),
            ));
        }
        let kind = str_field(obj, "kind").ok_or_else(|| err(label.clone(), "kind", "missing".into()))?;
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err(label, "kind", format!("{kind:?} must be letters and digits")));
        }
        let Some(Value::Object(meta)) = obj.get_mut("metadata") else {
            return Err(err(label, "metadata", "must be a mapping".into()));
        };
        let namespace = match meta.get("namespace") {
            None | Some(Value::Null) => DEFAULT_NAMESPACE.to_string(),
            Some(Value::String(s)) => s.trim().to_string(),
            Some(_) => return Err(err(label, "metadata.namespace", "must be a string".into())),
        };
        for (what, value) in [("name", &name), ("namespace", &namespace)] {
            if !EntityRef::is_valid_name(value) {
                return Err(err(
                    label,
                    &format!("metadata.{what}"),
                    format!(
                        "{value:?} is not a valid entity {what}: 1-63 letters, digits and single - _ . between them"
                    ),
                ));
            }
        }
        meta.insert("namespace".into(), Value::String(namespace.clone()));
        let labels = string_map(meta.get("labels")).map_err(|m| err(label.clone(), "metadata.labels", m))?;
        let annotations =
            string_map(meta.get("annotations")).map_err(|m| err(label.clone(), "metadata.annotations", m))?;
        match obj.get("spec") {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(err(label, "spec", "must be a mapping".into())),
        }
        let entity = Entity {
            api_version,
            kind,
            metadata: Metadata { name, namespace, labels, annotations },
            origin: origin.to_string(),
            document,
        };
        // Check what the catalog stores of every entity: its dependencies,
        // and, for a plan, its whole migration spec.
        entity.depends_on()?;
        if entity.is_plan() {
            entity.migration()?;
        }
        Ok(entity)
    }

    /// Reads an entity from JSON text.
    pub fn from_json(text: &str, origin: &str) -> Result<Entity, PlanError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| PlanError::new(origin, None, None, format!("not valid JSON: {e}")))?;
        Entity::from_value(value, origin)
    }

    /// The canonical reference, e.g. `component:default/orders-v2`.
    pub fn entity_ref(&self) -> EntityRef {
        EntityRef::new(&self.kind, &self.metadata.namespace, &self.metadata.name)
    }

    /// The whole document as JSON, namespace filled in.
    pub fn document(&self) -> &Value {
        &self.document
    }

    pub fn to_json(&self) -> String {
        self.document.to_string()
    }

    /// Makes relative local dataset paths (no scheme, not starting with `/`)
    /// absolute against `base`, as `file://` URLs; and, in `exec` steps'
    /// command lists, arguments starting with `./` or `../` (a script next
    /// to the plan) absolute paths, and a bare program name (`python3`) the
    /// path `PATH` finds it at on this machine (the exec allow list names
    /// programs by absolute path).
    pub fn absolutize_paths(&mut self, base: &std::path::Path) {
        let Some(spec) = self.document.get_mut("spec").and_then(Value::as_object_mut) else { return };
        if let Some(Value::Array(steps)) = spec.get_mut("steps") {
            for step in steps.iter_mut() {
                let is_exec = step.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("exec"));
                let Some(Value::Array(args)) = step.get_mut("command").filter(|_| is_exec) else { continue };
                for (i, arg) in args.iter_mut().enumerate() {
                    if let Value::String(a) = arg {
                        if a.starts_with("./") || a.starts_with("../") {
                            *a = normalize(&base.join(a.as_str())).display().to_string();
                        } else if i == 0 && !a.contains('/') {
                            // The exec allow list names programs by absolute path.
                            if let Some(found) = on_path(a) {
                                *a = found.display().to_string();
                            }
                        }
                    }
                }
            }
        }
        let mut datasets: Vec<&mut Value> = Vec::new();
        for (key, value) in spec.iter_mut() {
            match key.as_str() {
                "source" | "target" => datasets.push(value),
                // Every dataset under `sources:`, by name.
                "sources" => {
                    if let Value::Object(named) = value {
                        datasets.extend(named.values_mut());
                    }
                }
                _ => {}
            }
        }
        for ds in datasets {
            absolutize_dataset(ds, base);
        }
    }

    fn spec(&self) -> Option<&Map<String, Value>> {
        self.document.get("spec").and_then(Value::as_object)
    }

    fn spec_str(&self, key: &str) -> Option<String> {
        self.spec().and_then(|s| s.get(key)).and_then(Value::as_str).map(str::to_string)
    }

    /// `spec.type`, if any.
    pub fn spec_type(&self) -> Option<String> {
        self.spec_str("type")
    }

    /// Whether the entity is a migration plan: a `Component` whose
    /// `spec.type` is `migration-plan`.
    pub fn is_plan(&self) -> bool {
        self.kind.eq_ignore_ascii_case("component")
            && self.spec_type().is_some_and(|t| t.eq_ignore_ascii_case(PLAN_TYPE))
    }

    /// `spec.owner`.
    pub fn owner(&self) -> Option<String> {
        self.spec_str("owner")
    }

    pub fn lifecycle(&self) -> Option<String> {
        self.spec_str("lifecycle")
    }

    pub fn system(&self) -> Option<String> {
        self.spec_str("system")
    }

    /// The queue from the `honk/queue` (or `skein.dev/queue`) annotation.
    pub fn queue(&self) -> Option<String> {
        let a = &self.metadata.annotations;
        a.get(QUEUE_ANNOTATION).or_else(|| a.get(QUEUE_ANNOTATION_ALT)).map(|q| q.trim().to_string())
    }

    /// `spec.dependsOn`, parsed (kind `component` when a ref names none).
    pub fn depends_on(&self) -> Result<Vec<EntityRef>, PlanError> {
        let field = "spec.dependsOn";
        let raw = match self.spec().and_then(|s| s.get("dependsOn")) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(self.error(field, "must be a list of entity references")),
        };
        let mut out: Vec<EntityRef> = Vec::with_capacity(raw.len());
        for (i, v) in raw.iter().enumerate() {
            let Some(text) = v.as_str() else {
                return Err(self.error(&format!("{field}[{i}]"), "must be a string like component:default/name"));
            };
            let r = EntityRef::parse(text, Some(DEFAULT_DEPENDENCY_KIND))
                .map_err(|e| self.error(&format!("{field}[{i}]"), &e.to_string()))?;
            if r == self.entity_ref() {
                return Err(self.error(&format!("{field}[{i}]"), "an entity cannot depend on itself"));
            }
            if !out.contains(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The migration a plan describes: sources, target and steps, checked.
    pub fn migration(&self) -> Result<MigrationSpec, PlanError> {
        let empty = Map::new();
        let spec = self.spec().unwrap_or(&empty);
        let present = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
        if present("source") && present("sources") {
            return Err(self.error(
                "spec.sources",
                "give either `source:` (one dataset, the table `source`) or `sources:` (datasets by table name), not \
                 both",
            ));
        }
        let sources = if present("sources") {
            self.sources(spec)?
        } else {
            // Neither: `spec.source: missing`, as before `sources:` existed.
            BTreeMap::from([(SOURCE_TABLE.to_string(), self.dataset(spec, "source", Role::Source)?)])
        };
        let target = self.dataset(spec, "target", Role::Target)?;
        let steps = match spec.get("steps") {
            None | Some(Value::Null) => return Err(self.error("spec.steps", "missing: a plan needs at least one step")),
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(self.error("spec.steps", "a plan needs at least one step"))
            }
            Some(Value::Array(a)) => a,
            Some(_) => return Err(self.error("spec.steps", "must be a list of steps")),
        };
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, s)| self.step(&format!("spec.steps[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        let m = MigrationSpec { sources, target, steps };
        self.check_partitioning(&m)?;
        Ok(m)
    }

    /// `sources:`, a mapping of SQL table names to datasets.
    fn sources(&self, spec: &Map<String, Value>) -> Result<BTreeMap<String, Dataset>, PlanError> {
        let Some(Value::Object(named)) = spec.get("sources") else {
            return Err(self.error("spec.sources", "must be a mapping of table names to datasets {url, format}"));
        };
        if named.is_empty() {
            return Err(self.error("spec.sources", "names no dataset: a plan needs at least one source"));
        }
        let mut out = BTreeMap::new();
        for (name, value) in named {
            let field = format!("spec.sources.{name}");
            if let Err(why) = check_table_name(name) {
                return Err(self.error(&field, &why));
            }
            let d = self.dataset_value(&field, value, Role::Source)?;
            out.insert(name.clone(), d);
        }
        Ok(out)
    }

    /// The rules that tie datasets together: one partitioned source at
    /// most, which must be a folder, and a folder target for any output
    /// published as a version.
    fn check_partitioning(&self, m: &MigrationSpec) -> Result<(), PlanError> {
        let field_of = |name: &str| {
            if self.spec().is_some_and(|s| s.contains_key("sources")) {
                format!("spec.sources.{name}")
            } else {
                "spec.source".to_string()
            }
        };
        let partitioned: Vec<&String> =
            m.sources.iter().filter(|(_, d)| d.partition.is_some()).map(|(name, _)| name).collect();
        if partitioned.len() > 1 {
            let names: Vec<&str> = partitioned.iter().map(|n| n.as_str()).collect();
            return Err(self.error(
                &format!("{}.partition", field_of(partitioned[1])),
                &format!(
                    "only one source may be partitioned (here: {}); the others are read whole by every partition",
                    names.join(", ")
                ),
            ));
        }
        if let Some((name, d, _)) = m.partitioned() {
            if !d.url.ends_with('/') {
                return Err(self.error(
                    &format!("{}.partition", field_of(name)),
                    &format!("a partitioned source must be a folder (a URL ending in /), not {:?}", d.url),
                ));
            }
            if name != SOURCE_TABLE && m.sources.contains_key(SOURCE_TABLE) {
                return Err(self.error(
                    &format!("spec.sources.{SOURCE_TABLE}"),
                    &format!(
                        "the table `source` stands for the partitioned source ({name}); name this source otherwise"
                    ),
                ));
            }
        }
        if m.versioned_output() && !m.target.url.ends_with('/') {
            let why = if m.partitioned().is_some() {
                "a partitioned plan's target"
            } else if !m.target.partition_by.is_empty() {
                "a target with partition_by"
            } else {
                "a target with max_rows_per_file"
            };
            return Err(self.error(
                "spec.target.url",
                &format!(
                    "{why} is written as many files, published together: it must be a folder (a URL ending in /), \
                     not {:?}",
                    m.target.url
                ),
            ));
        }
        Ok(())
    }

    fn error(&self, field: &str, message: &str) -> PlanError {
        PlanError::new(&self.origin, Some(self.entity_ref().to_string()), Some(field), message)
    }

    fn dataset(&self, spec: &Map<String, Value>, key: &str, role: Role) -> Result<Dataset, PlanError> {
        let field = format!("spec.{key}");
        match spec.get(key) {
            None | Some(Value::Null) => Err(self.error(&field, "missing")),
            Some(value) => self.dataset_value(&field, value, role),
        }
    }

    fn dataset_value(&self, field: &str, value: &Value, role: Role) -> Result<Dataset, PlanError> {
        let obj = match value {
            Value::Null => return Err(self.error(field, "missing")),
            Value::String(url) => {
                let mut m = Map::new();
                m.insert("url".into(), Value::String(url.clone()));
                m
            }
            Value::Object(o) => o.clone(),
            _ => return Err(self.error(field, "must be a mapping {url, format}")),
        };
        let url = match get_any(&obj, &["url", "path", "location"]) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(_) => return Err(self.error(&format!("{field}.url"), "must be a non-empty string")),
            None => return Err(self.error(&format!("{field}.url"), "missing")),
        };
        let format = match obj.get("format") {
            None | Some(Value::Null) => None,
            Some(Value::String(f)) => Some(Format::parse(f).ok_or_else(|| {
                self.error(&format!("{field}.format"), &format!("unknown format {f:?} (parquet, csv or jsonl)"))
            })?),
            Some(_) => return Err(self.error(&format!("{field}.format"), "must be a string")),
        };
        let delimiter = match get_any(&obj, &["delimiter", "separator"]) {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) if d.chars().count() == 1 && d.is_ascii() => d.chars().next(),
            Some(_) => return Err(self.error(&format!("{field}.delimiter"), "must be one ASCII character")),
        };
        let has_header = match get_any(&obj, &["has_header", "hasHeader", "header"]) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(self.error(&format!("{field}.has_header"), "must be true or false")),
        };
        let partition = match (obj.get("partition"), role) {
            (None | Some(Value::Null), _) => None,
            (Some(_), Role::Target) => {
                return Err(self.error(
                    &format!("{field}.partition"),
                    "is for sources (how to split one into partitions); a target is split with partition_by",
                ))
            }
            (Some(v), Role::Source) => {
                Some(parse_partitioning(v).map_err(|why| self.error(&format!("{field}.partition"), &why))?)
            }
        };
        let partition_by = match (get_any(&obj, &["partition_by", "partitionBy"]), role) {
            (None | Some(Value::Null), _) => Vec::new(),
            (Some(_), Role::Source) => {
                return Err(self.error(
                    &format!("{field}.partition_by"),
                    "is for targets (the columns the output is split by); a source is split with partition",
                ))
            }
            (Some(Value::String(c)), Role::Target) => vec![c.trim().to_string()],
            (Some(Value::Array(a)), Role::Target) => {
                a.iter().map(|c| c.as_str().map(|c| c.trim().to_string()).unwrap_or_default()).collect()
            }
            (Some(_), Role::Target) => {
                return Err(self.error(&format!("{field}.partition_by"), "must be a list of column names"))
            }
        };
        for (i, c) in partition_by.iter().enumerate() {
            if let Err(why) = check_column(c) {
                return Err(self.error(&format!("{field}.partition_by[{i}]"), &why));
            }
            if partition_by[..i].contains(c) {
                return Err(self.error(&format!("{field}.partition_by[{i}]"), &format!("{c:?} is named twice")));
            }
        }
        let max_rows_per_file = match (get_any(&obj, &["max_rows_per_file", "maxRowsPerFile"]), role) {
            (None | Some(Value::Null), _) => None,
            (Some(_), Role::Source) => {
                return Err(self.error(
                    &format!("{field}.max_rows_per_file"),
                    "is for targets (how many rows an output file holds at most)",
                ))
            }
            (Some(v), Role::Target) => match v.as_u64().filter(|n| *n >= 1) {
                Some(n) => Some(n),
                None => {
                    return Err(self.error(&format!("{field}.max_rows_per_file"), "must be a whole number, at least 1"))
                }
            },
        };
        let d = Dataset { url, format, delimiter, has_header, partition, partition_by, max_rows_per_file };
        if d.format().is_none() {
            return Err(self.error(
                &format!("{field}.format"),
                &format!("missing, and the extension of {:?} does not say (parquet, csv or jsonl)", d.url),
            ));
        }
        Ok(d)
    }

    fn step(&self, field: &str, value: &Value) -> Result<Step, PlanError> {
        let Some(obj) = value.as_object() else {
            return Err(self.error(field, "a step must be a mapping with a type"));
        };
        let ty = match obj.get("type") {
            Some(Value::String(t)) => t.trim().to_ascii_lowercase(),
            Some(_) => return Err(self.error(&format!("{field}.type"), "must be a string")),
            None => return Err(self.error(&format!("{field}.type"), "missing (sql, copy, exec or validate)")),
        };
        let string = |keys: &[&str], name: &str| -> Result<Option<String>, PlanError> {
            match get_any(obj, keys) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                Some(_) => Err(self.error(&format!("{field}.{name}"), "must be a non-empty string")),
            }
        };
        match ty.as_str() {
            "sql" => match string(&["query", "sql"], "query")? {
                Some(query) => Ok(Step::Sql { query }),
                None => Err(self.error(&format!("{field}.query"), "missing: the SQL to run over `source`")),
            },
            "copy" => {
                Ok(Step::Copy { schema: self.columns(&format!("{field}.schema"), get_any(obj, &["schema", "cast"]))? })
            }
            "exec" => {
                let command = match obj.get("command") {
                    Some(Value::String(s)) if !s.trim().is_empty() => vec!["sh".into(), "-c".into(), s.clone()],
                    Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
                        a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
                    }
                    Some(_) => {
                        return Err(self.error(
                            &format!("{field}.command"),
                            "must be a list of strings (program and arguments) or a shell line",
                        ))
                    }
                    None => return Err(self.error(&format!("{field}.command"), "missing")),
                };
                let env = string_map(obj.get("env")).map_err(|m| self.error(&format!("{field}.env"), &m))?;
                let timeout_ms = match get_any(obj, &["timeout_ms", "timeoutMs"]) {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_u64().ok_or_else(|| {
                        self.error(&format!("{field}.timeout_ms"), "must be a number of milliseconds")
                    })?),
                };
                let format = |keys: &[&str], name: &str| -> Result<Option<Format>, PlanError> {
                    match get_any(obj, keys) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(f)) => Format::parse(f).map(Some).ok_or_else(|| {
                            self.error(
                                &format!("{field}.{name}"),
                                &format!("unknown format {f:?} (parquet, csv or jsonl)"),
                            )
                        }),
                        Some(_) => Err(self.error(&format!("{field}.{name}"), "must be a string")),
                    }
                };
                let input_format = format(&["input_format", "inputFormat"], "input_format")?;
                let output_format = format(&["output_format", "outputFormat"], "output_format")?;
                Ok(Step::Exec(ExecStep { command, env, timeout_ms, input_format, output_format }))
            }
            "validate" => {
                let row_count = match get_any(obj, &["row_count", "rowCount", "rows"]) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                    Some(_) => {
                        return Err(self.error(
                            &format!("{field}.row_count"),
                            "must be `equal` or an expression over source and target",
                        ))
                    }
                };
                let schema = self.columns(&format!("{field}.schema"), obj.get("schema"))?;
                let checksum = match obj.get("checksum") {
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        let cols = v.get("columns").unwrap_or(v);
                        let columns = match cols {
                            Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => {
                                a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect()
                            }
                            Value::String(s) => {
                                s.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
                            }
                            _ => return Err(self.error(&format!("{field}.checksum"), "must be {columns: [names]}")),
                        };
                        Some(Checksum { columns })
                    }
                };
                let assert = string(&["assert", "sql", "query"], "assert")?;
                let v = Validation { row_count, schema, checksum, assert };
                if v.is_empty() {
                    return Err(self.error(field, "a validate step needs row_count, schema, checksum or assert"));
                }
                Ok(Step::Validate(v))
            }
            other => Err(self.error(
                &format!("{field}.type"),
                &format!("unknown step type {other:?} (sql, copy, exec or validate)"),
            )),
        }
    }

    /// A schema: `[{name, type}]` (ordered) or `{name: type}`.
    fn columns(&self, field: &str, value: Option<&Value>) -> Result<Vec<Column>, PlanError> {
        match value {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(name, t)| match t.as_str() {
                    Some(t) => Ok(Column { name: name.clone(), data_type: t.to_string() }),
                    None => Err(self.error(&format!("{field}.{name}"), "the type must be a string")),
                })
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let name = c.get("name").and_then(Value::as_str);
                    let ty = c.get("type").and_then(Value::as_str);
                    match (name, ty) {
                        (Some(n), Some(t)) => Ok(Column { name: n.to_string(), data_type: t.to_string() }),
                        _ => Err(self.error(&format!("{field}[{i}]"), "must be {name, type}")),
                    }
                })
                .collect(),
            Some(_) => Err(self.error(field, "must be a list of {name, type} or a mapping name: type")),
        }
    }
}

/// Which side of a plan a dataset is on: some settings belong to one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Source,
    Target,
}

/// Table names the engine itself uses: a source cannot take them.
const RESERVED_TABLES: [&str; 3] = ["input", "target", "staged_target"];

/// A source's name is the table the SQL sees: an identifier that needs no
/// quoting, and not one of the engine's own tables.
fn check_table_name(name: &str) -> Result<(), String> {
    if !is_identifier(name) || name.len() > 64 {
        return Err(format!(
            "{name:?} is not a valid table name: letters, digits and _, not starting with a digit, at most 64 \
             characters"
        ));
    }
    if RESERVED_TABLES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(format!(
            "{name:?} is a table the engine defines itself ({}); name the source otherwise",
            RESERVED_TABLES.join(", ")
        ));
    }
    Ok(())
}

/// A hive partition column: an identifier, not starting with `_` (readers
/// skip `_`-prefixed folders as hidden, so the data would vanish).
fn check_column(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must be a non-empty column name".into());
    }
    if !is_identifier(name) || name.len() > 64 {
        return Err(format!(
            "{name:?} is not a plain column name: letters, digits and _, not starting with a digit, at most 64 \
             characters"
        ));
    }
    if name.starts_with('_') {
        return Err(format!("{name:?}: a folder `{name}=...` would be hidden from readers (they skip `_` folders)"));
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `partition:` of a source: `file`, `{files: N}`, `{bytes: N}` (N a
/// number or `256MiB`, `1GB`, `512kB`) or `{key: column}`.
fn parse_partitioning(v: &Value) -> Result<Partitioning, String> {
    const SHAPES: &str = "must be `file`, {files: N}, {bytes: N} (e.g. 256MiB) or {key: column}";
    match v {
        Value::String(s) if matches!(s.trim(), "file" | "files") => Ok(Partitioning::Files(1)),
        Value::Object(o) if o.len() == 1 => {
            let (k, v) = o.iter().next().ok_or(SHAPES)?;
            match k.as_str() {
                "files" | "file" => match v.as_u64().filter(|n| *n >= 1) {
                    Some(n) => Ok(Partitioning::Files(n)),
                    None => Err(format!("files: must be a whole number of files per partition, at least 1, not {v}")),
                },
                "bytes" | "size" => parse_bytes(v).map(Partitioning::Bytes).map_err(|why| format!("bytes: {why}")),
                "key" | "column" => match v.as_str().map(str::trim) {
                    Some(c) => {
                        check_column(c).map(|()| Partitioning::Key(c.to_string())).map_err(|e| format!("key: {e}"))
                    }
                    None => Err("key: must be the column of the source's hive folders (key: dt for dt=.../)".into()),
                },
                other => Err(format!("unknown partitioning {other:?}: {SHAPES}")),
            }
        }
        _ => Err(SHAPES.into()),
    }
}

/// A size: a whole number of bytes, or a number with a unit (`kB`, `MB`,
/// `GB`, `TB` in powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of
/// 1024; `B`). At least 1 byte.
pub fn parse_bytes(v: &Value) -> Result<u64, String> {
    let bad = || format!("{v} is not a size: a number of bytes or a number with a unit (512kB, 256MiB, 1GB)");
    let n = match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let number: u64 = digits.parse().map_err(|_| bad())?;
            let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" => 1000,
                "m" | "mb" => 1000 * 1000,
                "g" | "gb" => 1000 * 1000 * 1000,
                "t" | "tb" => 1000 * 1000 * 1000 * 1000,
                "ki" | "kib" => 1 << 10,
                "mi" | "mib" => 1 << 20,
                "gi" | "gib" => 1 << 30,
                "ti" | "tib" => 1 << 40,
                _ => return Err(bad()),
            };
            number.checked_mul(scale).ok_or_else(|| format!("{s} is too large"))?
        }
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(n)
}

/// Makes a dataset's relative local URL (a string, or `url`/`path`/`location`
/// of a mapping) absolute against `base`, as a `file://` URL.
fn absolutize_dataset(ds: &mut Value, base: &std::path::Path) {
    let url = match ds {
        Value::String(s) => s,
        Value::Object(o) => {
            let Some(k) = ["url", "path", "location"].into_iter().find(|k| o.contains_key(*k)) else {
                return;
            };
            match o.get_mut(k) {
                Some(Value::String(s)) => s,
                _ => return,
            }
        }
        _ => return,
    };
    let trimmed = url.trim();
    if trimmed.is_empty() || trimmed.contains("://") || trimmed.starts_with('/') {
        return;
    }
    let folder = trimmed.ends_with('/');
    let joined = normalize(&base.join(trimmed));
    let mut text = format!("file://{}", joined.display());
    if folder && !text.ends_with('/') {
        text.push('/');
    }
    *url = text;
}

/// `a/b/../c` → `a/c`, without touching the file system (the target may
/// not exist yet).
fn normalize(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(|s| s.trim().to_string())
}

fn get_any<'a>(obj: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| obj.get(*k))
}

/// A mapping of strings (labels, annotations, env); numbers and booleans
/// are taken as their text, as YAML authors expect.
fn string_map(value: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                _ => Err(format!("{k}: the value must be a string")),
            })
            .collect(),
        Some(_) => Err("must be a mapping of strings".into()),
    }
}

/// Where `PATH` finds the executable `name`, as a shell would.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        p.is_absolute() && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
