//! Fuzzing the RPC codec (issue 15, items 4 and 6): whatever arrives on the
//! wire, decoding gives a value or an error, never a panic, and never claims
//! memory beyond [`MAX_FRAME_BYTES`].
//!
//! Deterministic (fixed seeds, a tiny PRNG of our own). CI-sized by default;
//! `SKEIN_FUZZ_CASES=<n>` runs `n` cases per target instead
//! (`scripts/fuzz.sh` sets it).
//!
//! - `fuzz_codec_mutated_frames`: valid encodings of every request kind (in
//!   tarpc's `ClientMessage` envelope, as the server decodes them) and every
//!   response kind (in `tarpc::Response`), mutated (bit flips, byte sets,
//!   truncation, splices, deletions, varint length edits), and pure random
//!   bytes, decoded with `codec::decode_frame` (what the transport uses) as
//!   both message types.
//! - `fuzz_codec_framing`: the length-delimited framing over a stream of
//!   mutated frames: a length over the cap is refused from the 4-byte header
//!   alone, before the body is read.
//! - `codec_refuses_lengths_beyond_the_cap_without_allocating`: inner length
//!   prefixes above the cap are refused by the bincode limit, and the
//!   process's peak virtual memory (`VmPeak`) shows no such allocation.
//! - `codec_refuses_deadlines_beyond_the_bound`: a request whose deadline
//!   (the time left, a `Duration`) is over `MAX_REQUEST_DEADLINE` is a decode
//!   error, not a panic (the fixed finding of issue 15: tarpc computes
//!   `Instant::now() + deadline`, which panicked on overflow).
//! - `server_survives_garbage_stalls_and_floods`: the real `serve` with a
//!   fake handler, while garbage, stalled and flooding connections come in,
//!   keeps answering a well-behaved client; garbage connections, and those
//!   that send a request with an overflowing or years-long deadline, get
//!   closed; nothing panics, in the server's tasks either.
//!
//! Every panic fails these tests: a panic hook counts them all (also those in
//! tokio tasks, which the runtime would otherwise contain).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
use serde::Serialize;
use skein_raft::config::{SkeinNode, TypeConfig};
use skein_raft::fsm::{
    Command, Completion, FencingToken, Granted, HeartbeatAck, HeldLease, NewTask, Outcome, Rejection, ReportedProgress,
    Response, Stamped, TaskId, TaskStatus,
};
use skein_transport::codec::{self, CodecError, MAX_FRAME_BYTES, MAX_REQUEST_DEADLINE};
use skein_transport::rpc::{SkeinRpcRequest, SkeinRpcResponse};
use skein_transport::{
    serve, CompleteRequest, Handler, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask, NodeError, NodeVersion,
    Peers, PeersConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::bytes::{BufMut, BytesMut};
use tokio_util::codec::Decoder;

type Req = tarpc::ClientMessage<SkeinRpcRequest>;
type Resp = tarpc::Response<SkeinRpcResponse>;

// ---------------------------------------------------------------- cases and randomness

/// Cases per target: `SKEIN_FUZZ_CASES`, or `ci` by default.
fn cases(ci: usize) -> usize {
    std::env::var("SKEIN_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(ci)
}

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A bincode varint (standard config) of `v`.
fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xFFFF => [&[251u8][..], &(v as u16).to_le_bytes()].concat(),
        0x1_0000..=0xFFFF_FFFF => [&[252u8][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &v.to_le_bytes()].concat(),
    }
}

/// One to three mutations of `valid`: what corruption, truncation or a
/// hostile peer could send.
fn mutate(rng: &mut Rng, valid: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = if b.is_empty() { 0 } else { rng.below(b.len()) };
        match rng.below(8) {
            // Bit flip.
            0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            // A random byte.
            1 if !b.is_empty() => b[at] = rng.next() as u8,
            // Truncation.
            2 => b.truncate(at),
            // Delete a range.
            3 if !b.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            // Insert random bytes.
            4 => {
                let n = 1 + rng.below(8);
                let junk = rng.bytes(n);
                b.splice(at..at, junk);
            }
            // Splice in a chunk of another valid message.
            5 => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let to = (from + 1 + rng.below(32)).min(other.len());
                    b.splice(at..at, other[from..to].iter().copied());
                }
            }
            // A length field edit: a varint of an extreme or near-cap value.
            _ => {
                let v = match rng.below(6) {
                    0 => u64::MAX,
                    1 => u64::from(u32::MAX),
                    2 => MAX_FRAME_BYTES as u64 + 1,
                    3 => MAX_FRAME_BYTES as u64 - 1,
                    4 => 1 << 40,
                    _ => rng.below(1 << 20) as u64,
                };
                let end = (at + 1 + rng.below(9)).min(b.len());
                b.splice(at..end, varint(v));
            }
        }
    }
    b
}

