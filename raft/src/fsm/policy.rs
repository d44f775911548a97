//! What the fleet may run and touch (format 4): the programs `exec` tasks
//! and `exec` steps may start, and the data roots plans may read and write.
//!
//! Both lists are replicated and empty in a new cluster, which enforces
//! them from its first entry: nothing runs and nothing is touched until an
//! admin allows it (`skein exec allow`, `skein roots allow`). A cluster
//! upgraded from an older release keeps its old behaviour (anything goes)
//! until an admin runs `skein policy enforce`, so that an upgrade does not
//! stop a running fleet.
//!
//! The checks here are pure and lexical. The node runs them before it
//! proposes an enqueue or a plan (403 `forbidden`), and the worker runs them
//! again, against its own applied state, right before it starts a program
//! or opens a dataset; for a local dataset the worker then also resolves
//! symbolic links (see `skein_migrate::roots`), which only it can do: links
//! and files change between the apply and the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Rejection, Response};
use super::state::StateMachine;

/// One allowed program: its absolute path and the arguments every call of
/// it must start with (`/usr/bin/python3` with `[/opt/t/convert.py]`
/// allows that script only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRule {
    pub program: String,
    pub args: Vec<String>,
    pub created_ms: u64,
    pub created_by: String,
}

impl ExecRule {
    /// Whether `command` (program, then arguments) is a call this rule allows.
    pub fn allows(&self, command: &[String]) -> bool {
        match command.split_first() {
            Some((program, args)) => *program == self.program && args.starts_with(&self.args),
            None => false,
        }
    }
}

/// Where an object-store root's credentials come from. Never the cloud's
/// instance metadata: a node contacts nothing but the root's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Credentials {
    /// Local roots: none needed.
    None,
    /// Unsigned requests (a public bucket).
    Anonymous,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`)
    /// in the node's environment.
    Env,
    /// A file on every node holding `access_key_id=...` and
    /// `secret_access_key=...` lines (and optionally `session_token=...`).
    File(String),
}

impl Credentials {
    /// Parses the CLI's and the API's form: `none`, `anonymous`, `env`, `file:PATH`.
    pub fn parse(s: &str) -> Result<Credentials, String> {
        match s.trim() {
            "none" => Ok(Credentials::None),
            "anonymous" => Ok(Credentials::Anonymous),
            "env" => Ok(Credentials::Env),
            other => match other.strip_prefix("file:") {
                Some(path) if path.starts_with('/') => Ok(Credentials::File(path.to_string())),
                Some(_) => Err("credentials file:PATH needs an absolute path".into()),
                None => Err(format!("unknown credentials {other:?}: none, anonymous, env or file:/abs/path")),
            },
        }
    }
}

impl std::fmt::Display for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("none"),
            Credentials::Anonymous => f.write_str("anonymous"),
            Credentials::Env => f.write_str("env"),
            Credentials::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// A data root as an admin gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRoot {
    /// Normalized ([`normalize_root`]): `file:///data/` or `s3://bucket/prefix/`.
    pub url: String,
    /// An object store's endpoint (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://minio:9000`); `None` for local roots.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub credentials: Credentials,
    /// Whether a plain `http://` endpoint is allowed.
    pub allow_http: bool,
}

impl NewRoot {
    /// Checks and normalizes what an admin gave.
    pub fn validate(mut self) -> Result<NewRoot, String> {
        self.url = normalize_root(&self.url)?;
        let local = self.url.starts_with("file://");
        if local {
            if self.endpoint.is_some() || self.region.is_some() {
                return Err("a local root takes no endpoint or region".into());
            }
            if !matches!(self.credentials, Credentials::None) {
                return Err("a local root takes no credentials".into());
            }
            return Ok(self);
        }
        let endpoint = self.endpoint.as_deref().map(str::trim).unwrap_or_default();
        if endpoint.is_empty() {
            return Err(format!(
                "object-store root {} must name its endpoint (--endpoint https://s3.REGION.amazonaws.com, or your \
                 S3-compatible server's URL)",
                self.url
            ));
        }
        let plain = endpoint.starts_with("http://");
        if !plain && !endpoint.starts_with("https://") {
            return Err(format!("endpoint {endpoint:?} must be an http:// or https:// URL"));
        }
        if plain && !self.allow_http {
            return Err(format!("endpoint {endpoint} is plain HTTP: allow it explicitly with --allow-http"));
        }
        if matches!(self.credentials, Credentials::None) {
            return Err(
                "an object-store root must say where its credentials come from: env, file:PATH or anonymous".into()
            );
        }
        self.endpoint = Some(endpoint.trim_end_matches('/').to_string());
        Ok(self)
    }
}

