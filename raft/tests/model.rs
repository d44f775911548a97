//! Property tests: random command sequences against a small reference model.
//!
//! Every `Command` variant is generated (`op_for` maps each variant to the
//! op that produces it, with no wildcard, and `every_command_variant_is_generated`
//! checks over a fixed-seed run that each variant, as serde lists them, was
//! applied at least once, inside batches too).
//!
//! After every command the model predicts the response exactly (ids, tokens,
//! expiries, statuses, rejections) and, after every op, every task's fields,
//! the queues' settings, the nodes, the catalog and the cold data of
//! forgotten tasks. A refused command must change nothing but the clock and
//! write nothing cold. A `Batch` must equal its items applied one by one.
//! The state machine's own index invariants hold after every op.
//!
//! Auth (format 3): commands of format 3 are applied only once the model's
//! cluster format is 3 (the leader refuses them before: 409). A universe of
//! token ids 1 to 7 (`TOKEN_SPECS`: a read token that expires 20 s after it
//! is made, a submit token scoped to `group:default/t0`, an operate and an
//! admin token; never all of them at once) is created, revoked, rotated and
//! touched; `AsCaller` wraps any other command op, as anonymous or as a token
//! (sometimes unknown, revoked or expired), in `warn` or `enforce` mode. The
//! model predicts whether the request is refused (`Unauthenticated` or
//! `Forbidden`: role, owners, or not a client command) or applied (then the
//! wrapped op predicts its response as it does bare), the one audit record
//! each request writes (principal, action, target, outcome: the outcome's
//! text is the actual rejection's, whose kind and fields the model predicts),
//! the `Requested` events it writes (exactly, in order), task owners, the
//! tokens, the auth mode and retention, and which audit records retention
//! drops (`MemCold::audit`, compared after every op). A refused request must
//! change nothing but the clock and the audit index, and write nothing but
//! its audit record; the op that made it is then undone in the model
//! (`REFUSED_AS_A_WHOLE`). While enforcing, a client's command that does not
//! come as `AsCaller` is refused (`Unauthenticated`), undone the same way.
//! Coarse: rejection messages (as elsewhere), and
//! `AsCaller` is not generated around a `Batch` or another `AsCaller` (the
//! unit tests in `fsm/tests.rs` cover those).
//!
//! Restarts happen in the middle of a sequence: the state is encoded as a
//! snapshot stores it (`format::StoredState`, file version 3, 4 or 5 by the
//! cluster's format), decoded into a fresh state machine (from the newest
//! snapshot, replaying the log after it, or from nothing replaying it all),
//! and the run goes on on the restored one, which must stay identical to a
//! replica that never restarted. With the `storage` feature, a few runs'
//! logs also go through the real RocksDB stores, with real restarts
//! (snapshot file, reopen, log replay) and snapshot transfers at the same
//! points, and must give the same digests and cold data.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use skein_raft::format::{StateV3, StateV4, StateV5, StateV6, StoredState};
use skein_raft::fsm::catalog::{run_key, MIGRATION_KIND};
use skein_raft::fsm::policy::{Credentials, NewRoot};
use skein_raft::fsm::*;

const NODES: u64 = 3;
/// The catalog's universe: four plans, a plain entity, and a reference that
/// is never stored (a dependency on it is refused).
const REFS: [&str; 6] = [
    "component:default/p0",
    "component:default/p1",
    "component:default/p2",
    "component:default/p3",
    "resource:default/d0",
    "component:default/ghost",
];
const PLANS: u8 = 4;
const BAD_REF: &str = "Component:default/Bad";

/// Owners as clients spell them: three spellings of one group, another
/// group, and the same name in another namespace.
const OWNERS: [&str; 5] = ["t0", "group:default/t0", "Default/T0", "group:default/t1", "group:other/t0"];

/// The model's own table of canonical owners (see `auth::canonical_owner`).
fn canonical(owner: &str) -> &'static str {
    match owner {
        "t0" | "group:default/t0" | "Default/T0" => "group:default/t0",
        "group:default/t1" => "group:default/t1",
        "group:other/t0" => "group:other/t0",
        other => panic!("owner {other:?} is not in the model's universe"),
    }
}

/// Tokens by spec: name, role, owners, lifetime. Specs 4 and 5 are
/// malformed (a short hash, an empty name).
const TOKEN_SPECS: [(&str, Role, &[&str], Option<u64>); 4] = [
    ("reader", Role::Read, &[], Some(20_000)),
    ("t0-bot", Role::Submit, &["Default/T0"], None),
    ("ops", Role::Operate, &[], None),
    ("admin", Role::Admin, &[], None),
];
const HOUR_MS: u64 = 3_600_000;
/// Audit retentions `ConfigureAuth` sets (0 is refused).
const RETENTIONS: [u64; 4] = [0, 1, 1_800_000, 7_200_000];
/// What `Record` audits.
const RECORDS: [(&str, &str); 2] = [("add node", "node 4"), ("remove node", "node 2")];
/// Programs `AllowExec` names: two valid, two refused (relative, `..`).
const PROGRAMS: [&str; 4] = ["/usr/bin/true", "/bin/sh", "python3", "/opt/../bin/x"];
/// Leading arguments of exec rules.
const EXEC_ARGS: [&[&str]; 3] = [&[], &["-c"], &["/opt/a.py", "x"]];
/// Roots `AllowRoot` gives, and the URL each is stored under (`None`: refused).
fn roots() -> Vec<(NewRoot, Option<&'static str>)> {
    let root = |url: &str, endpoint: Option<&str>, credentials: Credentials| NewRoot {
        url: url.into(),
        endpoint: endpoint.map(str::to_string),
        region: None,
        credentials,
        allow_http: true,
    };
    vec![
        (root("/data", None, Credentials::None), Some("file:///data/")),
        (root("file:///data/in/", None, Credentials::None), Some("file:///data/in/")),
        (root("s3a://lake/raw", Some("http://127.0.0.1:9000"), Credentials::Env), Some("s3://lake/raw/")),
        (root("s3://lake/raw/", Some("https://s3.example"), Credentials::Anonymous), Some("s3://lake/raw/")),
        (root("s3://lake", None, Credentials::Env), None),
        (root("/data", None, Credentials::Env), None),
        (root("data/rel", None, Credentials::None), None),
        (root("/data/_skein", None, Credentials::None), None),
    ]
}
/// URLs `DenyRoot` names (normalized forms of some of the above).
const DENIED_ROOTS: [&str; 4] = ["/data/", "s3://lake/raw", "file:///data/in", "/nowhere"];

/// Queues 0 and 1 take tasks; 2 is only named by admin commands; 3 is not a
/// valid name.
fn qname(q: u8) -> String {
    match q {
        0..=2 => format!("q{q}"),
        _ => "bad name".into(),
    }
}

// ------------------------------------------------------------------ ops

#[derive(Debug, Clone, Copy)]
enum Dep {
    /// An existing task (or, past the end, a forgotten one).
    Id(usize),
    /// By idempotency key (which may be unknown).
    Key(u8),
}

