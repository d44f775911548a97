//! The wire format: length-delimited frames, each one bincode 2 (serde mode)
//! message.
//!
//! tarpc's built-in `Bincode` codec is bincode 1 through tokio-serde; skein
//! encodes everything else (log entries, snapshots) with bincode 2, so the
//! transport does too, through [`Bincode2`], an implementation of
//! tokio-serde's `Serializer`/`Deserializer`.
//!
//! bincode 2's serde mode is not self-describing: it cannot decode
//! `#[serde(untagged)]`, `#[serde(flatten)]`, internally tagged enums or
//! fields skipped with `skip_serializing_if`. The tests at the bottom of this
//! file round-trip openraft's messages and skein's commands to show that none
//! of the types on the wire uses one.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;

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

impl<Item: for<'de> Deserialize<'de>, SinkItem> Deserializer<Item> for Bincode2<Item, SinkItem> {
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, Self::Error> {
        Ok(decode(src)?)
    }
}

/// Encodes one message the way the transport does.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, wire_config())?)
}

/// Decodes one message the way the transport does: the whole of `bytes`,
/// nothing left over.
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
    Item: for<'de> Deserialize<'de>,
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
