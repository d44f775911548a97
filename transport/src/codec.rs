//! The wire format: length-delimited frames, each one bincode 2 (serde mode)
//! message.
//!
//! tarpc's built-in `Bincode` codec is bincode 1 through tokio-serde; skein
//! encodes everything else (log entries, snapshots) with bincode 2, so the
//! transport does too, through [`Bincode2`], an implementation of
//! tokio-serde's `Serializer`/`Deserializer`.
//!
//! Requests ([`tarpc::ClientMessage`]) are decoded through [`Frame`], which
//! checks the deadline before tarpc's own types see it: tarpc turns the
//! deadline it receives (the time left, a `Duration`) into an `Instant`
//! with `Instant::now() + deadline`, which panics on overflow, and its
//! server then adds it to `SystemTime::now()` (for a span) and puts it in
//! tokio-util's `DelayQueue`, which panics on a deadline more than about
//! 795 days away. A request whose deadline is over
//! [`MAX_REQUEST_DEADLINE`] is a decode error instead, which closes only
//! its connection. Only decoding changes: every frame is still encoded by
//! [`encode`], byte for byte as before.
//!
//! bincode 2's serde mode is not self-describing: it cannot decode
//! `#[serde(untagged)]`, `#[serde(flatten)]`, internally tagged enums or
//! fields skipped with `skip_serializing_if`. The tests at the bottom of this
//! file round-trip openraft's messages and skein's commands to show that none
//! of the types on the wire uses one.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tarpc::tokio_serde::{Deserializer, Serializer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::bytes::{Bytes, BytesMut};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The largest frame either side sends or accepts, in bytes. A larger
/// request fails before it is sent ([`crate::CallError::TooLarge`]; Raft
/// splits an append that hits it); a larger incoming frame closes the
/// connection. Snapshot chunks (openraft's default is 3 MiB) and append
/// batches stay well below it.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// The furthest deadline a request may carry, as the time left when it was
/// sent. Every skein release clamps a call's timeout to 24 hours (plus half
/// a second of grace, `client.rs`), so 30 days is far above anything a node
/// sends, and far below what tarpc's server can hold without panicking
/// (tokio-util's `DelayQueue` refuses a deadline over 2^36 ms, about 795
/// days, with a panic; `Instant` and `SystemTime` overflow much later). A
/// request beyond it fails to decode ([`CodecError::Deadline`]).
pub const MAX_REQUEST_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);

/// bincode 2's standard configuration (varint integers, little endian),
/// bounded so that a corrupt or hostile length prefix inside a frame can
/// never make the decoder claim more than a frame's worth of memory.
type WireConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_BYTES>,
>;

fn wire_config() -> WireConfig {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// A message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized (a serde error of the value's own
    /// type, or a frame over [`MAX_FRAME_BYTES`]).
    #[error("encoding a message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The frame is not a valid message of the expected type (a version
    /// mismatch between nodes, or corruption).
    #[error("decoding a message: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A request whose deadline is further away than
    /// [`MAX_REQUEST_DEADLINE`] (tarpc would panic on it, or hold it for
    /// years).
    #[error(
        "decoding a request: its deadline is {}.{:09} s away, more than the {} s allowed",
        deadline.as_secs(),
        deadline.subsec_nanos(),
        MAX_REQUEST_DEADLINE.as_secs()
    )]
    Deadline {
        /// The deadline the frame carried (the time left).
        deadline: Duration,
    },
    /// The frame held a whole message and then more bytes.
    #[error("decoding a message: {extra} bytes left over after it")]
    TrailingBytes {
        /// How many bytes followed the message.
        extra: usize,
    },
}

impl From<CodecError> for io::Error {
    fn from(e: CodecError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// tokio-serde codec for bincode 2 in serde mode. One value, the same for
/// every message type of a connection (`Item` in, `SinkItem` out); both
/// directions are stateless.
pub struct Bincode2<Item, SinkItem> {
    /// Ties the codec to the message types without owning any.
    _types: PhantomData<fn(SinkItem) -> Item>,
}

impl<Item, SinkItem> Default for Bincode2<Item, SinkItem> {
    fn default() -> Self {
        Bincode2 { _types: PhantomData }
    }
}

impl<Item, SinkItem> std::fmt::Debug for Bincode2<Item, SinkItem> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bincode2")
    }
}

