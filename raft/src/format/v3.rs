//! Format 3 (release 0.3.0): the auth section a version-5 snapshot appends
//! to version 4's state, and the audit records of the cold store. These
//! shapes are frozen like [`super::v1`]'s: a change is a new format.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fsm::auth::{AuditRecord, AuthState, Role, TokenRecord};

/// A token's role as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredRole {
    Read,
    Submit,
    Operate,
    Admin,
}

impl From<Role> for StoredRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Read => StoredRole::Read,
            Role::Submit => StoredRole::Submit,
            Role::Operate => StoredRole::Operate,
            Role::Admin => StoredRole::Admin,
        }
    }
}

impl From<StoredRole> for Role {
    fn from(r: StoredRole) -> Self {
        match r {
            StoredRole::Read => Role::Read,
            StoredRole::Submit => Role::Submit,
            StoredRole::Operate => Role::Operate,
            StoredRole::Admin => Role::Admin,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token<'a> {
    pub id: u64,
    pub name: Cow<'a, str>,
    pub role: StoredRole,
    pub owners: Cow<'a, [String]>,
    pub hash: Cow<'a, [u8]>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
    pub created_by: Cow<'a, str>,
}

/// The auth section of a version-5 snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Auth<'a> {
    pub tokens: Vec<Token<'a>>,
    pub enforce: bool,
    pub audit_retention_ms: u64,
    pub task_owners: Vec<(u64, Cow<'a, str>)>,
    pub next_audit: u64,
    pub audit_hours: Vec<(u64, u64)>,
}

impl<'a> Auth<'a> {
    pub(crate) fn of(auth: &'a AuthState) -> Self {
        Auth {
            tokens: auth
                .tokens
                .values()
                .map(|t| Token {
                    id: t.id,
                    name: Cow::Borrowed(&t.name),
                    role: t.role.into(),
                    owners: Cow::Borrowed(&t.owners),
                    hash: Cow::Borrowed(&t.hash),
                    created_ms: t.created_ms,
                    expires_ms: t.expires_ms,
                    last_used_ms: t.last_used_ms,
                    created_by: Cow::Borrowed(&t.created_by),
                })
                .collect(),
            enforce: auth.enforce,
            audit_retention_ms: auth.audit_retention_ms,
            task_owners: auth.task_owners.iter().map(|(id, o)| (id.0, Cow::Borrowed(&**o))).collect(),
            next_audit: auth.next_audit,
            audit_hours: auth.audit_hours.iter().map(|(h, s)| (*h, *s)).collect(),
        }
    }

    pub(crate) fn into_state(self) -> AuthState {
        // Owners repeat across many tasks: share one string per owner.
        let mut shared: BTreeMap<String, Arc<str>> = BTreeMap::new();
        AuthState {
            tokens: self
                .tokens
                .into_iter()
                .map(|t| {
                    let record = TokenRecord {
                        id: t.id,
                        name: t.name.into_owned(),
                        role: t.role.into(),
                        owners: t.owners.into_owned(),
                        hash: t.hash.into_owned(),
                        created_ms: t.created_ms,
                        expires_ms: t.expires_ms,
                        last_used_ms: t.last_used_ms,
                        created_by: t.created_by.into_owned(),
                    };
                    (t.id, record)
                })
                .collect(),
            enforce: self.enforce,
            audit_retention_ms: self.audit_retention_ms,
            task_owners: self
                .task_owners
                .into_iter()
                .map(|(id, o)| {
                    let o = shared.entry(o.to_string()).or_insert_with(|| Arc::from(&*o)).clone();
                    (crate::fsm::TaskId(id), o)
                })
                .collect(),
            next_audit: self.next_audit,
            audit_hours: self.audit_hours.into_iter().collect(),
        }
    }
}

/// An audit record as the cold store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit<'a> {
    pub at_ms: u64,
    pub principal: Cow<'a, str>,
    pub action: Cow<'a, str>,
    pub target: Cow<'a, str>,
    pub outcome: Cow<'a, str>,
}

impl<'a> From<&'a AuditRecord> for Audit<'a> {
    fn from(r: &'a AuditRecord) -> Self {
        Audit {
            at_ms: r.at_ms,
            principal: Cow::Borrowed(&r.principal),
            action: Cow::Borrowed(&r.action),
            target: Cow::Borrowed(&r.target),
            outcome: Cow::Borrowed(&r.outcome),
        }
    }
}

impl From<Audit<'_>> for AuditRecord {
    fn from(a: Audit<'_>) -> Self {
        AuditRecord {
            at_ms: a.at_ms,
            principal: a.principal.into_owned(),
            action: a.action.into_owned(),
            target: a.target.into_owned(),
            outcome: a.outcome.into_owned(),
        }
    }
}