/// A stored data root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRoot {
    pub root: NewRoot,
    pub created_ms: u64,
    pub created_by: String,
}

/// The replicated policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Whether the lists are enforced (a new cluster: from its first entry).
    pub enforce: bool,
    /// In the order they were allowed.
    pub programs: Vec<ExecRule>,
    /// By normalized URL.
    pub roots: BTreeMap<String, DataRoot>,
}

/// Programs that run whatever they are given: allowing one without fixed
/// arguments allows anything. The CLI and the API warn about them.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "fish", "csh", "tcsh", "env", "python", "python2", "python3", "perl", "ruby",
    "node", "nodejs", "php", "lua", "tclsh", "busybox", "xargs", "sudo", "su", "nohup", "timeout", "nice",
];

/// Whether `program` (a path) names a shell or an interpreter.
pub fn is_interpreter(program: &str) -> bool {
    let name = program.rsplit('/').next().unwrap_or(program);
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&name) || INTERPRETERS.contains(&base)
}

/// Checks that `program` can be an allow-list entry: an absolute path
/// without `.` or `..` parts (the check compares strings, so a path must
/// have one spelling).
pub fn check_program_path(program: &str) -> Result<(), String> {
    if !program.starts_with('/') {
        return Err(format!(
            "{program:?} is not an absolute path: programs are allowed and named by absolute path (e.g. `$(command -v \
             {program})`)"
        ));
    }
    if program.contains('\0') || program.split('/').any(|p| p == ".." || p == ".") || program.ends_with('/') {
        return Err(format!("{program:?} must be a plain absolute path to a program (no `.`, `..` or trailing /)"));
    }
    Ok(())
}

/// A dataset location in one spelling: `file:///abs/path` (from
/// `/abs/path` or `file:///abs/path`) or `s3://bucket/key` (from `s3://` or
/// `s3a://`). Refuses relative paths, `..` and `.` parts, and skein's own
/// `_skein` folders.
pub fn normalize_location(url: &str) -> Result<String, String> {
    let url = url.trim();
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("file://") {
        ("file://", rest)
    } else if !url.contains("://") {
        ("file://", url)
    } else if let Some(rest) = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3a://")) {
        ("s3://", rest)
    } else {
        return Err(format!("unsupported dataset location {url:?} (a local path, file:// or s3://)"));
    };
    if scheme == "file://" && !rest.starts_with('/') {
        return Err(format!("local dataset path {rest:?} must be absolute"));
    }
    if scheme == "s3://" && rest.split('/').next().unwrap_or_default().is_empty() {
        return Err(format!("{url:?} names no bucket (s3://bucket/key)"));
    }
    if rest.contains('\0') {
        return Err(format!("{url:?} holds a NUL character"));
    }
    for part in rest.split('/') {
        // `%2e%2e` is a literal name locally (paths are not percent-decoded)
        // but some object stores decode it: refused alike.
        let decoded = part.to_ascii_lowercase().replace("%2e", ".");
        if decoded == ".." || decoded == "." {
            return Err(format!("{url:?}: `.` and `..` are not allowed in a dataset location"));
        }
        if part == "_skein" {
            return Err(format!("{url:?}: skein's own _skein/ folders cannot be a plan's source or target"));
        }
    }
    Ok(format!("{scheme}{rest}"))
}

/// A root's one spelling: a normalized location ending in `/`.
pub fn normalize_root(url: &str) -> Result<String, String> {
    let mut url = normalize_location(url)?;
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(url)
}

/// Whether the normalized `location` is `root` or under it (on a path
/// boundary: `file:///data/` holds `file:///data/x`, not `file:///database`).
pub fn is_under(location: &str, root: &str) -> bool {
    location.starts_with(root) || location == root.trim_end_matches('/')
}

impl PolicyState {
    /// The root that holds `location`, or why none does (a message for the
    /// 403). `Ok(None)` while the policy is not enforced.
    pub fn root_of(&self, location: &str) -> Result<Option<&DataRoot>, String> {
        let normalized = normalize_location(location)?;
        if !self.enforce {
            return Ok(None);
        }
        // The longest root that holds it: its endpoint and credentials apply.
        self.roots.iter().rev().find(|(url, _)| is_under(&normalized, url)).map(|(_, r)| Some(r)).ok_or_else(|| {
            format!(
                "{normalized} is not under an allowed data root: an admin allows one with `skein roots allow \
                     {}`",
                suggest_root(&normalized)
            )
        })
    }