#[derive(Debug, Clone)]
struct EntitySpec {
    /// Index into `REFS` (5 never: ghost is never stored), or 6: a malformed reference.
    which: u8,
    queue: Option<u8>,
    deps: Vec<u8>,
    doc: u8,
    /// Index into `OWNERS`.
    owner: Option<u8>,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        n: usize,
        key: Option<u8>,
        deps: Vec<Dep>,
        queue: u8,
        priority: i32,
        max_attempts: Option<u32>,
        delay_ms: u64,
        bad_name: bool,
        /// `Some`: `EnqueueOwned` with this owner (an index into `OWNERS`).
        owner: Option<Option<u8>>,
    },
    Lease {
        node: u64,
        max: u32,
        queue: Option<u8>,
    },
    /// Complete the `pick`-th leased task (by id order), with its current
    /// token or a stale one.
    Complete {
        pick: usize,
        stale: bool,
        outcome: u8,
    },
    /// Renew the node's leases, plus one that is not its own (`stale`).
    Heartbeat {
        node: u64,
        stale: Option<usize>,
        progress: bool,
    },
    Advance {
        ms: u64,
    },
    Expire,
    Cancel {
        pick: usize,
    },
    Retry {
        pick: usize,
    },
    Pause {
        queue: u8,
        paused: bool,
    },
    Configure {
        queue: u8,
        patch: QueuePatch,
    },
    Drain {
        node: u64,
        draining: bool,
    },
    Release {
        node: u64,
        forget: bool,
    },
    /// The node leaves the cluster (`RemoveNode`), or joins it again.
    Remove {
        node: u64,
    },
    Admit {
        node: u64,
    },
    CollectGarbage,
    ApplyPlans {
        entities: Vec<EntitySpec>,
    },
    RunPlans {
        refs: Vec<u8>,
        force: bool,
        default_queue: u8,
        priority: i32,
    },
    SetFormat {
        format: u32,
    },
    Redrive {
        queue: u8,
        max: u32,
    },
    /// The op's command as a client's request: anonymous (`None`) or a token.
    AsCaller {
        caller: Option<u64>,
        inner: Box<Op>,
    },
    /// A token of `TOKEN_SPECS[spec]` (4, 5: malformed).
    CreateToken {
        id: u64,
        spec: u8,
    },
    RevokeToken {
        id: u64,
    },
    RotateToken {
        old: u64,
        new: u64,
        bad_hash: bool,
    },
    /// Tokens used `ago` ms before now.
    TouchTokens {
        used: Vec<(u64, u64)>,
    },
    ConfigureAuth {
        enforce: Option<bool>,
        /// Index into `RETENTIONS`.
        retention: Option<u8>,
    },
    Record {
        which: u8,
    },
    /// `AllowExec` of `PROGRAMS[prog]` with `EXEC_ARGS[args]`.
    AllowExec {
        prog: u8,
        args: u8,
    },
    DenyExec {
        prog: u8,
        args: Option<u8>,
    },
    /// `AllowRoot` of `ROOTS[which]`.
    AllowRoot {
        which: u8,
    },
    DenyRoot {
        which: u8,
    },
    ConfigurePolicy {
        enforce: bool,
    },
    /// `n` tasks added by the worker of the `pick`-th leased task, under
    /// its current token or a stale one (`EnqueueChildren`).
    EnqueueChildren {
        pick: usize,
        stale: bool,
        n: usize,
    },
    /// These ops' commands in one `Command::Batch`.
    Batch(Vec<Op>),
    /// Take a snapshot (kept for a later restart).
    Snapshot,
    /// Restart: from the newest snapshot (or from nothing) replaying the log
    /// after it, or from a snapshot taken now.
    Restart {
        from_snapshot: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum OpKind {
    Enqueue,
    Lease,
    Complete,
    Heartbeat,
    Advance,
    Expire,
    Cancel,
    Retry,
    Pause,
    Configure,
    Drain,
    Release,
    Remove,
    Admit,
    CollectGarbage,
    ApplyPlans,
    RunPlans,
    SetFormat,
    Redrive,
    EnqueueOwned,
    AsCaller,
    CreateToken,
    RevokeToken,
    RotateToken,
    TouchTokens,
    ConfigureAuth,
    Record,
    AllowExec,
    DenyExec,
    AllowRoot,
    DenyRoot,
    ConfigurePolicy,
    EnqueueChildren,
    Batch,
    Snapshot,
    Restart,
}

impl Op {
    fn kind(&self) -> OpKind {
        match self {
            Op::Enqueue { owner: Some(_), .. } => OpKind::EnqueueOwned,
            Op::Enqueue { .. } => OpKind::Enqueue,
            Op::Lease { .. } => OpKind::Lease,
            Op::Complete { .. } => OpKind::Complete,
            Op::Heartbeat { .. } => OpKind::Heartbeat,
            Op::Advance { .. } => OpKind::Advance,
            Op::Expire => OpKind::Expire,
            Op::Cancel { .. } => OpKind::Cancel,
            Op::Retry { .. } => OpKind::Retry,
            Op::Pause { .. } => OpKind::Pause,
            Op::Configure { .. } => OpKind::Configure,
            Op::Drain { .. } => OpKind::Drain,
            Op::Release { .. } => OpKind::Release,
            Op::Remove { .. } => OpKind::Remove,
            Op::Admit { .. } => OpKind::Admit,
            Op::CollectGarbage => OpKind::CollectGarbage,
            Op::ApplyPlans { .. } => OpKind::ApplyPlans,
            Op::RunPlans { .. } => OpKind::RunPlans,
            Op::SetFormat { .. } => OpKind::SetFormat,
            Op::Redrive { .. } => OpKind::Redrive,
            Op::AsCaller { .. } => OpKind::AsCaller,
            Op::CreateToken { .. } => OpKind::CreateToken,
            Op::RevokeToken { .. } => OpKind::RevokeToken,
            Op::RotateToken { .. } => OpKind::RotateToken,
            Op::TouchTokens { .. } => OpKind::TouchTokens,
            Op::ConfigureAuth { .. } => OpKind::ConfigureAuth,
            Op::Record { .. } => OpKind::Record,
            Op::AllowExec { .. } => OpKind::AllowExec,
            Op::DenyExec { .. } => OpKind::DenyExec,
            Op::AllowRoot { .. } => OpKind::AllowRoot,
            Op::DenyRoot { .. } => OpKind::DenyRoot,
            Op::ConfigurePolicy { .. } => OpKind::ConfigurePolicy,
            Op::EnqueueChildren { .. } => OpKind::EnqueueChildren,
            Op::Batch(_) => OpKind::Batch,
            Op::Snapshot => OpKind::Snapshot,
            Op::Restart { .. } => OpKind::Restart,
        }
    }
}

/// The op that produces each command variant. No wildcard on purpose: a new
/// `Command` variant does not compile here until an op generates it (and
/// `every_command_variant_is_generated` checks that it really is).
fn op_for(command: &Command) -> OpKind {
    match command {
        Command::Enqueue { .. } => OpKind::Enqueue,
        Command::Lease { .. } => OpKind::Lease,
        Command::Heartbeat { .. } => OpKind::Heartbeat,
        Command::Complete { .. } => OpKind::Complete,
        Command::ExpireLeases => OpKind::Expire,
        Command::Cancel { .. } => OpKind::Cancel,
        Command::Retry { .. } => OpKind::Retry,
        Command::SetQueuePaused { .. } => OpKind::Pause,
        Command::ConfigureQueue { .. } => OpKind::Configure,
        Command::DrainNode { .. } => OpKind::Drain,
        Command::ReleaseNode { .. } => OpKind::Release,
        Command::CollectGarbage => OpKind::CollectGarbage,
        Command::Batch(_) => OpKind::Batch,
        Command::ApplyPlans { .. } => OpKind::ApplyPlans,
        Command::RunPlans { .. } => OpKind::RunPlans,
        Command::RemoveNode { .. } => OpKind::Remove,
        Command::AdmitNode { .. } => OpKind::Admit,
        Command::SetFormat { .. } => OpKind::SetFormat,
        Command::RedriveQueue { .. } => OpKind::Redrive,
        Command::AsCaller { .. } => OpKind::AsCaller,
        Command::EnqueueOwned { .. } => OpKind::EnqueueOwned,
        Command::CreateToken { .. } => OpKind::CreateToken,
        Command::RevokeToken { .. } => OpKind::RevokeToken,
        Command::RotateToken { .. } => OpKind::RotateToken,
        Command::TouchTokens { .. } => OpKind::TouchTokens,
        Command::ConfigureAuth { .. } => OpKind::ConfigureAuth,
        Command::Record { .. } => OpKind::Record,
        Command::AllowExec { .. } => OpKind::AllowExec,
        Command::DenyExec { .. } => OpKind::DenyExec,
        Command::AllowRoot { .. } => OpKind::AllowRoot,
        Command::DenyRoot { .. } => OpKind::DenyRoot,
        Command::ConfigurePolicy { .. } => OpKind::ConfigurePolicy,
        Command::EnqueueChildren { .. } => OpKind::EnqueueChildren,
    }
}

/// Every variant name of `Command`, as its serde derive lists them: taken
/// from the type itself, so a new variant is in this list without anyone
/// adding it.
fn all_command_variants() -> Vec<&'static str> {
    use serde::de::{Error, Visitor};
    struct Grab(Option<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &mut Grab {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Error::custom("only an enum is expected"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(variants);
            Err(Error::custom("variants taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
        }
    }
    let mut grab = Grab(None);
    let _ = <Command as serde::Deserialize>::deserialize(&mut grab);
    grab.0.expect("Command deserializes as an enum").to_vec()
}

/// The serde name of a command's variant.
fn variant_name(command: &Command) -> String {
    match serde_json::to_value(command).expect("a command serializes") {
        serde_json::Value::String(s) => s,
        serde_json::Value::Object(map) => map.keys().next().cloned().unwrap_or_default(),
        other => panic!("unexpected serialized command {other}"),
    }
}

fn patch() -> impl Strategy<Value = QueuePatch> {
    use proptest::option::weighted as maybe;
    (
        maybe(0.3, prop_oneof![1 => Just(50u64), 4 => 200u64..3_000]),
        maybe(0.3, 0u32..4),
        maybe(0.2, 0u64..2_000),
        maybe(0.2, 0u64..5_000),
        maybe(0.3, 0u32..3),
        maybe(0.2, 1u64..12),
        maybe(0.5, prop_oneof![1 => Just(0u64), 3 => 500u64..8_000]),
        maybe(0.1, 0u32..5),
        maybe(0.1, 0u64..10_000),
    )
        .prop_map(
            |(
                lease_ms,
                max_attempts,
                backoff_base_ms,
                backoff_cap_ms,
                concurrency,
                max_depth,
                retention_ms,
                stuck_expiries,
                stuck_run_ms,
            )| QueuePatch {
                lease_ms,
                max_attempts,
                backoff_base_ms,
                backoff_cap_ms,
                concurrency,
                max_depth,
                retention_ms,
                stuck_expiries,
                stuck_run_ms,
                ..QueuePatch::default()
            },
        )
}

fn entity() -> impl Strategy<Value = EntitySpec> {
    (
        prop_oneof![12 => 0u8..5, 1 => Just(6u8)],
        proptest::option::of(0u8..2),
        proptest::collection::vec(prop_oneof![12 => 0u8..5, 1 => Just(5u8)], 0..3),
        0u8..2,
        proptest::option::weighted(0.6, 0u8..5),
    )
        .prop_map(|(which, queue, deps, doc, owner)| EntitySpec { which, queue, deps, doc, owner })
}

/// An op that applies one command (what a batch may hold), maybe as a
/// client's request.
fn command_op() -> BoxedStrategy<Op> {
    let caller = prop_oneof![1 => Just(None), 6 => (1u64..=4).prop_map(Some), 1 => (5u64..=7).prop_map(Some)];
    prop_oneof![
        40 => plain_command_op(),
        12 => (caller, plain_command_op()).prop_map(|(caller, inner)| Op::AsCaller { caller, inner: Box::new(inner) }),
        3 => (prop_oneof![3 => Just(2u64), 1 => Just(4u64)], for_t0())
            .prop_map(|(caller, inner)| Op::AsCaller { caller: Some(caller), inner: Box::new(inner) }),
    ]
    .boxed()
}

/// Client ops for what group `t0` owns: what the t0 bot (token 2, when it
/// is of spec 1) may send, mostly.
fn for_t0() -> BoxedStrategy<Op> {
    let t0 = 0u8..3;
    prop_oneof![
        3 => (1usize..3, proptest::option::of(0u8..6), 0u8..2, proptest::option::weighted(0.9, t0.clone())).prop_map(
            |(n, key, queue, owner)| Op::Enqueue {
                n,
                key,
                deps: Vec::new(),
                queue,
                priority: 0,
                max_attempts: None,
                delay_ms: 0,
                bad_name: false,
                owner: Some(owner),
            }
        ),
        1 => (0usize..40).prop_map(|pick| Op::Cancel { pick }),
        1 => (0usize..40).prop_map(|pick| Op::Retry { pick }),
        2 => (proptest::collection::vec(0u8..PLANS, 1..3), 0u8..2)
            .prop_map(|(refs, default_queue)| Op::RunPlans { refs, force: false, default_queue, priority: 0 }),
        2 => proptest::collection::vec(
            (0u8..5, proptest::option::of(0u8..2), proptest::collection::vec(0u8..5, 0..2), 0u8..2, t0)
                .prop_map(|(which, queue, deps, doc, owner)| EntitySpec { which, queue, deps, doc, owner: Some(owner) }),
            1..3
        )
        .prop_map(|entities| Op::ApplyPlans { entities }),
    ]
    .boxed()
}

/// An op that applies one command, not as a client's request.
fn plain_command_op() -> BoxedStrategy<Op> {
    let dep = prop_oneof![
        3 => (0usize..40).prop_map(Dep::Id),
        1 => (0u8..6).prop_map(Dep::Key),
    ];
    let deps = prop_oneof![3 => Just(Vec::new()), 3 => proptest::collection::vec(dep, 1..3)];
    prop_oneof![
        5 => (
            1usize..4,
            proptest::option::of(0u8..6),
            deps,
            0u8..2,
            -1i32..=1,
            proptest::option::weighted(0.5, 1u32..4),
            prop_oneof![4 => Just(0u64), 1 => 100u64..3_000],
            proptest::bool::weighted(0.05),
            proptest::option::weighted(0.4, proptest::option::weighted(0.85, 0u8..5)),
        )
            .prop_map(|(n, key, deps, queue, priority, max_attempts, delay_ms, bad_name, owner)| Op::Enqueue {
                n,
                key,
                deps,
                queue,
                priority,
                max_attempts,
                delay_ms,
                bad_name,
                owner
            }),
        5 => (1..=NODES, 0u32..4, proptest::option::of(0u8..3))
            .prop_map(|(node, max, queue)| Op::Lease { node, max, queue }),
        6 => (0usize..20, proptest::bool::weighted(0.2), 0u8..3)
            .prop_map(|(pick, stale, outcome)| Op::Complete { pick, stale, outcome }),
        2 => (1..=NODES, proptest::option::weighted(0.3, 0usize..40), any::<bool>())
            .prop_map(|(node, stale, progress)| Op::Heartbeat { node, stale, progress }),
        2 => Just(Op::Expire),
        1 => (0usize..40).prop_map(|pick| Op::Cancel { pick }),
        1 => (0usize..40).prop_map(|pick| Op::Retry { pick }),
        1 => (0u8..4, any::<bool>()).prop_map(|(queue, paused)| Op::Pause { queue, paused }),
        2 => (0u8..4, patch()).prop_map(|(queue, patch)| Op::Configure { queue, patch }),
        1 => (1..=NODES, proptest::bool::weighted(0.6)).prop_map(|(node, draining)| Op::Drain { node, draining }),
        1 => (1..=NODES, any::<bool>()).prop_map(|(node, forget)| Op::Release { node, forget }),
        1 => (1..=NODES).prop_map(|node| Op::Remove { node }),
        1 => (1..=NODES).prop_map(|node| Op::Admit { node }),
        2 => Just(Op::CollectGarbage),
        2 => proptest::collection::vec(entity(), 1..4).prop_map(|entities| Op::ApplyPlans { entities }),
        2 => (proptest::collection::vec(0u8..6, 1..3), proptest::bool::weighted(0.2), 0u8..2, -1i32..=1)
            .prop_map(|(refs, force, default_queue, priority)| Op::RunPlans { refs, force, default_queue, priority }),
        2 => prop_oneof![1 => 1u32..=2, 2 => Just(3u32), 2 => Just(4u32)].prop_map(|format| Op::SetFormat { format }),
        1 => (0u8..4, 0u32..4).prop_map(|(queue, max)| Op::Redrive { queue, max }),
        // Mostly token `n` of spec `n - 1`, so that the callers 1 to 4 are
        // usually the reader, the t0 bot, the operator and the admin.
        3 => prop_oneof![
            8 => (1u64..=4).prop_map(|id| (id, id as u8 - 1)),
            3 => (1u64..=6, prop_oneof![6 => 0u8..4, 1 => 4u8..6]),
        ]
        .prop_map(|(id, spec)| Op::CreateToken { id, spec }),
        1 => (1u64..=6).prop_map(|id| Op::RevokeToken { id }),
        1 => (1u64..=6, 1u64..=6, proptest::bool::weighted(0.1))
            .prop_map(|(old, new, bad_hash)| Op::RotateToken { old, new, bad_hash }),
        1 => proptest::collection::vec((1u64..=7, 0u64..3_000), 0..3).prop_map(|used| Op::TouchTokens { used }),
        1 => (proptest::option::of(proptest::bool::weighted(0.3)), proptest::option::of(0u8..4))
            .prop_map(|(enforce, retention)| Op::ConfigureAuth { enforce, retention }),
        1 => (0u8..2).prop_map(|which| Op::Record { which }),
        // The policy's commands share one slot: they touch no task.
        2 => prop_oneof![
            (0u8..4, 0u8..3).prop_map(|(prog, args)| Op::AllowExec { prog, args }),
            (0u8..4, proptest::option::of(0u8..3)).prop_map(|(prog, args)| Op::DenyExec { prog, args }),
            (0u8..8).prop_map(|which| Op::AllowRoot { which }),
            (0u8..4).prop_map(|which| Op::DenyRoot { which }),
            any::<bool>().prop_map(|enforce| Op::ConfigurePolicy { enforce }),
        ],
        1 => (0usize..20, proptest::bool::weighted(0.2), 1usize..4)
            .prop_map(|(pick, stale, n)| Op::EnqueueChildren { pick, stale, n }),
    ]
    .boxed()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        44 => command_op(),
        5 => prop_oneof![40 => 1u64..4_000, 10 => 10_000u64..40_000, 2 => HOUR_MS..HOUR_MS * 3]
            .prop_map(|ms| Op::Advance { ms }),
        3 => proptest::collection::vec(command_op(), 0..5).prop_map(Op::Batch),
        1 => Just(Op::Snapshot),
        1 => any::<bool>().prop_map(|from_snapshot| Op::Restart { from_snapshot }),
    ]
}

// ------------------------------------------------------------------ the model

#[derive(Debug, Clone)]
struct MTask {
    queue: String,
    kind: &'static str,
    priority: i32,
    status: TaskStatus,
    attempt: u32,
    max_attempts: u32,
    not_before: u64,
    lease: Option<Lease>,
    deps: Vec<TaskId>,
    key: Option<String>,
    finished: Option<u64>,
}

#[derive(Debug, Clone)]
struct MEntry {
    entity: NewEntity,
    revision: u64,
    generation: u64,
}

/// Where a plan's current run stands (as `RunPlans` sees it).
enum RunState {
    Never,
    Forgotten,
    Live(TaskId, TaskStatus),
}

/// A token as the model knows it (owners canonical).
#[derive(Debug, Clone, PartialEq)]
struct MToken {
    name: String,
    role: Role,
    owners: Vec<String>,
    hash: Vec<u8>,
    created_ms: u64,
    expires_ms: Option<u64>,
    last_used_ms: Option<u64>,
    created_by: String,
}

#[derive(Debug, Clone)]
struct Model {
    tasks: BTreeMap<TaskId, MTask>,
    keys: BTreeMap<String, TaskId>,
    /// Config and paused, by name.
    queues: BTreeMap<String, (QueueConfig, bool)>,
    /// Known nodes and whether they drain.
    nodes: BTreeMap<u64, bool>,
    removed: BTreeSet<u64>,
    catalog: BTreeMap<String, MEntry>,
    next_id: u64,
    next_token: u64,
    format: u32,
    forgotten: BTreeSet<TaskId>,
    /// Keys of forgotten tasks.
    forgotten_keys: BTreeSet<String>,
    tokens: BTreeMap<u64, MToken>,
    enforce: bool,
    audit_retention_ms: u64,
    /// Canonical owners of tasks that have one.
    task_owners: BTreeMap<TaskId, &'static str>,
    /// The audit records the cold store must hold, by sequence number.
    audit: BTreeMap<u64, AuditRecord>,
    next_audit: u64,
    /// The exec rules (program, leading arguments), in order.
    programs: Vec<(String, Vec<String>)>,
    /// Data roots by stored URL, with the root as given.
    roots: BTreeMap<String, NewRoot>,
    policy_enforce: bool,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            tasks: BTreeMap::new(),
            keys: BTreeMap::new(),
            queues: BTreeMap::new(),
            nodes: BTreeMap::new(),
            removed: BTreeSet::new(),
            catalog: BTreeMap::new(),
            next_id: 0,
            next_token: 0,
            format: 1,
            forgotten: BTreeSet::new(),
            forgotten_keys: BTreeSet::new(),
            tokens: BTreeMap::new(),
            enforce: false,
            audit_retention_ms: 90 * 24 * HOUR_MS,
            task_owners: BTreeMap::new(),
            audit: BTreeMap::new(),
            next_audit: 0,
            programs: Vec::new(),
            roots: BTreeMap::new(),
            policy_enforce: false,
        }
    }
}

fn invalid_entity() -> Rejection {
    Rejection::InvalidEntity { index: 0, entity: String::new(), field: String::new(), reason: String::new() }
}

fn invalid_name(field: &str) -> Rejection {
    Rejection::InvalidName { index: 0, field: field.into(), reason: String::new() }
}

/// Drops the free-text parts of rejections (messages, which check of an
/// entity batch failed first), which the model does not predict.
fn norm_rejection(r: Rejection) -> Rejection {
    match r {
        Rejection::WrongStatus { task, status, .. } => Rejection::WrongStatus { task, status, expected: String::new() },
        Rejection::InvalidName { index, field, .. } => Rejection::InvalidName { index, field, reason: String::new() },
        Rejection::InvalidEntity { .. } => invalid_entity(),
        Rejection::InvalidConfig(_) => Rejection::InvalidConfig(String::new()),
        Rejection::UnknownDependency { index, .. } => Rejection::UnknownDependency { index, dependency: String::new() },
        Rejection::Unauthenticated(_) => Rejection::Unauthenticated(String::new()),
        Rejection::Forbidden(_) => Rejection::Forbidden(String::new()),
        Rejection::InvalidToken(_) => Rejection::InvalidToken(String::new()),
        other => other,
    }
}

fn norm(r: Response) -> Response {
    match r {
        Response::Rejected(j) => Response::Rejected(norm_rejection(j)),
        Response::Batch(v) => Response::Batch(v.into_iter().map(norm).collect()),
        Response::Completed(v) => Response::Completed(v.into_iter().map(|x| x.map_err(norm_rejection)).collect()),
        other => other,
    }
}