impl<Item, SinkItem: Serialize> Serializer<SinkItem> for Bincode2<Item, SinkItem> {
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, Self::Error> {
        Ok(Bytes::from(encode(item)?))
    }
}

impl<Item: Frame, SinkItem> Deserializer<Item> for Bincode2<Item, SinkItem> {
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, Self::Error> {
        Ok(Item::decode_frame(src)?)
    }
}

/// A message the transport receives, and how one frame of it is decoded:
/// a request with its deadline checked first ([`MAX_REQUEST_DEADLINE`]), a
/// response as it is.
pub trait Frame: Sized {
    /// Decodes one frame, the whole of `bytes`.
    fn decode_frame(bytes: &[u8]) -> Result<Self, CodecError>;
}

impl<T: DeserializeOwned> Frame for tarpc::ClientMessage<T> {
    fn decode_frame(bytes: &[u8]) -> Result<Self, CodecError> {
        check_deadline(bytes)?;
        decode(bytes)
    }
}

impl<T: DeserializeOwned> Frame for tarpc::Response<T> {
    fn decode_frame(bytes: &[u8]) -> Result<Self, CodecError> {
        decode(bytes)
    }
}

/// Decodes one frame the way the transport does: [`decode`], and for a
/// request the deadline check of [`Frame`]. Use this, not [`decode`], for a
/// [`tarpc::ClientMessage`]: tarpc's own decoding of it panics on a
/// deadline that overflows an `Instant`.
pub fn decode_frame<T: Frame>(bytes: &[u8]) -> Result<T, CodecError> {
    T::decode_frame(bytes)
}

/// The start of a [`tarpc::ClientMessage`] in bincode's serde layout, as far
/// as a request's deadline: the variant, then (a `Request`) its first field,
/// the context, whose first field is the deadline, the time left as a
/// `Duration` (`tarpc::context`'s `absolute_to_relative_time`). Decoding
/// this reads exactly the bytes tarpc's own types read first, and stops.
#[derive(Deserialize)]
enum ClientMessageHead {
    Request(RequestHead),
    Cancel,
}

/// `tarpc::Request`'s first field.
#[derive(Deserialize)]
struct RequestHead {
    context: ContextHead,
}

/// `tarpc::context::Context`'s first field.
#[derive(Deserialize)]
struct ContextHead {
    deadline: Duration,
}

/// Refuses a request whose deadline is over [`MAX_REQUEST_DEADLINE`]; a
/// cancellation, or a frame too short or malformed to say, is left to the
/// full decode (which fails on the same bytes this could not read).
fn check_deadline(bytes: &[u8]) -> Result<(), CodecError> {
    match bincode::serde::decode_from_slice::<ClientMessageHead, _>(bytes, wire_config()) {
        Ok((ClientMessageHead::Request(RequestHead { context: ContextHead { deadline } }), _))
            if deadline > MAX_REQUEST_DEADLINE =>
        {
            Err(CodecError::Deadline { deadline })
        }
        _ => Ok(()),
    }
}

/// Encodes one message the way the transport does.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, wire_config())?)
}

/// Decodes one message body: the whole of `bytes`, nothing left over. A
/// whole request frame (a [`tarpc::ClientMessage`]) goes through
/// [`decode_frame`] instead, as the transport does.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, wire_config())?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes { extra: bytes.len() - read });
    }
    Ok(value)
}

/// The length-delimited framing both sides use: a 4-byte big-endian length,
/// frames capped at [`MAX_FRAME_BYTES`].
pub fn length_delimited() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec()
}

