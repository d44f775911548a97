//! `skein exec`, `skein roots`, `skein policy`: what the fleet may run and touch.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// Allow a program (by absolute path), optionally only with fixed leading arguments.
    Allow {
        /// The program's absolute path (`$(command -v python3)`).
        program: String,
        /// The arguments every call must start with (repeatable, in order):
        /// `--args /opt/t/convert.py` allows that script and nothing else.
        #[arg(long = "args", value_name = "ARG", num_args = 1.., allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The allowed programs and the policy's mode.
    List,
    /// Remove a program's rules (all of them, or only the one with exactly --args).
    Deny {
        program: String,
        #[arg(long = "args", value_name = "ARG", num_args = 1.., allow_hyphen_values = true)]
        args: Option<Vec<String>>,
    },
}

pub const EXEC_HELP: &str = "\
`exec` tasks and plan steps run only programs an admin allowed. A new cluster
allows none. Programs are named by absolute path; a rule may also fix the
leading arguments, so that `/usr/bin/python3 --args /opt/t/convert.py` allows
that one script and not `python3 -c ...`. A shell line needs /bin/sh allowed
explicitly, and allowing a shell or an interpreter without fixed arguments
allows anything (skein warns). Tasks naming another program are refused (403)
when enqueued, and the worker checks again before it starts anything.";

pub const EXEC_EXAMPLES: &str = "\
Examples:
  skein exec allow /usr/bin/gzip
  skein exec allow \"$(command -v python3)\" --args /opt/transforms/csv_to_jsonl.py
  skein exec list
  skein exec deny /usr/bin/gzip";

#[derive(Debug, Subcommand)]
pub enum RootsCommand {
    /// Allow plans to read and write under a root.
    Allow {
        /// `file:///data/` (or `/data/`) or `s3://bucket/prefix/`.
        url: String,
        /// An object store's endpoint (required for s3://): https://s3.eu-west-1.amazonaws.com, http://minio:9000.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// Where an object store's credentials come from: env (AWS_ACCESS_KEY_ID and
        /// AWS_SECRET_ACCESS_KEY on every node), file:/abs/path (access_key_id= and
        /// secret_access_key= lines), or anonymous. Never the instance metadata service.
        #[arg(long)]
        credentials: Option<String>,
        /// Allow a plain http:// endpoint.
        #[arg(long)]
        allow_http: bool,
    },
    /// The allowed roots and the policy's mode.
    List,
    /// Remove a root.
    Deny { url: String },
}

pub const ROOTS_HELP: &str = "\
Plans read and write only under data roots an admin allowed; a new cluster has
none. `..`, a symbolic link leading out of a root, and skein's own _skein/
folders are refused when a plan is applied, and the worker checks again
(resolving links) right before it opens anything. An object-store root names
its endpoint and where its credentials come from: a plan makes a node contact
that endpoint and nothing else.";

pub const ROOTS_EXAMPLES: &str = "\
Examples:
  skein roots allow file:///data/
  skein roots allow s3://lake/raw/ --endpoint https://s3.eu-west-1.amazonaws.com --region eu-west-1 --credentials env
  skein roots allow s3://scratch/ --endpoint http://127.0.0.1:9000 --allow-http --credentials file:/etc/skein/s3.creds
  skein roots list
  skein roots deny s3://lake/raw/";

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The mode, the allowed programs and the data roots.
    Show,
    /// Enforce the exec allow list and the data roots (a new cluster's mode).
    Enforce,
    /// Allow every program and location (an upgraded cluster's mode, until enforced).
    Open,
}

pub const POLICY_HELP: &str = "\
A new cluster enforces its (empty) exec allow list and data roots from its
first entry. A cluster upgraded from 0.3.0 or older runs in `open` mode, as
before: any program, any location. Allow what the fleet needs (skein exec
allow, skein roots allow), then `skein policy enforce`.";
