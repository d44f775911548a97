//! The worker's side of the data-root policy (issue 15): a plan reads and
//! writes only under the data roots an admin allowed, runs only allowed
//! programs, and makes the node contact nothing but a root's own endpoint.
//!
//! The node checks a plan lexically when it is applied
//! ([`PolicyState::root_of`], [`PolicyState::check_exec`]); the worker
//! checks again against its own applied state, as late as it can:
//!
//! - [`check_location`], before anything is parsed or opened: the location
//!   is under an allowed root, has no `.` or `..` parts and is not in a
//!   `_skein/` control folder;
//! - [`confine_source`] right before a local source is registered, and
//!   [`confine_target`] right before a local target is staged and again
//!   right before it is published: symbolic links are resolved (of the
//!   path, or of its nearest existing ancestor for what does not exist
//!   yet, and of the root's own path), and the resolved path must still be
//!   under the resolved root and, for the dataset itself, not in a
//!   `_skein/` folder. A source folder is walked: a link anywhere in it
//!   that leads out of the root is refused too (DataFusion follows links
//!   when it lists a folder). Links and files change between the apply and
//!   the run, which is why this is done here and not only at apply;
//! - [`s3_store`]: an object-store location is reached with its root's
//!   endpoint, region and credentials only, never with whatever the
//!   environment says, and never through the cloud's instance metadata;
//! - `exec` steps: [`check_exec`] before the program is started.
//!
//! What remains: a link swapped in between the last check and DataFusion's
//! `open` (microseconds) is not caught; only the kernel could close that
//! window (`openat2` with `RESOLVE_BENEATH`), which DataFusion's readers do
//! not use.
//!
//! # Object-store credentials
//!
//! `object_store`'s `AmazonS3Builder::build` uses, in this order: a
//! credential provider given with `with_credentials`, static keys, a web
//! identity token, ECS or EKS container credentials, and last the
//! instance metadata service (`http://169.254.169.254`). [`s3_store`]
//! always gives a provider of its own, so `build` never reaches the rest of
//! that chain: there is no path to the metadata service, whatever the
//! environment holds.
//!
//! - With a data root (the policy enforced): the builder starts empty
//!   (never `from_env`), takes the bucket, the root's endpoint, its region
//!   (`us-east-1` if none) and its `allow_http`, and credentials as the
//!   root says: `env` reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//!   (and `AWS_SESSION_TOKEN`) and fails if one is missing; `file:PATH`
//!   reads `access_key_id=`, `secret_access_key=` (and `session_token=`)
//!   lines; `anonymous` sends unsigned requests.
//! - Without one (no policy, or not enforced): the builder is filled from
//!   the `AWS_*` environment as `from_env` would (endpoint, region,
//!   `AWS_ALLOW_HTTP`...), but credentials must be static keys
//!   (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`) or
//!   `AWS_SKIP_SIGNATURE=true` (a public bucket); anything else fails with
//!   a [`MigrateError::Credentials`] saying so. Web identity, container
//!   credentials and instance profiles are not used.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::StaticCredentialProvider;
use skein_raft::fsm::policy::{Credentials, DataRoot, PolicyState};

use crate::error::MigrateError;
use crate::location::Location;
use crate::publish::{LocalTarget, CONTROL_DIR};

// ----- locations ---------------------------------------------------------------

/// The lexical check of a dataset location (`which`: `source` or
/// `target`): `Ok(None)` without a policy or while it is not enforced
/// (`.`, `..` and `_skein` are refused even then, when a policy is given);
/// the root that holds `url` when enforced; [`MigrateError::Forbidden`]
/// when none does.
pub fn check_location(policy: Option<&PolicyState>, which: &str, url: &str) -> Result<Option<DataRoot>, MigrateError> {
    let Some(policy) = policy else { return Ok(None) };
    match policy.root_of(url) {
        Ok(root) => Ok(root.cloned()),
        Err(e) => Err(MigrateError::Forbidden(format!("the {which}: {e}"))),
    }
}

