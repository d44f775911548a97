//! The command line of `skein plan ...` and `skein demo`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub const PLAN_EXAMPLES: &str = "\
Examples:
  skein plan apply examples/plans/                  # every .yaml/.yml/.json below, all or nothing
  skein plan apply catalog-info.yaml other.yaml
  cat catalog-info.yaml | skein plan apply -
  skein plan list --owner team-infra
  skein plan show customer-dataset-v2-migration
  skein plan import --backstage https://backstage.example.com --token $BACKSTAGE_TOKEN
  skein plan run customer-dataset-v2-migration
  skein plan run --all --wait
  skein plan run --selector owner=team-infra,tier=gold --force";

pub const DEMO_ABOUT: &str = "\
Start a local cluster of skein-node processes (found next to this skein
binary), store the example plans (the folder `examples/` of the source tree, or
--examples), run them all, wait until every migration ended, print the status
table (dataset, status, node, attempts, started, completed) and stop the
cluster. The work happens in --dir (default .skein-demo): a copy of the
examples, the migrated datasets in out/, the nodes' data and logs.";

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Store plans from YAML files (multi-document), folders or `-` (stdin), all or nothing.
    ///
    /// Every entity is checked before anything is stored: a missing field, an
    /// unknown step type, a dependency cycle or a `dependsOn` naming an entity
    /// neither given nor in the catalog is reported with its file, entity and
    /// field. Relative dataset paths are made absolute against the file's
    /// folder. Applying an unchanged plan again changes nothing.
    #[command(
        after_help = "Examples:\n  skein plan apply examples/plans/\n  skein plan apply --dry-run catalog-info.yaml"
    )]
    Apply(ApplyArgs),

    /// List the catalog: plans and the entities they depend on.
    #[command(after_help = "Examples:\n  skein plan list\n  skein plan list --owner team-infra --label tier=gold")]
    List(PlanListArgs),

    /// Show one entity: its fields, its newest run and the stored document.
    #[command(
        after_help = "Examples:\n  skein plan show customer-dataset-v2-migration\n  skein plan show component:default/orders-enriched"
    )]
    Show {
        /// An entity reference: `[kind:][namespace/]name` (kind defaults to component).
        entity_ref: String,
    },

    /// Read plans from a running Backstage (its catalog REST API) and store them.
    ///
    /// Pages through `GET /api/catalog/entities/by-query?filter=...` and
    /// fetches each entity the plans depend on that is neither in the answer
    /// nor in skein's catalog with `GET /api/catalog/entities/by-name/...`.
    #[command(
        after_help = "Examples:\n  skein plan import --backstage http://localhost:7007\n  skein plan import --backstage https://bs.example.com --token $T --filter spec.type=migration-plan,spec.owner=team-infra"
    )]
    Import(ImportArgs),

    /// Enqueue the migration of plans: one `migration` task per plan.
    ///
    /// Idempotent: a plan that is pending, running or done keeps its task
    /// unless --force starts a new run. Plans it depends on that never ran (or
    /// whose run died) run with it, and it waits (blocked) until they succeeded.
    ///
    /// A partitioned plan's run is one task per partition of its source, spread
    /// over the fleet, and a commit that publishes them as one version. Running
    /// such a plan again after partitions failed runs only the failed ones again.
    #[command(
        after_help = "Examples:\n  skein plan run customer-dataset-v2-migration\n  skein plan run --all --wait\n  skein plan run --selector owner=team-infra,tier=gold --force\n  skein plan run orders-by-day --partition 17 --wait"
    )]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// YAML or JSON files, folders (searched for .yaml, .yml, .json), or `-` for stdin.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    pub paths: Vec<PathBuf>,

    /// Check everything, store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PlanListArgs {
    /// Only plans with this owner (`team-infra` or `group:default/team-infra`).
    #[arg(long)]
    pub owner: Option<String>,

    /// Only plans with this label (repeat for several; all must match).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,

    /// Only plans, not the plain entities they depend on.
    #[arg(long)]
    pub plans_only: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The Backstage base URL, e.g. http://localhost:7007.
    #[arg(long, value_name = "URL")]
    pub backstage: String,

    /// A Backstage token, sent as `Authorization: Bearer <T>`.
    #[arg(long, env = "BACKSTAGE_TOKEN", hide_env_values = true, value_name = "T")]
    pub token: Option<String>,

    /// A catalog filter (repeat for OR; commas inside one are AND).
    #[arg(long, default_value = "kind=component,spec.type=migration-plan", value_name = "FILTER")]
    pub filter: Vec<String>,

    /// Entities per page.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub page_size: u32,

    /// Check everything, store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(false).args(["refs", "all", "selector"])))]
pub struct RunArgs {
    /// Entity references of the plans to run.
    #[arg(value_name = "REF")]
    pub refs: Vec<String>,

    /// Run every plan in the catalog.
    #[arg(long)]
    pub all: bool,

    /// Plans whose owner and labels match: `owner=team-infra,tier=gold`
    /// (`owner=` is the owner; every other key is a label).
    #[arg(long, value_name = "owner=O,KEY=VALUE,...")]
    pub selector: Option<String>,

    /// Start a new run even of plans that are pending, running or done.
    #[arg(long)]
    pub force: bool,

    /// The queue of plans without a `honk/queue` annotation.
    #[arg(long, default_value = "dataset-migrations")]
    pub queue: String,

    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,

    /// Wait until every run ended, then print their status.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "S")]
    pub timeout: u64,

    /// A partitioned plan: run this failed partition of its newest run
    /// again (the partitions that succeeded are kept), then publish the run.
    /// `skein plan status REF` lists the failed ones.
    #[arg(long, value_name = "P", conflicts_with_all = ["all", "selector", "force"])]
    pub partition: Option<u32>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The examples folder (with plans/ and data/) [default: examples/ of the source tree].
    #[arg(long, value_name = "DIR")]
    pub examples: Option<PathBuf>,

    /// Where the demo works (emptied first).
    #[arg(long, default_value = ".skein-demo", value_name = "DIR")]
    pub dir: PathBuf,

    /// How many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,

    /// Node i listens for HTTP on BASE+i and for RPC on BASE+100+i.
    #[arg(long, default_value_t = 7700)]
    pub base_port: u16,

    /// The skein-node binary [default: next to this skein].
    #[arg(long, value_name = "PATH")]
    pub node_bin: Option<PathBuf>,

    /// Leave the cluster running at the end.
    #[arg(long)]
    pub keep: bool,

    /// Give up waiting for the migrations after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "S")]
    pub timeout: u64,
}
