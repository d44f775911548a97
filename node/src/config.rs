//! `skein-node`'s settings: flags, each with a `SKEIN_*` environment
//! variable, and an optional TOML file whose keys are the flag names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

/// One member of a skein cluster: it stores the replicated task queue (Raft
/// over RocksDB), serves the HTTP API and runs tasks.
///
/// Start the first node with --bootstrap; start every other with --join
/// pointing at the HTTP address of any member. A node restarted on its data
/// directory rejoins with its old identity (no --bootstrap/--join needed).
/// SIGTERM drains the node: it stops leasing, lets running tasks finish
/// (or hands them back after --drain-timeout) and exits 0.
#[derive(Debug, Clone, Parser)]
#[command(name = "skein-node", version, after_help = EXAMPLES)]
pub struct Args {
    /// A TOML file with any of these settings (keys as the long flag names,
    /// with underscores: data_dir = "..."). Flags and env override it.
    #[arg(long, env = "SKEIN_CONFIG")]
    pub config: Option<PathBuf>,

    /// This node's Raft id: a number unique in the cluster, kept for life.
    #[arg(long, env = "SKEIN_ID")]
    pub id: Option<u64>,

    /// Address for Raft and node-to-node RPCs (tarpc over TCP).
    #[arg(long, env = "SKEIN_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Address for the HTTP API.
    #[arg(long, env = "SKEIN_HTTP")]
    pub http: Option<SocketAddr>,

    /// Where this node keeps its RocksDB and snapshots.
    #[arg(long, env = "SKEIN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Start a new cluster with this node as its first voter. Harmless on a
    /// node that is already initialized.
    #[arg(long, env = "SKEIN_BOOTSTRAP", conflicts_with = "join")]
    pub bootstrap: bool,

    /// Join the cluster that a member at this HTTP address belongs to (as a
    /// learner; the leader promotes it to voter while voters < --voters).
    #[arg(long, env = "SKEIN_JOIN")]
    pub join: Option<String>,

    /// How many voters the cluster aims for (3 or 5). With --role auto, a
    /// joining node becomes a voter, then a standby learner, then a worker.
    #[arg(long, env = "SKEIN_VOTERS")]
    pub voters: Option<usize>,

    /// Learners the cluster keeps beside its voters, up to date and ready
    /// to replace a voter that is gone for good. [default: 1]
    #[arg(long, env = "SKEIN_STANDBY_LEARNERS", value_name = "N")]
    pub standby_learners: Option<usize>,

    /// member: a Raft member (voter or standby learner), keeping the log
    /// in --data-dir. worker: not in Raft; it leases, heartbeats and
    /// completes over RPC to the members, keeps no log, and uses --data-dir
    /// for scratch space only. auto: whichever the cluster needs when this
    /// node joins (a member until it has --voters voters and
    /// --standby-learners learners, then a worker). [default: auto]
    #[arg(long, env = "SKEIN_ROLE", value_name = "ROLE")]
    pub role: Option<String>,

    /// The RPC address other nodes dial to reach this one (host names
    /// allowed, e.g. skein-0.skein.ns.svc:7800), when it differs from
    /// --listen (0.0.0.0 in a container). Sent again on every start, so a
    /// node restarted with a new address is found there. [default: --listen]
    #[arg(long, env = "SKEIN_ADVERTISE_RPC", value_name = "HOST:PORT")]
    pub advertise_rpc: Option<String>,

    /// The HTTP address others are told to use for this node. [default: --http]
    #[arg(long, env = "SKEIN_ADVERTISE_HTTP", value_name = "HOST:PORT")]
    pub advertise_http: Option<String>,

    /// Form the cluster only with N members: the node with the lowest
    /// --id among them bootstraps once it hears the other N-1 at --join
    /// (a comma-separated list of their HTTP addresses), and every other
    /// waits to be added. A member that lost its data directory then
    /// waits to be joined again: it never starts a second cluster.
    #[arg(long, env = "SKEIN_BOOTSTRAP_EXPECT", value_name = "N")]
    pub bootstrap_expect: Option<usize>,