/// Whether `command` (program, then arguments) may run under `policy`
/// (always without one), or [`MigrateError::Forbidden`] saying why not.
pub fn check_exec(policy: Option<&PolicyState>, index: usize, command: &[String]) -> Result<(), MigrateError> {
    if command.is_empty() {
        return Err(MigrateError::Plan(format!("step {index}: exec command is empty")));
    }
    match policy {
        None => Ok(()),
        Some(p) => p
            .check_exec(command)
            .map_err(|e| MigrateError::Forbidden(format!("step {index} (exec): {e}; the program was not started"))),
    }
}

/// The local path of a `file://` root (`None` for an object-store root).
pub fn local_root_path(root: &DataRoot) -> Option<PathBuf> {
    root.root.url.strip_prefix("file://").map(PathBuf::from)
}

/// `path` with its symbolic links resolved. A path that does not exist
/// yet (a new target) is resolved through its nearest existing ancestor,
/// the missing names appended as they are. A link whose target does not
/// exist is an error: writing through it would create its target,
/// wherever that is.
pub fn resolve(path: &Path) -> Result<PathBuf, String> {
    let mut existing = path.to_path_buf();
    let mut missing: Vec<OsString> = Vec::new();
    loop {
        match std::fs::symlink_metadata(&existing) {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Err(format!("cannot resolve {}: no existing ancestor", path.display()));
                };
                missing.push(name);
                if !existing.pop() {
                    return Err(format!("cannot resolve {}: no existing ancestor", path.display()));
                }
            }
            Err(e) => return Err(format!("cannot inspect {}: {e}", existing.display())),
        }
    }
    let mut resolved = std::fs::canonicalize(&existing).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            format!(
                "{} is (or goes through) a symbolic link whose target does not exist; remove the link or make it \
                 point inside the data root",
                existing.display()
            )
        } else {
            format!("cannot resolve the symbolic links of {}: {e}", existing.display())
        }
    })?;
    for name in missing.into_iter().rev() {
        resolved.push(name);
    }
    Ok(resolved)
}

/// Confines the local `path` (the `which` dataset) to `root`: its resolved
/// form must be under the root's resolved path and, unless `control` (a
/// path inside skein's own control folder, which the publisher writes),
/// not in a `_skein/` folder. Returns the resolved path.
pub fn confine(path: &Path, root: &DataRoot, which: &str, control: bool) -> Result<PathBuf, MigrateError> {
    let url = &root.root.url;
    let Some(root_path) = local_root_path(root) else {
        return Err(MigrateError::Forbidden(format!(
            "the {which} {} is a local path but its data root {url} is not a local root",
            path.display()
        )));
    };
    let forbid = |e: String| MigrateError::Forbidden(format!("the {which} {}: {e}", path.display()));
    let resolved_root = resolve(&root_path).map_err(|e| forbid(format!("checking its data root {url}: {e}")))?;
    let resolved = resolve(path).map_err(forbid)?;
    let Ok(below) = resolved.strip_prefix(&resolved_root) else {
        return Err(MigrateError::Forbidden(format!(
            "the {which} {} resolves to {}, outside its data root {url} (on this node {}): a symbolic link leads out \
             of the root. Replace the link with the data itself, or have an admin allow a data root that holds {} \
             (`skein roots allow`)",
            path.display(),
            resolved.display(),
            resolved_root.display(),
            resolved.display()
        )));
    };
    if !control && below.components().any(|c| c.as_os_str() == CONTROL_DIR) {
        return Err(MigrateError::Forbidden(format!(
            "the {which} {} resolves to {}, inside one of skein's own {CONTROL_DIR}/ control folders: a plan cannot \
             read or write them. Use a path outside {CONTROL_DIR}/ (and no link into one)",
            path.display(),
            resolved.display()
        )));
    }
    Ok(resolved)
}

