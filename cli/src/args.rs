//! The command line, as clap derives it: every command, flag and help text,
//! except the flags of `skein queue set`, which are built from the table of
//! queue settings (see [`QueueSetArgs`]).
//!
//! Parsing here is pure (no I/O besides `--payload-file`, which is read later
//! by the command), so the tests below check it with `try_parse_from`.

use std::path::PathBuf;

use std::sync::OnceLock;

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use skein_raft::api::DependencySpec;
use skein_raft::fsm::types::{QueueSetting, SettingType, QUEUE_SETTINGS};
use skein_raft::fsm::{QueuePatch, TaskStatus};

use crate::addr::{parse_addr_list, AddrList};

/// The address used when neither `--addr` nor `SKEIN_ADDR` is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7701";

const ABOUT: &str = "Drive a skein cluster: enqueue tasks, follow datasets, manage queues and nodes";

const LONG_ABOUT: &str = "\
skein is the command-line client of a skein cluster: a fleet of `skein-node`
processes that replicate a task queue with Raft and run migration tasks.

The CLI talks to any node's HTTP API. Reads are answered by the node you ask;
writes are forwarded to the leader. Give several nodes with --addr (comma
separated) and the CLI tries them in order until one answers.";

const AFTER_HELP: &str = "\
Examples:
  skein enqueue --queue demo --payload '{\"dataset\": \"orders\"}'
  skein enqueue --queue load --count 10000          # load test, prints the rate
  skein status --queue migrations                   # one row per dataset
  skein watch --queue migrations                    # live progress bars
  skein stuck                                       # what is stuck, and why
  skein tasks list --status dead --all
  skein tasks show 42
  skein queue set migrations --concurrency 4 --max-attempts 3
  skein cluster status
  SKEIN_ADDR=10.0.0.5:7701,10.0.0.6:7701 skein -o json tasks list | jq '.tasks[].id'";

/// The `skein` command line.
#[derive(Debug, Parser)]
#[command(name = "skein", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Node(s) to talk to: `host:port` or `http://host:port`, several separated
    /// by commas (tried in order until one answers).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SKEIN_ADDR",
        default_value = DEFAULT_ADDR,
        value_parser = parse_addr_list,
        value_name = "ADDR[,ADDR...]"
    )]
    pub addr: AddrList,

    /// The API token to send (`Authorization: Bearer`). The first admin token
    /// of a new cluster is in <data-dir>/admin.token of the node that
    /// bootstrapped it. Prefer the environment variable: flags show in `ps`.
    #[arg(long, global = true, help_heading = "Global options", env = "SKEIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The cluster's CA certificate (ca.pem, from `skein cert ca`): talk
    /// HTTPS to the nodes, and trust only certificates this CA signed.
    #[arg(long, global = true, help_heading = "Global options", env = "SKEIN_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Output format: a table for people, or the server's JSON (pretty) for scripts.
    #[arg(short, long, global = true, help_heading = "Global options", value_enum, default_value_t = Output::Table)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The server's JSON, pretty-printed (one document per command).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add one task to a queue, or many with --count (load testing).
    #[command(
        long_about = "\
Add a task to a queue. The queue is created on first use with default settings.

The task runs the transform named by --kind (noop, sleep, exec, migration) with
the JSON payload given by --payload or --payload-file. The answer is the task's
id; `created` is false when --key matched a task that already existed (the same
key always names the same task, so re-running an enqueue is safe).