/// Decodes `bytes` as `T` the way the transport does (`decode_frame`); a
/// panic fails the test, with the input. Counts the refusals of a
/// request's deadline in `deadlines`; returns whether it decoded.
fn decode_no_panic<T: codec::Frame>(bytes: &[u8], what: &str, deadlines: &mut usize) -> bool {
    count_panics();
    match catch_unwind(AssertUnwindSafe(|| codec::decode_frame::<T>(bytes))) {
        Ok(Ok(_)) => true,
        Ok(Err(CodecError::Deadline { .. })) => {
            *deadlines += 1;
            false
        }
        Ok(Err(_)) => false,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("decoding {what} panicked ({msg}) on input {bytes:02x?}");
        }
    }
}

/// Panics anywhere in the process since the hook went in (the default hook
/// still prints each): the server's connection tasks run on tokio, which
/// would contain a panic there without failing the test.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// The process's peak virtual memory in bytes (Linux): an allocation shows
/// here even when the decoder fails before touching its pages.
fn vm_peak() -> Option<u64> {
    let mut s = String::new();
    std::fs::File::open("/proc/self/status").ok()?.read_to_string(&mut s).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmPeak:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

// ---------------------------------------------------------------- valid messages

fn node(i: u64) -> SkeinNode {
    SkeinNode { rpc_addr: format!("10.0.0.{i}:7000"), http_addr: format!("10.0.0.{i}:8080") }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<u64, SkeinNode> {
    let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let nodes: BTreeMap<u64, SkeinNode> = (1..=4).map(|i| (i, node(i))).collect();
    Membership::new(vec![voters, [1, 2, 4].into_iter().collect()], nodes)
}

fn completions() -> Vec<Completion> {
    vec![
        Completion { task: TaskId(1), token: FencingToken(9), outcome: Outcome::Succeeded { result: "{}".into() } },
        Completion { task: TaskId(2), token: FencingToken(10), outcome: Outcome::Retryable { error: "io".into() } },
    ]
}

fn held() -> Vec<HeldLease> {
    vec![HeldLease {
        task: TaskId(1),
        token: FencingToken(9),
        progress: Some(ReportedProgress { fraction: 0.5, message: "half".into() }),
    }]
}

/// Every request kind, as the server decodes it: in tarpc's envelope.
fn requests() -> Vec<Req> {
    let mut task = NewTask::new("ingest", "migration", r#"{"dataset":"a"}"#);
    task.max_attempts = Some(3);
    task.idempotency_key = Some("k-1".into());
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(2, 9)),
        entries: vec![
            openraft::Entry { log_id: log_id(3, 10), payload: EntryPayload::Blank },
            openraft::Entry {
                log_id: log_id(3, 11),
                payload: EntryPayload::Normal(Stamped {
                    now_ms: 1_700_000_000_000,
                    command: Command::Enqueue { tasks: vec![task.clone()] },
                }),
            },
            openraft::Entry { log_id: log_id(3, 12), payload: EntryPayload::Membership(membership()) },
        ],
        leader_commit: Some(log_id(3, 8)),
    };
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 100)),
            last_membership: StoredMembership::new(Some(log_id(2, 50)), membership()),
            snapshot_id: "3-100-abc".into(),
        },
        offset: 1024,
        data: (0..=255u8).collect(),
        done: true,
    };
    let bodies = vec![
        SkeinRpcRequest::AppendEntries { req: append },
        SkeinRpcRequest::Vote { req: VoteRequest { vote: Vote::new(4, 2), last_log_id: Some(log_id(3, 7)) } },
        SkeinRpcRequest::InstallSnapshot { req: snapshot },
        SkeinRpcRequest::Write { command: Command::Enqueue { tasks: vec![task] } },
        SkeinRpcRequest::Write {
            command: Command::Batch(vec![Command::ExpireLeases, Command::Retry { task: TaskId(5) }]),
        },
        SkeinRpcRequest::Lease { req: LeaseRequest { node: 2, queues: vec!["a".into()], max: 8, wait_ms: 100 } },
        SkeinRpcRequest::Heartbeat { req: HeartbeatRequest { node: 2, slots: 4, held: held() } },
        SkeinRpcRequest::Complete { req: CompleteRequest { node: 2, completions: completions() } },
        SkeinRpcRequest::ReadIndex {},
        SkeinRpcRequest::Join { req: JoinRequest { id: 4, node: node(4) } },
        SkeinRpcRequest::Leave { id: 4 },
        SkeinRpcRequest::NodeVersion {},
        SkeinRpcRequest::Campaign {},
    ];
    let mut out: Vec<Req> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, message)| {
            tarpc::ClientMessage::Request(tarpc::Request { context: tarpc::context::current(), id: i as u64, message })
        })
        .collect();
    out.push(tarpc::ClientMessage::Cancel { trace_context: Default::default(), request_id: 7 });
    out
}