impl Model {
    fn config(&self, q: &str) -> QueueConfig {
        self.queues.get(q).map(|(c, _)| c.clone()).unwrap_or_default()
    }

    fn ensure_queue(&mut self, q: &str) {
        self.queues.entry(q.to_string()).or_insert((QueueConfig::default(), false));
    }

    /// Tasks of `q` not yet ended: what its depth limit counts.
    fn depth(&self, q: &str) -> u64 {
        self.tasks
            .values()
            .filter(|t| {
                t.queue == q && matches!(t.status, TaskStatus::Pending | TaskStatus::Blocked | TaskStatus::Leased)
            })
            .count() as u64
    }

    fn leased(&self) -> Vec<TaskId> {
        self.tasks.iter().filter(|(_, t)| t.status == TaskStatus::Leased).map(|(i, _)| *i).collect()
    }

    fn leased_by(&self, node: u64) -> Vec<TaskId> {
        self.tasks.iter().filter(|(_, t)| t.lease.as_ref().is_some_and(|l| l.node == node)).map(|(i, _)| *i).collect()
    }

    /// A task to name: one that exists, or now and then one forgotten.
    fn pick(&self, pick: usize) -> Option<TaskId> {
        let n = self.tasks.len();
        let i = pick % (n + 1);
        if i < n {
            self.tasks.keys().nth(i).copied()
        } else {
            self.forgotten.iter().next().copied().or_else(|| self.tasks.keys().next().copied())
        }
    }

    fn end(&mut self, id: TaskId, status: TaskStatus, now: u64) {
        let t = self.tasks.get_mut(&id).expect("a model task");
        t.status = status;
        t.lease = None;
        t.finished = Some(now);
    }

    /// Cancels everything blocked on `id`, transitively.
    fn cancel_dependents(&mut self, id: TaskId, now: u64) {
        let mut stack = vec![id];
        while let Some(f) = stack.pop() {
            let waiting: Vec<TaskId> = self
                .tasks
                .iter()
                .filter(|(_, t)| t.status == TaskStatus::Blocked && t.deps.contains(&f))
                .map(|(i, _)| *i)
                .collect();
            for w in waiting {
                self.end(w, TaskStatus::Cancelled, now);
                stack.push(w);
            }
        }
    }

    /// Blocked tasks whose dependencies all succeeded (or were forgotten) run.
    fn unblock(&mut self, now: u64) {
        let ready: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.status == TaskStatus::Blocked
                    && t.deps.iter().all(|d| self.tasks.get(d).is_none_or(|dt| dt.status == TaskStatus::Succeeded))
            })
            .map(|(i, _)| *i)
            .collect();
        for r in ready {
            let t = self.tasks.get_mut(&r).expect("a model task");
            t.status = TaskStatus::Pending;
            t.not_before = t.not_before.max(now);
        }
    }

    /// An attempt ended without success (failure, expiry, release): dead once
    /// its attempts are spent, else pending after a backoff within the
    /// documented bounds (the exact value, spread by task id, is the state
    /// machine's: read from `sm`).
    fn fail(&mut self, id: TaskId, now: u64, sm: &StateMachine) -> Result<TaskStatus, TestCaseError> {
        let t = &self.tasks[&id];
        if t.attempt >= t.max_attempts {
            self.end(id, TaskStatus::Dead, now);
            self.cancel_dependents(id, now);
            return Ok(TaskStatus::Dead);
        }
        let c = self.config(&t.queue);
        let exp = t.attempt.saturating_sub(1).min(40);
        let full = c.backoff_base_ms.saturating_mul(1u64 << exp).min(c.backoff_cap_ms);
        let got = sm.task(id).map_or(0, |x| x.not_before_ms);
        prop_assert!(
            got >= now + full - full / 4 && got <= now + full,
            "task {} backs off to {} at {}: outside [{}, {}]",
            id,
            got,
            now,
            now + full - full / 4,
            now + full
        );
        let t = self.tasks.get_mut(&id).expect("a model task");
        t.status = TaskStatus::Pending;
        t.lease = None;
        t.not_before = got;
        Ok(TaskStatus::Pending)
    }

    fn touch(&mut self, node: u64) -> bool {
        *self.nodes.entry(node).or_insert(false)
    }

    fn retry(&mut self, id: TaskId, now: u64) -> Response {
        let Some(t) = self.tasks.get(&id) else { return Response::Rejected(Rejection::UnknownTask(id)) };
        if !matches!(t.status, TaskStatus::Dead | TaskStatus::Cancelled) {
            return Response::Rejected(Rejection::WrongStatus { task: id, status: t.status, expected: String::new() });
        }
        let mut blocked = false;
        for d in &t.deps {
            match self.tasks.get(d).map(|x| x.status) {
                None | Some(TaskStatus::Succeeded) => {}
                Some(s @ (TaskStatus::Dead | TaskStatus::Cancelled)) => {
                    return Response::Rejected(Rejection::DependencyFailed { index: 0, dependency: *d, status: s })
                }
                Some(_) => blocked = true,
            }
        }
        let status = if blocked { TaskStatus::Blocked } else { TaskStatus::Pending };
        let t = self.tasks.get_mut(&id).expect("a model task");
        t.status = status;
        t.attempt = 0;
        t.not_before = now;
        t.finished = None;
        t.lease = None;
        Response::Task { id, status }
    }

    fn release(&mut self, node: u64, now: u64, sm: &StateMachine) -> Result<Vec<(TaskId, TaskStatus)>, TestCaseError> {
        let mut out = Vec::new();
        for id in self.leased_by(node) {
            out.push((id, self.fail(id, now, sm)?));
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        q: &str,
        kind: &'static str,
        key: Option<&str>,
        deps: &[TaskRef],
        n: usize,
        priority: i32,
        max_attempts: Option<u32>,
        delay: u64,
        now: u64,
    ) -> Response {
        if kind != "noop" {
            return Response::Rejected(invalid_name("kind"));
        }
        if let Some(id) = key.and_then(|k| self.keys.get(k)).copied() {
            let status = self.tasks[&id].status;
            return Response::Enqueued(vec![Enqueued { id, created: false, status }; n]);
        }
        let mut dep_ids = Vec::new();
        for dep in deps {
            let d = match dep {
                TaskRef::Id(id) => *id,
                TaskRef::Key(k) => match self.keys.get(k.as_str()) {
                    Some(id) => *id,
                    None => {
                        return Response::Rejected(Rejection::UnknownDependency { index: 0, dependency: String::new() })
                    }
                },
            };
            match self.tasks.get(&d) {
                None => {
                    return Response::Rejected(Rejection::UnknownDependency { index: 0, dependency: String::new() })
                }
                Some(t) if matches!(t.status, TaskStatus::Dead | TaskStatus::Cancelled) => {
                    return Response::Rejected(Rejection::DependencyFailed {
                        index: 0,
                        dependency: d,
                        status: t.status,
                    })
                }
                Some(_) => dep_ids.push(d),
            }
        }
        let added = if key.is_some() { 1 } else { n };
        let (depth, limit) = (self.depth(q), self.config(q).max_depth);
        if depth + added as u64 > limit {
            return Response::Rejected(Rejection::QueueFull { queue: q.into(), depth, limit });
        }
        self.ensure_queue(q);
        let config = self.config(q);
        let blocked = dep_ids.iter().any(|d| self.tasks[d].status != TaskStatus::Succeeded);
        let status = if blocked { TaskStatus::Blocked } else { TaskStatus::Pending };
        let mut out = Vec::new();
        for _ in 0..added {
            let id = TaskId(self.next_id);
            self.next_id += 1;
            self.tasks.insert(
                id,
                MTask {
                    queue: q.into(),
                    kind,
                    priority,
                    status,
                    attempt: 0,
                    max_attempts: max_attempts.unwrap_or(config.max_attempts).max(1),
                    not_before: now + delay,
                    lease: None,
                    deps: dep_ids.clone(),
                    key: key.map(String::from),
                    finished: None,
                },
            );
            if let Some(k) = key {
                self.keys.insert(k.into(), id);
            }
            out.push(Enqueued { id, created: true, status });
        }
        while out.len() < n {
            let first = out[0].clone();
            out.push(Enqueued { created: false, ..first });
        }
        Response::Enqueued(out)
    }

    fn configure(&mut self, q: &str, patch: &QueuePatch) -> Response {
        if q == "bad name" {
            return Response::Rejected(invalid_name("queue"));
        }
        // The queue is made before the patch is checked, even when it is
        // then refused: see `a_refused_configure_queue_changes_nothing`.
        self.ensure_queue(q);
        let mut c = self.config(q);
        let p = patch.clone();
        c.lease_ms = p.lease_ms.unwrap_or(c.lease_ms);
        c.max_attempts = p.max_attempts.unwrap_or(c.max_attempts);
        c.backoff_base_ms = p.backoff_base_ms.unwrap_or(c.backoff_base_ms);
        c.backoff_cap_ms = p.backoff_cap_ms.unwrap_or(c.backoff_cap_ms);
        c.concurrency = p.concurrency.unwrap_or(c.concurrency);
        c.max_depth = p.max_depth.unwrap_or(c.max_depth);
        c.retention_ms = p.retention_ms.unwrap_or(c.retention_ms);
        c.stuck_expiries = p.stuck_expiries.unwrap_or(c.stuck_expiries);
        c.stuck_run_ms = p.stuck_run_ms.unwrap_or(c.stuck_run_ms);
        c.stuck_factor = p.stuck_factor.unwrap_or(c.stuck_factor);
        c.stuck_silence_ms = p.stuck_silence_ms.unwrap_or(c.stuck_silence_ms);
        if c.lease_ms < 100 || c.max_attempts == 0 || c.backoff_base_ms > c.backoff_cap_ms {
            return Response::Rejected(Rejection::InvalidConfig(String::new()));
        }
        self.queues.get_mut(q).expect("made above").0 = c;
        Response::Done
    }

    /// Ended tasks past their queue's retention are forgotten.
    fn collect_garbage(&mut self, now: u64) -> Vec<TaskId> {
        let doomed: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                let retention = self.config(&t.queue).retention_ms;
                retention > 0 && t.finished.is_some_and(|at| at.saturating_add(retention) <= now)
            })
            .map(|(i, _)| *i)
            .collect();
        for id in &doomed {
            if let Some(t) = self.tasks.remove(id) {
                if let Some(k) = t.key {
                    self.keys.remove(&k);
                    self.forgotten_keys.insert(k);
                }
            }
            self.task_owners.remove(id);
            self.forgotten.insert(*id);
        }
        doomed
    }

    /// Audit records of every hour that ended a retention ago are dropped,
    /// an hour at a time; returns how many.
    fn collect_audit(&mut self, now: u64) -> usize {
        let before = self.audit.len();
        while let Some(hour) = self.audit.values().next().map(|r| r.at_ms / HOUR_MS) {
            if (hour + 1) * HOUR_MS + self.audit_retention_ms > now {
                break;
            }
            self.audit.retain(|_, r| r.at_ms / HOUR_MS != hour);
        }
        before - self.audit.len()
    }

    /// Who a request is from (for its audit record), and whether it is
    /// refused, with a note of why it is or is not.
    fn authorize(&self, caller: Caller, command: &Command, now: u64) -> (String, Option<Rejection>, &'static str) {
        let needed = needed_role(command);
        let forbidden = Some(Rejection::Forbidden(String::new()));
        let unauthenticated = Some(Rejection::Unauthenticated(String::new()));
        let token = match caller {
            Caller::Anonymous => None,
            Caller::Token(id) => self.tokens.get(&id),
        };
        let principal = match (caller, token) {
            (Caller::Anonymous, _) => "anonymous".to_string(),
            (_, Some(t)) => t.name.clone(),
            (Caller::Token(id), None) => format!("{id:016x}"),
        };
        let Some(needed) = needed else { return (principal, forbidden, "as caller: not a client command") };
        let (refusal, why) = match (caller, token) {
            (Caller::Anonymous, _) if self.enforce => (unauthenticated, "as caller: anonymous refused while enforcing"),
            (Caller::Anonymous, _) => (None, "as caller: anonymous served in warn mode"),
            (_, None) => (unauthenticated, "as caller: unknown or revoked token refused"),
            (_, Some(t)) if t.expires_ms.is_some_and(|e| e <= now) => {
                (unauthenticated, "as caller: expired token refused")
            }
            (_, Some(t)) if t.role < needed => (forbidden, "as caller: role too low"),
            (_, Some(t)) if t.owners.is_empty() => (None, "as caller: token applied"),
            (_, Some(t)) if self.owners_allow(&t.owners, command) => (None, "as caller: owner-scoped token applied"),
            (_, Some(_)) => (forbidden, "as caller: owner-scoped token refused"),
        };
        (principal, refusal, why)
    }

    /// Whether a token scoped to `owners` may send `command`.
    fn owners_allow(&self, owners: &[String], command: &Command) -> bool {
        let mine = |owner: Option<&str>| owner.is_some_and(|o| owners.iter().any(|m| m == canonical(o)));
        match command {
            Command::Enqueue { .. } => false,
            Command::EnqueueOwned { owner, .. } => mine(owner.as_deref()),
            Command::Cancel { task, .. } | Command::Retry { task } => mine(self.task_owners.get(task).copied()),
            Command::RunPlans { refs, .. } => {
                refs.iter().all(|r| mine(self.catalog.get(r).and_then(|e| e.entity.owner.as_deref())))
            }
            Command::ApplyPlans { entities } => entities.iter().all(|e| {
                mine(e.owner.as_deref())
                    && self.catalog.get(&e.entity_ref).is_none_or(|c| mine(c.entity.owner.as_deref()))
            }),
            _ => true,
        }
    }

    fn create_token(&mut self, id: u64, spec: u8, now: u64, created_by: &str) -> Response {
        let Some(&(name, role, owners, lifetime)) = TOKEN_SPECS.get(spec as usize) else {
            return Response::Rejected(Rejection::InvalidToken(String::new()));
        };
        if self.tokens.contains_key(&id) {
            return Response::Rejected(Rejection::InvalidToken(String::new()));
        }
        let token = MToken {
            name: name.into(),
            role,
            owners: owners.iter().map(|o| canonical(o).to_string()).collect(),
            hash: token_hash(id, spec),
            created_ms: now,
            expires_ms: lifetime.map(|l| now + l),
            last_used_ms: None,
            created_by: created_by.into(),
        };
        self.tokens.insert(id, token);
        Response::Done
    }

    fn rotate_token(&mut self, old: u64, new: u64, bad_hash: bool, now: u64, created_by: &str) -> Response {
        let refused = Response::Rejected(Rejection::InvalidToken(String::new()));
        let Some(previous) = self.tokens.get(&old).cloned() else { return refused };
        if new == old || self.tokens.contains_key(&new) || bad_hash {
            return refused;
        }
        self.tokens.remove(&old);
        let lifetime = previous.expires_ms.map(|e| e.saturating_sub(previous.created_ms));
        let token = MToken {
            hash: rotated_hash(new),
            created_ms: now,
            expires_ms: lifetime.map(|l| now + l),
            last_used_ms: None,
            created_by: created_by.into(),
            ..previous
        };
        self.tokens.insert(new, token);
        Response::Done
    }

    fn apply_plans(&mut self, entities: &[NewEntity], now: u64) -> Response {
        let _ = now;
        let refuse = Response::Rejected(invalid_entity());
        let mut batch: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, e) in entities.iter().enumerate() {
            if e.entity_ref == BAD_REF
                || batch.insert(&e.entity_ref, i).is_some()
                || e.depends_on.contains(&e.entity_ref)
            {
                return refuse;
            }
        }
        for e in entities {
            if e.depends_on.iter().any(|d| !batch.contains_key(d.as_str()) && !self.catalog.contains_key(d)) {
                return refuse;
            }
        }
        // The graph as it would be: the catalog's edges, replaced by the batch's.
        let edges = |r: &str| -> Vec<String> {
            match batch.get(r) {
                Some(&i) => entities[i].depends_on.clone(),
                None => self.catalog.get(r).map(|c| c.entity.depends_on.clone()).unwrap_or_default(),
            }
        };
        let nodes: BTreeSet<String> = batch.keys().map(|s| s.to_string()).chain(self.catalog.keys().cloned()).collect();
        if has_cycle(&nodes, edges) {
            return refuse;
        }
        let mut out = Vec::new();
        for e in entities {
            let applied = match self.catalog.get_mut(&e.entity_ref) {
                Some(entry) => {
                    let changed = entry.entity != *e;
                    if changed {
                        entry.entity = e.clone();
                        entry.revision += 1;
                    }
                    AppliedEntity {
                        entity_ref: e.entity_ref.clone(),
                        created: false,
                        changed,
                        revision: entry.revision,
                    }
                }
                None => {
                    self.catalog.insert(e.entity_ref.clone(), MEntry { entity: e.clone(), revision: 1, generation: 0 });
                    AppliedEntity { entity_ref: e.entity_ref.clone(), created: true, changed: true, revision: 1 }
                }
            };
            out.push(applied);
        }
        Response::PlansApplied(out)
    }

    fn run_state(&self, r: &str) -> RunState {
        let entry = &self.catalog[r];
        if entry.generation == 0 {
            return RunState::Never;
        }
        match self.keys.get(&run_key(r, entry.generation)) {
            Some(id) => RunState::Live(*id, self.tasks[id].status),
            None => RunState::Forgotten,
        }
    }

    /// Known: a blocked task that depends on a forgotten task makes the
    /// live indexes differ from a rebuild (see
    /// `a_forgotten_dependency_leaves_the_indexes_as_a_rebuild_would`).
    /// Tolerated only in exactly that state.
    fn is_plan(&self, r: &str) -> bool {
        self.catalog.get(r).is_some_and(|c| c.entity.is_plan)
    }
}

