//! Reading entities from YAML (multi-document, as `catalog-info.yaml` files
//! are) or JSON, from text, files and folders.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::entity::Entity;
use crate::error::{PlanError, PlanErrors};

/// Reads every entity in a YAML text of one or more documents (`---`
/// between them). Empty documents are skipped. Every bad document is
/// reported, not only the first.
pub fn parse_yaml(text: &str, origin: &str) -> Result<Vec<Entity>, PlanErrors> {
    let mut entities = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                errors.push(PlanError::new(origin, None, None, format!("document {}: not valid YAML: {e}", i + 1)));
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match Entity::from_value(value, origin) {
            Ok(e) => entities.push(e),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(entities)
    } else {
        Err(PlanErrors(errors))
    }
}

/// Reads entities from a JSON text: one entity, a list, or Backstage's
/// `{"items": [...]}`.
pub fn parse_json(text: &str, origin: &str) -> Result<Vec<Entity>, PlanErrors> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| PlanError::new(origin, None, None, format!("not valid JSON: {e}")))?;
    entities_from_value(value, origin)
}

/// Entities from a JSON value: one entity, a list, or `{"items": [...]}`.
pub fn entities_from_value(value: Value, origin: &str) -> Result<Vec<Entity>, PlanErrors> {
    let items = match value {
        Value::Array(a) => a,
        Value::Object(mut o) if o.contains_key("items") && !o.contains_key("kind") => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => return Err(PlanError::new(origin, None, Some("items"), "must be a list of entities").into()),
        },
        other => vec![other],
    };
    entities_from_items(items.into_iter().map(|v| (v, origin.to_string())))
}

/// Entities from JSON values, each with the origin its errors name; every
/// bad one is reported, not only the first.
pub fn entities_from_items(items: impl IntoIterator<Item = (Value, String)>) -> Result<Vec<Entity>, PlanErrors> {
    let mut entities = Vec::new();
    let mut errors = Vec::new();
    for (v, origin) in items {
        match Entity::from_value(v, &origin) {
            Ok(e) => entities.push(e),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(entities)
    } else {
        Err(PlanErrors(errors))
    }
}

/// Reads entities from text whose format is guessed: JSON if it starts with
/// `{` or `[`, else YAML.
pub fn parse_text(text: &str, origin: &str) -> Result<Vec<Entity>, PlanErrors> {
    match text.trim_start().chars().next() {
        Some('{') | Some('[') => parse_json(text, origin),
        _ => parse_yaml(text, origin),
    }
}

/// The YAML and JSON files of a folder and its sub-folders, sorted, or the
/// path itself when it is a file.
pub fn plan_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the entities of one file; relative local dataset paths in plans
/// are made absolute against the file's folder (as Backstage resolves a
/// location's relative targets).
pub fn read_file(path: &Path) -> Result<Vec<Entity>, PlanErrors> {
    let origin = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| PlanError::new(&origin, None, None, format!("cannot read: {e}")))?;
    let mut entities = parse_text(&text, &origin)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = std::fs::canonicalize(&base).unwrap_or(base);
    for e in &mut entities {
        e.absolutize_paths(&base);
    }
    Ok(entities)
}