    /// Take this node's id from the host name's trailing number plus one
    /// (skein-0 -> 1): a StatefulSet's pods keep their ordinal for life.
    #[arg(long, env = "SKEIN_ID_FROM_HOSTNAME", conflicts_with = "id")]
    pub id_from_hostname: bool,

    /// The leader removes a worker it has not heard from for this many
    /// seconds (its leases expire as usual before). [default: 60]
    #[arg(long, env = "SKEIN_WORKER_SILENCE", value_name = "SECONDS")]
    pub worker_silence: Option<u64>,

    /// The leader replaces a voter it has not reached for this many seconds
    /// with an up-to-date standby learner (the dead voter is removed; it
    /// can join again as a new learner). 0: never. [default: 60]
    #[arg(long, env = "SKEIN_REPLACE_VOTER_AFTER", value_name = "SECONDS")]
    pub replace_voter_after: Option<u64>,

    /// Check the settings, print them, and exit without starting (0: they
    /// are valid; 2: they are not, with the reason).
    #[arg(long)]
    pub check_config: bool,

    /// Concurrent transforms this node runs (default: the CPU count).
    #[arg(long, env = "SKEIN_SLOTS")]
    pub slots: Option<u32>,

    /// Queues this node takes tasks from, comma-separated (default: all).
    #[arg(long, env = "SKEIN_QUEUES", value_delimiter = ',')]
    pub queues: Option<Vec<String>>,

    /// Seconds a draining node waits for running tasks before handing them back.
    #[arg(long, env = "SKEIN_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,

    /// Log format: text or json.
    #[arg(long, env = "SKEIN_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Lease requests a worker keeps in flight at once (1: wait for each
    /// answer before asking again). For benchmarks.
    #[arg(long, env = "SKEIN_LEASES_IN_FLIGHT", hide = true)]
    pub leases_in_flight: Option<usize>,

    /// For fault-injection tests: dial VIA whenever a peer advertises ADDR
    /// (ADDR=VIA, repeatable), e.g. through a proxy that can cut the link.
    #[arg(long = "route", value_name = "ADDR=VIA", hide = true)]
    pub routes: Vec<String>,

    /// Append one JSON line per task start and per outcome report (sent,
    /// accepted or refused, with its fencing token) to this file: an audit
    /// trail of what this node's worker did, which the chaos checker reads.
    #[arg(long, env = "SKEIN_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,

    /// Start a new cluster from a backup (made with `skein admin backup
    /// FILE`): with --bootstrap, into an empty --data-dir only. The backup
    /// is checked whole first; the new cluster has every task, queue, plan,
    /// payload, result and history of the backup, hands back the leases it
    /// held, starts with this node as its only member, and grants fencing
    /// tokens of a new epoch, past any the old cluster can have granted.
    #[arg(long, env = "SKEIN_RESTORE", value_name = "FILE")]
    pub restore: Option<PathBuf>,

    /// For mixed-version tests: report the release and stored format of an
    /// older release (1: 0.1.0) to the leader, as a node not yet upgraded
    /// would, so that finalizing waits for it.
    #[arg(long, env = "SKEIN_BEHAVE_AS_FORMAT", value_name = "N", hide = true)]
    pub behave_as_format: Option<u32>,

    /// A directory with ca.pem, node.pem and node.key (made by `skein cert
    /// ca` and `skein cert node`): node-to-node RPCs become mutual TLS and
    /// the HTTP API HTTPS. The files are re-read when they change, so
    /// certificates rotate without a restart.
    #[arg(long, env = "SKEIN_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    /// off, permissive or required (default: required with --tls-dir, off
    /// without). permissive accepts TLS and plain connections and dials TLS
    /// first: the step between the two while certificates roll out.
    #[arg(long, env = "SKEIN_TLS_MODE", value_name = "MODE")]
    pub tls_mode: Option<String>,