/// Every response kind, in tarpc's envelope.
fn responses() -> Vec<Resp> {
    let grant = Granted {
        task: TaskId(1),
        queue: "a".into(),
        kind: "noop".into(),
        attempt: 1,
        token: FencingToken(77),
        expires_ms: 123,
    };
    let bodies = vec![
        SkeinRpcResponse::AppendEntries(Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(4, 5))))),
        SkeinRpcResponse::AppendEntries(Err(RaftError::Fatal(Fatal::Stopped))),
        SkeinRpcResponse::Vote(Ok(VoteResponse { vote: Vote::new(4, 2), vote_granted: true, last_log_id: None })),
        SkeinRpcResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote: Vote::new(3, 1) })),
        SkeinRpcResponse::InstallSnapshot(Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
            SnapshotMismatch {
                expect: openraft::SnapshotSegmentId { id: "a".into(), offset: 0 },
                got: openraft::SnapshotSegmentId { id: "a".into(), offset: 10 },
            },
        )))),
        SkeinRpcResponse::Write(Ok(Response::Task { id: TaskId(1), status: TaskStatus::Cancelled })),
        SkeinRpcResponse::Write(Err(NodeError::NotLeader { leader_id: Some(1), leader: Some(node(1)) })),
        SkeinRpcResponse::Lease(Ok(vec![LeasedTask { grant, payload: r#"{"x":1}"#.into() }])),
        SkeinRpcResponse::Heartbeat(Ok(HeartbeatAck {
            renewed: vec![(TaskId(1), 60_000)],
            revoked: vec![(TaskId(2), FencingToken(3))],
            draining: false,
        })),
        SkeinRpcResponse::Complete(Ok(vec![
            Ok(TaskStatus::Succeeded),
            Err(Rejection::StaleToken { task: TaskId(1), token: FencingToken(3), current: Some(FencingToken(4)) }),
        ])),
        SkeinRpcResponse::ReadIndex(Ok(42)),
        SkeinRpcResponse::Join(Err(NodeError::Invalid("node id 0".into()))),
        SkeinRpcResponse::Leave(Ok(())),
        SkeinRpcResponse::NodeVersion(NodeVersion { release: "0.3.0".into(), format: 3 }),
        SkeinRpcResponse::Campaign(Err(NodeError::Unavailable("no quorum".into()))),
    ];
    let mut out: Vec<Resp> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, message)| tarpc::Response { request_id: i as u64, message: Ok(message) })
        .collect();
    out.push(tarpc::Response {
        request_id: 99,
        message: Err(tarpc::ServerError::new(std::io::ErrorKind::TimedOut, "deadline".into())),
    });
    out
}