With --count N, N identical tasks are sent in batches of up to 1000 and a
summary with the rate is printed instead of the ids.",
        after_help = "\
Examples:
  skein enqueue --queue demo
  skein enqueue --queue migrations --kind migration --payload-file plan-orders.json --key orders-v2
  skein enqueue --queue demo --kind sleep --payload '{\"ms\": 500}' --priority 10
  skein enqueue --queue demo --depends-on 41 --depends-on orders-v2
  skein enqueue --queue load --count 100000"
    )]
    Enqueue(EnqueueArgs),

    /// List, inspect, cancel and retry tasks.
    #[command(
        subcommand,
        after_help = "\
Examples:
  skein tasks list --queue migrations --status leased
  skein tasks show 42
  skein tasks cancel 42 --reason \"superseded\"
  skein tasks retry 42"
    )]
    Tasks(TasksCommand),

    /// One row per dataset (task): status, node, attempts, started, completed.
    #[command(
        long_about = "\
Show every task (of one queue, with --queue) as one row per dataset: its name
(the payload's `entity_ref`, else its `dataset`, else kind#id), status, the node
holding it, attempts, when it first started and when it finished, and a note
(progress, the last error, or leases that keep expiring: a sign of a stuck task).
A line of counts per status closes the table. Times are UTC.",
        after_help = "\
Examples:
  skein status
  skein status --queue migrations
  skein -o json status | jq '.tasks[] | select(.status == \"dead\")'"
    )]
    Status(StatusArgs),

    /// List queues with their counts; pause, resume or change a queue.
    #[command(
        subcommand,
        after_help = "\
Examples:
  skein queue list
  skein queue pause migrations
  skein queue set migrations --concurrency 4"
    )]
    Queue(QueueCommand),

    /// Live progress bars per queue (or plan) with rate and ETA, until done.
    #[command(
        long_about = "\
Follow a queue (or every queue, or a migration plan and the plans it depends
on) with live progress bars: tasks ended of all tasks, the rate and the time
left, and what is running, failed or stuck. Exits when nothing is left to run
(exit code 0), or on Ctrl-C. Without a terminal it
prints a line per change instead of bars.",
        after_help = "\
Examples:
  skein watch
  skein watch --queue dataset-migrations
  skein watch --plan component:default/customer-dataset-v2-migration"
    )]
    Watch(WatchArgs),

    /// List stuck tasks with the reason each one is stuck.
    #[command(
        long_about = "\
List tasks that look stuck, with every reason: leases that expired K times in a
row, an attempt running longer than the queue's limit (or far beyond its typical
duration), a task blocked on a dependency that is dead or stuck itself, a lease
held by a node that sent no heartbeat for a while. Then the nodes gone silent.
The thresholds are per queue: see `skein queue set --help` (--stuck-*).",
        after_help = "\
Examples:
  skein stuck
  skein stuck --queue dataset-migrations
  skein -o json stuck | jq '.tasks[] | {id, why}'"
    )]
    Stuck(StuckArgs),

    /// How many workers the backlog needs: what an autoscaler scales on.
    #[command(
        long_about = "\
Print how many workers the backlog needs (GET /api/v1/scale, what KEDA's
metrics-api scaler reads): the tasks that need a slot now (running ones, plus
pending ones whose dependencies are met, retry backoffs and delays included;
none of a paused queue), each queue within its concurrency cap, divided by the
slots of one worker (--per-worker, rounded up). Without --queue, every queue.",
        after_help = "\
Examples:
  skein scale
  skein scale --queue dataset-migrations --per-worker 4
  skein -o json scale --queue etl | jq .workers"
    )]
    Scale(ScaleArgs),

    /// Show the cluster's members; drain or remove a node.
    #[command(
        subcommand,
        after_help = "\
Examples:
  skein cluster status
  skein cluster drain 3
  skein cluster remove 3"
    )]
    Cluster(ClusterCommand),

    /// Back up the replicated state to a file (restore it with skein-node --restore).
    #[command(
        subcommand,
        long_about = "\
Back up the cluster's replicated state: every task, queue, plan, payload, result
and history event, as one consistent, checksummed file, taken on the leader while
the cluster runs (the command asks the leader, whichever node --addr names).

