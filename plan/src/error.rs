//! Errors that name where the problem is: the origin (file or URL), the
//! entity and the field.

use std::fmt;

/// One problem in one entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanError {
    /// The file (or `-`, or URL) the entity came from.
    pub origin: String,
    /// The entity's reference (or name) when known.
    pub entity: Option<String>,
    /// The field, as a path: `spec.steps[1].type`.
    pub field: Option<String>,
    pub message: String,
}

impl PlanError {
    pub fn new(origin: &str, entity: Option<String>, field: Option<&str>, message: impl Into<String>) -> PlanError {
        PlanError { origin: origin.to_string(), entity, field: field.map(str::to_string), message: message.into() }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.origin.is_empty() {
            write!(f, "{}: ", self.origin)?;
        }
        if let Some(e) = &self.entity {
            write!(f, "{e}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a set of entities (validation does not stop at
/// the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<PlanError> for PlanErrors {
    fn from(e: PlanError) -> Self {
        PlanErrors(vec![e])
    }
}
