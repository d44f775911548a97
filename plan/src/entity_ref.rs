//! Entity references, parsed as Backstage parses them:
//! `[<kind>:][<namespace>/]<name>`.
//!
//! The kind may be left out where the context gives a default (`component`
//! for `spec.dependsOn` here, as skein's plans are components); the
//! namespace defaults to `default`. References compare case-insensitively,
//! as in Backstage's catalog: the canonical form ([`EntityRef`]'s `Display`)
//! is all lower case, `component:default/customer-dataset-v2-migration`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The namespace an entity is in when its metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The kind a `dependsOn` reference has when it names none.
pub const DEFAULT_DEPENDENCY_KIND: &str = "component";

/// A parsed, canonical (lower-case) entity reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The text is empty.
    #[error("an entity reference must not be empty")]
    Empty,
    /// No kind in the text and none to default to.
    #[error("entity reference {0:?} has no kind (write kind:namespace/name)")]
    MissingKind(String),
    /// A part is empty or holds characters Backstage does not allow.
    #[error("entity reference {text:?}: invalid {part} {value:?} ({reason})")]
    InvalidPart { text: String, part: &'static str, value: String, reason: String },
}

impl EntityRef {
    /// Parses `[kind:][namespace/]name`, with `default_kind` when the text
    /// has none (`None`: the kind is required) and `default` as namespace.
    pub fn parse(text: &str, default_kind: Option<&str>) -> Result<EntityRef, RefError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(RefError::Empty);
        }
        let (kind, rest) = match text.split_once(':') {
            Some((k, rest)) => (k, rest),
            None => match default_kind {
                Some(k) => (k, text),
                None => return Err(RefError::MissingKind(text.to_string())),
            },
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (DEFAULT_NAMESPACE, rest),
        };
        let r = EntityRef::new(kind, namespace, name);
        check_part(text, "kind", &r.kind, true)?;
        check_part(text, "namespace", &r.namespace, false)?;
        check_part(text, "name", &r.name, false)?;
        Ok(r)
    }

    /// A reference from its parts, lower-cased.
    pub fn new(kind: &str, namespace: &str, name: &str) -> EntityRef {
        EntityRef {
            kind: kind.trim().to_ascii_lowercase(),
            namespace: namespace.trim().to_ascii_lowercase(),
            name: name.trim().to_ascii_lowercase(),
        }
    }

    /// Whether `name` is a valid entity name or namespace in Backstage's
    /// rules: 1 to 63 characters of `[a-zA-Z0-9]` separated by single `-`,
    /// `_` or `.`.
    pub fn is_valid_name(name: &str) -> bool {
        valid_name(name).is_none()
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.kind, self.namespace, self.name)
    }
}

impl std::str::FromStr for EntityRef {
    type Err = RefError;
    /// Parses a full reference; the kind defaults to `component`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityRef::parse(s, Some(DEFAULT_DEPENDENCY_KIND))
    }
}

/// Why `name` breaks Backstage's naming rule, if it does.
fn valid_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 63 {
        return Some("longer than 63 characters".into());
    }
    let bytes = name.as_bytes();
    let sep = |b: u8| matches!(b, b'-' | b'_' | b'.');
    if !bytes.iter().all(|b| b.is_ascii_alphanumeric() || sep(*b)) {
        return Some("only letters, digits and - _ . are allowed".into());
    }
    if sep(bytes[0]) || sep(bytes[bytes.len() - 1]) || bytes.windows(2).any(|w| sep(w[0]) && sep(w[1])) {
        return Some("must start and end with a letter or digit, with single separators between".into());
    }
    None
}

fn check_part(text: &str, part: &'static str, value: &str, is_kind: bool) -> Result<(), RefError> {
    let reason = if is_kind {
        if value.is_empty() {
            Some("must not be empty".to_string())
        } else if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Some("only letters and digits are allowed".to_string())
        } else {
            None
        }
    } else {
        valid_name(value)
    };
    match reason {
        Some(reason) => Err(RefError::InvalidPart { text: text.to_string(), part, value: value.to_string(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_partial_refs() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "component:default/customer-dataset-v2-migration",
                None,
                "component:default/customer-dataset-v2-migration",
            ),
            ("Component:Default/Orders", None, "component:default/orders"),
            ("resource:data/orders.v2", None, "resource:data/orders.v2"),
            ("orders", Some("component"), "component:default/orders"),
            ("team-a/orders", Some("component"), "component:team-a/orders"),
            ("  API:x  ", None, "api:default/x"),
        ];
        for (text, default, want) in cases {
            assert_eq!(EntityRef::parse(text, *default).unwrap().to_string(), *want, "{text}");
        }
    }

    #[test]
    fn rejects_bad_refs() {
        assert_eq!(EntityRef::parse("", Some("component")), Err(RefError::Empty));
        assert!(matches!(EntityRef::parse("orders", None), Err(RefError::MissingKind(_))));
        for bad in
            ["component:", "component:ns/", ":x", "component:a b", "component:-x", "component:a--b", "comp-onent:x"]
        {
            assert!(
                matches!(EntityRef::parse(bad, Some("component")), Err(RefError::InvalidPart { .. })),
                "{bad} should not parse"
            );
        }
        let long = "a".repeat(64);
        assert!(EntityRef::parse(&long, Some("component")).is_err());
    }
}