fn encode_all<T: Serialize>(values: &[T]) -> Vec<Vec<u8>> {
    values.iter().map(|v| codec::encode(v).expect("encoding a valid message")).collect()
}

// ---------------------------------------------------------------- the fuzz targets

#[test]
fn fuzz_codec_mutated_frames() {
    let reqs = encode_all(&requests());
    let resps = encode_all(&responses());
    // Valid frames decode; the pool of splice material is all of them.
    for r in &reqs {
        codec::decode_frame::<Req>(r).expect("a valid request decodes");
    }
    for r in &resps {
        codec::decode_frame::<Resp>(r).expect("a valid response decodes");
    }
    let pool: Vec<Vec<u8>> = reqs.iter().chain(&resps).cloned().collect();

    let start_peak = vm_peak();
    let n = cases(10000);
    let mut rng = Rng(0x5eed_c0de_0001);
    let (mut decoded, mut deadlines) = (0usize, 0usize);
    for case in 0..n {
        for (i, valid) in pool.iter().enumerate() {
            let input = if case % 16 == 0 && i == 0 {
                // Pure random bytes, now and then.
                let len = rng.below(256);
                rng.bytes(len)
            } else {
                mutate(&mut rng, valid, &pool)
            };
            // A request frame must be read as a request, a response as a
            // response; decode both ways anyway: either may arrive.
            decoded += usize::from(decode_no_panic::<Req>(&input, "a request", &mut deadlines));
            decoded += usize::from(decode_no_panic::<Resp>(&input, "a response", &mut deadlines));
        }
    }
    eprintln!(
        "fuzz_codec_mutated_frames: {} inputs, {decoded} decoded to a value, {deadlines} requests refused for \
         their deadline",
        n * pool.len()
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a decode panicked");
    if let (Some(a), Some(b)) = (start_peak, vm_peak()) {
        // Each decode may claim up to the cap (virtually); nothing near a
        // length field's claim of 2^40 or u64::MAX bytes.
        assert!(b - a < 4 * MAX_FRAME_BYTES as u64, "peak virtual memory grew by {} MiB", (b - a) >> 20);
    }
}

/// A stream of frames: each valid frame or a mutated one, the 4-byte length
/// header sometimes edited; the framing refuses an over-cap length from the
/// header alone and otherwise yields frames the codec then decodes.
#[test]
fn fuzz_codec_framing() {
    let pool: Vec<Vec<u8>> = encode_all(&requests()).into_iter().chain(encode_all(&responses())).collect();
    let n = cases(10000);
    let mut rng = Rng(0x5eed_f4a3_0002);
    let mut deadlines = 0;
    let (mut refused, mut frames) = (0usize, 0usize);
    for _ in 0..n {
        let mut stream = BytesMut::new();
        for _ in 0..1 + rng.below(4) {
            let pick = rng.below(pool.len());
            let body = mutate(&mut rng, &pool[pick], &pool);
            let len = match rng.below(6) {
                0 => rng.next() as u32,
                1 => MAX_FRAME_BYTES as u32 + 1 + rng.below(1000) as u32,
                2 => u32::MAX,
                _ => body.len() as u32,
            };
            stream.put_u32(len);
            stream.extend_from_slice(&body);
        }
        let mut codec = codec::length_delimited();
        loop {
            let before = stream.len();
            let header = (before >= 4).then(|| u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]));
            match codec.decode(&mut stream) {
                Ok(Some(frame)) => {
                    frames += 1;
                    let _ = decode_no_panic::<Req>(&frame, "a framed request", &mut deadlines);
                    let _ = decode_no_panic::<Resp>(&frame, "a framed response", &mut deadlines);
                }
                Ok(None) => {
                    // Waiting for the rest of a frame: only ever one that fits
                    // the cap, and the codec never reserves more than that.
                    if let Some(h) = header {
                        assert!(h as usize <= MAX_FRAME_BYTES, "waiting on an over-cap frame of {h} bytes");
                    }
                    assert!(stream.capacity() <= MAX_FRAME_BYTES + 4 + 1024, "reserved {}", stream.capacity());
                    break;
                }
                Err(e) => {
                    let h = header.expect("an error needs a header");
                    assert!(h as usize > MAX_FRAME_BYTES, "refused a frame of {h} bytes within the cap: {e}");
                    // Refused from the header alone: no body byte consumed.
                    assert!(stream.len() + 4 >= before, "the body of an over-cap frame was read");
                    refused += 1;
                    break;
                }
            }
        }
    }
    eprintln!(
        "fuzz_codec_framing: {n} streams, {frames} frames, {refused} over-cap headers refused, {deadlines} deadlines \
         refused"
    );
    assert!(refused > 0 && frames > 0);
}

