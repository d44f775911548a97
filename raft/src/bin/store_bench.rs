//! The Raft log store's durable append rate: every append is one RocksDB
//! write batch, fsynced before it returns (what `RaftLogStorage::append` does
//! before acknowledging). Batches of 1, 16 and 256 entries, each entry an
//! `Enqueue` of one task with a 1 KiB payload.
//!
//! ```text
//! cargo build --release --workspace --bins --locked && $CARGO_TARGET_DIR/release/store_bench [--dir DIR] [--seconds S]
//! (the whole workspace, so that it shares the feature set of every other build: scripts/lib.sh)
//! ```
//!
//! `DIR` should be on the disk a node's data would live on (the default is
//! under the system temp dir; on tmpfs an fsync costs nothing and the figures
//! mean little).

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use openraft::{CommittedLeaderId, EntryPayload, LogId};
use skein_raft::config::Entry;
use skein_raft::fsm::{Command, NewTask, Stamped};

struct Args {
    dir: Option<PathBuf>,
    seconds: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { dir: None, seconds: 5.0 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dir" => args.dir = Some(it.next().ok_or("--dir needs a path")?.into()),
            "--seconds" => {
                let s = it.next().ok_or("--seconds needs a number")?;
                args.seconds = s.parse().map_err(|e| format!("--seconds {s}: {e}"))?;
            }
            "-h" | "--help" => return Err("usage: store_bench [--dir DIR] [--seconds S]".into()),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// One log entry: an enqueue of a single task with a 1 KiB JSON payload.
fn entry(index: u64) -> Entry {
    let payload = format!(r#"{{"source":"s3://bucket/datasets/{index}.parquet","pad":"{}"}}"#, "x".repeat(960));
    let task = NewTask::new("migrations", "migration", &payload);
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Stamped {
            now_ms: 1_700_000_000_000 + index,
            command: Command::Enqueue { tasks: vec![task] },
        }),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let base = args.dir.unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("skein-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("log store append with fsync, in {} ({} s per batch size)", dir.display(), args.seconds);
    println!("{:>6} {:>10} {:>12} {:>10} {:>12}", "batch", "appends", "entries/s", "appends/s", "ms/append");

    let result = run(&dir, args.seconds).await;
    std::fs::remove_dir_all(&dir)?;
    result
}

async fn run(dir: &std::path::Path, seconds: f64) -> Result<(), Box<dyn Error>> {
    let (log, _sm) = skein_raft::store::open(dir)?;
    let mut next = 1u64;
    for batch in [1usize, 16, 256] {
        // Warm up (creates the WAL and memtables).
        for _ in 0..3 {
            log.append_entries((next..next + batch as u64).map(entry)).await?;
            next += batch as u64;
        }
        let limit = Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut appends = 0u64;
        while start.elapsed() < limit {
            // Building the entries is part of the cost: openraft hands the
            // store owned entries and the store encodes them.
            log.append_entries((next..next + batch as u64).map(entry)).await?;
            next += batch as u64;
            appends += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{:>6} {:>10} {:>12.0} {:>10.0} {:>12.3}",
            batch,
            appends,
            (appends * batch as u64) as f64 / secs,
            appends as f64 / secs,
            secs * 1000.0 / appends as f64
        );
    }
    Ok(())
}
