//! Where a dataset lives: a local path (`/abs/path`, `file:///abs/path`)
//! or an object-store URL (`s3://bucket/key`), a single file or a folder of
//! files, and how DataFusion and the publisher reach it.
//!
//! How an `s3://` store finds its endpoint and credentials
//! ([`crate::roots::s3_store`] has the details):
//!
//! - Under an enforced policy, from the data root that holds the location,
//!   and from nothing else: the root's endpoint, region (`us-east-1` if it
//!   names none) and `allow_http`, and its credentials: `env`
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally
//!   `AWS_SESSION_TOKEN`, in the node's environment; missing ones are an
//!   error), `file:PATH` (`access_key_id=`, `secret_access_key=`, optionally
//!   `session_token=` lines) or `anonymous` (unsigned requests). Other
//!   `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`...) are ignored.
//! - Without a policy, or while it is not enforced, from the environment as
//!   `AmazonS3Builder::from_env()` reads it: `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//!   `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for an S3-compatible endpoint
//!   (MinIO, moto...) and `AWS_ALLOW_HTTP=true` to allow a plain-HTTP one.
//!   The keys must be there (or `AWS_SKIP_SIGNATURE=true`, for a public
//!   bucket): without them the location is refused.
//!
//! Either way a store never asks the cloud's instance metadata service
//! (`169.254.169.254`), nor web identity or container credential
//! endpoints: it is always built with a credential provider of skein's own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use skein_plan::{Dataset, Format};
use skein_raft::fsm::policy::DataRoot;
use url::Url;

use crate::error::MigrateError;
use crate::roots::{s3_store, Env};

/// A parsed dataset location.
#[derive(Debug, Clone)]
pub enum Location {
    Local {
        path: PathBuf,
        folder: bool,
    },
    Remote {
        /// `s3://bucket`: what DataFusion registers the store under.
        base: Url,
        store: Arc<dyn ObjectStore>,
        /// The key (a prefix for a folder), without a trailing slash.
        key: ObjectPath,
        folder: bool,
    },
}

impl Location {
    /// Parses a dataset URL. A URL ending in `/`, or a local path that is a
    /// directory, or an object key without a known extension, is a folder.
    /// An object store is set up from the process's environment (no data
    /// root applies): see the module docs.
    pub fn parse(url: &str) -> Result<Location, MigrateError> {
        Location::parse_in(url, None, &Env::process())
    }

    /// Parses a dataset URL under `root`, the data root that holds it when
    /// the policy is enforced ([`crate::roots::check_location`]): an object
    /// store is then set up from the root alone. `env` is where `env`
    /// credentials (with a root) or the whole setup (without one) are read.
    pub fn parse_in(url: &str, root: Option<&DataRoot>, env: &Env) -> Result<Location, MigrateError> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("file://") {
            return Ok(Location::local(rest));
        }
        if !url.contains("://") {
            return Ok(Location::local(url));
        }
        let parsed = Url::parse(url).map_err(|e| MigrateError::Plan(format!("invalid dataset URL {url:?}: {e}")))?;
        match parsed.scheme() {
            "s3" | "s3a" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| MigrateError::Plan(format!("{url:?} names no bucket (s3://bucket/key)")))?
                    .to_string();
                let store = s3_store(&bucket, root, env)?;
                let raw_key = parsed.path().trim_start_matches('/');
                let folder = raw_key.is_empty() || raw_key.ends_with('/') || Format::from_extension(raw_key).is_none();
                let key = ObjectPath::from(raw_key.trim_end_matches('/'));
                let base = Url::parse(&format!("s3://{bucket}"))
                    .map_err(|e| MigrateError::Plan(format!("invalid bucket in {url:?}: {e}")))?;
                Ok(Location::Remote { base, store: Arc::new(store), key, folder })
            }
            other => Err(MigrateError::Plan(format!(
                "unsupported URL scheme {other:?} in {url:?} (a local path, file:// or s3://)"
            ))),
        }
    }

    fn local(path: &str) -> Location {
        let folder = path.ends_with('/') || Path::new(path).is_dir();
        let p = PathBuf::from(path.trim_end_matches('/'));
        let p = if p.as_os_str().is_empty() { PathBuf::from("/") } else { p };
        let p = std::path::absolute(&p).unwrap_or(p);
        Location::Local { path: p, folder }
    }

    pub fn is_folder(&self) -> bool {
        match self {
            Location::Local { folder, .. } | Location::Remote { folder, .. } => *folder,
        }
    }

    /// The string DataFusion reads this dataset from (a folder ends in `/`).
    pub fn table_path(&self) -> String {
        let slash = if self.is_folder() { "/" } else { "" };
        match self {
            Location::Local { path, .. } => format!("{}{slash}", path.display()),
            Location::Remote { base, key, .. } => format!("{}/{}{slash}", base.as_str().trim_end_matches('/'), key),
        }
    }

    /// A display form for messages and results.
    pub fn display(&self) -> String {
        match self {
            Location::Local { path, folder } => format!("file://{}{}", path.display(), if *folder { "/" } else { "" }),
            Location::Remote { .. } => self.table_path(),
        }
    }

    /// The file name of a file dataset (`None` for a folder).
    pub fn file_name(&self) -> Option<String> {
        if self.is_folder() {
            return None;
        }
        match self {
            Location::Local { path, .. } => path.file_name().map(|n| n.to_string_lossy().into_owned()),
            Location::Remote { key, .. } => key.filename().map(str::to_string),
        }
    }
}

/// The file extension DataFusion should list for a dataset: the file's own
/// for a single file, the format's for a folder.
pub fn listing_extension(loc: &Location, format: Format) -> String {
    match loc.file_name() {
        Some(name) => match name.rsplit_once('.') {
            Some((_, ext)) => format!(".{ext}"),
            None => String::new(),
        },
        None => format!(".{}", format.extension()),
    }
}

/// The dataset's format, or a plan error.
pub fn format_of(d: &Dataset, which: &str) -> Result<Format, MigrateError> {
    d.format()
        .ok_or_else(|| MigrateError::Plan(format!("the {which}'s format is not given and {:?} does not say", d.url)))
}