/// Length prefixes inside a frame that claim more than the cap are refused
/// by bincode's limit before anything is allocated (the frame here is a few
/// bytes; the claim is 1 TiB or u64::MAX).
#[test]
fn codec_refuses_lengths_beyond_the_cap_without_allocating() {
    let valid = codec::encode(&Resp {
        request_id: 7,
        message: Ok(SkeinRpcResponse::NodeVersion(NodeVersion { release: "0.3.0".into(), format: 3 })),
    })
    .expect("encode");
    assert_eq!(valid[..4], [7, 0, 10, 5], "the response layout the claims below edit");
    let before = vm_peak();
    for claim in [MAX_FRAME_BYTES as u64 + 1, 1 << 30, 1 << 40, u64::MAX] {
        // A `String` (NodeError::Invalid), a `Vec<u8>` (snapshot data) and a
        // request envelope whose first string is claimed huge.
        let mut invalid = vec![2u8];
        invalid.extend(varint(claim));
        invalid.extend(b"abc");
        assert!(codec::decode::<NodeError>(&invalid).is_err(), "claim {claim}");
        let mut bytes = varint(claim);
        bytes.extend([1, 2, 3]);
        assert!(codec::decode::<Vec<u8>>(&bytes).is_err(), "claim {claim}");
        assert!(codec::decode::<String>(&bytes).is_err(), "claim {claim}");
        // request_id 7, Ok, NodeVersion (variant 10), then its release.
        let mut resp = vec![7u8, 0, 10];
        resp.extend(varint(claim));
        resp.extend(b"0.3.0");
        assert!(codec::decode::<Resp>(&resp).is_err(), "claim {claim}");
        assert!(codec::decode_frame::<Resp>(&resp).is_err(), "claim {claim}");
    }
    if let (Some(a), Some(b)) = (before, vm_peak()) {
        assert!(b - a < 512 << 20, "peak virtual memory grew by {} MiB", (b - a) >> 20);
    }
    // The framing: a header over the cap is an error with only the header
    // buffered; one at the cap waits for its body.
    let mut codec = codec::length_delimited();
    let mut over = BytesMut::from(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes()[..]);
    assert!(codec.decode(&mut over).is_err());
    let mut codec = codec::length_delimited();
    let mut at = BytesMut::from(&(MAX_FRAME_BYTES as u32).to_be_bytes()[..]);
    at.extend_from_slice(b"partial");
    assert!(matches!(codec.decode(&mut at), Ok(None)));
}

