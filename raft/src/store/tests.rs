//! Crash repair, which needs to reach inside the store.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};

use super::codec::task_key;
use super::{cf, open, CF_META, CF_PAYLOAD, META_INSTALLING};
use crate::config::Entry;
use crate::fsm::{Command, NewTask, Response, Stamped, TaskId};

fn enqueue(index: u64, payloads: &[&str]) -> Entry {
    let tasks = payloads.iter().map(|p| NewTask::new("q", "noop", p)).collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Stamped { now_ms: index * 10, command: Command::Enqueue { tasks } }),
    }
}

/// A crash in the middle of an install leaves the `installing` marker and
/// cold data that matches no state; opening rebuilds the cold CFs from the
/// current snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_repairs_an_interrupted_install() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::TempDir::new()?;
    let (_log, mut sm) = open(dir.path())?;
    let h = sm.handle();
    let responses = sm.apply([enqueue(1, &[r#"{"a":1}"#, r#"{"b":2}"#])]).await?;
    let Some(Response::Enqueued(made)) = responses.first() else { panic!("{responses:?}") };
    let (a, b) = (made[0].id, made[1].id);
    sm.get_snapshot_builder().await.build_snapshot().await?;

    // What a crash between the first and the last write of an install leaves.
    {
        let db = &h.shared.db;
        db.put_cf(cf(db, CF_META)?, META_INSTALLING, b"x")?;
        db.delete_cf(cf(db, CF_PAYLOAD)?, task_key(a))?;
        db.put_cf(cf(db, CF_PAYLOAD)?, task_key(TaskId(999)), b"stray")?;
    }
    drop((_log, sm, h));

    let (_log, sm) = open(dir.path())?;
    let h = sm.handle();
    assert_eq!(h.payload(a)?.as_deref(), Some(r#"{"a":1}"#));
    assert_eq!(h.payload(b)?.as_deref(), Some(r#"{"b":2}"#));
    assert_eq!(h.payload(TaskId(999))?, None);
    assert!(h.shared.db.get_cf(cf(&h.shared.db, CF_META)?, META_INSTALLING)?.is_none());
    Ok(())
}

/// With no snapshot at all, the repair is an empty cold store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_repairs_an_interrupted_first_install() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::TempDir::new()?;
    let (_log, sm) = open(dir.path())?;
    let h = sm.handle();
    {
        let db = &h.shared.db;
        db.put_cf(cf(db, CF_META)?, META_INSTALLING, b"x")?;
        db.put_cf(cf(db, CF_PAYLOAD)?, task_key(TaskId(7)), b"half-installed")?;
    }
    drop((_log, sm, h));
    let (_log, sm) = open(dir.path())?;
    assert_eq!(sm.handle().payload(TaskId(7))?, None);
    Ok(())
}

/// A directory whose data reached a stored format this build does not know
/// is refused at open, naming the release to run, before anything is read.
#[test]
fn a_directory_of_a_newer_format_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, sm) = super::open(dir.path()).unwrap();
        drop(sm);
    }
    {
        let db = super::open_db(&dir.path().join("db")).unwrap();
        super::note_dir_format(&db, 0, crate::format::LATEST + 1).unwrap();
    }
    let err = super::open(dir.path()).err().expect("a newer directory opened").to_string();
    assert!(err.contains(&format!("stored format {}", crate::format::LATEST + 1)), "{err}");
    assert!(err.contains("run a newer release"), "{err}");
}
