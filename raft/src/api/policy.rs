//! The bodies of the policy routes (`/api/v1/policy`): the exec allow list
//! and the data roots.

use serde::{Deserialize, Serialize};

use crate::fsm::policy::{is_interpreter, DataRoot, ExecRule, PolicyState};

/// `GET /api/v1/policy`, and the answer of every policy change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    /// `enforce` (a new cluster) or `open` (an upgraded one, until an admin
    /// runs `skein policy enforce`: any program, any location).
    pub mode: String,
    pub programs: Vec<ExecRuleInfo>,
    pub roots: Vec<RootInfo>,
    /// What the change just made allows that an admin should know (a shell
    /// or an interpreter allowed without fixed arguments).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRuleInfo {
    pub program: String,
    pub args: Vec<String>,
    /// A shell or an interpreter: with no fixed arguments, it runs anything.
    pub interpreter: bool,
    pub created_ms: u64,
    pub created_by: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootInfo {
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `none`, `anonymous`, `env` or `file:PATH`.
    pub credentials: String,
    pub allow_http: bool,
    pub created_ms: u64,
    pub created_by: String,
}

impl From<&ExecRule> for ExecRuleInfo {
    fn from(r: &ExecRule) -> Self {
        ExecRuleInfo {
            program: r.program.clone(),
            args: r.args.clone(),
            interpreter: is_interpreter(&r.program),
            created_ms: r.created_ms,
            created_by: r.created_by.clone(),
        }
    }
}

impl From<&DataRoot> for RootInfo {
    fn from(r: &DataRoot) -> Self {
        RootInfo {
            url: r.root.url.clone(),
            endpoint: r.root.endpoint.clone(),
            region: r.root.region.clone(),
            credentials: r.root.credentials.to_string(),
            allow_http: r.root.allow_http,
            created_ms: r.created_ms,
            created_by: r.created_by.clone(),
        }
    }
}

impl From<&PolicyState> for PolicyView {
    fn from(p: &PolicyState) -> Self {
        PolicyView {
            mode: if p.enforce { "enforce" } else { "open" }.into(),
            programs: p.programs.iter().map(Into::into).collect(),
            roots: p.roots.values().map(Into::into).collect(),
            warnings: Vec::new(),
        }
    }
}

/// `POST /api/v1/policy/exec` (allow) and `POST /api/v1/policy/exec/deny`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRuleBody {
    /// An absolute path.
    pub program: String,
    /// Allow: the leading arguments every call must start with (none: any).
    /// Deny: only the rule with exactly these (absent: every rule of the program).
    #[serde(default)]
    pub args: Option<Vec<String>>,
}

/// `POST /api/v1/policy/roots`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootBody {
    /// `file:///data/` (or `/data/`), `s3://bucket/prefix/`.
    pub url: String,
    /// An object store's endpoint (required for `s3://`).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// `none` (local roots; the default), `anonymous`, `env` or `file:/abs/path`.
    #[serde(default)]
    pub credentials: Option<String>,
    /// Allow a plain `http://` endpoint.
    #[serde(default)]
    pub allow_http: bool,
}

/// `POST /api/v1/policy/roots/deny`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenyRootBody {
    pub url: String,
}

/// `POST /api/v1/policy`: `{"mode": "enforce"}` or `{"mode": "open"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyModeBody {
    pub mode: String,
}