/// The fixed finding of issue 15: tarpc decodes a request's deadline (the
/// time left, a `Duration`) as `Instant::now() + deadline`, which panicked
/// on overflow, and its server puts it in a `DelayQueue`, which panics on
/// one over about 795 days. `decode_frame` (what the transport uses) checks
/// it first: over `MAX_REQUEST_DEADLINE` is a decode error, at it or below
/// decodes as before.
#[test]
fn codec_refuses_deadlines_beyond_the_bound() {
    count_panics();
    let year = 365 * 24 * 3600;
    let refused = [
        (u64::MAX, 999_999_999),
        (u64::MAX, 0),
        (i64::MAX as u64, 0),
        (i64::MAX as u64 - 1_000_000, 0),
        (1_000 * year, 0),
        (100 * year, 0),
        (3 * year, 0),
        (MAX_REQUEST_DEADLINE.as_secs(), 1),
        (MAX_REQUEST_DEADLINE.as_secs() + 1, 0),
    ];
    for (secs, nanos) in refused {
        let bytes = request_with_deadline(secs, nanos);
        let outcome = catch_unwind(|| codec::decode_frame::<Req>(&bytes).map(drop));
        match outcome {
            Ok(Err(e @ CodecError::Deadline { deadline })) => {
                assert_eq!(deadline, Duration::new(secs, nanos));
                assert!(e.to_string().contains("deadline"), "{e}");
            }
            Ok(other) => panic!("a deadline of {secs} s {nanos} ns: expected a deadline error, got {other:?}"),
            Err(_) => panic!("decoding a request with a deadline of {secs} s {nanos} ns panicked"),
        }
    }
    // `Duration`'s own check: nanos that carry seconds past u64::MAX.
    let bytes = request_with_deadline(u64::MAX, 1_999_999_999);
    assert!(matches!(codec::decode_frame::<Req>(&bytes), Err(CodecError::Decode(_))));
    for (secs, nanos) in [(0, 0), (3, 0), (24 * 3600, 500_000_000), (MAX_REQUEST_DEADLINE.as_secs(), 0)] {
        let bytes = request_with_deadline(secs, nanos);
        match codec::decode_frame::<Req>(&bytes) {
            Ok(tarpc::ClientMessage::Request(r)) => {
                let left = r.context.deadline.saturating_duration_since(std::time::Instant::now());
                assert!(left <= Duration::new(secs, nanos), "deadline {secs} s decoded as {left:?}");
                assert!(left + Duration::from_secs(5) >= Duration::new(secs, nanos), "{secs} s decoded as {left:?}");
            }
            other => panic!("a deadline of {secs} s {nanos} ns: {other:?}"),
        }
    }
    // A cancellation carries no deadline.
    let cancel = codec::encode(&requests().pop().expect("the cancel")).expect("encode");
    assert!(matches!(codec::decode_frame::<Req>(&cancel), Ok(tarpc::ClientMessage::Cancel { request_id: 7, .. })));
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a decode panicked");
}

/// A `ClientMessage::Request` of `node_version` with its deadline (the time
/// left) set to `secs` s and `nanos` ns; the rest as tarpc encodes it.
fn request_with_deadline(secs: u64, nanos: u32) -> Vec<u8> {
    let valid = codec::encode(&tarpc::ClientMessage::Request(tarpc::Request {
        context: tarpc::context::current(),
        id: 1,
        message: SkeinRpcRequest::NodeVersion {},
    }))
    .expect("encode");
    // variant 0 (Request), then the context, whose first field is the
    // deadline: a Duration (secs: u64 varint, nanos: u32 varint).
    assert_eq!(valid[0], 0);
    let skip = |at: usize| match valid[at] {
        0..=250 => 1,
        251 => 3,
        252 => 5,
        _ => 9,
    };
    let secs_len = skip(1);
    let nanos_len = skip(1 + secs_len);
    let mut bytes = vec![0u8];
    bytes.extend(varint(secs));
    bytes.extend(varint(u64::from(nanos)));
    bytes.extend(&valid[1 + secs_len + nanos_len..]);
    bytes
}