Restore it into a new cluster with `skein-node --restore FILE --bootstrap` on an
empty data directory; the other nodes then join that one. The new cluster hands
back the leases the backup held, starts with a fresh membership, and grants
fencing tokens of a new epoch, past any the old cluster can have granted.",
        after_help = "\
Examples:
  skein admin backup skein-2026-12-02.backup
  skein-node --id 1 --listen 127.0.0.1:7801 --http 127.0.0.1:7701 --data-dir /var/lib/skein/new \\
    --bootstrap --restore skein-2026-12-02.backup"
    )]
    Admin(AdminCommand),

    /// API tokens: create, list, revoke, rotate (role admin).
    #[command(
        subcommand,
        long_about = "\
API tokens. Each has a role (read < submit < operate < admin; each includes the
ones before) and, optionally, owners: Backstage group references. A token with
owners may enqueue, cancel and retry only tasks of those owners, and apply and
run only their plans. A token's text is shown once, when it is made; the
cluster keeps only a hash.

  read     every GET: tasks, queues, plans, cluster status, /metrics, the dashboard
  submit   enqueue, cancel, retry tasks; apply and run plans
  operate  queue settings, pause, redrive; node drain, join, remove; finalize; the audit log
  admin    tokens, the auth mode, backups",
        after_help = "\
Examples:
  skein token create --role submit --owner group:default/team-infra --name infra-ci --expires 90d
  skein token list
  skein token rotate 3f2a9c0d1e2b4a5c
  skein token revoke 3f2a9c0d1e2b4a5c
  skein token generate > admin.token     # for skein-node --admin-token-file"
    )]
    Token(TokenCommand),

    /// The auth mode: enforce (calls without a token refused) or warn.
    #[command(
        subcommand,
        long_about = "\
A new cluster enforces tokens from its first second. A cluster upgraded from a
release without tokens starts in `warn`: calls without a token are served,
logged and counted (skein_auth_requests{outcome=\"anonymous\"} in /metrics) so
that you can find every caller still without one. Create tokens, give them to
every caller, then `skein auth enforce`.",
        after_help = "\
Examples:
  skein auth status
  skein auth enforce
  skein auth retention 30d"
    )]
    Auth(AuthCommand),

    /// Who did what: the audit trail of every client write (role operate).
    #[command(after_help = "\
Examples:
  skein audit
  skein audit --since 2h --principal infra-ci
  skein -o json audit --limit 10000")]
    Audit(AuditArgs),

    /// The programs `exec` tasks and steps may run (admin to change).
    #[command(subcommand, long_about = crate::policy_args::EXEC_HELP, after_help = crate::policy_args::EXEC_EXAMPLES)]
    Exec(crate::policy_args::ExecCommand),

    /// Where plans may read and write: local folders and object-store prefixes (admin to change).
    #[command(subcommand, long_about = crate::policy_args::ROOTS_HELP, after_help = crate::policy_args::ROOTS_EXAMPLES)]
    Roots(crate::policy_args::RootsCommand),

    /// Whether the exec allow list and the data roots are enforced.
    #[command(subcommand, long_about = crate::policy_args::POLICY_HELP)]
    Policy(crate::policy_args::PolicyCommand),

    /// Migration plans (Backstage catalog entities): apply, list, show, import from Backstage, run.
    #[command(subcommand, after_help = crate::plan_args::PLAN_EXAMPLES)]
    Plan(crate::plan_args::PlanCommand),

    /// Start a local 3-node cluster, migrate the bundled examples, print their status.
    #[command(long_about = crate::plan_args::DEMO_ABOUT)]
    Demo(crate::plan_args::DemoArgs),

    /// Make the cluster's CA and node certificates for TLS (local files only).
    #[command(subcommand)]
    Cert(crate::cert::CertCommand),
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The queue to add the task to (created on first use).
    #[arg(long, short)]
    pub queue: String,

    /// The group the task belongs to (group:default/team-infra): tokens
    /// scoped to owners cancel and retry only their owners' tasks [default:
    /// the token's first owner, if it has any].
    #[arg(long, value_name = "GROUP")]
    pub owner: Option<String>,

    /// The transform to run: noop, sleep, exec, migration [server default: noop].
    #[arg(long)]
    pub kind: Option<String>,

    /// The task's payload, a JSON value, e.g. '{"dataset": "orders"}' [default: {}].
    #[arg(long, value_parser = parse_json, conflicts_with = "payload_file", value_name = "JSON")]
    pub payload: Option<serde_json::Value>,

    /// Read the payload (JSON) from a file; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,

    /// Enqueue N identical tasks in batches of up to 1000 and print the rate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub count: u64,

    /// Idempotency key: enqueueing the same key again returns the existing task.
    #[arg(long, conflicts_with = "count", value_name = "KEY")]
    pub key: Option<String>,

    /// Higher runs first; may be negative.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,

    /// Attempts before the task is dead [default: the queue's setting].
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Do not start the task before this many milliseconds from now.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub delay_ms: u64,

    /// Run only after this task succeeded: a task id or an idempotency key
    /// (repeat the flag for several).
    #[arg(long, value_parser = parse_dependency, value_name = "ID_OR_KEY")]
    pub depends_on: Vec<DependencySpec>,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List tasks, oldest first, filtered by queue and status.
    #[command(after_help = "\