    /// Allow a non-loopback --listen or --http address without TLS. Anyone
    /// who can reach such a node can then read its traffic and, over RPC,
    /// act as a member: only for networks you trust entirely.
    #[arg(long, env = "SKEIN_INSECURE")]
    pub insecure: bool,

    /// With --bootstrap: the first admin token, read from this file (for
    /// automation) instead of a new one written to <data-dir>/admin.token.
    #[arg(long, env = "SKEIN_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Serve /metrics without a token (for a scraper on a trusted network).
    #[arg(long, env = "SKEIN_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// The token --join presents to the member it joins (role operate or
    /// above). Prefer the environment variable: flags show in `ps`.
    #[arg(long, env = "SKEIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Requests per second one token may make to this node's HTTP API
    /// (a request without a token: one client address); past its burst the
    /// node answers 429 `rate_limited` with `Retry-After`. Each node counts
    /// its own. /healthz and /readyz are never limited. 0: no limit.
    /// [default: 5000: far above one client's pace, so that it bounds a runaway
    /// or flooding caller, not a busy one]
    #[arg(long, env = "SKEIN_REQUESTS_PER_SECOND_PER_TOKEN", value_name = "N")]
    pub requests_per_second_per_token: Option<u32>,

    /// Requests one token may make in a burst above its rate, after a quiet
    /// spell. [default: twice --requests-per-second-per-token]
    #[arg(long, env = "SKEIN_REQUEST_BURST_PER_TOKEN", value_name = "N")]
    pub request_burst_per_token: Option<u32>,

    /// Connections one client address (IPv6: one /64) may hold open at once
    /// on each of the HTTP and RPC listeners. Past it an HTTP client gets
    /// 429 `rate_limited` with `Retry-After` (over HTTPS: the connection is
    /// closed), an RPC connection is closed. 0: no limit. [default: 256]
    #[arg(long, env = "SKEIN_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,

    /// Connections the node holds open at once on each of the HTTP and RPC
    /// listeners, from all addresses; past it new ones are refused the same
    /// way. Keep it below the open-file limit (`ulimit -n`). 0: no limit.
    /// [default: 4096]
    #[arg(long, env = "SKEIN_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Memory one migration may use for its query (DataFusion's memory
    /// pool), e.g. 512MiB or 2GiB: sorts, aggregations and hive-partitioned
    /// writes spill to disk under the data directory past it; what cannot
    /// spill (a hash join's build side) fails the migration with an error
    /// naming this limit instead of growing the node. Per running migration:
    /// a node uses up to --slots times this. [default: no limit]
    #[arg(long, env = "SKEIN_MIGRATE_MEMORY", value_name = "SIZE", value_parser = parse_size)]
    pub migrate_memory: Option<u64>,

    /// Threads one migration's query uses (DataFusion's target_partitions).
    /// [default: the CPU count; with several --slots, 1 lets each slot use
    /// a core of its own]
    #[arg(long, env = "SKEIN_MIGRATE_THREADS", value_name = "N")]
    pub migrate_threads: Option<usize>,
}

/// Parses `512MiB`, `2GiB`, `1GB`, `300kB` or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a size like 512MiB, 2GiB or 1000000"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!("unknown size unit {other:?} in {text:?} (B, kB, KiB, MB, MiB, GB, GiB, TB, TiB)"))
        }
    };
    let bytes = n * mult as f64;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("{text:?} is not a size of at least one byte"));
    }
    Ok(bytes as u64)
}

/// What a node is in its cluster (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// A member if the cluster needs one when this node joins, else a worker.
    Auto,
    /// A Raft member: voter or learner.
    Member,
    /// Not in Raft: it runs tasks leased over RPC from the members.
    Worker,
}

