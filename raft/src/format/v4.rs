//! Format 4 (release 0.4.0): the policy section a version-6 snapshot
//! appends to version 5's state: the exec allow list and the data roots.
//! Frozen like [`super::v1`]'s shapes: a change is a new format.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::fsm::policy::{Credentials, DataRoot, ExecRule, NewRoot, PolicyState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule<'a> {
    pub program: Cow<'a, str>,
    pub args: Cow<'a, [String]>,
    pub created_ms: u64,
    pub created_by: Cow<'a, str>,
}

/// Where a root's credentials come from, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoredCredentials<'a> {
    None,
    Anonymous,
    Env,
    File(Cow<'a, str>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Root<'a> {
    pub url: Cow<'a, str>,
    pub endpoint: Option<Cow<'a, str>>,
    pub region: Option<Cow<'a, str>>,
    pub credentials: StoredCredentials<'a>,
    pub allow_http: bool,
    pub created_ms: u64,
    pub created_by: Cow<'a, str>,
}

/// The policy section of a version-6 snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy<'a> {
    pub enforce: bool,
    pub programs: Vec<Rule<'a>>,
    pub roots: Vec<Root<'a>>,
}

impl<'a> Policy<'a> {
    pub fn of(p: &'a PolicyState) -> Self {
        Policy {
            enforce: p.enforce,
            programs: p
                .programs
                .iter()
                .map(|r| Rule {
                    program: Cow::Borrowed(&r.program),
                    args: Cow::Borrowed(&r.args),
                    created_ms: r.created_ms,
                    created_by: Cow::Borrowed(&r.created_by),
                })
                .collect(),
            roots: p
                .roots
                .values()
                .map(|r| Root {
                    url: Cow::Borrowed(&r.root.url),
                    endpoint: r.root.endpoint.as_deref().map(Cow::Borrowed),
                    region: r.root.region.as_deref().map(Cow::Borrowed),
                    credentials: match &r.root.credentials {
                        Credentials::None => StoredCredentials::None,
                        Credentials::Anonymous => StoredCredentials::Anonymous,
                        Credentials::Env => StoredCredentials::Env,
                        Credentials::File(p) => StoredCredentials::File(Cow::Borrowed(p)),
                    },
                    allow_http: r.root.allow_http,
                    created_ms: r.created_ms,
                    created_by: Cow::Borrowed(&r.created_by),
                })
                .collect(),
        }
    }

    /// An owned copy, to send or keep past the state's lock.
    pub fn into_static(self) -> Policy<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Policy {
            enforce: self.enforce,
            programs: self
                .programs
                .into_iter()
                .map(|r| Rule {
                    program: own(r.program),
                    args: Cow::Owned(r.args.into_owned()),
                    created_ms: r.created_ms,
                    created_by: own(r.created_by),
                })
                .collect(),
            roots: self
                .roots
                .into_iter()
                .map(|r| Root {
                    url: own(r.url),
                    endpoint: r.endpoint.map(own),
                    region: r.region.map(own),
                    credentials: match r.credentials {
                        StoredCredentials::None => StoredCredentials::None,
                        StoredCredentials::Anonymous => StoredCredentials::Anonymous,
                        StoredCredentials::Env => StoredCredentials::Env,
                        StoredCredentials::File(p) => StoredCredentials::File(own(p)),
                    },
                    allow_http: r.allow_http,
                    created_ms: r.created_ms,
                    created_by: own(r.created_by),
                })
                .collect(),
        }
    }

    pub fn into_state(self) -> PolicyState {
        PolicyState {
            enforce: self.enforce,
            programs: self
                .programs
                .into_iter()
                .map(|r| ExecRule {
                    program: r.program.into_owned(),
                    args: r.args.into_owned(),
                    created_ms: r.created_ms,
                    created_by: r.created_by.into_owned(),
                })
                .collect(),
            roots: self
                .roots
                .into_iter()
                .map(|r| {
                    let root = NewRoot {
                        url: r.url.into_owned(),
                        endpoint: r.endpoint.map(Cow::into_owned),
                        region: r.region.map(Cow::into_owned),
                        credentials: match r.credentials {
                            StoredCredentials::None => Credentials::None,
                            StoredCredentials::Anonymous => Credentials::Anonymous,
                            StoredCredentials::Env => Credentials::Env,
                            StoredCredentials::File(p) => Credentials::File(p.into_owned()),
                        },
                        allow_http: r.allow_http,
                    };
                    (
                        root.url.clone(),
                        DataRoot { root, created_ms: r.created_ms, created_by: r.created_by.into_owned() },
                    )
                })
                .collect(),
        }
    }
}