Examples:
  skein tasks list --queue demo
  skein tasks list --status dead --all
  skein tasks list --limit 50 --cursor 1200      # the page after task 1200")]
    List(ListArgs),

    /// Show one task: its fields, payload, result and history.
    #[command(after_help = "Example:\n  skein tasks show 42")]
    Show {
        /// The task's id.
        id: u64,
    },

    /// Cancel a task that has not ended (a leased one is stopped at its next heartbeat).
    #[command(after_help = "Example:\n  skein tasks cancel 42 --reason \"superseded by plan v3\"")]
    Cancel {
        /// The task's id.
        id: u64,
        /// Why, kept in the task's history.
        #[arg(long)]
        reason: Option<String>,
    },

    /// Run a dead or cancelled task again, with a fresh set of attempts.
    #[command(after_help = "Example:\n  skein tasks retry 42")]
    Retry {
        /// The task's id.
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks of this queue.
    #[arg(long, short)]
    pub queue: Option<String>,

    /// Only tasks in this status.
    #[arg(long, short, value_enum)]
    pub status: Option<StatusArg>,

    /// Tasks per page (per request) [server default applies when absent].
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,

    /// Start after this task id (the `next cursor` of the previous page).
    #[arg(long, value_name = "ID")]
    pub cursor: Option<u64>,

    /// Follow the cursors and list every matching task, not only the first page.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only tasks of this queue.
    #[arg(long, short)]
    pub queue: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").multiple(false)))]
pub struct WatchArgs {
    /// Follow one queue [default: every queue].
    #[arg(long, short, group = "what")]
    pub queue: Option<String>,

    /// Follow a migration plan (an entity reference) and the plans it depends on.
    #[arg(long, group = "what", value_name = "REF")]
    pub plan: Option<String>,

    /// How often to ask the cluster, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..), value_name = "MS")]
    pub interval_ms: u64,
}

#[derive(Debug, Args)]
pub struct StuckArgs {
    /// Only tasks of this queue.
    #[arg(long, short)]
    pub queue: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Only this queue (default: every queue).
    #[arg(long, short)]
    pub queue: Option<String>,

    /// Task slots of one worker (its --slots), 1 to 10000.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000), value_name = "N")]
    pub per_worker: u64,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List every queue with its counts per status and main settings.
    List,

    /// Show one queue: its state, its counts and every setting.
    #[command(after_help = "Example:\n  skein queue show migrations")]
    Show {
        /// The queue's name.
        queue: String,
    },

    /// Stop leasing the queue's tasks (running ones finish; enqueue still works).
    #[command(after_help = "Example:\n  skein queue pause migrations")]
    Pause {
        /// The queue's name.
        queue: String,
    },

    /// Lease the queue's tasks again after a pause.
    #[command(after_help = "Example:\n  skein queue resume migrations")]
    Resume {
        /// The queue's name.
        queue: String,
    },

    /// Change some of a queue's settings; the others stay as they are.
    #[command(
        override_usage = "skein queue set <QUEUE> --<SETTING> <VALUE>...   (one or more of the settings below)",
        after_help = "\
Examples:
  skein queue set migrations --concurrency 4
  skein queue set demo --lease-ms 60000 --max-attempts 10 --backoff-base-ms 500"
    )]
    Set(QueueSetArgs),

    /// Retry the queue's dead tasks (a dead-letter redrive), those that died first first.
    ///
    /// Each gets a fresh set of attempts, as `skein tasks retry` gives one
    /// task. Tasks whose dependencies failed stay dead, and are listed.
    /// Needs a cluster at stored format 2: after an upgrade from 0.1.0, run
    /// `skein cluster finalize` first.
    #[command(after_help = "Example:\n  skein queue redrive migrations --max 100")]
    Redrive {
        /// The queue's name.
        queue: String,
        /// At most this many tasks (1 to 10000).
        #[arg(long, default_value_t = 10_000)]
        max: u32,
    },
}

