//! Where a dataset lives: a local path (`/abs/path`, `file:///abs/path`)
//! or an object-store URL (`s3://bucket/key`), a single file or a folder of
//! files, and how DataFusion and the publisher reach it.
//!
//! `s3://` stores are built with `AmazonS3Builder::from_env()`: the usual
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` / `AWS_DEFAULT_REGION`, plus `AWS_ENDPOINT_URL` for an
//! S3-compatible endpoint (MinIO, moto...) and `AWS_ALLOW_HTTP=true` to
//! allow a plain-HTTP one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use skein_plan::{Dataset, Format};
use url::Url;

use crate::error::MigrateError;

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
    pub fn parse(url: &str) -> Result<Location, MigrateError> {
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
                let store = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .build()
                    .map_err(|e| MigrateError::Plan(format!("cannot set up S3 for {url:?}: {e}")))?;
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