    /// Whether `command` may be run, or why not (a message for the 403).
    pub fn check_exec(&self, command: &[String]) -> Result<(), String> {
        let Some(program) = command.first() else {
            return Err("the command is empty".into());
        };
        if !self.enforce {
            return Ok(());
        }
        check_program_path(program)?;
        if self.programs.iter().any(|r| r.allows(command)) {
            return Ok(());
        }
        let prefixes: Vec<String> =
            self.programs.iter().filter(|r| r.program == *program).map(|r| format!("[{}]", r.args.join(" "))).collect();
        Err(if prefixes.is_empty() {
            format!(
                "program {program} is not on the exec allow list: an admin allows it with `skein exec allow {program}`"
            )
        } else {
            format!(
                "program {program} is allowed only with the leading arguments {}: an admin allows these with `skein \
                 exec allow {program} --args ...`",
                prefixes.join(" or ")
            )
        })
    }
}

/// The folder of `location` (a root to suggest in an error).
fn suggest_root(location: &str) -> String {
    match location.rfind('/') {
        Some(i) if i + 1 < location.len() && location[..i].len() > "file://".len() => location[..=i].to_string(),
        _ => location.to_string(),
    }
}

impl StateMachine {
    /// The admin's allow lists.
    pub fn policy(&self) -> &PolicyState {
        &self.core.policy
    }

    pub(super) fn allow_exec(&mut self, program: &str, args: &[String], by: &str) -> Response {
        if let Err(e) = check_program_path(program) {
            return Response::Rejected(Rejection::InvalidConfig(e));
        }
        if args.iter().any(|a| a.contains('\0')) {
            return Response::Rejected(Rejection::InvalidConfig("an argument holds a NUL character".into()));
        }
        let programs = &mut self.core.policy.programs;
        if programs.iter().any(|r| r.program == program && r.args == args) {
            return Response::Done; // allowed already: idempotent
        }
        if programs.len() >= MAX_RULES {
            return Response::Rejected(Rejection::InvalidConfig(format!("at most {MAX_RULES} exec rules")));
        }
        programs.push(ExecRule {
            program: program.to_string(),
            args: args.to_vec(),
            created_ms: self.core.clock_ms,
            created_by: by.to_string(),
        });
        Response::Done
    }

    pub(super) fn deny_exec(&mut self, program: &str, args: Option<&[String]>) -> Response {
        let before = self.core.policy.programs.len();
        self.core.policy.programs.retain(|r| !(r.program == program && args.is_none_or(|a| r.args == a)));
        if self.core.policy.programs.len() == before {
            return Response::Rejected(Rejection::InvalidConfig(format!("{program} is not on the exec allow list")));
        }
        Response::Done
    }

    pub(super) fn allow_root(&mut self, root: &NewRoot, by: &str) -> Response {
        let root = match root.clone().validate() {
            Ok(r) => r,
            Err(e) => return Response::Rejected(Rejection::InvalidConfig(e)),
        };
        let roots = &mut self.core.policy.roots;
        if roots.len() >= MAX_RULES && !roots.contains_key(&root.url) {
            return Response::Rejected(Rejection::InvalidConfig(format!("at most {MAX_RULES} data roots")));
        }
        let url = root.url.clone();
        roots.insert(url, DataRoot { root, created_ms: self.core.clock_ms, created_by: by.to_string() });
        Response::Done
    }

    pub(super) fn deny_root(&mut self, url: &str) -> Response {
        let url = match normalize_root(url) {
            Ok(u) => u,
            Err(e) => return Response::Rejected(Rejection::InvalidConfig(e)),
        };
        match self.core.policy.roots.remove(&url) {
            Some(_) => Response::Done,
            None => Response::Rejected(Rejection::InvalidConfig(format!("{url} is not an allowed data root"))),
        }
    }

    pub(super) fn configure_policy(&mut self, enforce: bool) -> Response {
        self.core.policy.enforce = enforce;
        Response::Done
    }
}