/// This host's name (a pod's is its StatefulSet name and ordinal).
fn hostname() -> anyhow::Result<String> {
    let name = match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(n) => n,
        Err(_) => std::env::var("HOSTNAME").context("reading this host's name")?,
    };
    Ok(name.trim().to_string())
}

/// `skein-2` -> 3: a StatefulSet's ordinal plus one (ids start at 1).
pub fn id_from_hostname(name: &str) -> anyhow::Result<u64> {
    let digits: String = name.chars().rev().take_while(char::is_ascii_digit).collect();
    let digits: String = digits.chars().rev().collect();
    match digits.parse::<u64>() {
        Ok(n) if !digits.is_empty() => Ok(n + 1),
        _ => bail!("--id-from-hostname: the host name {name:?} does not end in a number (a StatefulSet pod's ordinal)"),
    }
}

/// `host:port` with a host name or an IP address and a port above 0.
fn check_host_port(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr.rsplit_once(':').ok_or("expected HOST:PORT")?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{port:?} is not a port")),
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name or an IP address"))
    }
}

/// The default of `--requests-per-second-per-token`.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 5000;
/// The default of `--max-connections-per-address`.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// The default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The limits per caller (`--requests-per-second-per-token`,
/// `--max-connections-per-address`, ...); see [`crate::api::limits`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Requests per second per token (or address, without one); 0: none.
    pub requests_per_second: u32,
    /// The bucket's size: requests at once after a quiet spell.
    pub request_burst: u32,
    /// Connections open at once, on each listener.
    pub connections: skein_tls::ConnectionLimits,
}

/// A secret that `Debug` never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

const EXAMPLES: &str = "\
Examples:
  # a first node, then two more joining it
  skein-node --id 1 --listen 127.0.0.1:7801 --http 127.0.0.1:7701 --data-dir /var/lib/skein/1 --bootstrap
  skein-node --id 2 --listen 127.0.0.1:7802 --http 127.0.0.1:7702 --data-dir /var/lib/skein/2 --join 127.0.0.1:7701
  skein-node --id 3 --listen 127.0.0.1:7803 --http 127.0.0.1:7703 --data-dir /var/lib/skein/3 --join 127.0.0.1:7701
  # a new cluster from a backup (skein admin backup skein.backup), into an empty directory
  skein-node --id 1 --listen 127.0.0.1:7801 --http 127.0.0.1:7701 --data-dir /var/lib/skein/new --bootstrap --restore skein.backup
Logs go to stderr; RUST_LOG=debug (or skein_node=debug) shows more.";

/// The same settings as read from a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    listen: Option<SocketAddr>,
    http: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    bootstrap: Option<bool>,
    join: Option<String>,
    voters: Option<usize>,
    standby_learners: Option<usize>,
    role: Option<String>,
    advertise_rpc: Option<String>,
    advertise_http: Option<String>,
    bootstrap_expect: Option<usize>,
    id_from_hostname: Option<bool>,
    worker_silence: Option<u64>,
    replace_voter_after: Option<u64>,
    slots: Option<u32>,
    queues: Option<Vec<String>>,
    drain_timeout: Option<u64>,
    log_format: Option<String>,
    journal: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
    tls_mode: Option<String>,
    insecure: Option<bool>,
    admin_token_file: Option<PathBuf>,
    metrics_public: Option<bool>,
    requests_per_second_per_token: Option<u32>,
    request_burst_per_token: Option<u32>,
    max_connections_per_address: Option<usize>,
    max_connections: Option<usize>,
    migrate_memory: Option<String>,
    migrate_threads: Option<usize>,
}