/// Checks every symbolic link in the folder `dir` (recursively, following
/// links that stay inside as DataFusion's listing does): each must resolve
/// under `root`. Returns how many entries were looked at.
pub fn confine_tree(dir: &Path, root: &DataRoot, which: &str) -> Result<usize, MigrateError> {
    let cannot = |d: &Path, e: std::io::Error| {
        MigrateError::Forbidden(format!("the {which}: cannot check the folder {}: {e}", d.display()))
    };
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut entries = 0usize;
    while let Some(d) = stack.pop() {
        let key = std::fs::canonicalize(&d).map_err(|e| cannot(&d, e))?;
        if !seen.insert(key) {
            continue; // a link back into a folder already walked
        }
        for entry in std::fs::read_dir(&d).map_err(|e| cannot(&d, e))? {
            let entry = entry.map_err(|e| cannot(&d, e))?;
            entries += 1;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| cannot(&path, e))?;
            if kind.is_symlink() {
                let resolved = confine(&path, root, which, true)?;
                if resolved.is_dir() {
                    stack.push(path);
                }
            } else if kind.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(entries)
}

/// Confines a local source (the file, or the folder and every link in it)
/// to its root, right before it is opened. Nothing to do without a root
/// or for an object-store source.
pub fn confine_source(loc: &Location, root: Option<&DataRoot>) -> Result<(), MigrateError> {
    let (Some(root), Location::Local { path, .. }) = (root, loc) else { return Ok(()) };
    let resolved = confine(path, root, "source", false)?;
    if resolved.is_dir() {
        confine_tree(path, root, "source")?;
    }
    Ok(())
}

/// Confines a local target to its root, right before the attempt under
/// `token` stages into it and again right before it publishes: the
/// dataset's path and the file readers see (not in `_skein/`), the
/// attempt's staging path and every link in the target's control folder
/// (under the root).
pub fn confine_target(
    path: &Path,
    target: &LocalTarget,
    token: u64,
    root: Option<&DataRoot>,
) -> Result<(), MigrateError> {
    let Some(root) = root else { return Ok(()) };
    confine(path, root, "target", false)?;
    confine(&target.final_path, root, "target", false)?;
    let control = confine(&target.control, root, "target's control folder", true)?;
    if control.is_dir() {
        confine_tree(&target.control, root, "target's control folder")?;
    }
    confine(&target.staged(token), root, "target's staging file", true)?;
    Ok(())
}

// ----- object stores -----------------------------------------------------------

/// The `AWS_*` environment an object store is set up from: the process's
/// ([`Env::process`]) or, in tests, one given explicitly.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process's `AWS_*` variables (read at each call: rotated keys
    /// are seen by the next migration).
    pub fn process() -> Env {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect()
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str).filter(|v| !v.trim().is_empty())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Env {
        Env { vars: iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }
}

/// A credential provider that is given but never asked (unsigned
/// requests): set so that `build` never looks for one elsewhere.
fn unsigned() -> Arc<StaticCredentialProvider<AwsCredential>> {
    Arc::new(StaticCredentialProvider::new(AwsCredential {
        key_id: "anonymous".into(),
        secret_key: String::new(),
        token: None,
    }))
}

fn keys(key_id: String, secret_key: String, token: Option<String>) -> Arc<StaticCredentialProvider<AwsCredential>> {
    Arc::new(StaticCredentialProvider::new(AwsCredential { key_id, secret_key, token }))
}

/// The S3 store for `bucket`: set up from `root` when a data root applies,
/// from `env` otherwise; never able to reach the instance metadata
/// service (see the module docs).
pub fn s3_store(bucket: &str, root: Option<&DataRoot>, env: &Env) -> Result<AmazonS3, MigrateError> {
    let builder = match root {
        Some(root) => builder_from_root(bucket, root, env)?,
        None => builder_from_env(bucket, env)?,
    };
    builder.build().map_err(|e| MigrateError::Plan(format!("cannot set up S3 for bucket {bucket:?}: {e}")))
}

/// From the root only: its endpoint, region, `allow_http` and credentials.
pub fn builder_from_root(bucket: &str, root: &DataRoot, env: &Env) -> Result<AmazonS3Builder, MigrateError> {
    let r = &root.root;
    let url = &r.url;
    let Some(endpoint) = r.endpoint.as_deref().filter(|e| !e.is_empty()) else {
        return Err(MigrateError::Forbidden(format!(
            "the object-store root {url} names no endpoint: an admin sets it with `skein roots allow {url} --endpoint \
             URL`"
        )));
    };
    let builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_region(r.region.as_deref().filter(|s| !s.is_empty()).unwrap_or("us-east-1"))
        .with_allow_http(r.allow_http)
        .with_virtual_hosted_style_request(false);
    Ok(match &r.credentials {
        Credentials::Anonymous => builder.with_skip_signature(true).with_credentials(unsigned()),
        Credentials::Env => {
            let missing: Vec<&str> =
                ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].into_iter().filter(|k| env.get(k).is_none()).collect();
            if !missing.is_empty() {
                return Err(MigrateError::Credentials(format!(
                    "the object-store root {url} takes its credentials from the node's environment, but {} {} not \
                     set on this node: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for \
                     temporary keys) in the environment of every node, or have an admin give the root a \
                     credentials file (`--credentials file:PATH`)",
                    missing.join(" and "),
                    if missing.len() == 1 { "is" } else { "are" }
                )));
            }
            let (id, secret) = (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"));
            builder.with_credentials(keys(
                id.unwrap_or_default().to_string(),
                secret.unwrap_or_default().to_string(),
                env.get("AWS_SESSION_TOKEN").map(str::to_string),
            ))
        }
        Credentials::File(path) => {
            let (id, secret, token) = read_credentials_file(Path::new(path))
                .map_err(|e| MigrateError::Credentials(format!("the object-store root {url}: {e}")))?;
            builder.with_credentials(keys(id, secret, token))
        }
        Credentials::None => {
            return Err(MigrateError::Forbidden(format!(
                "the object-store root {url} says where no credentials come from: an admin gives it `--credentials \
                 env`, `file:PATH` or `anonymous`"
            )))
        }
    })
}

/// Without a root: the `AWS_*` environment as `from_env` reads it, but
/// only static keys or unsigned requests.
pub fn builder_from_env(bucket: &str, env: &Env) -> Result<AmazonS3Builder, MigrateError> {
    let mut builder = AmazonS3Builder::new();
    for (k, v) in &env.vars {
        if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, v);
        }
    }
    let builder = builder.with_bucket_name(bucket);
    let value = |k: AmazonS3ConfigKey| builder.get_config_value(&k).filter(|v| !v.trim().is_empty());
    let id = value(AmazonS3ConfigKey::AccessKeyId);
    let secret = value(AmazonS3ConfigKey::SecretAccessKey);
    let token = value(AmazonS3ConfigKey::Token);
    let skip = value(AmazonS3ConfigKey::SkipSignature)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "on" | "yes" | "y"));
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(builder.with_credentials(keys(id, secret, token))),
        (Some(_), None) | (None, Some(_)) => Err(MigrateError::Credentials(format!(
            "s3://{bucket}: only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set in the node's environment; \
             set both"
        ))),
        (None, None) if skip => Ok(builder.with_skip_signature(true).with_credentials(unsigned())),
        (None, None) => Err(MigrateError::Credentials(format!(
            "no credentials for s3://{bucket}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the node's \
             environment (or AWS_SKIP_SIGNATURE=true for a public bucket), or have an admin allow a data root for \
             it with its endpoint and credentials (`skein roots allow`). skein never asks the cloud's instance \
             metadata service, and does not use web identity or container credentials"
        ))),
    }
}

/// Reads a credentials file: `access_key_id=...`, `secret_access_key=...`
/// and optionally `session_token=...` lines (blank lines and `#` comments
/// are skipped; an `aws_` prefix and upper case are accepted). Errors
/// never quote the file's content.
pub fn read_credentials_file(path: &Path) -> Result<(String, String, Option<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read its credentials file {}: {}", path.display(), e.kind()))?;
    let (mut id, mut secret, mut token) = (None, None, None);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("{} line {}: not a key=value line", path.display(), i + 1));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        let slot = match key.strip_prefix("aws_").unwrap_or(&key) {
            "access_key_id" => &mut id,
            "secret_access_key" => &mut secret,
            "session_token" => &mut token,
            _ => {
                return Err(format!(
                    "{} line {}: unknown key (expected access_key_id, secret_access_key or session_token)",
                    path.display(),
                    i + 1
                ))
            }
        };
        if !value.is_empty() {
            *slot = Some(value);
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok((id, secret, token)),
        (id, _) => Err(format!(
            "its credentials file {} has no {} line",
            path.display(),
            if id.is_none() { "access_key_id=" } else { "secret_access_key=" }
        )),
    }
}