/// The role a client's request needs (the model's own table); `None`: not
/// a client's command.
fn needed_role(command: &Command) -> Option<Role> {
    match command {
        Command::Enqueue { .. }
        | Command::EnqueueOwned { .. }
        | Command::Cancel { .. }
        | Command::Retry { .. }
        | Command::ApplyPlans { .. }
        | Command::RunPlans { .. } => Some(Role::Submit),
        Command::SetQueuePaused { .. }
        | Command::ConfigureQueue { .. }
        | Command::DrainNode { .. }
        | Command::RedriveQueue { .. }
        | Command::SetFormat { .. }
        | Command::Record { .. } => Some(Role::Operate),
        Command::CreateToken { .. }
        | Command::RevokeToken { .. }
        | Command::RotateToken { .. }
        | Command::ConfigureAuth { .. }
        | Command::AllowExec { .. }
        | Command::DenyExec { .. }
        | Command::AllowRoot { .. }
        | Command::DenyRoot { .. }
        | Command::ConfigurePolicy { .. } => Some(Role::Admin),
        _ => None,
    }
}

/// What an op returns (as a rejected test case, caught by `Run::step`) when
/// its command was refused before anything it predicts could happen: the
/// model goes back to what it was before the op.
const REFUSED_AS_A_WHOLE: &str = "the request was refused as a whole";

fn token_hash(id: u64, spec: u8) -> Vec<u8> {
    if spec == 4 {
        return vec![spec; 3];
    }
    vec![(id as u8) | (spec << 4); 32]
}

fn rotated_hash(id: u64) -> Vec<u8> {
    vec![0x80 | id as u8; 32]
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Read => "read",
        Role::Submit => "submit",
        Role::Operate => "operate",
        Role::Admin => "admin",
    }
}

/// The action an audit record names (the model's own table).
fn audit_action(command: &Command) -> String {
    let name = match command {
        Command::Record { action, .. } => return action.clone(),
        Command::Enqueue { .. } | Command::EnqueueOwned { .. } => "enqueue",
        Command::Lease { .. } => "lease",
        Command::Heartbeat { .. } => "heartbeat",
        Command::Complete { .. } => "complete",
        Command::ExpireLeases => "expire leases",
        Command::Cancel { .. } => "cancel",
        Command::Retry { .. } => "retry",
        Command::SetQueuePaused { .. } => "pause queue",
        Command::ConfigureQueue { .. } => "configure queue",
        Command::DrainNode { .. } => "drain node",
        Command::ReleaseNode { .. } => "release node",
        Command::CollectGarbage => "collect garbage",
        Command::ApplyPlans { .. } => "apply plans",
        Command::RunPlans { .. } => "run plans",
        Command::RemoveNode { .. } => "remove node",
        Command::AdmitNode { .. } => "admit node",
        Command::SetFormat { .. } => "finalize",
        Command::RedriveQueue { .. } => "redrive queue",
        Command::CreateToken { .. } => "create token",
        Command::RevokeToken { .. } => "revoke token",
        Command::RotateToken { .. } => "rotate token",
        Command::TouchTokens { .. } => "touch tokens",
        Command::ConfigureAuth { .. } => "configure auth",
        Command::AllowExec { .. } => "allow exec",
        Command::DenyExec { .. } => "deny exec",
        Command::AllowRoot { .. } => "allow root",
        Command::DenyRoot { .. } => "deny root",
        Command::ConfigurePolicy { .. } => "configure policy",
        Command::EnqueueChildren { .. } => "enqueue children",
        other => panic!("the model does not audit {other:?}"),
    };
    name.to_string()
}