/// Settings resolved and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (0 on a worker started without one: the leader gives it one when it joins).
    pub id: u64,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub bootstrap: bool,
    pub join: Option<String>,
    pub voters: usize,
    /// Learners kept beside the voters, ready to replace one.
    pub standby_learners: usize,
    /// What this node is in the cluster (`--role`).
    pub role: NodeRole,
    /// What this node tells others to dial (`--advertise-rpc`, or `--listen`).
    pub advertise_rpc: String,
    /// What this node tells others its HTTP address is.
    pub advertise_http: String,
    /// Form the cluster only with this many members (`--bootstrap-expect`).
    pub bootstrap_expect: Option<usize>,
    /// A worker silent this long is removed by the leader.
    pub worker_silence: Duration,
    /// A voter unreachable this long is replaced by a standby learner (`None`: never).
    pub replace_voter_after: Option<Duration>,
    pub slots: u32,
    pub queues: Vec<String>,
    pub drain_timeout: Duration,
    pub log_json: bool,
    /// How often a worker renews its leases.
    pub heartbeat_interval: Duration,
    /// Lease requests a worker keeps in flight at most (see `worker.rs`).
    pub leases_in_flight: usize,
    /// Advertised peer RPC address -> address to dial (tests only).
    pub routes: std::collections::HashMap<String, String>,
    /// The worker's journal file, if any (see [`crate::worker::journal`]).
    pub journal: Option<PathBuf>,
    /// A backup to start a new cluster from (`--restore`, with `--bootstrap`).
    pub restore: Option<PathBuf>,
    /// The newest stored format this node says it reads and writes
    /// (`skein_raft::format::LATEST`, lower only in mixed-version tests).
    pub format: u32,
    /// The certificates for mutual TLS and HTTPS (`--tls-dir`).
    pub tls_dir: Option<PathBuf>,
    pub tls_mode: skein_tls::TlsMode,
    /// The bootstrap's first admin token comes from this file.
    pub admin_token_file: Option<PathBuf>,
    pub metrics_public: bool,
    /// What `--join` presents (`--token` / `SKEIN_TOKEN`).
    pub token: Option<Secret>,
    /// The limits per caller.
    pub limits: Limits,
    /// A migration's memory pool in bytes (`--migrate-memory`).
    pub migrate_memory: Option<u64>,
    /// A migration's query threads (`--migrate-threads`).
    pub migrate_threads: Option<usize>,
}

