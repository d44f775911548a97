//! skein-plan: migration plans as Backstage catalog entities.
//!
//! A plan is a `kind: Component` with `spec.type: migration-plan` whose
//! spec also carries `source` (or `sources`), `target` and `steps`; its queue is the
//! `honk/queue` annotation (or `skein.dev/queue`), and `spec.dependsOn`
//! orders it after other entities. Any other entity can be stored too, so a
//! plan can depend on a plain dataset component.
//!
//! - [`entity_ref`]: `[kind:][namespace/]name` references, as Backstage parses them;
//! - [`entity`]: an entity checked field by field, and the plan it carries;
//! - [`spec`]: the migration spec: datasets, formats, steps, validations;
//! - [`parse`]: YAML (multi-document) and JSON, files and folders;
//! - [`validate`]: checks over a batch: duplicates, missing refs, cycles;
//! - [`error`]: errors naming the file, the entity and the field.
//!
//! Light on purpose (serde, serde_json, yaml_serde, thiserror): the CLI and
//! the node both use it; the migration engine lives in `skein-migrate`.

pub mod entity;
pub mod entity_ref;
pub mod error;
pub mod parse;
pub mod spec;
pub mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use entity::{on_path, parse_bytes, Entity, Metadata, PLAN_TYPE, QUEUE_ANNOTATION, QUEUE_ANNOTATION_ALT};
pub use entity_ref::{EntityRef, RefError};
pub use error::{PlanError, PlanErrors};
pub use parse::{entities_from_items, entities_from_value, parse_json, parse_text, parse_yaml, plan_files, read_file};
pub use spec::{
    Checksum, Column, Dataset, ExecStep, Format, MigrationSpec, Partitioning, Step, Validation, SOURCE_TABLE,
};
pub use validate::{find_cycle, valid_queue, validate_set, Catalog};

/// A migration plan, ready to run: what the `migration` transform needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub entity_ref: EntityRef,
    pub queue: Option<String>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub depends_on: Vec<EntityRef>,
    pub migration: MigrationSpec,
}

impl Plan {
    /// The plan an entity carries; an error if the entity is not a plan.
    pub fn from_entity(e: &Entity) -> Result<Plan, PlanError> {
        if !e.is_plan() {
            return Err(PlanError::new(
                &e.origin,
                Some(e.entity_ref().to_string()),
                Some("spec.type"),
                format!("not a migration plan (a Component with spec.type: {PLAN_TYPE})"),
            ));
        }
        Ok(Plan {
            entity_ref: e.entity_ref(),
            queue: e.queue(),
            owner: e.owner(),
            labels: e.metadata.labels.clone(),
            depends_on: e.depends_on()?,
            migration: e.migration()?,
        })
    }

    /// The plan in an entity's JSON document (as the catalog stores it).
    pub fn from_json(json: &str, origin: &str) -> Result<Plan, PlanError> {
        Plan::from_entity(&Entity::from_json(json, origin)?)
    }
}