/// `skein queue set QUEUE --SETTING VALUE...`. Its flags are not written
/// here: one per row of [`QUEUE_SETTINGS`] (`--lease-ms` for `lease_ms`, with
/// the row's value name and help), in the group `setting`, of which at least
/// one is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSetArgs {
    /// The queue's name (created if it does not exist yet).
    pub queue: String,
    /// The settings given on the command line; the others are `None`.
    pub patch: QueuePatch,
}

/// The flag of a queue setting: `lease-ms` for `lease_ms`.
pub fn setting_flag(setting: &QueueSetting) -> &'static str {
    static FLAGS: OnceLock<Vec<String>> = OnceLock::new();
    let flags = FLAGS.get_or_init(|| QUEUE_SETTINGS.iter().map(|s| s.name.replace('_', "-")).collect());
    QUEUE_SETTINGS.iter().position(|s| s.name == setting.name).map_or("", |i| flags[i].as_str())
}

impl Args for QueueSetArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let queue = Arg::new("queue")
            .value_name("QUEUE")
            .required(true)
            .value_parser(clap::value_parser!(String))
            .action(ArgAction::Set)
            .help("The queue's name (created if it does not exist yet)");
        let settings = QUEUE_SETTINGS.iter().map(|s| {
            let arg = Arg::new(s.name)
                .long(setting_flag(s))
                .value_name(s.value_name)
                .action(ArgAction::Set)
                .group("setting")
                .help(s.help);
            match s.ty {
                SettingType::U32 => arg.value_parser(clap::value_parser!(u32)),
                SettingType::U64 => arg.value_parser(clap::value_parser!(u64)),
            }
        });
        cmd.arg(queue).args(settings).group(clap::ArgGroup::new("setting").required(true).multiple(true))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for QueueSetArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let queue = matches
            .get_one::<String>("queue")
            .cloned()
            .ok_or_else(|| clap::Error::raw(ErrorKind::MissingRequiredArgument, "the queue's name is required\n"))?;
        let mut args = QueueSetArgs { queue, patch: QueuePatch::default() };
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(queue) = matches.get_one::<String>("queue") {
            self.queue = queue.clone();
        }
        for s in QUEUE_SETTINGS {
            let value = match s.ty {
                SettingType::U32 => matches.get_one::<u32>(s.name).map(|v| u64::from(*v)),
                SettingType::U64 => matches.get_one::<u64>(s.name).copied(),
            };
            if let Some(v) = value {
                self.patch
                    .set(s.name, v)
                    .map_err(|e| clap::Error::raw(ErrorKind::ValueValidation, format!("{e}\n")))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Write a backup of the replicated state to FILE (written whole, then renamed into place).
    Backup {
        /// Where to write it; an existing file is replaced only once the backup is complete.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the members, the leader, the term and the log indexes.
    ///
    /// One row per member: its role (leader, voter, learner), RPC and HTTP
    /// addresses, the log index the leader knows it has (MATCHED), its task
    /// slots, the leases it holds, whether it drains, and its last heartbeat.
    Status,

    /// Move a node's work away before it stops or is removed.
    ///
    /// The node is leased no new tasks; its running tasks finish. Then stop it
    /// (SIGTERM), or remove it from the membership with `skein cluster remove`
    /// (its remaining leases are handed back at once).
    #[command(after_help = "Example:\n  skein cluster drain 3")]
    Drain {
        /// The node's id.
        id: u64,
    },

    /// Remove a node from the cluster's membership (drain it first).
    #[command(after_help = "Example:\n  skein cluster drain 3 && skein cluster remove 3")]
    Remove {
        /// The node's id.
        id: u64,
    },

    /// End an upgrade: let the cluster write the newest stored format.
    ///
    /// After upgrading every node (README, "Upgrading"), the cluster still
    /// writes only what the older release reads, so any node can go back to
    /// it. Finalizing asks every member its release, and only when all run
    /// one that reads the newest format, raises the cluster's format (one
    /// replicated command). New commands (`skein queue redrive`) work from
    /// then on, and there is no way back to the older release. Refused, with
    /// the nodes still to upgrade, while any member runs an older one.
    #[command(
        after_help = "Example:\n  skein cluster status   # every node's RELEASE is the new one\n  skein cluster finalize"
    )]
    Finalize,
}