impl Config {
    /// Merges flags/env over the TOML file over the defaults.
    pub fn resolve(args: Args) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let role = match args.role.as_deref().or(file.role.as_deref()) {
            None | Some("auto") => NodeRole::Auto,
            Some("member") => NodeRole::Member,
            Some("worker") => NodeRole::Worker,
            Some(other) => bail!("--role must be auto, member or worker, not {other:?}"),
        };
        let id = if args.id_from_hostname || file.id_from_hostname.unwrap_or(false) {
            id_from_hostname(&hostname()?)?
        } else {
            match (args.id.or(file.id), role) {
                (Some(0), _) => bail!("--id must be at least 1"),
                (Some(id), _) => id,
                // The leader gives a worker without one an id of its own.
                (None, NodeRole::Worker) => 0,
                (None, _) => bail!("--id is required (a number unique in the cluster), or --id-from-hostname"),
            }
        };
        let listen = match (args.listen.or(file.listen), role) {
            (Some(l), _) => l,
            // A worker serves no RPCs: it only calls the members.
            (None, NodeRole::Worker) => SocketAddr::from(([127, 0, 0, 1], 0)),
            (None, _) => bail!("--listen is required (the RPC address)"),
        };
        let Some(http) = args.http.or(file.http) else { bail!("--http is required (the HTTP API address)") };
        let Some(data_dir) = args.data_dir.or(file.data_dir) else { bail!("--data-dir is required") };
        let bootstrap = args.bootstrap || file.bootstrap.unwrap_or(false);
        let join = args.join.or(file.join);
        if bootstrap && join.is_some() {
            bail!("--bootstrap and --join exclude each other: bootstrap the first node, join the others");
        }
        let voters = args.voters.or(file.voters).unwrap_or(3);
        if voters == 0 {
            bail!("--voters must be at least 1");
        }
        let standby_learners = args.standby_learners.or(file.standby_learners).unwrap_or(1);
        let bootstrap_expect = args.bootstrap_expect.or(file.bootstrap_expect);
        match bootstrap_expect {
            Some(0) => bail!("--bootstrap-expect must be at least 1"),
            Some(_) if bootstrap => {
                bail!("--bootstrap-expect and --bootstrap exclude each other: with --bootstrap-expect the members agree who bootstraps")
            }
            Some(n) if n > 1 && join.is_none() => {
                bail!("--bootstrap-expect {n} needs --join with the HTTP addresses of the other members (comma-separated)")
            }
            Some(_) if role == NodeRole::Worker => bail!("--bootstrap-expect is for members; a worker only joins"),
            _ => {}
        }
        if role == NodeRole::Worker && (bootstrap || join.is_none()) {
            bail!("a worker joins a cluster: give --join with the HTTP address of one or more members (comma-separated), not --bootstrap");
        }
        let advertise_rpc = args.advertise_rpc.or(file.advertise_rpc).unwrap_or_else(|| listen.to_string());
        let advertise_http = args.advertise_http.or(file.advertise_http).unwrap_or_else(|| http.to_string());
        for (flag, addr) in [("--advertise-rpc", &advertise_rpc), ("--advertise-http", &advertise_http)] {
            check_host_port(addr).map_err(|e| anyhow::anyhow!("{flag} {addr:?}: {e}"))?;
        }
        let worker_silence = args.worker_silence.or(file.worker_silence).unwrap_or(60);
        if worker_silence < 5 {
            bail!("--worker-silence must be at least 5 seconds (several heartbeats)");
        }
        let default_slots = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        let slots = args.slots.or(file.slots).unwrap_or(default_slots);
        let log_format = args.log_format.or(file.log_format).unwrap_or_else(|| "text".into());
        let log_json = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("--log-format must be text or json, not {other:?}"),
        };
        let mut routes = std::collections::HashMap::new();
        for r in &args.routes {
            let Some((addr, via)) = r.split_once('=') else { bail!("--route takes ADDR=VIA, not {r:?}") };
            routes.insert(addr.to_string(), via.to_string());
        }
        if args.restore.is_some() && !bootstrap {
            bail!("--restore starts a new cluster: give --bootstrap too (and an empty --data-dir)");
        }
        let format = args.behave_as_format.unwrap_or(skein_raft::format::LATEST);
        if !(1..=skein_raft::format::LATEST).contains(&format) {
            bail!("--behave-as-format must be 1 to {}", skein_raft::format::LATEST);
        }
        let tls_dir = args.tls_dir.or(file.tls_dir);
        let tls_mode = match args.tls_mode.or(file.tls_mode) {
            Some(m) => m.parse::<skein_tls::TlsMode>().map_err(|e| anyhow::anyhow!("--tls-mode: {e}"))?,
            None if tls_dir.is_some() => skein_tls::TlsMode::Required,
            None => skein_tls::TlsMode::Off,
        };
        if tls_mode != skein_tls::TlsMode::Off && tls_dir.is_none() {
            bail!("--tls-mode {tls_mode} needs --tls-dir (a directory with ca.pem, node.pem and node.key)");
        }
        let insecure = args.insecure || file.insecure.unwrap_or(false);
        if tls_mode == skein_tls::TlsMode::Off && !insecure {
            for (flag, addr) in [("--listen", listen), ("--http", http)] {
                if !addr.ip().is_loopback() {
                    bail!(
                        "{flag} {addr} is reachable from other hosts, and this node has no TLS: give it \
                         --tls-dir (see `skein cert --help`), or --insecure to serve in the clear anyway"
                    );
                }
            }
        }
        let admin_token_file = args.admin_token_file.or(file.admin_token_file);
        if admin_token_file.is_some() && !bootstrap && bootstrap_expect.is_none() {
            bail!("--admin-token-file sets the first admin token of a new cluster: give --bootstrap or --bootstrap-expect too");
        }
        let requests_per_second = args
            .requests_per_second_per_token
            .or(file.requests_per_second_per_token)
            .unwrap_or(DEFAULT_REQUESTS_PER_SECOND);
        let request_burst = match args.request_burst_per_token.or(file.request_burst_per_token) {
            Some(0) if requests_per_second > 0 => {
                bail!("--request-burst-per-token must be at least 1 (or turn the limit off: --requests-per-second-per-token 0)")
            }
            Some(burst) => burst,
            None => requests_per_second.saturating_mul(2),
        };
        let limits = Limits {
            requests_per_second,
            request_burst,
            connections: skein_tls::ConnectionLimits {
                per_address: args
                    .max_connections_per_address
                    .or(file.max_connections_per_address)
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
                total: args.max_connections.or(file.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS),
            },
        };
        let migrate_memory = match (args.migrate_memory, &file.migrate_memory) {
            (Some(m), _) => Some(m),
            (None, Some(text)) => Some(parse_size(text).map_err(|e| anyhow::anyhow!("migrate_memory: {e}"))?),
            (None, None) => None,
        };
        if migrate_memory.is_some_and(|m| m < 1 << 20) {
            bail!("--migrate-memory must be at least 1MiB");
        }
        let migrate_threads = args.migrate_threads.or(file.migrate_threads);
        if migrate_threads == Some(0) {
            bail!("--migrate-threads must be at least 1");
        }
        Ok(Config {
            migrate_memory,
            migrate_threads,
            limits,
            tls_dir,
            tls_mode,
            admin_token_file,
            metrics_public: args.metrics_public || file.metrics_public.unwrap_or(false),
            token: args.token.map(Secret),
            format,
            restore: args.restore,
            routes,
            journal: args.journal.or(file.journal),
            id,
            listen,
            http,
            data_dir,
            bootstrap,
            join,
            voters,
            standby_learners,
            role,
            advertise_rpc,
            advertise_http,
            bootstrap_expect,
            worker_silence: Duration::from_secs(worker_silence),
            replace_voter_after: match args.replace_voter_after.or(file.replace_voter_after).unwrap_or(60) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            slots,
            queues: args.queues.or(file.queues).unwrap_or_default(),
            drain_timeout: Duration::from_secs(args.drain_timeout.or(file.drain_timeout).unwrap_or(30)),
            log_json,
            heartbeat_interval: Duration::from_millis(1_000),
            leases_in_flight: args.leases_in_flight.unwrap_or(4).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        Config::resolve(Args::try_parse_from(std::iter::once("skein-node").chain(args.iter().copied()))?)
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3 parsecs").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("0").is_err());
        let c = parse(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--http",
            "127.0.0.1:2",
            "--data-dir",
            "/tmp/x",
            "--migrate-memory",
            "512MiB",
            "--migrate-threads",
            "1",
        ])
        .unwrap();
        assert_eq!(c.migrate_memory, Some(512 << 20));
        assert_eq!(c.migrate_threads, Some(1));
        let err = parse(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--http",
            "127.0.0.1:2",
            "--data-dir",
            "/tmp/x",
            "--migrate-memory",
            "100kB",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("at least 1MiB"), "{err}");
    }

    #[test]
    fn flags_resolve_with_defaults() {
        let c = parse(&[
            "--id",
            "2",
            "--listen",
            "127.0.0.1:1",
            "--http",
            "127.0.0.1:2",
            "--data-dir",
            "/tmp/x",
            "--join",
            "127.0.0.1:3",
        ])
        .unwrap();
        assert_eq!((c.id, c.voters, c.bootstrap, c.join.as_deref()), (2, 3, false, Some("127.0.0.1:3")));
        assert!(c.slots >= 1);
        assert_eq!(
            c.limits,
            Limits {
                requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
                request_burst: 2 * DEFAULT_REQUESTS_PER_SECOND,
                connections: skein_tls::ConnectionLimits {
                    per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
                    total: DEFAULT_MAX_CONNECTIONS
                },
            }
        );
    }

    #[test]
    fn limits_are_set_by_flags_and_zero_turns_them_off() {
        let c = node_on(
            "127.0.0.1:1",
            "127.0.0.1:2",
            &["--requests-per-second-per-token", "5", "--max-connections-per-address", "0", "--max-connections", "9"],
        )
        .unwrap();
        assert_eq!((c.limits.requests_per_second, c.limits.request_burst), (5, 10));
        assert_eq!((c.limits.connections.per_address, c.limits.connections.total), (0, 9));
        let c = node_on("127.0.0.1:1", "127.0.0.1:2", &["--request-burst-per-token", "1"]).unwrap();
        assert_eq!((c.limits.requests_per_second, c.limits.request_burst), (DEFAULT_REQUESTS_PER_SECOND, 1));
        let e = node_on("127.0.0.1:1", "127.0.0.1:2", &["--request-burst-per-token", "0"]).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let c = node_on("127.0.0.1:1", "127.0.0.1:2", &["--requests-per-second-per-token", "0"]).unwrap();
        assert_eq!(c.limits.requests_per_second, 0);
    }

    #[test]
    fn missing_id_is_a_clear_error() {
        let e = parse(&["--listen", "127.0.0.1:1", "--http", "127.0.0.1:2", "--data-dir", "/tmp/x"]).unwrap_err();
        assert!(e.to_string().contains("--id is required"), "{e}");
    }

    #[test]
    fn toml_file_fills_what_flags_leave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 7\nlisten = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\ndata_dir = \"/d\"\nslots = 3\n",
        )
        .unwrap();
        let c = parse(&["--config", path.to_str().unwrap(), "--slots", "5", "--bootstrap"]).unwrap();
        assert_eq!((c.id, c.slots, c.bootstrap), (7, 5, true));
        std::fs::write(&path, "id = 7\nbogus = 1\n").unwrap();
        assert!(parse(&["--config", path.to_str().unwrap()]).is_err());
    }

    fn node_on(listen: &str, http: &str, extra: &[&str]) -> anyhow::Result<Config> {
        let mut args = vec!["--id", "1", "--listen", listen, "--http", http, "--data-dir", "/tmp/x"];
        args.extend_from_slice(extra);
        parse(&args)
    }

    #[test]
    fn a_non_loopback_address_without_tls_is_refused() {
        for (listen, http) in [("0.0.0.0:1", "127.0.0.1:2"), ("127.0.0.1:1", "10.1.2.3:2")] {
            let e = node_on(listen, http, &[]).unwrap_err().to_string();
            assert!(e.contains("no TLS") && e.contains("--insecure"), "{e}");
            let c = node_on(listen, http, &["--insecure"]).unwrap();
            assert_eq!(c.tls_mode, skein_tls::TlsMode::Off);
        }
        assert!(node_on("127.0.0.1:1", "127.0.0.1:2", &[]).is_ok());
        let c = node_on("0.0.0.0:1", "0.0.0.0:2", &["--tls-dir", "/etc/skein/tls"]).unwrap();
        assert_eq!(c.tls_mode, skein_tls::TlsMode::Required);
        let e = node_on("127.0.0.1:1", "127.0.0.1:2", &["--tls-mode", "required"]).unwrap_err();
        assert!(e.to_string().contains("needs --tls-dir"), "{e}");
        let e = node_on("127.0.0.1:1", "127.0.0.1:2", &["--tls-dir", "/d", "--tls-mode", "bogus"]).unwrap_err();
        assert!(e.to_string().contains("--tls-mode"), "{e}");
    }
}