/// At most this many exec rules, and as many data roots: they are checked
/// one by one and kept in every snapshot.
pub const MAX_RULES: usize = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn enforced() -> PolicyState {
        PolicyState { enforce: true, ..Default::default() }
    }

    fn cmd(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn locations_have_one_spelling_and_refuse_escapes() {
        assert_eq!(normalize_location("/data/x.csv").unwrap(), "file:///data/x.csv");
        assert_eq!(normalize_location("file:///data/x.csv").unwrap(), "file:///data/x.csv");
        assert_eq!(normalize_location("s3a://b/k").unwrap(), "s3://b/k");
        for bad in [
            "data/x.csv",
            "file://data/x",
            "/data/../etc/passwd",
            "/data/./x",
            "/data/%2E%2e/x",
            "/data/out/_skein/stage",
            "s3://b/../k",
            "s3:///k",
            "gs://b/k",
            "/data/\0x",
        ] {
            assert!(normalize_location(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn roots_hold_what_is_under_them_on_a_path_boundary() {
        let mut p = enforced();
        let root = NewRoot {
            url: "/data".into(),
            endpoint: None,
            region: None,
            credentials: Credentials::None,
            allow_http: false,
        }
        .validate()
        .unwrap();
        assert_eq!(root.url, "file:///data/");
        p.roots.insert(root.url.clone(), DataRoot { root, created_ms: 0, created_by: "t".into() });
        assert!(p.root_of("/data/x.csv").unwrap().is_some());
        assert!(p.root_of("/data").unwrap().is_some());
        let e = p.root_of("/database/x.csv").unwrap_err();
        assert!(e.contains("skein roots allow file:///database/"), "{e}");
        assert!(p.root_of("/etc/passwd").is_err());
        assert!(p.root_of("s3://data/x").is_err());
        assert!(p.root_of("/data/../etc/passwd").is_err());
        // Not enforced: anything normalizable goes, escapes still do not.
        p.enforce = false;
        assert!(p.root_of("/etc/passwd").unwrap().is_none());
        assert!(p.root_of("/data/../etc").is_err());
    }

    #[test]
    fn object_store_roots_name_endpoint_and_credentials() {
        let s3 = |endpoint: Option<&str>, credentials: Credentials, allow_http: bool| NewRoot {
            url: "s3://bucket/prefix".into(),
            endpoint: endpoint.map(str::to_string),
            region: None,
            credentials,
            allow_http,
        };
        assert!(s3(None, Credentials::Env, false).validate().is_err());
        assert!(s3(Some("https://s3.example"), Credentials::None, false).validate().is_err());
        assert!(s3(Some("http://127.0.0.1:9000"), Credentials::Env, false).validate().is_err());
        let ok = s3(Some("http://127.0.0.1:9000/"), Credentials::Env, true).validate().unwrap();
        assert_eq!(ok.url, "s3://bucket/prefix/");
        assert_eq!(ok.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(Credentials::parse("file:/etc/skein/s3").unwrap(), Credentials::File("/etc/skein/s3".into()));
        assert!(Credentials::parse("file:rel").is_err());
        assert!(Credentials::parse("imds").is_err());
    }

    #[test]
    fn exec_rules_match_program_and_leading_arguments() {
        let mut p = enforced();
        assert!(p.check_exec(&cmd(&["/bin/true"])).unwrap_err().contains("skein exec allow /bin/true"));
        p.programs.push(ExecRule {
            program: "/usr/bin/python3".into(),
            args: cmd(&["/opt/t/convert.py"]),
            created_ms: 0,
            created_by: "t".into(),
        });
        assert!(p.check_exec(&cmd(&["/usr/bin/python3", "/opt/t/convert.py", "--fast"])).is_ok());
        let e = p.check_exec(&cmd(&["/usr/bin/python3", "-c", "import os"])).unwrap_err();
        assert!(e.contains("only with the leading arguments [/opt/t/convert.py]"), "{e}");
        assert!(p.check_exec(&cmd(&["python3", "/opt/t/convert.py"])).unwrap_err().contains("absolute"));
        assert!(p.check_exec(&[]).is_err());
        p.enforce = false;
        assert!(p.check_exec(&cmd(&["anything"])).is_ok());
    }

    #[test]
    fn shells_and_interpreters_are_known() {
        for p in ["/bin/sh", "/usr/bin/bash", "/usr/bin/python3.11", "/usr/bin/env", "/usr/local/bin/node"] {
            assert!(is_interpreter(p), "{p}");
        }
        for p in ["/usr/bin/true", "/opt/skein/convert", "/usr/bin/gzip"] {
            assert!(!is_interpreter(p), "{p}");
        }
    }
}