/// A tarpc transport over `io`: framed, bincode 2.
pub fn transport<S, Item, SinkItem>(
    io: S,
) -> tarpc::serde_transport::Transport<S, Item, SinkItem, Bincode2<Item, SinkItem>>
where
    S: AsyncRead + AsyncWrite,
    Item: Frame + for<'de> Deserialize<'de>,
    SinkItem: Serialize,
{
    tarpc::serde_transport::new(Framed::new(io, length_delimited()), Bincode2::default())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
        VoteResponse,
    };
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
    use skein_raft::config::{SkeinNode, TypeConfig};
    use skein_raft::fsm::{
        Command, Completion, FencingToken, Granted, HeldLease, NewTask, Outcome, QueuePatch, Rejection,
        ReportedProgress, Response, Stamped, TaskId, TaskRef, TaskStatus,
    };

    use super::*;
    use crate::rpc::{
        CompleteRequest, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask, NodeError, SkeinRpcRequest,
        SkeinRpcResponse,
    };

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de> + std::fmt::Debug,
    {
        let bytes = encode(value).expect("encode");
        decode(&bytes).unwrap_or_else(|e| panic!("decode {value:?}: {e}"))
    }

    fn node(i: u64) -> SkeinNode {
        SkeinNode { rpc_addr: format!("10.0.0.{i}:7000"), http_addr: format!("10.0.0.{i}:8080") }
    }

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn membership() -> Membership<u64, SkeinNode> {
        let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
        let nodes: BTreeMap<u64, SkeinNode> = (1..=4).map(|i| (i, node(i))).collect();
        // Two configs: a joint membership in the middle of a change.
        Membership::new(vec![voters.clone(), [1, 2, 4].into_iter().collect()], nodes)
    }

    /// Every command shape, so that a new field or variant that bincode 2
    /// cannot carry shows up here.
    fn every_command() -> Vec<Command> {
        let mut task = NewTask::new("ingest", "migration", r#"{"dataset":"a"}"#);
        task.max_attempts = Some(3);
        task.idempotency_key = Some("k-1".into());
        task.depends_on = vec![TaskRef::Id(TaskId(7)), TaskRef::Key("k-0".into())];
        vec![
            Command::Enqueue { tasks: vec![task, NewTask::new("q", "noop", "{}")] },
            Command::Lease { node: 2, queues: vec!["ingest".into()], max: 8 },
            Command::Heartbeat {
                node: 2,
                slots: 4,
                held: vec![
                    HeldLease {
                        task: TaskId(1),
                        token: FencingToken(9),
                        progress: Some(ReportedProgress { fraction: 0.5, message: "half".into() }),
                    },
                    HeldLease { task: TaskId(2), token: FencingToken(10), progress: None },
                ],
            },
            Command::Complete {
                node: 2,
                completions: vec![
                    Completion {
                        task: TaskId(1),
                        token: FencingToken(9),
                        outcome: Outcome::Succeeded { result: "{}".into() },
                    },
                    Completion {
                        task: TaskId(2),
                        token: FencingToken(10),
                        outcome: Outcome::Retryable { error: "io".into() },
                    },
                    Completion {
                        task: TaskId(3),
                        token: FencingToken(11),
                        outcome: Outcome::Permanent { error: "bad".into() },
                    },
                ],
            },
            Command::ExpireLeases,
            Command::Cancel { task: TaskId(4), reason: "user".into() },
            Command::Retry { task: TaskId(4) },
            Command::SetQueuePaused { queue: "q".into(), paused: true },
            Command::ConfigureQueue {
                queue: "q".into(),
                patch: QueuePatch { lease_ms: Some(1_000), concurrency: Some(2), ..QueuePatch::default() },
            },
            Command::DrainNode { node: 3, draining: true },
            Command::ReleaseNode { node: 3, forget: false },
            Command::CollectGarbage,
            Command::Batch(vec![Command::ExpireLeases, Command::Retry { task: TaskId(5) }]),
            Command::RemoveNode { node: 3 },
            Command::AdmitNode { node: 3 },
        ]
    }

    /// `AppendEntriesRequest` has no `PartialEq`; its parts do.
    fn assert_same_append(a: &AppendEntriesRequest<TypeConfig>, b: &AppendEntriesRequest<TypeConfig>) {
        assert_eq!(a.vote, b.vote);
        assert_eq!(a.prev_log_id, b.prev_log_id);
        assert_eq!(a.leader_commit, b.leader_commit);
        assert_eq!(a.entries, b.entries);
    }

    #[test]
    fn append_entries_with_skein_commands_round_trips() {
        let mut entries = vec![openraft::Entry::<TypeConfig> { log_id: log_id(3, 10), payload: EntryPayload::Blank }];
        for (i, command) in every_command().into_iter().enumerate() {
            entries.push(openraft::Entry {
                log_id: log_id(3, 11 + i as u64),
                payload: EntryPayload::Normal(Stamped { now_ms: 1_700_000_000_000 + i as u64, command }),
            });
        }
        entries.push(openraft::Entry { log_id: log_id(3, 100), payload: EntryPayload::Membership(membership()) });
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 9)),
            entries,
            leader_commit: Some(log_id(3, 8)),
        };
        assert_same_append(&round_trip(&request), &request);

        // The same request as tarpc puts it on the wire, inside its envelope.
        let message = tarpc::ClientMessage::Request(tarpc::Request {
            context: tarpc::context::current(),
            id: 42,
            message: SkeinRpcRequest::AppendEntries { req: request.clone() },
        });
        match round_trip(&message) {
            tarpc::ClientMessage::Request(tarpc::Request {
                id: 42,
                message: SkeinRpcRequest::AppendEntries { req },
                ..
            }) => assert_same_append(&req, &request),
            other => panic!("unexpected {other:?}"),
        }

        let empty = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 2),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        assert_same_append(&round_trip(&empty), &empty);
    }

    #[test]
    fn raft_responses_and_errors_round_trip() {
        let responses: Vec<AppendEntriesResponse<u64>> = vec![
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id(4, 5))),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(5, 3)),
        ];
        for r in &responses {
            assert_eq!(&round_trip(r), r);
        }

        let vote = VoteRequest::<u64> { vote: Vote::new(4, 2), last_log_id: Some(log_id(3, 7)) };
        assert_eq!(round_trip(&vote), vote);
        let vote_resp = VoteResponse::<u64> { vote: Vote::new(4, 2), vote_granted: true, last_log_id: None };
        assert_eq!(round_trip(&vote_resp), vote_resp);

        let fatal: Result<VoteResponse<u64>, RaftError<u64>> = Err(RaftError::Fatal(Fatal::Stopped));
        assert_eq!(round_trip(&fatal), fatal);
        let storage: RaftError<u64> = RaftError::Fatal(Fatal::StorageError(openraft::StorageError::IO {
            source: openraft::StorageIOError::write_logs(openraft::AnyError::error("disk full")),
        }));
        assert_eq!(round_trip(&storage), storage);
    }

    #[test]
    fn install_snapshot_round_trips() {
        let meta = SnapshotMeta::<u64, SkeinNode> {
            last_log_id: Some(log_id(3, 100)),
            last_membership: StoredMembership::new(Some(log_id(2, 50)), membership()),
            snapshot_id: "3-100-abc".into(),
        };
        let request = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta,
            offset: 3 * 1024 * 1024,
            data: (0..=255u8).cycle().take(100_000).collect(),
            done: false,
        };
        assert_eq!(round_trip(&request), request);

        let ok: Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> =
            Ok(InstallSnapshotResponse { vote: Vote::new(3, 1) });
        assert_eq!(round_trip(&ok), ok);
        let mismatch: Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> =
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: openraft::SnapshotSegmentId { id: "a".into(), offset: 0 },
                got: openraft::SnapshotSegmentId { id: "a".into(), offset: 10 },
            })));
        assert_eq!(round_trip(&mismatch), mismatch);
    }

    #[test]
    fn node_messages_round_trip() {
        for command in every_command() {
            assert_eq!(round_trip(&command), command);
        }
        let lease = LeaseRequest { node: 2, queues: vec!["a".into(), "b".into()], max: 16, wait_ms: 20_000 };
        assert_eq!(round_trip(&lease), lease);
        let leased = vec![LeasedTask {
            grant: Granted {
                task: TaskId(1),
                queue: "a".into(),
                kind: "noop".into(),
                attempt: 1,
                token: FencingToken(77),
                expires_ms: 123,
            },
            payload: r#"{"x":1}"#.into(),
        }];
        assert_eq!(round_trip(&leased), leased);
        let heartbeat = HeartbeatRequest {
            node: 2,
            slots: 4,
            held: vec![HeldLease { task: TaskId(1), token: FencingToken(77), progress: None }],
        };
        assert_eq!(round_trip(&heartbeat), heartbeat);
        let complete = CompleteRequest {
            node: 2,
            completions: vec![Completion {
                task: TaskId(1),
                token: FencingToken(77),
                outcome: Outcome::Succeeded { result: "{}".into() },
            }],
        };
        assert_eq!(round_trip(&complete), complete);
        let completed: Result<Vec<Result<TaskStatus, Rejection>>, NodeError> = Ok(vec![
            Ok(TaskStatus::Succeeded),
            Err(Rejection::StaleToken { task: TaskId(1), token: FencingToken(3), current: Some(FencingToken(4)) }),
        ]);
        assert_eq!(round_trip(&completed), completed);
        let join = JoinRequest { id: 4, node: node(4) };
        assert_eq!(round_trip(&join), join);

        let responses = vec![
            Response::Done,
            Response::Rejected(Rejection::QueueFull { queue: "q".into(), depth: 10, limit: 10 }),
            Response::Batch(vec![
                Response::Collected { tasks: 3 },
                Response::Task { id: TaskId(1), status: TaskStatus::Dead },
            ]),
        ];
        for r in &responses {
            assert_eq!(&round_trip(r), r);
        }
        let errors = vec![
            NodeError::NotLeader { leader_id: Some(1), leader: Some(node(1)) },
            NodeError::NotLeader { leader_id: None, leader: None },
            NodeError::Unavailable("no quorum".into()),
            NodeError::Invalid("bad".into()),
            NodeError::Removed(4),
            NodeError::Internal("bug".into()),
        ];
        for e in &errors {
            assert_eq!(&round_trip(e), e);
        }

        // tarpc's response envelope, with a server error inside.
        let response: tarpc::Response<SkeinRpcResponse> = tarpc::Response {
            request_id: 9,
            message: Ok(SkeinRpcResponse::ReadIndex(Err(NodeError::Unavailable("x".into())))),
        };
        let back = round_trip(&response);
        assert_eq!(back.request_id, 9);
        assert!(matches!(back.message, Ok(SkeinRpcResponse::ReadIndex(Err(NodeError::Unavailable(_))))));
    }

    /// A request as tarpc puts it on the wire, with the deadline (the time
    /// left, a `Duration`: secs varint, nanos varint after the variant byte)
    /// replaced by `secs`/`nanos`; `None` gives the frame as encoded.
    fn request_frame(deadline: Option<(u64, u32)>) -> Vec<u8> {
        let mut ctx = tarpc::context::current();
        ctx.deadline = std::time::Instant::now() + Duration::from_secs(10);
        let message = tarpc::ClientMessage::Request(tarpc::Request {
            context: ctx,
            id: 5,
            message: SkeinRpcRequest::Leave { id: 3 },
        });
        let valid = encode(&message).expect("encode");
        let Some((secs, nanos)) = deadline else { return valid };
        let head = &valid[1..];
        let (_, used): (Duration, usize) =
            bincode::serde::decode_from_slice(head, wire_config()).expect("the deadline decodes");
        // The two fields, as written (`Duration::new` would carry nanos over).
        let mut bytes = vec![0u8];
        bytes.extend(encode(&secs).expect("encode"));
        bytes.extend(encode(&nanos).expect("encode"));
        bytes.extend(&valid[1 + used..]);
        bytes
    }

    #[test]
    fn requests_decode_with_their_deadline_and_unchanged_bytes() {
        // The frame as sent: a request and its deadline, decoded through
        // `Frame` as the server does, then encoded again: the same bytes
        // but for the deadline, which is relative to now and so a little
        // shorter the second time.
        let sent = request_frame(None);
        let back: tarpc::ClientMessage<SkeinRpcRequest> = decode_frame(&sent).expect("a request decodes");
        let tarpc::ClientMessage::Request(ref request) = back else { panic!("not a request: {back:?}") };
        let left = request.context.deadline.saturating_duration_since(std::time::Instant::now());
        assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10), "{left:?}");
        assert!(matches!(request.message, SkeinRpcRequest::Leave { id: 3 }));
        let again = encode(&back).expect("encode");
        let tail = |b: &[u8]| {
            let (_, used): (Duration, usize) =
                bincode::serde::decode_from_slice(&b[1..], wire_config()).expect("deadline");
            b[1 + used..].to_vec()
        };
        assert_eq!(sent[0], again[0]);
        assert_eq!(tail(&sent), tail(&again), "everything after the deadline is encoded as before");
        // tarpc's own decoding (what `decode` does) reads the same frame to
        // the same value: the check only refuses, it never reinterprets.
        let plain: tarpc::ClientMessage<SkeinRpcRequest> = decode(&sent).expect("decode");
        assert_eq!(tail(&encode(&plain).expect("encode")), tail(&sent));
        // The limit is a decoding matter: with or without it, and through
        // `Frame` or not, a value encodes to the same bytes.
        let response: tarpc::Response<SkeinRpcResponse> =
            tarpc::Response { request_id: 9, message: Ok(SkeinRpcResponse::ReadIndex(Ok(7))) };
        assert_eq!(
            encode(&response).expect("encode"),
            bincode::serde::encode_to_vec(&response, bincode::config::standard()).expect("encode")
        );
        let decoded: tarpc::Response<SkeinRpcResponse> =
            decode_frame(&encode(&response).expect("encode")).expect("a response decodes");
        assert_eq!(encode(&decoded).expect("encode"), encode(&response).expect("encode"));
    }

    #[test]
    fn deadlines_over_the_bound_are_decode_errors() {
        let max = MAX_REQUEST_DEADLINE.as_secs();
        for (secs, nanos) in [(u64::MAX, 0), (i64::MAX as u64, 999_999_999), (3 * 365 * 24 * 3600, 0), (max, 1)] {
            let frame = request_frame(Some((secs, nanos)));
            match decode_frame::<tarpc::ClientMessage<SkeinRpcRequest>>(&frame) {
                Err(CodecError::Deadline { deadline }) => assert_eq!(deadline, Duration::new(secs, nanos)),
                other => panic!("{secs} s {nanos} ns: {other:?}"),
            }
            // An I/O error of kind InvalidData: tarpc closes the connection.
            let io: io::Error = CodecError::Deadline { deadline: Duration::new(secs, nanos) }.into();
            assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        }
        for (secs, nanos) in [(0, 0), (24 * 3600, 500_000_000), (max, 0)] {
            let frame = request_frame(Some((secs, nanos)));
            assert!(decode_frame::<tarpc::ClientMessage<SkeinRpcRequest>>(&frame).is_ok(), "{secs} s {nanos} ns");
        }
        // Too short to hold a deadline: the full decode's error.
        assert!(matches!(decode_frame::<tarpc::ClientMessage<SkeinRpcRequest>>(&[0]), Err(CodecError::Decode(_))));
        assert!(matches!(decode_frame::<tarpc::ClientMessage<SkeinRpcRequest>>(&[]), Err(CodecError::Decode(_))));
    }

    #[test]
    fn trailing_bytes_and_garbage_are_errors_not_panics() {
        let mut bytes = encode(&NodeError::Invalid("x".into())).expect("encode");
        bytes.push(0);
        assert!(matches!(decode::<NodeError>(&bytes), Err(CodecError::TrailingBytes { extra: 1 })));
        assert!(decode::<AppendEntriesRequest<TypeConfig>>(&[0xff; 16]).is_err());
        // A length prefix claiming far more than a frame holds.
        assert!(decode::<Vec<u8>>(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }
}