// ---------------------------------------------------------------- the live server

/// A fake node that answers at once.
struct Fake;

impl Handler for Fake {
    async fn append_entries(
        &self,
        _: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        Ok(AppendEntriesResponse::Success)
    }
    async fn vote(&self, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
        Ok(VoteResponse { vote: req.vote, vote_granted: false, last_log_id: None })
    }
    async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        Ok(InstallSnapshotResponse { vote: req.vote })
    }
    async fn write(&self, _: Command) -> Result<Response, NodeError> {
        Ok(Response::Done)
    }
    async fn lease(&self, _: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError> {
        Ok(Vec::new())
    }
    async fn heartbeat(&self, _: HeartbeatRequest) -> Result<HeartbeatAck, NodeError> {
        Ok(HeartbeatAck { renewed: Vec::new(), revoked: Vec::new(), draining: false })
    }
    async fn complete(&self, _: CompleteRequest) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError> {
        Ok(Vec::new())
    }
    async fn read_index(&self) -> Result<u64, NodeError> {
        Ok(1)
    }
    async fn join(&self, _: JoinRequest) -> Result<(), NodeError> {
        Ok(())
    }
    async fn leave(&self, _: u64) -> Result<(), NodeError> {
        Ok(())
    }
    fn node_version(&self) -> NodeVersion {
        NodeVersion { release: "fuzz".into(), format: 3 }
    }
    async fn campaign(&self) -> Result<(), NodeError> {
        Ok(())
    }

    async fn worker_read(
        &self,
        _: skein_transport::WorkerReadRequest,
    ) -> Result<skein_transport::WorkerAnswer, NodeError> {
        Err(NodeError::Invalid("this fake holds no state".into()))
    }

    async fn exchange(&self, _: skein_transport::ExchangeRequest) -> Result<skein_transport::ExchangeReply, NodeError> {
        Err(NodeError::Invalid("this fake holds no state".into()))
    }
}