/// A task status as a flag value; mirrors [`TaskStatus`] (a test checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Pending,
    Blocked,
    Leased,
    Succeeded,
    Dead,
    Cancelled,
}

impl From<StatusArg> for TaskStatus {
    fn from(s: StatusArg) -> TaskStatus {
        match s {
            StatusArg::Pending => TaskStatus::Pending,
            StatusArg::Blocked => TaskStatus::Blocked,
            StatusArg::Leased => TaskStatus::Leased,
            StatusArg::Succeeded => TaskStatus::Succeeded,
            StatusArg::Dead => TaskStatus::Dead,
            StatusArg::Cancelled => TaskStatus::Cancelled,
        }
    }
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

/// A number is a task id; anything else is an idempotency key.
fn parse_dependency(s: &str) -> Result<DependencySpec, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty: give a task id or an idempotency key".into());
    }
    Ok(match s.parse::<u64>() {
        Ok(id) => DependencySpec::Id(id),
        Err(_) => DependencySpec::Key(s.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("skein").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        // SKEIN_ADDR may be set in the developer's shell; the default only holds without it.
        if std::env::var_os("SKEIN_ADDR").is_some() {
            return;
        }
        let cli = parse(&["cluster", "status"]).expect("parses");
        assert_eq!(cli.addr, parse_addr_list(DEFAULT_ADDR).expect("default parses"));
        assert_eq!(cli.output, Output::Table);
        assert!(matches!(cli.command, Command::Cluster(ClusterCommand::Status)));
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        for args in [
            &["-o", "json", "--addr", "h:1", "tasks", "show", "7"][..],
            &["tasks", "show", "7", "--output", "json", "--addr", "h:1"][..],
        ] {
            let cli = parse(args).expect("parses");
            assert_eq!(cli.output, Output::Json);
            assert_eq!(cli.addr.0[0].base, "http://h:1");
            assert!(matches!(cli.command, Command::Tasks(TasksCommand::Show { id: 7 })));
        }
    }

    #[test]
    fn enqueue_full() {
        let cli = parse(&[
            "enqueue",
            "--queue",
            "q",
            "--kind",
            "sleep",
            "--payload",
            r#"{"ms": 5}"#,
            "--key",
            "k1",
            "--priority",
            "-3",
            "--max-attempts",
            "2",
            "--delay-ms",
            "100",
            "--depends-on",
            "12",
            "--depends-on",
            "orders-v2",
        ])
        .expect("parses");
        let Command::Enqueue(e) = cli.command else { panic!("not enqueue") };
        assert_eq!(e.queue, "q");
        assert_eq!(e.kind.as_deref(), Some("sleep"));
        assert_eq!(e.payload, Some(serde_json::json!({"ms": 5})));
        assert_eq!(e.key.as_deref(), Some("k1"));
        assert_eq!(e.priority, -3);
        assert_eq!(e.max_attempts, Some(2));
        assert_eq!(e.delay_ms, 100);
        assert_eq!(e.count, 1);
        assert_eq!(e.depends_on, vec![DependencySpec::Id(12), DependencySpec::Key("orders-v2".into())]);
    }

    #[test]
    fn enqueue_usage_errors() {
        let kind = |args: &[&str]| parse(args).expect_err("must fail").kind();
        assert_eq!(kind(&["enqueue"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["enqueue", "-q", "q", "--payload", "{nope"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["enqueue", "-q", "q", "--payload", "{}", "--payload-file", "f.json"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["enqueue", "-q", "q", "--count", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["enqueue", "-q", "q", "--count", "5", "--key", "k"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["enqueue", "-q", "q", "--depends-on", ""]), ErrorKind::ValueValidation);
    }

    #[test]
    fn usage_errors_exit_with_2() {
        let err = parse(&["tasks", "show", "not-a-number"]).expect_err("must fail");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn tasks_list_flags() {
        let cli =
            parse(&["tasks", "list", "-q", "demo", "--status", "dead", "--limit", "10", "--all"]).expect("parses");
        let Command::Tasks(TasksCommand::List(l)) = cli.command else { panic!("not list") };
        assert_eq!(l.queue.as_deref(), Some("demo"));
        assert_eq!(l.status.map(TaskStatus::from), Some(TaskStatus::Dead));
        assert_eq!(l.limit, Some(10));
        assert!(l.all);
        assert!(parse(&["tasks", "list", "--status", "finished"]).is_err());
    }

    #[test]
    fn status_arg_mirrors_task_status() {
        for s in TaskStatus::ALL {
            let arg = StatusArg::from_str(s.as_str(), false).expect("every status is a flag value");
            assert_eq!(TaskStatus::from(arg), s);
        }
        assert_eq!(StatusArg::value_variants().len(), TaskStatus::ALL.len());
    }

    #[test]
    fn cancel_with_reason() {
        let cli = parse(&["tasks", "cancel", "9", "--reason", "no longer needed"]).expect("parses");
        let Command::Tasks(TasksCommand::Cancel { id, reason }) = cli.command else { panic!("not cancel") };
        assert_eq!(id, 9);
        assert_eq!(reason.as_deref(), Some("no longer needed"));
    }

    #[test]
    fn queue_set_needs_a_setting() {
        let err = parse(&["queue", "set", "demo"]).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        let cli = parse(&["queue", "set", "demo", "--concurrency", "4", "--lease-ms", "60000"]).expect("parses");
        let Command::Queue(QueueCommand::Set(s)) = cli.command else { panic!("not set") };
        assert_eq!(s.queue, "demo");
        assert_eq!(s.patch, QueuePatch { concurrency: Some(4), lease_ms: Some(60_000), ..Default::default() });
    }

    #[test]
    fn queue_set_has_a_flag_per_setting() {
        for s in QUEUE_SETTINGS {
            let flag = format!("--{}", setting_flag(s));
            let cli = parse(&["queue", "set", "q", &flag, "7"]).unwrap_or_else(|e| panic!("{flag}: {e}"));
            let Command::Queue(QueueCommand::Set(args)) = cli.command else { panic!("not set") };
            let mut want = QueuePatch::default();
            want.set(s.name, 7).expect("a setting");
            assert_eq!(args.patch, want, "{flag}");
            // The value's type bounds it, as a typed field did.
            let too_big = (u64::from(u32::MAX) + 1).to_string();
            let parsed = parse(&["queue", "set", "q", &flag, &too_big]);
            match s.ty {
                SettingType::U32 => assert_eq!(parsed.expect_err(&flag).kind(), ErrorKind::ValueValidation),
                SettingType::U64 => assert!(parsed.is_ok(), "{flag}"),
            }
        }
        assert_eq!(
            parse(&["queue", "set", "q", "--lease"]).expect_err("no such flag").kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn queue_show_takes_a_queue() {
        let cli = parse(&["queue", "show", "demo"]).expect("parses");
        assert!(matches!(cli.command, Command::Queue(QueueCommand::Show { queue }) if queue == "demo"));
        assert_eq!(parse(&["queue", "show"]).expect_err("needs a queue").kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn admin_backup_takes_a_file() {
        match parse(&["admin", "backup", "out.backup"]).expect("parses").command {
            Command::Admin(AdminCommand::Backup { file }) => assert_eq!(file, std::path::PathBuf::from("out.backup")),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["admin", "backup"]).is_err(), "the file is required");
    }

    #[test]
    fn cluster_commands() {
        assert!(matches!(
            parse(&["cluster", "drain", "3"]).expect("parses").command,
            Command::Cluster(ClusterCommand::Drain { id: 3 })
        ));
        assert!(matches!(
            parse(&["cluster", "remove", "4"]).expect("parses").command,
            Command::Cluster(ClusterCommand::Remove { id: 4 })
        ));
        assert!(parse(&["cluster", "drain"]).is_err());
    }

    #[test]
    fn a_bad_address_is_a_usage_error() {
        let err = parse(&["--addr", "https://h:1", "cluster", "status"]).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (once).
    Create {
        /// read, submit, operate or admin.
        #[arg(long, value_parser = parse_role)]
        role: skein_raft::fsm::Role,
        /// A group the token acts for (repeatable): `group:default/team-infra`
        /// or `team-infra`. Without any, the token acts for every owner.
        #[arg(long = "owner", value_name = "GROUP")]
        owners: Vec<String>,
        /// A name for audit logs and listings (default: <role>-<id>).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime: 30m, 12h, 90d (default: no expiry).
        #[arg(long, value_parser = parse_duration_ms, value_name = "DURATION")]
        expires: Option<u64>,
    },
    /// Every token: id, name, role, owners, expiry, last use.
    List,
    /// Revoke a token: it can write nothing once this commits, and reads stop within a second.
    Revoke {
        /// The token's id (16 hex digits, as `skein token list` shows).
        id: String,
    },
    /// A new secret for a token (same name, role, owners, lifetime); the old one stops at once.
    Rotate { id: String },
    /// Print a new token without contacting any node (for skein-node
    /// --admin-token-file; it becomes valid when a cluster bootstraps with it).
    Generate,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// The mode, the cluster's format, the number of tokens, the audit retention.
    Status,
    /// Refuse every call without a valid token (401).
    Enforce,
    /// Serve calls without a token again, logging and counting them.
    Warn,
    /// How long audit records are kept: 30d, 12h...
    Retention {
        #[arg(value_parser = parse_duration_ms, value_name = "DURATION")]
        keep: u64,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records this recent: 30m, 2h, 7d.
    #[arg(long, value_parser = parse_duration_ms, value_name = "DURATION")]
    pub since: Option<u64>,
    /// Only this principal's records (a token's name, or anonymous).
    #[arg(long)]
    pub principal: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

fn parse_role(s: &str) -> Result<skein_raft::fsm::Role, String> {
    skein_raft::fsm::Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: read, submit, operate or admin"))
}

/// `90d`, `12h`, `30m`, `45s`, `500ms` as milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 30m, 12h or 90d"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit is ms, s, m, h or d")),
    };
    n.checked_mul(scale).filter(|&ms| ms > 0).ok_or_else(|| format!("{s:?} is out of range"))
}