/// What an audit record names (the model's commands only).
fn audit_target(command: &Command) -> String {
    match command {
        Command::Enqueue { tasks } | Command::EnqueueOwned { tasks, .. } => {
            format!("{} task(s) in {}", tasks.len(), tasks[0].queue)
        }
        Command::Cancel { task, .. } | Command::Retry { task } => format!("task {task}"),
        Command::SetQueuePaused { queue, paused } => format!("queue {queue} paused={paused}"),
        Command::ConfigureQueue { queue, .. } | Command::RedriveQueue { queue, .. } => format!("queue {queue}"),
        Command::DrainNode { node, draining } => format!("node {node} draining={draining}"),
        Command::ApplyPlans { entities } => entities.iter().map(|e| e.entity_ref.clone()).collect::<Vec<_>>().join(","),
        Command::RunPlans { refs, .. } => refs.join(","),
        Command::SetFormat { format } => format!("format {format}"),
        Command::CreateToken { token } => {
            format!("token {} ({:016x}, role {})", token.name, token.id, role_name(token.role))
        }
        Command::RevokeToken { id } => format!("token {id:016x}"),
        Command::RotateToken { old, new } => format!("token {old:016x} -> {:016x}", new.id),
        Command::ConfigureAuth { enforce, audit_retention_ms } => {
            let mode = enforce.map(|e| format!("mode {}", if e { "enforce" } else { "warn" }));
            let retention = audit_retention_ms.map(|r| format!("audit retention {r} ms"));
            [mode, retention].into_iter().flatten().collect::<Vec<_>>().join(", ")
        }
        Command::Record { target, .. } => target.clone(),
        Command::AllowExec { program, args } | Command::DenyExec { program, args: Some(args) } => {
            std::iter::once(program.clone()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ")
        }
        Command::DenyExec { program, args: None } => program.clone(),
        Command::AllowRoot { root } => format!(
            "{} (endpoint {}, credentials {})",
            root.url,
            root.endpoint.as_deref().unwrap_or("none"),
            root.credentials
        ),
        Command::DenyRoot { url } => url.clone(),
        Command::ConfigurePolicy { enforce } => format!("policy {}", if *enforce { "enforce" } else { "open" }),
        _ => String::new(),
    }
}

/// An audit record's outcome, from the response (which the model predicts).
fn audit_outcome(response: &Response) -> String {
    let first_refusal = |rs: &[Response]| {
        rs.iter().find_map(|r| match r {
            Response::Rejected(j) => Some(j.to_string()),
            _ => None,
        })
    };
    match response {
        Response::Rejected(j) => format!("refused: {j}"),
        Response::Batch(rs) => first_refusal(rs).map_or_else(|| "ok".to_string(), |j| format!("refused in part: {j}")),
        _ => "ok".to_string(),
    }
}

/// The tasks an applied request must give a `Requested` event, in order.
fn requested_tasks(command: &Command, response: &Response) -> Vec<TaskId> {
    match (command, response) {
        (Command::Enqueue { .. } | Command::EnqueueOwned { .. }, Response::Enqueued(made)) => {
            made.iter().filter(|e| e.created).map(|e| e.id).collect()
        }
        (Command::Cancel { task, .. } | Command::Retry { task }, Response::Task { .. }) => vec![*task],
        (Command::RunPlans { .. }, Response::PlansRun(runs)) => {
            runs.iter().filter(|r| r.created).map(|r| r.task).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether the graph over `nodes` has a cycle.
fn has_cycle(nodes: &BTreeSet<String>, edges: impl Fn(&str) -> Vec<String>) -> bool {
    // 0 unvisited, 1 on the stack, 2 done.
    fn visit(n: &str, color: &mut BTreeMap<String, u8>, edges: &dyn Fn(&str) -> Vec<String>) -> bool {
        match color.get(n).copied().unwrap_or(0) {
            1 => return true,
            2 => return false,
            _ => {}
        }
        color.insert(n.to_string(), 1);
        for d in edges(n) {
            if visit(&d, color, edges) {
                return true;
            }
        }
        color.insert(n.to_string(), 2);
        false
    }
    let mut color = BTreeMap::new();
    nodes.iter().any(|n| visit(n, &mut color, &edges))
}

// ------------------------------------------------------------------ snapshots

/// A state as a snapshot file stores it: `codec::encode_state`'s encoding
/// (which is crate-private): the version its cluster format calls for, and
/// the bincode of [`StoredState`].
fn encode_state(sm: &StateMachine) -> (u32, Vec<u8>) {
    let state = StoredState(sm);
    let version = state.snapshot_version();
    (version, bincode::serde::encode_to_vec(state, bincode::config::standard()).expect("a state encodes"))
}

/// The inverse, as `codec::decode_state` reads a snapshot at restart.
fn decode_state(version: u32, bytes: &[u8]) -> Result<StateMachine, TestCaseError> {
    let config = bincode::config::standard();
    let (sm, used) = match version {
        3 => bincode::serde::decode_from_slice::<StateV3, _>(bytes, config).map(|(s, n)| (s.0, n)),
        4 => bincode::serde::decode_from_slice::<StateV4, _>(bytes, config).map(|(s, n)| (s.0, n)),
        5 => bincode::serde::decode_from_slice::<StateV5, _>(bytes, config).map(|(s, n)| (s.0, n)),
        6 => bincode::serde::decode_from_slice::<StateV6, _>(bytes, config).map(|(s, n)| (s.0, n)),
        v => return Err(TestCaseError::fail(format!("snapshot version {v}"))),
    }
    .map_err(|e| TestCaseError::fail(format!("decoding a version {version} snapshot: {e}")))?;
    prop_assert_eq!(used, bytes.len(), "trailing bytes after a snapshot state");
    Ok(sm)
}

fn restart_note(version: u32) -> &'static str {
    match version {
        3 => "restart from a version 3 snapshot",
        4 => "restart from a version 4 snapshot",
        _ => "restart from a version 5 snapshot",
    }
}

fn bytes(sm: &StateMachine) -> Vec<u8> {
    encode_state(sm).1
}

/// Counts the cold writes of one command, and keeps the events and audit
/// records it wrote.
struct Counting<'a> {
    inner: &'a mut MemCold,
    writes: usize,
    events: Vec<(TaskId, Event)>,
    audits: Vec<(u64, AuditRecord)>,
}

/// What [`Counting`] saw.
struct Written {
    writes: usize,
    events: Vec<(TaskId, Event)>,
    audits: Vec<(u64, AuditRecord)>,
}

impl ColdSink for Counting<'_> {
    fn put_payload(&mut self, task: TaskId, payload: &str) {
        self.writes += 1;
        self.inner.put_payload(task, payload)
    }
    fn put_result(&mut self, task: TaskId, result: &str) {
        self.writes += 1;
        self.inner.put_result(task, result)
    }
    fn put_event(&mut self, task: TaskId, seq: u32, event: &Event) {
        self.writes += 1;
        self.events.push((task, event.clone()));
        self.inner.put_event(task, seq, event)
    }
    fn delete_event(&mut self, task: TaskId, seq: u32) {
        self.writes += 1;
        self.inner.delete_event(task, seq)
    }
    fn forget_task(&mut self, task: TaskId, history_len: u32) {
        self.writes += 1;
        self.inner.forget_task(task, history_len)
    }
    fn put_audit(&mut self, seq: u64, record: &AuditRecord) {
        self.writes += 1;
        self.audits.push((seq, record.clone()));
        self.inner.put_audit(seq, record)
    }
    fn delete_audit(&mut self, from: u64, to: u64) {
        self.writes += 1;
        self.inner.delete_audit(from, to)
    }
}

/// Where a run snapshotted or restarted, for replaying its log through the
/// real store at the same points.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "storage"), allow(dead_code))]
enum Mark {
    Snapshot,
    Restart { from_snapshot: bool },
}

struct Snap {
    version: u32,
    bytes: Vec<u8>,
    /// The log entries it covers.
    at: usize,
}

// ------------------------------------------------------------------ a run

struct Run {
    sm: StateMachine,
    cold: MemCold,
    model: Model,
    now: u64,
    log: Vec<Stamped>,
    /// Fed every log entry, never restarted.
    replica: StateMachine,
    replica_cold: MemCold,
    snapshot: Option<Snap>,
    #[cfg_attr(not(feature = "storage"), allow(dead_code))]
    marks: Vec<(usize, Mark)>,
    /// While a batch op runs: its items' commands and responses.
    batch: Option<Vec<(Command, Response)>>,
    /// The op being run (a batch's item while it runs).
    current: OpKind,
    /// How many commands of each variant were applied, batch items included.
    seen: BTreeMap<String, usize>,
    /// Things worth having seen at least once (see `REQUIRED_OUTCOMES`).
    outcomes: std::cell::RefCell<BTreeSet<&'static str>>,
    /// While an `AsCaller` op runs: who the next command applied is from.
    caller: Option<Caller>,
    /// While an applied `AsCaller` op runs: the principal it acts for.
    acting: Option<String>,
    /// A refused `AsCaller`'s audit record, for the model once the op that
    /// made it is undone.
    refused: Option<(u64, AuditRecord)>,
}

/// What a fixed-seed run must have seen, beyond the command variants.
const REQUIRED_OUTCOMES: &[&str] = &[
    "enqueue blocked on a dependency",
    "enqueue returned an existing key",
    "enqueue refused: queue full",
    "lease granted",
    "lease to a draining node granted nothing",
    "lease held back by a queue's concurrency",
    "lease skipped a paused queue",
    "completion refused: stale token",
    "task succeeded and unblocked another",
    "task dead: attempts spent",
    "max attempts from the queue's config",
    "lease expired",
    "heartbeat revoked a lease",
    "configure refused",
    "garbage collected",
    "key of a forgotten task reused",
    "redrive retried a dead task",
    "plans applied",
    "plans refused",
    "plans run: tasks created",
    "plans run: existing run returned",
    "plans run: refused",
    "batch of several commands",
    "restart from a version 3 snapshot",
    "restart from a version 4 snapshot",
    "restart from a version 5 snapshot",
    "restart replaying the whole log",
    "refused command",
    "as caller: not a client command",
    "as caller: anonymous refused while enforcing",
    "as caller: anonymous served in warn mode",
    "as caller: unknown or revoked token refused",
    "as caller: expired token refused",
    "as caller: role too low",
    "as caller: token applied",
    "as caller: owner-scoped token applied",
    "as caller: owner-scoped token refused",
    "as caller: applied, refused inside",
    "bare client write refused while enforcing",
    "requested event written",
    "task owned",
    "children enqueued under a live lease",
    "children refused: stale token",
    "plan run owned by its plan's owner",
    "token created by an admin",
    "token rotated",
    "token expired",
    "audit records dropped by retention",
];

impl Run {
    fn new() -> Self {
        Run {
            sm: StateMachine::new(),
            cold: MemCold::default(),
            model: Model::default(),
            now: 1_000,
            log: Vec::new(),
            replica: StateMachine::new(),
            replica_cold: MemCold::default(),
            snapshot: None,
            marks: Vec::new(),
            batch: None,
            current: OpKind::Advance,
            seen: BTreeMap::new(),
            outcomes: Default::default(),
            caller: None,
            acting: None,
            refused: None,
        }
    }

    fn note(&self, what: &'static str) {
        self.outcomes.borrow_mut().insert(what);
    }

    fn note_variants(&mut self, command: &Command) {
        *self.seen.entry(variant_name(command)).or_default() += 1;
        match command {
            Command::Batch(items) => {
                for c in items {
                    self.note_variants(c);
                }
            }
            Command::AsCaller { command, .. } => self.note_variants(command),
            _ => {}
        }
    }

    /// Applies one command: checks that the op that made it is the one
    /// `op_for` names; inside an `AsCaller` op, applies it as that caller's
    /// request (see [`Run::apply_as`]).
    fn apply(&mut self, command: Command) -> Result<Response, TestCaseError> {
        prop_assert_eq!(op_for(&command), self.current, "{:?} made by the wrong op", command);
        match self.caller.take() {
            None if self.model.enforce
                && !matches!(command, Command::SetFormat { .. })
                && needed_role(&command).is_some() =>
            {
                // While enforcing, a client's write that does not name its
                // caller is refused (a node proposed it before it applied
                // the `enforce`).
                let (got, _) = self.apply_logged(command)?;
                prop_assert_eq!(norm(got), Response::Rejected(Rejection::Unauthenticated(String::new())));
                self.note("bare client write refused while enforcing");
                Err(TestCaseError::reject(REFUSED_AS_A_WHOLE))
            }
            None => Ok(self.apply_logged(command)?.0),
            Some(caller) => self.apply_as(caller, command),
        }
    }

    /// Applies one log entry's command, and checks that a refusal changed
    /// nothing but the clock (and a refused request's audit index), and
    /// wrote nothing cold (but a request's audit record).
    fn apply_logged(&mut self, command: Command) -> Result<(Response, Written), TestCaseError> {
        self.note_variants(&command);
        let before = self.sm.clone();
        let stamped = Stamped { now_ms: self.now, command };
        let mut sink = Counting { inner: &mut self.cold, writes: 0, events: Vec::new(), audits: Vec::new() };
        let response = self.sm.apply(&stamped, &mut sink);
        let written = Written { writes: sink.writes, events: sink.events, audits: sink.audits };
        let request = matches!(stamped.command, Command::AsCaller { .. });
        if !request {
            let requested = written.events.iter().any(|(_, e)| matches!(e.what, EventKind::Requested { .. }));
            prop_assert!(
                written.audits.is_empty() && !requested,
                "{:?}, not a request, wrote an audit record or a Requested event",
                stamped.command
            );
        }
        if let Response::Rejected(rejection) = &response {
            self.note("refused command");
            prop_assert_eq!(
                written.writes,
                usize::from(request),
                "refused {:?} ({}) wrote cold data",
                stamped.command,
                rejection
            );
            let mut expected = before;
            let inner = match &stamped.command {
                Command::AsCaller { command, .. } => &**command,
                other => other,
            };
            // The entry's clock; a request's audit record moves the audit
            // index as any refused request's does.
            let mut tick = if request {
                Command::AsCaller { caller: Caller::Anonymous, command: Box::new(Command::ExpireLeases) }
            } else {
                Command::Batch(Vec::new())
            };
            if let (Command::ConfigureQueue { queue, .. }, Rejection::InvalidConfig(_)) = (inner, rejection) {
                // Known: a refused ConfigureQueue still makes the queue it
                // names (see `a_refused_configure_queue_changes_nothing`).
                if expected.queue(queue).is_none() {
                    let make = Command::SetQueuePaused { queue: queue.clone(), paused: false };
                    tick = match &stamped.command {
                        // As the same caller (who may), audited alike.
                        Command::AsCaller { caller, .. } => {
                            Command::AsCaller { caller: *caller, command: Box::new(make) }
                        }
                        _ => Command::Batch(vec![make]),
                    };
                }
            }
            expected.apply(&Stamped { now_ms: self.now, command: tick }, &mut DiscardCold);
            prop_assert!(expected == self.sm, "refused {:?} ({}) changed the state", stamped.command, rejection);
        }
        if let Some(items) = self.batch.as_mut() {
            items.push((stamped.command, response.clone()));
        } else {
            self.log_entry(stamped);
        }
        Ok((response, written))
    }

    /// Applies `command` as `caller`'s request (`AsCaller`): checks the
    /// refusal or application the model predicts, the request's audit
    /// record and `Requested` events, and the owners of plan runs. Refused,
    /// the op that made it is undone in the model (see `REFUSED_AS_A_WHOLE`),
    /// and the `AsCaller` op adds the audit record.
    fn apply_as(&mut self, caller: Caller, command: Command) -> Result<Response, TestCaseError> {
        let now = self.now;
        let (principal, refusal, why) = self.model.authorize(caller, &command, now);
        self.note(why);
        let wrapped = Command::AsCaller { caller, command: Box::new(command.clone()) };
        prop_assert_eq!(op_for(&wrapped), OpKind::AsCaller);
        let seq = self.model.next_audit;
        let (response, written) = self.apply_logged(wrapped)?;
        let action = audit_action(&command);
        let record = AuditRecord {
            at_ms: now,
            principal: principal.clone(),
            action: action.clone(),
            target: audit_target(&command),
            outcome: audit_outcome(&response),
        };
        prop_assert_eq!(&written.audits, &vec![(seq, record.clone())], "the audit record of {:?}", command);
        let Some(want) = refusal else {
            self.model.audit.insert(seq, record);
            self.model.next_audit += 1;
            self.acting = Some(principal.clone());
            if matches!(response, Response::Rejected(_)) {
                self.note("as caller: applied, refused inside");
            }
            let requested = EventKind::Requested { by: principal, action };
            let want: Vec<(TaskId, Event)> = requested_tasks(&command, &response)
                .into_iter()
                .map(|id| (id, Event { at_ms: now, node: None, token: None, what: requested.clone() }))
                .collect();
            let got: Vec<(TaskId, Event)> =
                written.events.into_iter().filter(|(_, e)| matches!(e.what, EventKind::Requested { .. })).collect();
            prop_assert_eq!(&got, &want, "the Requested events of {:?}", command);
            if !got.is_empty() {
                self.note("requested event written");
            }
            if let (Command::RunPlans { .. }, Response::PlansRun(runs)) = (&command, &response) {
                for run in runs.iter().filter(|r| r.created) {
                    if let Some(owner) = self.model.catalog[&run.entity_ref].entity.owner.as_deref() {
                        self.model.task_owners.insert(run.task, canonical(owner));
                        self.note("plan run owned by its plan's owner");
                    }
                }
            }
            return Ok(response);
        };
        prop_assert_eq!(norm(response), Response::Rejected(want), "{:?} as {:?}", command, caller);
        self.refused = Some((seq, record));
        Err(TestCaseError::reject(REFUSED_AS_A_WHOLE))
    }

    fn log_entry(&mut self, stamped: Stamped) {
        self.replica.apply(&stamped, &mut self.replica_cold);
        self.log.push(stamped);
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let outer = std::mem::replace(&mut self.current, op.kind());
        // Only format 3 refuses a request as a whole.
        let saved = (self.model.format >= 3).then(|| self.model.clone());
        let result = match self.step_inner(op) {
            Err(TestCaseError::Reject(why)) if why.message() == REFUSED_AS_A_WHOLE => match saved {
                Some(saved) => {
                    self.model = saved;
                    Ok(())
                }
                None => Err(TestCaseError::fail("a request refused as a whole below format 3")),
            },
            other => other,
        };
        self.current = outer;
        result
    }

    fn step_inner(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::Enqueue { n, key, deps, queue, priority, max_attempts, delay_ms, bad_name, owner } => {
                if owner.is_some() && self.model.format < 3 {
                    return Ok(());
                }
                let q = qname(*queue);
                let kind = if *bad_name { "bad kind!" } else { "noop" };
                let key = key.map(|k| format!("k{k}"));
                let deps: Vec<TaskRef> = deps
                    .iter()
                    .filter_map(|d| match d {
                        Dep::Id(p) => self.model.pick(*p).map(TaskRef::Id),
                        Dep::Key(k) => Some(TaskRef::Key(format!("k{k}"))),
                    })
                    .collect();
                let tasks = (0..*n)
                    .map(|i| NewTask {
                        queue: q.clone(),
                        kind: kind.into(),
                        payload: format!("{{\"i\":{i},\"at\":{now}}}"),
                        priority: *priority,
                        max_attempts: *max_attempts,
                        delay_ms: *delay_ms,
                        idempotency_key: key.clone(),
                        depends_on: deps.clone(),
                    })
                    .collect();
                let forgotten_key = key
                    .as_ref()
                    .is_some_and(|k| !self.model.keys.contains_key(k) && self.model.forgotten_keys.contains(k));
                let want = self.model.enqueue(
                    &q,
                    if *bad_name { "bad" } else { "noop" },
                    key.as_deref(),
                    &deps,
                    *n,
                    *priority,
                    *max_attempts,
                    *delay_ms,
                    now,
                );
                let got = match owner {
                    None => self.apply(Command::Enqueue { tasks })?,
                    Some(o) => {
                        let owner = o.map(|o| OWNERS[o as usize].to_string());
                        self.apply(Command::EnqueueOwned { tasks, owner })?
                    }
                };
                prop_assert_eq!(norm(got), want.clone());
                if let (Some(Some(o)), Response::Enqueued(v)) = (owner, &want) {
                    for e in v.iter().filter(|e| e.created) {
                        self.model.task_owners.insert(e.id, canonical(OWNERS[*o as usize]));
                        self.note("task owned");
                    }
                }
                match &want {
                    Response::Enqueued(v) => {
                        if v.iter().any(|e| !e.created) {
                            self.note("enqueue returned an existing key");
                        }
                        if v.iter().any(|e| e.created && e.status == TaskStatus::Blocked) {
                            self.note("enqueue blocked on a dependency");
                        }
                        if forgotten_key && v.iter().any(|e| e.created) {
                            self.note("key of a forgotten task reused");
                        }
                        if max_attempts.is_none()
                            && v.iter().any(|e| e.created && self.model.tasks[&e.id].max_attempts != 5)
                        {
                            self.note("max attempts from the queue's config");
                        }
                        for (i, e) in v.iter().enumerate().filter(|(_, e)| e.created) {
                            let p = self.cold.payloads.get(&e.id).map(String::as_str);
                            let want = format!("{{\"i\":{i},\"at\":{now}}}");
                            prop_assert_eq!(p, Some(want.as_str()), "payload of {}", e.id);
                        }
                    }
                    Response::Rejected(Rejection::QueueFull { .. }) => self.note("enqueue refused: queue full"),
                    _ => {}
                }
            }
            Op::Lease { node, max, queue } => {
                let queues: Vec<String> = queue.map(|q| vec![qname(q)]).unwrap_or_default();
                let got = self.apply(Command::Lease { node: *node, queues: queues.clone(), max: *max })?;
                let want = if self.model.removed.contains(node) {
                    Response::Rejected(Rejection::NodeRemoved(*node))
                } else {
                    let draining = self.model.touch(*node);
                    let mut granted = Vec::new();
                    let names: BTreeSet<String> = if queues.is_empty() {
                        self.model.queues.keys().cloned().collect()
                    } else {
                        queues.iter().filter(|q| self.model.queues.contains_key(*q)).cloned().collect()
                    };
                    let mut candidates: Vec<(Reverse<i32>, TaskId)> = self
                        .model
                        .tasks
                        .iter()
                        .filter(|(_, t)| {
                            t.status == TaskStatus::Pending && t.not_before <= now && names.contains(&t.queue)
                        })
                        .map(|(id, t)| (Reverse(t.priority), *id))
                        .collect();
                    candidates.sort();
                    if draining && !candidates.is_empty() {
                        self.note("lease to a draining node granted nothing");
                    }
                    let mut leased_in: BTreeMap<String, u64> = BTreeMap::new();
                    for t in self.model.tasks.values().filter(|t| t.status == TaskStatus::Leased) {
                        *leased_in.entry(t.queue.clone()).or_default() += 1;
                    }
                    for (_, id) in candidates {
                        if draining || granted.len() >= *max as usize {
                            break;
                        }
                        let q = self.model.tasks[&id].queue.clone();
                        let (config, paused) = self.model.queues[&q].clone();
                        if paused {
                            self.note("lease skipped a paused queue");
                            continue;
                        }
                        let in_q = leased_in.entry(q.clone()).or_default();
                        if config.concurrency > 0 && *in_q >= u64::from(config.concurrency) {
                            self.note("lease held back by a queue's concurrency");
                            continue;
                        }
                        *in_q += 1;
                        let token = FencingToken(self.model.next_token);
                        self.model.next_token += 1;
                        let t = self.model.tasks.get_mut(&id).expect("a model task");
                        t.status = TaskStatus::Leased;
                        t.attempt += 1;
                        t.lease = Some(Lease { node: *node, token, expires_ms: now + config.lease_ms });
                        granted.push(Granted {
                            task: id,
                            queue: q,
                            kind: t.kind.to_string(),
                            attempt: t.attempt,
                            token,
                            expires_ms: now + config.lease_ms,
                        });
                    }
                    if !granted.is_empty() {
                        self.note("lease granted");
                    }
                    Response::Leased(granted)
                };
                prop_assert_eq!(got, want);
            }
            Op::Complete { pick, stale, outcome } => {
                let leased = self.model.leased();
                if leased.is_empty() {
                    return Ok(());
                }
                let id = leased[pick % leased.len()];
                let lease = self.model.tasks[&id].lease.clone().expect("a leased task has a lease");
                let token = match (*stale, lease.token.0) {
                    (false, _) => lease.token,
                    (true, 0) => FencingToken(1),
                    (true, t) => FencingToken(t - 1),
                };
                let result = format!("{{\"done\":{id}}}");
                let outcome = match outcome {
                    0 => Outcome::Succeeded { result: result.clone() },
                    1 => Outcome::Retryable { error: "retry".into() },
                    _ => Outcome::Permanent { error: "fatal".into() },
                };
                let node = lease.node;
                let got = self.apply(Command::Complete {
                    node,
                    completions: vec![Completion { task: id, token, outcome: outcome.clone() }],
                })?;
                let blocked_before = self.model.tasks.values().filter(|t| t.status == TaskStatus::Blocked).count();
                let want = if self.model.removed.contains(&node) {
                    Response::Rejected(Rejection::NodeRemoved(node))
                } else {
                    self.model.touch(node);
                    let one = if token != lease.token {
                        self.note("completion refused: stale token");
                        Err(Rejection::StaleToken { task: id, token, current: Some(lease.token) })
                    } else {
                        match outcome {
                            Outcome::Succeeded { .. } => {
                                self.model.end(id, TaskStatus::Succeeded, now);
                                self.model.unblock(now);
                                let blocked_after =
                                    self.model.tasks.values().filter(|t| t.status == TaskStatus::Blocked).count();
                                if blocked_after < blocked_before {
                                    self.note("task succeeded and unblocked another");
                                }
                                prop_assert_eq!(self.cold.results.get(&id), Some(&result), "result of {}", id);
                                Ok(TaskStatus::Succeeded)
                            }
                            Outcome::Retryable { .. } => {
                                let status = self.model.fail(id, now, &self.sm)?;
                                if status == TaskStatus::Dead {
                                    self.note("task dead: attempts spent");
                                }
                                Ok(status)
                            }
                            Outcome::Permanent { .. } => {
                                self.model.end(id, TaskStatus::Dead, now);
                                self.model.cancel_dependents(id, now);
                                Ok(TaskStatus::Dead)
                            }
                        }
                    };
                    Response::Completed(vec![one])
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::Heartbeat { node, stale, progress } => {
                let mut held: Vec<HeldLease> = self
                    .model
                    .leased_by(*node)
                    .into_iter()
                    .map(|id| HeldLease {
                        task: id,
                        token: self.model.tasks[&id].lease.as_ref().expect("leased").token,
                        progress: progress.then(|| ReportedProgress { fraction: 0.5, message: "half".into() }),
                    })
                    .collect();
                if let Some(id) = stale.and_then(|p| self.model.pick(p)) {
                    // A lease that is not this node's: another node's, an old one, or none.
                    let token = match self.model.tasks.get(&id).and_then(|t| t.lease.clone()) {
                        Some(l) if l.node == *node => FencingToken(l.token.0.wrapping_sub(1)),
                        Some(l) => l.token,
                        None => FencingToken(u64::MAX / 2),
                    };
                    held.push(HeldLease { task: id, token, progress: None });
                }
                let got = self.apply(Command::Heartbeat { node: *node, slots: 2, held: held.clone() })?;
                let want = if self.model.removed.contains(node) {
                    Response::Rejected(Rejection::NodeRemoved(*node))
                } else {
                    let draining = self.model.touch(*node);
                    let mut ack = HeartbeatAck { renewed: Vec::new(), revoked: Vec::new(), draining };
                    for h in &held {
                        let lease_ms = self.model.tasks.get(&h.task).map(|t| self.model.config(&t.queue).lease_ms);
                        match self.model.tasks.get_mut(&h.task).and_then(|t| t.lease.as_mut()) {
                            Some(l) if l.node == *node && l.token == h.token => {
                                l.expires_ms = now + lease_ms.expect("a known task");
                                ack.renewed.push((h.task, l.expires_ms));
                            }
                            _ => ack.revoked.push((h.task, h.token)),
                        }
                    }
                    if !ack.revoked.is_empty() {
                        self.note("heartbeat revoked a lease");
                    }
                    Response::HeartbeatAck(ack)
                };
                prop_assert_eq!(got, want);
            }
            Op::Advance { ms } => self.now += ms,
            Op::Expire => {
                let got = self.apply(Command::ExpireLeases)?;
                let mut due: Vec<(u64, TaskId)> = self
                    .model
                    .tasks
                    .iter()
                    .filter_map(|(id, t)| t.lease.as_ref().filter(|l| l.expires_ms <= now).map(|l| (l.expires_ms, *id)))
                    .collect();
                due.sort();
                let mut out = Vec::new();
                for (_, id) in due {
                    out.push((id, self.model.fail(id, now, &self.sm)?));
                    self.note("lease expired");
                }
                prop_assert_eq!(got, Response::Expired(out));
            }
            Op::Cancel { pick } => {
                let Some(id) = self.model.pick(*pick) else { return Ok(()) };
                let got = self.apply(Command::Cancel { task: id, reason: "not needed".into() })?;
                let want = match self.model.tasks.get(&id).map(|t| t.status) {
                    None => Response::Rejected(Rejection::UnknownTask(id)),
                    Some(s) if s.is_terminal() => {
                        Response::Rejected(Rejection::WrongStatus { task: id, status: s, expected: String::new() })
                    }
                    Some(_) => {
                        self.model.end(id, TaskStatus::Cancelled, now);
                        self.model.cancel_dependents(id, now);
                        Response::Task { id, status: TaskStatus::Cancelled }
                    }
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::Retry { pick } => {
                let Some(id) = self.model.pick(*pick) else { return Ok(()) };
                let got = self.apply(Command::Retry { task: id })?;
                let want = self.model.retry(id, now);
                prop_assert_eq!(norm(got), want);
            }
            Op::Pause { queue, paused } => {
                let q = qname(*queue);
                let got = self.apply(Command::SetQueuePaused { queue: q.clone(), paused: *paused })?;
                let want = if q == "bad name" {
                    Response::Rejected(invalid_name("queue"))
                } else {
                    self.model.ensure_queue(&q);
                    self.model.queues.get_mut(&q).expect("made above").1 = *paused;
                    Response::Done
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::Configure { queue, patch } => {
                let q = qname(*queue);
                let got = self.apply(Command::ConfigureQueue { queue: q.clone(), patch: patch.clone() })?;
                let want = self.model.configure(&q, patch);
                if matches!(want, Response::Rejected(Rejection::InvalidConfig(_))) {
                    self.note("configure refused");
                }
                prop_assert_eq!(norm(got), want);
            }
            Op::Drain { node, draining } => {
                let got = self.apply(Command::DrainNode { node: *node, draining: *draining })?;
                let want = if self.model.removed.contains(node) {
                    Response::Rejected(Rejection::NodeRemoved(*node))
                } else {
                    self.model.nodes.insert(*node, *draining);
                    Response::Done
                };
                prop_assert_eq!(got, want);
            }
            Op::Release { node, forget } => {
                let got = self.apply(Command::ReleaseNode { node: *node, forget: *forget })?;
                let released = self.model.release(*node, now, &self.sm)?;
                if *forget {
                    self.model.nodes.remove(node);
                }
                prop_assert_eq!(got, Response::Released(released));
            }
            Op::Remove { node } => {
                let got = self.apply(Command::RemoveNode { node: *node })?;
                let released = self.model.release(*node, now, &self.sm)?;
                self.model.nodes.remove(node);
                self.model.removed.insert(*node);
                prop_assert_eq!(got, Response::Released(released));
            }
            Op::Admit { node } => {
                let got = self.apply(Command::AdmitNode { node: *node })?;
                self.model.removed.remove(node);
                prop_assert_eq!(got, Response::Done);
            }
            Op::CollectGarbage => {
                let got = self.apply(Command::CollectGarbage)?;
                let doomed = self.model.collect_garbage(now);
                if !doomed.is_empty() {
                    self.note("garbage collected");
                }
                if self.model.collect_audit(now) > 0 {
                    self.note("audit records dropped by retention");
                }
                prop_assert_eq!(got, Response::Collected { tasks: doomed.len() as u64 });
            }
            Op::ApplyPlans { entities } => {
                let entities: Vec<NewEntity> = entities
                    .iter()
                    .map(|s| NewEntity {
                        entity_ref: if s.which == 6 { BAD_REF.into() } else { REFS[s.which as usize].into() },
                        is_plan: s.which < PLANS,
                        queue: s.queue.map(qname),
                        owner: s.owner.map(|o| OWNERS[o as usize].to_string()),
                        labels: BTreeMap::new(),
                        depends_on: s.deps.iter().map(|d| REFS[*d as usize].to_string()).collect(),
                        document: format!("{{\"doc\":{}}}", s.doc),
                    })
                    .collect();
                let got = self.apply(Command::ApplyPlans { entities: entities.clone() })?;
                let want = self.model.apply_plans(&entities, now);
                self.note(if matches!(want, Response::Rejected(_)) { "plans refused" } else { "plans applied" });
                prop_assert_eq!(norm(got), want);
            }
            Op::RunPlans { refs, force, default_queue, priority } => {
                let refs: Vec<String> = refs.iter().map(|r| REFS[*r as usize].to_string()).collect();
                let dq = qname(*default_queue);
                let got = self.apply(Command::RunPlans {
                    refs: refs.clone(),
                    force: *force,
                    default_queue: dq.clone(),
                    priority: *priority,
                })?;
                self.check_run_plans(&refs, *force, &dq, *priority, got)?;
            }
            Op::SetFormat { format } => {
                let got = self.apply(Command::SetFormat { format: *format })?;
                self.model.format = self.model.format.max(*format);
                prop_assert_eq!(got, Response::Done);
            }
            Op::Redrive { queue, max } => {
                let q = qname(*queue);
                let got = self.apply(Command::RedriveQueue { queue: q.clone(), max: *max })?;
                let want = if !self.model.queues.contains_key(&q) {
                    Response::Rejected(Rejection::UnknownQueue(q))
                } else {
                    let mut dead: Vec<(u64, TaskId)> = self
                        .model
                        .tasks
                        .iter()
                        .filter(|(_, t)| t.queue == q && t.status == TaskStatus::Dead)
                        .map(|(id, t)| (t.finished.expect("a dead task ended"), *id))
                        .collect();
                    dead.sort();
                    let mut out = Vec::new();
                    for (_, id) in dead.into_iter().take(*max as usize) {
                        let r = self.model.retry(id, now);
                        if matches!(r, Response::Task { .. }) {
                            self.note("redrive retried a dead task");
                        }
                        out.push(r);
                    }
                    Response::Batch(out)
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::AsCaller { caller, inner } => {
                if self.model.format < 3 {
                    return Ok(());
                }
                let caller = caller.map_or(Caller::Anonymous, Caller::Token);
                self.caller = Some(caller);
                let result = self.step(inner);
                self.caller = None;
                self.acting = None;
                let refused = self.refused.take();
                result?;
                if let Some((seq, record)) = refused {
                    self.model.audit.insert(seq, record);
                    self.model.next_audit += 1;
                }
            }
            Op::CreateToken { id, spec } => {
                if self.model.format < 3 {
                    return Ok(());
                }
                let (name, role, owners, lifetime) =
                    TOKEN_SPECS.get(*spec as usize).copied().unwrap_or(("", Role::Read, &[], None));
                let token = NewToken {
                    id: *id,
                    name: name.into(),
                    role,
                    owners: owners.iter().map(|o| o.to_string()).collect(),
                    hash: token_hash(*id, *spec),
                    expires_ms: lifetime.map(|l| now + l),
                };
                let got = self.apply(Command::CreateToken { token })?;
                let by = self.acting.clone();
                if by.is_some() && got == Response::Done {
                    self.note("token created by an admin");
                }
                let want = self.model.create_token(*id, *spec, now, by.as_deref().unwrap_or("bootstrap"));
                prop_assert_eq!(norm(got), want);
            }
            Op::RevokeToken { id } => {
                if self.model.format < 3 {
                    return Ok(());
                }
                let got = self.apply(Command::RevokeToken { id: *id })?;
                let want = match self.model.tokens.remove(id) {
                    Some(_) => Response::Done,
                    None => Response::Rejected(Rejection::InvalidToken(String::new())),
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::RotateToken { old, new, bad_hash } => {
                if self.model.format < 3 {
                    return Ok(());
                }
                let hash = if *bad_hash { vec![1; 3] } else { rotated_hash(*new) };
                let token = NewToken {
                    id: *new,
                    name: "ignored".into(),
                    role: Role::Admin,
                    owners: vec![],
                    hash,
                    expires_ms: None,
                };
                let got = self.apply(Command::RotateToken { old: *old, new: token })?;
                let by = self.acting.clone();
                let want = self.model.rotate_token(*old, *new, *bad_hash, now, by.as_deref().unwrap_or("bootstrap"));
                if want == Response::Done {
                    self.note("token rotated");
                }
                prop_assert_eq!(norm(got), want);
            }
            Op::TouchTokens { used } => {
                if self.model.format < 3 {
                    return Ok(());
                }
                let used: Vec<(u64, u64)> = used.iter().map(|(id, ago)| (*id, now.saturating_sub(*ago))).collect();
                let got = self.apply(Command::TouchTokens { used: used.clone() })?;
                for (id, at) in used {
                    if let Some(t) = self.model.tokens.get_mut(&id) {
                        t.last_used_ms = Some(t.last_used_ms.unwrap_or(0).max(at));
                    }
                }
                prop_assert_eq!(got, Response::Done);
            }
            Op::ConfigureAuth { enforce, retention } => {
                if self.model.format < 3 {
                    return Ok(());
                }
                let retention = retention.map(|r| RETENTIONS[r as usize]);
                let got = self.apply(Command::ConfigureAuth { enforce: *enforce, audit_retention_ms: retention })?;
                let want = if retention == Some(0) {
                    Response::Rejected(Rejection::InvalidConfig(String::new()))
                } else {
                    self.model.enforce = enforce.unwrap_or(self.model.enforce);
                    self.model.audit_retention_ms = retention.unwrap_or(self.model.audit_retention_ms);
                    Response::Done
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::EnqueueChildren { pick, stale, n } => {
                let leased = self.model.leased();
                if self.model.format < 4 || leased.is_empty() {
                    return Ok(());
                }
                let id = leased[pick % leased.len()];
                let lease = self.model.tasks[&id].lease.clone().expect("a leased task has a lease");
                let token = match (*stale, lease.token.0) {
                    (false, _) => lease.token,
                    (true, 0) => FencingToken(1),
                    (true, t) => FencingToken(t - 1),
                };
                let q = qname(0);
                let tasks: Vec<NewTask> = (0..*n)
                    .map(|i| NewTask {
                        queue: q.clone(),
                        kind: "noop".into(),
                        payload: format!("{{\"child\":{i},\"at\":{now}}}"),
                        priority: 0,
                        max_attempts: None,
                        delay_ms: 0,
                        idempotency_key: None,
                        depends_on: Vec::new(),
                    })
                    .collect();
                let got = self.apply(Command::EnqueueChildren { parent: id, token, tasks })?;
                let want = if token != lease.token {
                    self.note("children refused: stale token");
                    Response::Rejected(Rejection::StaleToken { task: id, token, current: Some(lease.token) })
                } else {
                    let want = self.model.enqueue(&q, "noop", None, &[], *n, 0, None, 0, now);
                    if let Response::Enqueued(v) = &want {
                        self.note("children enqueued under a live lease");
                        if let Some(owner) = self.model.task_owners.get(&id).copied() {
                            for e in v.iter().filter(|e| e.created) {
                                self.model.task_owners.insert(e.id, owner);
                            }
                        }
                    }
                    want
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::AllowExec { prog, args } => {
                if self.model.format < 4 {
                    return Ok(());
                }
                let program = PROGRAMS[*prog as usize].to_string();
                let args: Vec<String> = EXEC_ARGS[*args as usize].iter().map(|a| a.to_string()).collect();
                let got = self.apply(Command::AllowExec { program: program.clone(), args: args.clone() })?;
                let want = if *prog >= 2 {
                    Response::Rejected(Rejection::InvalidConfig(String::new()))
                } else {
                    let rule = (program, args);
                    if !self.model.programs.contains(&rule) {
                        self.model.programs.push(rule);
                    }
                    Response::Done
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::DenyExec { prog, args } => {
                if self.model.format < 4 {
                    return Ok(());
                }
                let program = PROGRAMS[*prog as usize].to_string();
                let args: Option<Vec<String>> =
                    args.map(|a| EXEC_ARGS[a as usize].iter().map(|a| a.to_string()).collect());
                let got = self.apply(Command::DenyExec { program: program.clone(), args: args.clone() })?;
                let before = self.model.programs.len();
                self.model.programs.retain(|(p, a)| !(*p == program && args.as_ref().is_none_or(|want| want == a)));
                let want = if self.model.programs.len() == before {
                    Response::Rejected(Rejection::InvalidConfig(String::new()))
                } else {
                    Response::Done
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::AllowRoot { which } => {
                if self.model.format < 4 {
                    return Ok(());
                }
                let (root, stored) = roots().swap_remove(*which as usize);
                let got = self.apply(Command::AllowRoot { root: root.clone() })?;
                let want = match stored {
                    Some(url) => {
                        self.model.roots.insert(url.to_string(), root);
                        Response::Done
                    }
                    None => Response::Rejected(Rejection::InvalidConfig(String::new())),
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::DenyRoot { which } => {
                if self.model.format < 4 {
                    return Ok(());
                }
                let url = DENIED_ROOTS[*which as usize];
                let got = self.apply(Command::DenyRoot { url: url.into() })?;
                let stored = match url {
                    "/data/" => "file:///data/",
                    "s3://lake/raw" => "s3://lake/raw/",
                    "file:///data/in" => "file:///data/in/",
                    _ => "file:///nowhere/",
                };
                let want = match self.model.roots.remove(stored) {
                    Some(_) => Response::Done,
                    None => Response::Rejected(Rejection::InvalidConfig(String::new())),
                };
                prop_assert_eq!(norm(got), want);
            }
            Op::ConfigurePolicy { enforce } => {
                if self.model.format < 4 {
                    return Ok(());
                }
                let got = self.apply(Command::ConfigurePolicy { enforce: *enforce })?;
                self.model.policy_enforce = *enforce;
                prop_assert_eq!(got, Response::Done);
            }
            Op::Record { which } => {
                if self.model.format < 3 {
                    return Ok(());
                }
                let (action, target) = RECORDS[*which as usize % RECORDS.len()];
                let got = self.apply(Command::Record { action: action.into(), target: target.into() })?;
                prop_assert_eq!(got, Response::Done);
            }
            Op::Batch(items) => {
                let before = (self.sm.clone(), self.cold.clone());
                self.batch = Some(Vec::new());
                let mut result = Ok(());
                for item in items {
                    result = self.step(item);
                    if result.is_err() {
                        break;
                    }
                }
                let done = self.batch.take().unwrap_or_default();
                result?;
                if done.len() >= 2 {
                    self.note("batch of several commands");
                }
                // The same commands as one entry: the same responses and state.
                let (commands, responses): (Vec<Command>, Vec<Response>) = done.into_iter().unzip();
                let stamped = Stamped { now_ms: now, command: Command::Batch(commands) };
                prop_assert_eq!(op_for(&stamped.command), OpKind::Batch);
                self.note_variants(&stamped.command);
                let (mut sm, mut cold) = before;
                let got = sm.apply(&stamped, &mut cold);
                // The entry's clock, which an empty batch still takes.
                let tick = Stamped { now_ms: now, command: Command::Batch(Vec::new()) };
                self.sm.apply(&tick, &mut DiscardCold);
                prop_assert_eq!(got, Response::Batch(responses), "a batch answered unlike its items one by one");
                prop_assert_eq!(bytes(&sm), bytes(&self.sm), "a batch left another state than its items one by one");
                prop_assert!(cold == self.cold, "a batch wrote other cold data than its items one by one");
                self.sm = sm;
                self.cold = cold;
                self.log_entry(stamped);
            }
            Op::Snapshot => {
                let (version, bytes) = encode_state(&self.sm);
                let back = decode_state(version, &bytes)?;
                back.check_invariants().map_err(TestCaseError::fail)?;
                prop_assert_eq!(encode_state(&back), (version, bytes.clone()), "a snapshot does not re-encode alike");
                self.snapshot = Some(Snap { version, bytes, at: self.log.len() });
                self.marks.push((self.log.len(), Mark::Snapshot));
            }
            Op::Restart { from_snapshot } => {
                let cold_before = self.cold.clone();
                let (mut restored, from) = match (&self.snapshot, from_snapshot) {
                    (Some(s), true) => {
                        self.note(restart_note(s.version));
                        (decode_state(s.version, &s.bytes)?, s.at)
                    }
                    (None, true) => {
                        self.note("restart replaying the whole log");
                        (StateMachine::new(), 0)
                    }
                    (_, false) => {
                        let (version, bytes) = encode_state(&self.sm);
                        self.note(restart_note(version));
                        (decode_state(version, &bytes)?, self.log.len())
                    }
                };
                restored.check_invariants().map_err(TestCaseError::fail)?;
                // The cold data survives a restart; replaying rewrites it alike.
                for entry in &self.log[from..] {
                    restored.apply(entry, &mut self.cold);
                }
                prop_assert_eq!(bytes(&restored), bytes(&self.sm), "restored from log entry {} and replayed", from);
                prop_assert!(
                    self.cold == cold_before,
                    "replaying the log after a restart rewrote cold data differently"
                );
                self.sm = restored;
                self.marks.push((self.log.len(), Mark::Restart { from_snapshot: *from_snapshot }));
            }
        }
        Ok(())
    }

    /// `RunPlans`: what the model predicts of its refusals, of which plans run
    /// again or return their run, and of the tasks it makes.
    fn check_run_plans(
        &mut self,
        refs: &[String],
        force: bool,
        dq: &str,
        priority: i32,
        got: Response,
    ) -> Result<(), TestCaseError> {
        let now = self.now;
        let model = &self.model;
        for r in refs {
            match model.catalog.get(r) {
                None => {
                    self.note("plans run: refused");
                    prop_assert_eq!(norm(got), Response::Rejected(Rejection::UnknownEntity(r.clone())));
                    return Ok(());
                }
                Some(e) if !e.entity.is_plan => {
                    self.note("plans run: refused");
                    prop_assert_eq!(norm(got), Response::Rejected(invalid_entity()));
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        let requested: BTreeSet<&str> = refs.iter().map(String::as_str).collect();
        // The requested plans and the plans they depend on.
        let mut closure: BTreeSet<String> = BTreeSet::new();
        let mut stack: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
        while let Some(r) = stack.pop() {
            if closure.insert(r.clone()) {
                stack.extend(model.catalog[&r].entity.depends_on.iter().filter(|d| model.is_plan(d)).cloned());
            }
        }
        let rerun: BTreeSet<String> = closure
            .iter()
            .filter(|r| {
                let asked = requested.contains(r.as_str());
                match model.run_state(r) {
                    RunState::Never => true,
                    RunState::Forgotten => asked,
                    RunState::Live(_, s) => (asked && force) || matches!(s, TaskStatus::Dead | TaskStatus::Cancelled),
                }
            })
            .cloned()
            .collect();
        let queue_of = |r: &str| model.catalog[r].entity.queue.clone().unwrap_or_else(|| dq.to_string());
        let mut per_queue: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rerun {
            *per_queue.entry(queue_of(r)).or_default() += 1;
        }
        for (q, added) in &per_queue {
            let (depth, limit) = (model.depth(q), model.config(q).max_depth);
            if depth + added > limit {
                self.note("plans run: refused");
                let want = Response::Rejected(Rejection::QueueFull { queue: q.clone(), depth, limit });
                prop_assert_eq!(got, want);
                return Ok(());
            }
        }
        let Response::PlansRun(runs) = got else {
            return Err(TestCaseError::fail(format!("run plans answered {got:?}")));
        };
        // Which plans answer, and how.
        let mut want_refs = BTreeSet::new();
        for r in &closure {
            let asked = requested.contains(r.as_str());
            let generation = model.catalog[r].generation;
            let run = runs.iter().find(|p| &p.entity_ref == r);
            if rerun.contains(r) {
                let run = run.ok_or_else(|| TestCaseError::fail(format!("{r} should run again")))?;
                prop_assert!(run.created, "{} should have a new run", r);
                prop_assert_eq!(run.generation, generation + 1);
                prop_assert_eq!(run.requested, asked);
                want_refs.insert(r.clone());
            } else if let RunState::Live(id, status) = model.run_state(r) {
                let run = run.ok_or_else(|| TestCaseError::fail(format!("{r} should return its run")))?;
                prop_assert_eq!(
                    (run.created, run.generation, run.task, run.status, run.requested),
                    (false, generation, id, status, asked),
                    "{}'s existing run",
                    r
                );
                want_refs.insert(r.clone());
            }
        }
        let got_refs: BTreeSet<String> = runs.iter().map(|p| p.entity_ref.clone()).collect();
        prop_assert_eq!(got_refs, want_refs, "which plans a run answers for");
        // Dependencies come first.
        for (i, p) in runs.iter().enumerate() {
            for d in &model.catalog[&p.entity_ref].entity.depends_on {
                if let Some(j) = runs.iter().position(|x| &x.entity_ref == d) {
                    prop_assert!(j < i, "{} answered before its dependency {}", p.entity_ref, d);
                }
            }
        }
        let mut created: Vec<&PlanRun> = runs.iter().filter(|p| p.created).collect();
        created.sort_by_key(|p| p.task);
        let ids: Vec<u64> = created.iter().map(|p| p.task.0).collect();
        let expected_ids: Vec<u64> = (model.next_id..model.next_id + created.len() as u64).collect();
        prop_assert_eq!(ids, expected_ids, "new runs take the next task ids");
        if !created.is_empty() {
            self.note("plans run: tasks created");
        }
        if runs.iter().any(|p| !p.created) {
            self.note("plans run: existing run returned");
        }
        let new_ids: BTreeMap<String, TaskId> = created.iter().map(|p| (p.entity_ref.clone(), p.task)).collect();
        let mut made = Vec::new();
        for p in &created {
            let r = &p.entity_ref;
            let mut deps = Vec::new();
            for d in &model.catalog[r].entity.depends_on {
                if !model.is_plan(d) {
                    continue;
                }
                if let Some(id) = new_ids.get(d) {
                    deps.push(*id);
                } else if let RunState::Live(id, _) = model.run_state(d) {
                    deps.push(id);
                }
            }
            let blocked =
                deps.iter().any(|d| new_ids.values().any(|n| n == d) || model.tasks[d].status != TaskStatus::Succeeded);
            let status = if blocked { TaskStatus::Blocked } else { TaskStatus::Pending };
            prop_assert_eq!(p.status, status, "status of {}'s new run", r);
            let q = queue_of(r);
            let t = self.sm.task(p.task).ok_or_else(|| TestCaseError::fail(format!("no task {}", p.task)))?;
            prop_assert_eq!(
                (&*t.queue, &*t.kind, t.priority, &t.depends_on),
                (q.as_str(), MIGRATION_KIND, priority, &deps),
                "{}'s new run",
                r
            );
            let payload = format!("{{\"entity_ref\":\"{r}\",\"generation\":{}}}", p.generation);
            prop_assert_eq!(self.cold.payloads.get(&p.task), Some(&payload));
            made.push((p.task, r.clone(), p.generation, q, deps, status));
        }
        for (id, r, generation, q, deps, status) in made {
            self.model.ensure_queue(&q);
            let max_attempts = self.model.config(&q).max_attempts.max(1);
            let key = run_key(&r, generation);
            self.model.keys.insert(key.clone(), id);
            self.model.tasks.insert(
                id,
                MTask {
                    queue: q,
                    kind: MIGRATION_KIND,
                    priority,
                    status,
                    attempt: 0,
                    max_attempts,
                    not_before: now,
                    lease: None,
                    deps,
                    key: Some(key),
                    finished: None,
                },
            );
            self.model.catalog.get_mut(&r).expect("a plan").generation = generation;
            self.model.next_id += 1;
        }
        Ok(())
    }

    /// Everything the model knows agrees with the state machine.
    fn check(&self) -> Result<(), TestCaseError> {
        let sm = &self.sm;
        let model = &self.model;
        sm.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(sm.task_count(), model.tasks.len());
        let counts = sm.total_counts();
        prop_assert_eq!(counts.values().sum::<u64>() as usize, model.tasks.len(), "a task in no state or two");
        for (id, m) in &model.tasks {
            let t = sm.task(*id).ok_or_else(|| TestCaseError::fail(format!("task {id} is missing")))?;
            prop_assert_eq!(t.status, m.status, "task {} status", id);
            prop_assert_eq!(&*t.queue, m.queue.as_str(), "task {} queue", id);
            prop_assert_eq!(&*t.kind, m.kind, "task {} kind", id);
            prop_assert_eq!(t.priority, m.priority, "task {} priority", id);
            prop_assert_eq!(t.attempt, m.attempt, "task {} attempt", id);
            prop_assert_eq!(t.max_attempts, m.max_attempts, "task {} max attempts", id);
            prop_assert_eq!(t.not_before_ms, m.not_before, "task {} not before", id);
            prop_assert_eq!(&t.lease, &m.lease, "task {} lease", id);
            prop_assert_eq!(&t.depends_on, &m.deps, "task {} dependencies", id);
            prop_assert_eq!(t.idempotency_key.as_deref(), m.key.as_deref(), "task {} key", id);
            prop_assert_eq!(t.finished_ms, m.finished, "task {} end", id);
            if m.status == TaskStatus::Blocked {
                prop_assert!(
                    m.deps.iter().any(|d| model.tasks.get(d).is_some_and(|x| x.status != TaskStatus::Succeeded)),
                    "task {} is blocked on nothing",
                    id
                );
            }
            prop_assert!(self.cold.payloads.contains_key(id), "task {} has no payload", id);
        }
        for (k, id) in &model.keys {
            prop_assert_eq!(sm.task_by_key(k).map(|t| t.id), Some(*id), "key {}", k);
        }
        for id in &model.forgotten {
            prop_assert!(sm.task(*id).is_none(), "forgotten task {} is still there", id);
            prop_assert!(
                !self.cold.payloads.contains_key(id)
                    && !self.cold.results.contains_key(id)
                    && self.cold.history(*id).is_empty(),
                "forgotten task {} left cold data",
                id
            );
        }
        let queues: BTreeMap<String, (QueueConfig, bool)> =
            sm.queue_stats(self.now).into_iter().map(|s| (s.name, (s.config, s.paused))).collect();
        prop_assert_eq!(&queues, &model.queues, "queues");
        let nodes: BTreeMap<u64, bool> = sm.nodes().iter().map(|(id, n)| (*id, n.draining)).collect();
        prop_assert_eq!(&nodes, &model.nodes, "nodes");
        prop_assert_eq!(sm.removed_nodes(), &model.removed, "removed nodes");
        prop_assert_eq!(sm.format(), model.format, "cluster format");
        let tokens: BTreeMap<u64, MToken> = sm
            .tokens()
            .map(|t| {
                let token = MToken {
                    name: t.name.clone(),
                    role: t.role,
                    owners: t.owners.clone(),
                    hash: t.hash.clone(),
                    created_ms: t.created_ms,
                    expires_ms: t.expires_ms,
                    last_used_ms: t.last_used_ms,
                    created_by: t.created_by.clone(),
                };
                (t.id, token)
            })
            .collect();
        prop_assert_eq!(&tokens, &model.tokens, "tokens");
        if model.tokens.values().any(|t| t.expires_ms.is_some_and(|e| e <= self.now)) {
            self.note("token expired");
        }
        prop_assert_eq!(sm.auth_enforced(), model.enforce, "auth mode");
        let policy = sm.policy();
        prop_assert_eq!(policy.enforce, model.policy_enforce, "policy mode");
        let programs: Vec<(String, Vec<String>)> =
            policy.programs.iter().map(|r| (r.program.clone(), r.args.clone())).collect();
        prop_assert_eq!(&programs, &model.programs, "exec rules");
        let stored: Vec<(&str, Option<&str>, &Credentials)> = policy
            .roots
            .iter()
            .map(|(url, r)| (url.as_str(), r.root.endpoint.as_deref(), &r.root.credentials))
            .collect();
        let given: Vec<(&str, Option<&str>, &Credentials)> =
            model.roots.iter().map(|(url, r)| (url.as_str(), r.endpoint.as_deref(), &r.credentials)).collect();
        prop_assert_eq!(stored, given, "data roots");
        prop_assert_eq!(sm.audit_retention_ms(), model.audit_retention_ms, "audit retention");
        for id in model.tasks.keys() {
            prop_assert_eq!(sm.task_owner(*id), model.task_owners.get(id).copied(), "owner of task {}", id);
        }
        for id in &model.forgotten {
            prop_assert_eq!(sm.task_owner(*id), None, "owner of forgotten task {}", id);
        }
        prop_assert!(model.task_owners.keys().all(|id| model.tasks.contains_key(id)), "owners of no task");
        prop_assert_eq!(&self.cold.audit, &model.audit, "audit records");
        let first = model.audit.keys().next().copied().unwrap_or(model.next_audit);
        prop_assert_eq!(sm.audit_range(0), (first, model.next_audit), "audit range");
        prop_assert_eq!(sm.catalog_len(), model.catalog.len());
        for (r, m) in &model.catalog {
            let c = sm.catalog_entry(r).ok_or_else(|| TestCaseError::fail(format!("{r} not in the catalog")))?;
            prop_assert_eq!((&c.entity, c.revision, c.generation), (&m.entity, m.revision, m.generation), "{}", r);
        }
        let mut leased: Vec<TaskId> = (1..=NODES).flat_map(|n| sm.leases_of(n)).map(|t| t.id).collect();
        let total = leased.len();
        leased.sort();
        leased.dedup();
        prop_assert_eq!(leased.len(), total, "a task leased to two nodes");
        prop_assert!(self.replica == self.sm, "diverged from a replica that never restarted");
        Ok(())
    }

    /// At the end: byte-identical to the replica that never restarted and to
    /// a fresh one fed the whole log, cold data too.
    fn finish(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(bytes(&self.replica), bytes(&self.sm));
        prop_assert!(self.replica_cold == self.cold, "cold data differs from the replica that never restarted");
        let mut fresh = StateMachine::new();
        let mut fresh_cold = MemCold::default();
        for entry in &self.log {
            fresh.apply(entry, &mut fresh_cold);
        }
        prop_assert_eq!(bytes(&fresh), bytes(&self.sm));
        prop_assert!(fresh_cold == self.cold, "cold data differs from a replica fed the whole log");
        Ok(())
    }
}

fn run_ops(ops: &[Op]) -> Result<Run, TestCaseError> {
    let mut run = Run::new();
    for op in ops {
        run.step(op)?;
        run.check()?;
    }
    run.finish()?;
    Ok(run)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_match_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        run_ops(&ops)?;
    }
}

/// Over a fixed-seed run, every `Command` variant is applied at least once
/// (inside batches too), each by the op `op_for` names, and the outcomes
/// that make the model's checks meaningful all happen.
#[test]
fn every_command_variant_is_generated() {
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let strategy = proptest::collection::vec(op(), 100..150);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut outcomes = BTreeSet::new();
    for _ in 0..160 {
        let ops = strategy.new_tree(&mut runner).expect("a sequence").current();
        let run = run_ops(&ops).unwrap_or_else(|e| panic!("{e}\nops: {ops:?}"));
        for (name, n) in run.seen {
            *seen.entry(name).or_default() += n;
        }
        outcomes.extend(run.outcomes.into_inner());
    }
    eprintln!("commands applied by variant: {seen:?}");
    let all = all_command_variants();
    assert!(all.len() >= 32, "serde lists {} Command variants: {all:?}", all.len());
    let missing: Vec<&str> = all.iter().copied().filter(|v| !seen.contains_key(*v)).collect();
    assert!(missing.is_empty(), "Command variants never generated: {missing:?} (give them an op: see `op_for`)");
    let missing: Vec<&str> = REQUIRED_OUTCOMES.iter().copied().filter(|o| !outcomes.contains(o)).collect();
    assert!(missing.is_empty(), "outcomes never reached: {missing:?}");
}

/// DESIGN/ARCHITECTURE: "A refused command returns `Response::Rejected(..)`
/// and changes nothing but the clock." A `ConfigureQueue` refused for an
/// invalid setting still makes the queue it names (`queue_for_admin` runs
/// `ensure_queue` before the patch is checked). Deterministic, so replicas
/// agree, but it contradicts the rule; the model test tolerates exactly this
/// one case (see `Run::apply`). Fixing it changes what a command does to the
/// state, so it must wait for the next stored format (an older node applying
/// the same entry would create the queue, and the replicas would diverge):
/// ARCHITECTURE.md, "Known limits". This test says what the fix must make
/// true.
#[test]
#[ignore = "a refused ConfigureQueue creates the queue it names until the next stored format changes it"]
fn a_refused_configure_queue_changes_nothing() {
    let mut sm = StateMachine::new();
    let patch = QueuePatch { max_attempts: Some(0), ..QueuePatch::default() };
    let command = Command::ConfigureQueue { queue: "fresh".into(), patch };
    let r = sm.apply(&Stamped { now_ms: 1, command }, &mut DiscardCold);
    assert!(matches!(r, Response::Rejected(Rejection::InvalidConfig(_))), "{r:?}");
    assert!(sm.queue("fresh").is_none(), "a refused ConfigureQueue created queue `fresh`");
}

/// A blocked task depends on A (succeeded) and B (pending); `CollectGarbage`
/// forgets A. `unblock_dependents` and `Retry` count a forgotten dependency
/// as done, and so must a rebuild of the indexes (every restart from a
/// snapshot): found by `random_commands_match_the_model` (a plan run
/// depending on a succeeded and a new run), fixed in `StateMachine::index`.
#[test]
fn a_forgotten_dependency_leaves_the_indexes_as_a_rebuild_would() {
    let mut sm = StateMachine::new();
    let mut cold = MemCold::default();
    let mut apply =
        |sm: &mut StateMachine, now_ms: u64, command: Command| sm.apply(&Stamped { now_ms, command }, &mut cold);
    let patch = QueuePatch { retention_ms: Some(1_000), ..QueuePatch::default() };
    apply(&mut sm, 1, Command::ConfigureQueue { queue: "q".into(), patch });
    apply(
        &mut sm,
        1,
        Command::Enqueue { tasks: vec![NewTask::new("q", "noop", "{}"), NewTask::new("q", "noop", "{}")] },
    );
    let Response::Leased(granted) = apply(&mut sm, 2, Command::Lease { node: 1, queues: vec![], max: 1 }) else {
        panic!("no lease")
    };
    let (a, b) = (granted[0].task, TaskId(1 - granted[0].task.0));
    let done = Completion { task: a, token: granted[0].token, outcome: Outcome::Succeeded { result: "1".into() } };
    apply(&mut sm, 3, Command::Complete { node: 1, completions: vec![done] });
    let mut waiting = NewTask::new("q", "noop", "{}");
    waiting.depends_on = vec![TaskRef::Id(a), TaskRef::Id(b)];
    apply(&mut sm, 4, Command::Enqueue { tasks: vec![waiting] });
    assert_eq!(apply(&mut sm, 5_000, Command::CollectGarbage), Response::Collected { tasks: 1 });
    assert!(sm.task(a).is_none(), "A is forgotten");
    sm.check_invariants().expect("the live indexes are what a rebuild gives");
}

// ------------------------------------------------------------------ the real store

/// A model run's log through the RocksDB stores: entries appended and
/// applied as openraft does, a snapshot built (and the log purged up to it)
/// where the run took one, and where it restarted, a real restart (reopen,
/// load the snapshot file, replay the log after it) or a snapshot transfer
/// to a fresh store (`install_snapshot`). After each step the store's digest
/// is a fresh in-memory replica's at the same index; at the end the cold
/// data is the replica's too.
#[cfg(feature = "storage")]
mod real_store {
    use super::*;

    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, RaftSnapshotBuilder};
    use skein_raft::config::{Entry, LogId};
    use skein_raft::store::{digest_of, open, LogStore, StateMachineStore};
    use tempfile::TempDir;
    use tokio::io::AsyncWriteExt;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn fail(what: &str) -> impl Fn(&dyn std::fmt::Display) -> TestCaseError + '_ {
        move |e| TestCaseError::fail(format!("{what}: {e}"))
    }

    struct Store {
        log: LogStore,
        sm: StateMachineStore,
        // Declared last, dropped last: the directory outlives the stores.
        _dir: TempDir,
    }

    fn open_in(dir: TempDir) -> Result<Store, TestCaseError> {
        let (log, sm) = open(dir.path()).map_err(|e| fail("open")(&e))?;
        Ok(Store { log, sm, _dir: dir })
    }

    async fn replay(run: &Run) -> Result<(), TestCaseError> {
        let mut store = open_in(TempDir::new().map_err(|e| fail("temp dir")(&e))?)?;
        let mut reference = StateMachine::new();
        let mut reference_cold = MemCold::default();
        let mut at = 0usize;
        let mut marks = run.marks.clone();
        marks.push((run.log.len(), Mark::Snapshot));
        for (upto, mark) in marks {
            let entries: Vec<Entry> = (at..upto)
                .map(|i| Entry { log_id: log_id(i as u64 + 1), payload: EntryPayload::Normal(run.log[i].clone()) })
                .collect();
            for e in &run.log[at..upto] {
                reference.apply(e, &mut reference_cold);
            }
            if !entries.is_empty() {
                store.log.append_entries(entries.clone()).await.map_err(|e| fail("append")(&e))?;
                store.sm.apply(entries).await.map_err(|e| fail("apply")(&e))?;
            }
            at = upto;
            let last = (at > 0).then(|| log_id(at as u64));
            let want = digest_of(&reference, last).map_err(|e| fail("digest")(&e))?;
            prop_assert_eq!(store.sm.handle().digest().map_err(|e| fail("digest")(&e))?, want, "at entry {}", at);
            match mark {
                Mark::Snapshot => {
                    let snap = store.sm.get_snapshot_builder().await.build_snapshot().await;
                    let snap = snap.map_err(|e| fail("build a snapshot")(&e))?;
                    prop_assert_eq!(snap.meta.last_log_id, last);
                    if let Some(l) = last {
                        store.log.purge(l).await.map_err(|e| fail("purge")(&e))?;
                    }
                }
                Mark::Restart { from_snapshot: true } => {
                    // A real restart: the snapshot file, then the log after it.
                    let Store { _dir, log, sm } = store;
                    drop((log, sm));
                    store = open_in(_dir)?;
                    let (applied, _) = store.sm.applied_state().await.map_err(|e| fail("applied state")(&e))?;
                    let from = applied.map_or(1, |l| l.index + 1);
                    let tail = store.log.try_get_log_entries(from..).await.map_err(|e| fail("read the log")(&e))?;
                    prop_assert_eq!(tail.len() as u64, at as u64 + 1 - from, "log entries after the snapshot");
                    store.sm.apply(tail).await.map_err(|e| fail("replay")(&e))?;
                }
                Mark::Restart { from_snapshot: false } => {
                    // A snapshot sent to a fresh node, which goes on from it.
                    let snap = store.sm.get_snapshot_builder().await.build_snapshot().await;
                    let snap = snap.map_err(|e| fail("build a snapshot")(&e))?;
                    let current = store.sm.get_current_snapshot().await.map_err(|e| fail("current snapshot")(&e))?;
                    let (meta, file) =
                        current.map(|s| (s.meta, s.snapshot)).ok_or_else(|| fail("snapshot")(&"none"))?;
                    prop_assert_eq!(&meta, &snap.meta);
                    let bytes = std::fs::read(store._dir.path().join("snapshots/current.snap"))
                        .map_err(|e| fail("read the snapshot")(&e))?;
                    drop(file);
                    let mut fresh = open_in(TempDir::new().map_err(|e| fail("temp dir")(&e))?)?;
                    let mut recv = fresh.sm.begin_receiving_snapshot().await.map_err(|e| fail("receive")(&e))?;
                    recv.write_all(&bytes).await.map_err(|e| fail("write the snapshot")(&e))?;
                    recv.shutdown().await.map_err(|e| fail("write the snapshot")(&e))?;
                    fresh.sm.install_snapshot(&meta, recv).await.map_err(|e| fail("install")(&e))?;
                    store = fresh;
                }
            }
            let got = store.sm.handle().digest().map_err(|e| fail("digest")(&e))?;
            prop_assert_eq!(got, want, "after {:?} at entry {}", mark, at);
        }
        let h = store.sm.handle();
        h.state().check_invariants().map_err(TestCaseError::fail)?;
        for t in reference.tasks(None, None, None, usize::MAX).tasks {
            let id = t.id;
            prop_assert_eq!(h.payload(id).map_err(|e| fail("payload")(&e))?, reference_cold.payloads.get(&id).cloned());
            prop_assert_eq!(h.result(id).map_err(|e| fail("result")(&e))?, reference_cold.results.get(&id).cloned());
            prop_assert_eq!(h.history(id).map_err(|e| fail("history")(&e))?, reference_cold.history(id));
        }
        let audit: BTreeMap<u64, AuditRecord> =
            h.audit(0, usize::MAX).map_err(|e| fail("audit")(&e))?.into_iter().collect();
        prop_assert_eq!(&audit, &reference_cold.audit, "audit records in the store");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        #[test]
        fn the_real_store_restarts_like_the_model(ops in proptest::collection::vec(op(), 40..150)) {
            let run = run_ops(&ops)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()
                .map_err(|e| TestCaseError::fail(format!("runtime: {e}")))?;
            rt.block_on(replay(&run))?;
        }
    }
}