/// Reads until the server closes the connection (EOF or reset); `false` if
/// it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// One well-behaved call, on a connection of its own, within 5 s.
async fn answers(addr: SocketAddr) -> bool {
    let peers = Peers::new(PeersConfig { call_timeout: Duration::from_secs(5), ..PeersConfig::default() });
    matches!(peers.node_version(&addr.to_string()).await, Ok(Some(v)) if v.release == "fuzz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_survives_garbage_stalls_and_floods() {
    count_panics();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Arc::new(Fake), async move {
        let _ = stopped.await;
    }));
    let body = async {
        // A well-behaved client, one connection throughout.
        let peers = Peers::new(PeersConfig { call_timeout: Duration::from_secs(5), ..PeersConfig::default() });
        let target = addr.to_string();
        assert!(matches!(peers.node_version(&target).await, Ok(Some(_))), "the server answers at the start");

        let mut rng = Rng(0x5eed_50c4_0003);
        let pool: Vec<Vec<u8>> = encode_all(&requests());

        // (a) Garbage: whole frames of random or mutated bytes, and a header
        // over the cap. Each such connection is closed by the server.
        let mut garbage_closed = 0;
        let garbage = cases(40).min(400);
        for i in 0..garbage {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut frame = BytesMut::new();
            match i % 3 {
                0 => frame.put_u32(u32::MAX),
                1 => {
                    let n = 1 + rng.below(512);
                    let junk = rng.bytes(n);
                    frame.put_u32(junk.len() as u32);
                    frame.extend_from_slice(&junk);
                }
                _ => {
                    // A mutated request that fails to decode (skip the few
                    // mutations that still decode to a request).
                    let body = loop {
                        let pick = rng.below(pool.len());
                        let b = mutate(&mut rng, &pool[pick], &pool);
                        let mut deadlines = 0;
                        if !decode_no_panic::<Req>(&b, "a request", &mut deadlines) {
                            break b;
                        }
                    };
                    frame.put_u32(body.len() as u32);
                    frame.extend_from_slice(&body);
                }
            }
            let _ = s.write_all(&frame).await;
            if closed_within(&mut s, Duration::from_secs(5)).await {
                garbage_closed += 1;
            } else {
                panic!("the server kept a garbage connection open (case {i}: {:02x?})", &frame[..frame.len().min(64)]);
            }
            if i % 10 == 0 {
                assert!(matches!(peers.node_version(&target).await, Ok(Some(_))), "answers during garbage");
            }
        }

        // The fixed finding over the wire: deadlines that overflow an
        // `Instant` (tarpc's decoding panicked) or that lie years ahead
        // (tarpc's `DelayQueue` panics past ~795 days). Each is a decode
        // error: that connection is closed, nothing panics, and the server
        // serves the others.
        let year = 365 * 24 * 3600;
        for (secs, nanos) in [(u64::MAX, 0), (i64::MAX as u64, 0), (100 * year, 0), (3 * year, 0)] {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let body = request_with_deadline(secs, nanos);
            let mut frame = BytesMut::new();
            frame.put_u32(body.len() as u32);
            frame.extend_from_slice(&body);
            let _ = s.write_all(&frame).await;
            assert!(closed_within(&mut s, Duration::from_secs(5)).await, "a {secs}-s deadline's connection closed");
            assert!(matches!(peers.node_version(&target).await, Ok(Some(_))), "answers after a {secs}-s deadline");
        }
        // At the bound, a request is served.
        {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let body = request_with_deadline(MAX_REQUEST_DEADLINE.as_secs(), 0);
            let mut frame = BytesMut::new();
            frame.put_u32(body.len() as u32);
            frame.extend_from_slice(&body);
            s.write_all(&frame).await.expect("write a request");
            let mut len = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
                .await
                .expect("an answer within 5 s")
                .expect("an answer to a request at the deadline bound");
            let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut answer).await.expect("the answer's body");
            let resp = codec::decode_frame::<Resp>(&answer).expect("the answer decodes");
            assert!(
                matches!(resp.message, Ok(SkeinRpcResponse::NodeVersion(ref v)) if v.release == "fuzz"),
                "{resp:?}"
            );
        }

        // (b) Stalls: a length prefix and half a body, then nothing; and
        // (c) a flood of a few hundred idle connections at once.
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut frame = BytesMut::new();
            frame.put_u32(1000);
            frame.extend_from_slice(&rng.bytes(500));
            s.write_all(&frame).await.expect("write half a frame");
            stalled.push(s);
        }
        let flood = futures::future::join_all((0..300).map(|_| TcpStream::connect(addr))).await;
        let flood: Vec<TcpStream> = flood.into_iter().map(|s| s.expect("flood connect")).collect();
        // The well-behaved client, on its connection and on fresh ones.
        for _ in 0..20 {
            assert!(matches!(peers.node_version(&target).await, Ok(Some(_))), "answers during stalls and a flood");
        }
        assert!(answers(addr).await, "a new connection is answered during stalls and a flood");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(matches!(peers.node_version(&target).await, Ok(Some(_))), "answers after waiting");
        drop(flood);
        drop(stalled);
        assert!(matches!(peers.node_version(&target).await, Ok(Some(_))), "answers at the end");
        eprintln!("server_survives_garbage_stalls_and_floods: {garbage_closed} garbage connections closed");
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked (see the output above)");
    };
    tokio::time::timeout(Duration::from_secs(60), body).await.expect("finished within 60 s");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").expect("server task");
}
