//! Partitioned plans on local files: listing and grouping a source into
//! partitions, running each and committing them as one version (hive
//! folders, rows per file), the fenced commit in token order, readers
//! during commits, many sources, and bounded memory.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use skein_migrate::{
    commit, plan_partitions, run, run_partition, Attempt, MigrateError, Options, Partition, PartitionOutput, Report,
};
use skein_plan::{MigrationSpec, Plan};

fn plan(yaml_spec: &str) -> MigrationSpec {
    let doc = format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: p\nspec:\n  type: migration-plan\n  owner: t\n{yaml_spec}"
    );
    let e = skein_plan::parse_yaml(&doc, "test").unwrap_or_else(|e| panic!("{e}")).remove(0);
    Plan::from_entity(&e).unwrap().migration
}

fn attempt(token: u64) -> Attempt {
    Attempt { task: 1, attempt: 1, token }
}

fn opts(dir: &Path) -> Options {
    Options::new(dir.join("scratch"))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `src/` with three order files in two days, and files a listing skips.
fn orders(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    write(&src.join("dt=2026-11-01/a.csv"), "id,dt,amount\n1,2026-11-01,10\n2,2026-11-01,20\n3,2026-11-01,30\n");
    write(&src.join("dt=2026-11-01/b.csv"), "id,dt,amount\n4,2026-11-01,40\n5,2026-11-01,50\n");
    write(&src.join("dt=2026-11-02/c.csv"), "id,dt,amount\n6,2026-11-02,60\n");
    // Skipped: hidden files and folders, other extensions.
    write(&src.join("_tmp/x.csv"), "id,dt,amount\n99,2026-11-09,1\n");
    write(&src.join(".hidden.csv"), "id,dt,amount\n98,2026-11-09,1\n");
    write(&src.join("dt=2026-11-01/.a.csv.crc"), "crc");
    write(&src.join("dt=2026-11-02/_SUCCESS"), "");
    write(&src.join("dt=2026-11-02/notes.txt"), "not data");
    src
}

fn names(p: &Partition) -> Vec<String> {
    p.files.iter().map(|u| u.rsplit_once("/src/").unwrap().1.to_string()).collect()
}

#[tokio::test]
async fn partitions_by_files_bytes_and_key_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let src = orders(dir.path());
    let d = dir.path().display();
    let spec_with = |p: &str| {
        plan(&format!(
            "  sources:\n    orders: {{url: \"{}/\", format: csv, partition: {p}}}\n  target: {{url: \"{d}/out/\", format: parquet}}\n  steps:\n    - type: copy\n",
            src.display()
        ))
    };
    let o = opts(dir.path());
    let by_file = plan_partitions(&spec_with("file"), &o).await.unwrap();
    assert_eq!(
        by_file.iter().map(names).collect::<Vec<_>>(),
        vec![vec!["dt=2026-11-01/a.csv"], vec!["dt=2026-11-01/b.csv"], vec!["dt=2026-11-02/c.csv"]]
    );
    assert_eq!(by_file.iter().map(|p| p.index).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(by_file[0].files[0], format!("file://{}/dt=2026-11-01/a.csv", src.display()));
    let size = |rel: &str| std::fs::metadata(src.join(rel)).unwrap().len();
    assert_eq!(by_file[0].bytes, size("dt=2026-11-01/a.csv"));
    assert!(by_file.iter().all(|p| p.key.is_none()));

    let two = plan_partitions(&spec_with("{files: 2}"), &o).await.unwrap();
    assert_eq!(two.iter().map(|p| p.files.len()).collect::<Vec<_>>(), vec![2, 1]);

    let ab = size("dt=2026-11-01/a.csv") + size("dt=2026-11-01/b.csv");
    let by_bytes = plan_partitions(&spec_with(&format!("{{bytes: {ab}}}")), &o).await.unwrap();
    assert_eq!(by_bytes.iter().map(|p| p.files.len()).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(by_bytes[0].bytes, ab);
    let tiny = plan_partitions(&spec_with("{bytes: 1}"), &o).await.unwrap();
    assert_eq!(tiny.len(), 3, "a file larger than the limit is a partition of its own");

    let by_key = plan_partitions(&spec_with("{key: dt}"), &o).await.unwrap();
    assert_eq!(by_key.len(), 2);
    assert_eq!(by_key[0].key.as_deref(), Some("dt=2026-11-01"));
    assert_eq!(names(&by_key[0]), vec!["dt=2026-11-01/a.csv", "dt=2026-11-01/b.csv"]);
    assert_eq!(by_key[1].key.as_deref(), Some("dt=2026-11-02"));

    // The same listing gives the same partitions, and they round-trip as JSON.
    for how in ["file", "{files: 2}", "{key: dt}"] {
        assert_eq!(
            plan_partitions(&spec_with(how), &o).await.unwrap(),
            plan_partitions(&spec_with(how), &o).await.unwrap()
        );
    }
    let json = serde_json::to_string(&by_key).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Partition>>(&json).unwrap(), by_key);

    // A key partitioning needs every file in a `dt=` folder.
    write(&src.join("stray.csv"), "id,dt,amount\n7,2026-11-03,70\n");
    let err = plan_partitions(&spec_with("{key: dt}"), &o).await.unwrap_err();
    assert!(err.to_string().contains("stray.csv is not in a `dt=...` folder"), "{err}");

    // Not partitioned, or nothing to partition.
    let plain =
        plan(&format!("  source: {d}/src/dt=2026-11-02/c.csv\n  target: {d}/o.csv\n  steps:\n    - type: copy\n"));
    let err = plan_partitions(&plain, &o).await.unwrap_err();
    assert!(matches!(err, MigrateError::Plan(_)) && err.to_string().contains("no partitioned source"), "{err}");
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let empty = plan(&format!(
        "  sources:\n    orders: {{url: \"{d}/empty/\", format: csv, partition: file}}\n  target: {{url: \"{d}/out/\", format: parquet}}\n  steps:\n    - type: copy\n"
    ));
    let err = plan_partitions(&empty, &o).await.unwrap_err();
    assert!(matches!(err, MigrateError::SourceNotFound(_)), "{err}");
}

#[tokio::test]
async fn ten_thousand_files_are_listed_and_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("many");
    for i in 0..10_000 {
        write(&src.join(format!("d{:02}/f{i:05}.csv", i % 50)), "id\n1\n");
    }
    let d = dir.path().display();
    let spec = plan(&format!(
        "  sources:\n    orders: {{url: \"{d}/many/\", format: csv, partition: {{files: 1000}}}}\n  target: {{url: \"{d}/out/\", format: csv}}\n  steps:\n    - type: copy\n"
    ));
    let parts = plan_partitions(&spec, &opts(dir.path())).await.unwrap();
    assert_eq!(parts.len(), 10);
    let all: Vec<&String> = parts.iter().flat_map(|p| &p.files).collect();
    assert_eq!(all.len(), 10_000);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
}

/// Rows and the sum of `amount` of the folder `out` (hive `dt` folders).
async fn read_out(out: &Path) -> (i64, i64) {
    let ctx = SessionContext::new();
    let o = ParquetReadOptions::default().table_partition_cols(vec![("dt".to_string(), DataType::Utf8)]);
    ctx.register_parquet("t", format!("{}/", out.display()), o).await.unwrap();
    let b = ctx.sql("SELECT count(*) AS n, sum(amount) AS s FROM t").await.unwrap().collect().await.unwrap();
    let col = |i: usize| b[0].column(i).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    (col(0), col(1))
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap()
}

/// Runs every partition of `spec` for `generation` under tokens `first`,
/// `first + 1`...
async fn run_all(spec: &MigrationSpec, generation: u64, first: u64, o: &Options) -> Vec<PartitionOutput> {
    let mut outs = Vec::new();
    for (i, part) in plan_partitions(spec, o).await.unwrap().iter().enumerate() {
        outs.push(run_partition(spec, generation, part, attempt(first + i as u64), o).await.unwrap());
    }
    outs
}

fn partitioned_spec(d: &str, src: &Path, filter: &str) -> MigrationSpec {
    plan(&format!(
        "  sources:\n    orders: {{url: \"{}/\", format: csv, partition: file}}\n  target: {{url: \"{d}/out/\", format: parquet, partition_by: [dt], max_rows_per_file: 2}}\n  steps:\n    - type: sql\n      query: \"SELECT id, dt, amount FROM orders WHERE {filter}\"\n    - type: validate\n      row_count: \"target <= source\"\n      assert: \"SELECT * FROM target WHERE amount < 0\"\n",
        src.display()
    ))
}

#[tokio::test]
async fn partitions_commit_as_one_version_in_token_order() {
    let dir = tempfile::tempdir().unwrap();
    let src = orders(dir.path());
    let d = dir.path().display().to_string();
    let out = dir.path().join("out");
    let control = dir.path().join("_skein/out");
    let o = opts(dir.path());

    // Generation 1: three partitions, then the commit under token 20.
    let spec = partitioned_spec(&d, &src, "true");
    let outs = run_all(&spec, 1, 10, &o).await;
    assert_eq!(outs.iter().map(|p| p.rows).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert_eq!(outs[0].source_rows, Some(3), "validated against the partition's slice");
    assert_eq!(outs[0].files.len(), 2, "3 rows at most 2 per file");
    assert!(outs.iter().flat_map(|p| &p.files).all(|f| f.rows <= 2));
    assert_eq!(outs[0].files[0].path, "dt=2026-11-01/p00000-10-0.parquet");
    assert!(control.join("runs/1/part-2/12/dt=2026-11-02/p00002-12-0.parquet").is_file(), "staged, unpublished");
    assert!(!out.exists(), "nothing published before the commit");

    let report = commit(&spec, 1, &outs, attempt(20), &o).await.unwrap();
    assert_eq!((report.rows_written, report.token), (6, 20));
    assert_eq!(report.target, format!("file://{d}/out/"));
    assert_eq!(read_out(&out).await, (6, 210));
    assert!(out.join("_SUCCESS").is_file());
    let m = manifest(&out);
    assert_eq!((m["token"].as_u64(), m["generation"].as_u64(), m["rows"].as_u64()), (Some(20), Some(1), Some(6)));
    assert_eq!(m["files"].as_array().unwrap().len(), 4);
    let days: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    assert_eq!(days, BTreeSet::from(["dt=2026-11-01".to_string(), "dt=2026-11-02".to_string()]));
    assert!(!control.join("runs/1").exists(), "the staging is gone");
    // A retried commit reports the same, and changes nothing.
    assert_eq!(commit(&spec, 1, &outs, attempt(20), &o).await.unwrap(), report);
    assert_eq!(read_out(&out).await, (6, 210));

    // Generation 2: partition 0 ran twice (a stale attempt under token 30
    // and the current one under 31); only the recorded output is used.
    let spec2 = partitioned_spec(&d, &src, "id > 2");
    let parts = plan_partitions(&spec2, &o).await.unwrap();
    let stale = run_partition(&spec2, 2, &parts[0], attempt(30), &o).await.unwrap();
    let mut outs2 = vec![run_partition(&spec2, 2, &parts[0], attempt(31), &o).await.unwrap()];
    for (i, p) in parts.iter().enumerate().skip(1) {
        outs2.push(run_partition(&spec2, 2, p, attempt(31 + i as u64), &o).await.unwrap());
    }
    assert_eq!(stale.files[0].path, "dt=2026-11-01/p00000-30-0.parquet");
    let report2 = commit(&spec2, 2, &outs2, attempt(40), &o).await.unwrap();
    assert_eq!(report2.rows_written, 4);
    assert_eq!(read_out(&out).await, (4, 180));
    let files: Vec<String> =
        manifest(&out)["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect();
    assert!(files.iter().all(|f| !f.contains("-30-")), "the stale output is not in the version: {files:?}");
    assert!(!out.join("dt=2026-11-01/p00000-30-0.parquet").exists());
    // The version it replaced is kept for readers still reading it.
    assert!(control.join("versions/2-40.replaced/_manifest.json").is_file());

    // An older token is refused, and changes nothing.
    let outs3 = run_all(&spec, 3, 50, &o).await;
    let err = commit(&spec, 3, &outs3, attempt(35), &o).await.unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert!(err.to_string().contains("newer version (token 40"), "{err}");
    assert_eq!(read_out(&out).await, (4, 180));
    assert_eq!(manifest(&out)["token"], 40);
    // A newer one replaces it; the version before the previous is deleted.
    commit(&spec, 3, &outs3, attempt(60), &o).await.unwrap();
    assert_eq!(read_out(&out).await, (6, 210));
    assert!(control.join("versions/3-60.replaced").is_dir());
    assert!(!control.join("versions/2-40.replaced").exists());
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(control.join("published.json")).unwrap()).unwrap();
    assert_eq!(rec["token"], 60);

    // A fence that says the lease is gone stops the commit.
    let outs4 = run_all(&spec2, 4, 70, &o).await;
    let mut fenced = opts(dir.path());
    fenced.fence = Some(Arc::new(|| Box::pin(async { Err("lease revoked".to_string()) })));
    let err = commit(&spec2, 4, &outs4, attempt(80), &fenced).await.unwrap_err();
    assert!(err.is_fenced() && err.to_string().contains("lease revoked"), "{err}");
    assert_eq!(read_out(&out).await, (6, 210));
}

/// How a reader saw the target once.
#[derive(Debug, Default)]
struct Seen {
    /// Counts accepted (asserted to be whole versions).
    accepted: Vec<i64>,
    /// Counts of a plain path-based reader with no check (reported only).
    unchecked: Vec<i64>,
    errors: usize,
}

/// Counts the rows of the folder at `path` (a fresh session each time).
async fn count(path: &str) -> Result<i64, String> {
    let ctx = SessionContext::new();
    ctx.register_parquet("t", path, ParquetReadOptions::default()).await.map_err(|e| e.to_string())?;
    let b = ctx
        .sql("SELECT count(*) FROM t")
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(b[0].column(0).as_any().downcast_ref::<Int64Array>().ok_or("not an int")?.value(0))
}

fn manifest_field(out: &Path, field: &str) -> Option<u64> {
    let bytes = std::fs::read(out.join("_manifest.json")).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?[field].as_u64()
}

fn token_of(out: &Path) -> Option<u64> {
    manifest_field(out, "token")
}

fn generation_of(out: &Path) -> Option<u64> {
    manifest_field(out, "generation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_during_commits_see_one_whole_version() {
    use std::os::fd::AsRawFd;

    let dir = tempfile::tempdir().unwrap();
    let src = orders(dir.path());
    let d = dir.path().display().to_string();
    let out = dir.path().join("out");
    let o = opts(dir.path());
    let all = partitioned_spec(&d, &src, "true"); // 6 rows
    let some = partitioned_spec(&d, &src, "id > 2"); // 4 rows
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = {
        let (stop, seen, out) = (stop.clone(), seen.clone(), out.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                while !stop.load(Ordering::Relaxed) {
                    // A reader that opens the folder once and reads through
                    // it (as `openat` would): what it opened is one version,
                    // whole, as long as it is kept (until the commit after
                    // the one that replaced it: a reader takes less than a
                    // commit's time).
                    let pinned = match std::fs::File::open(&out) {
                        Ok(f) => {
                            let path = format!("/proc/self/fd/{}/", f.as_raw_fd());
                            let pinned_gen = generation_of(Path::new(&path));
                            let r = count(&path).await;
                            let live_gen = generation_of(&out);
                            drop(f);
                            match (pinned_gen, live_gen) {
                                (Some(p), Some(l)) if l <= p + 1 => r,
                                _ => Err("the pinned version may have been deleted meanwhile".to_string()),
                            }
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    // A reader that lists and reads by path, the manifest's
                    // token read before and after: a swap in between is
                    // seen, and retried.
                    let before = token_of(&out);
                    let by_path = count(&format!("{}/", out.display())).await;
                    let after = token_of(&out);
                    let mut s = seen.lock().unwrap();
                    match pinned {
                        Ok(n) => s.accepted.push(n),
                        Err(_) => s.errors += 1,
                    }
                    match by_path {
                        Ok(n) if before.is_some() && before == after => s.accepted.push(n),
                        Ok(n) => s.unchecked.push(n),
                        Err(_) => s.errors += 1,
                    }
                }
            })
        })
    };
    let mut token = 100;
    for round in 0..12u64 {
        let spec = if round % 2 == 0 { &all } else { &some };
        let outs = run_all(spec, round + 1, token, &o).await;
        commit(spec, round + 1, &outs, attempt(token + 10), &o).await.unwrap();
        token += 20;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let s = seen.lock().unwrap();
    eprintln!(
        "readers: {} whole reads, {} errors retried, {} unchecked path reads across a swap: {:?}",
        s.accepted.len(),
        s.errors,
        s.unchecked.len(),
        s.unchecked
    );
    assert!(!s.accepted.is_empty(), "the readers read something");
    let odd: Vec<&i64> = s.accepted.iter().filter(|n| **n != 6 && **n != 4).collect();
    assert!(odd.is_empty(), "a reader saw a mixed or partial version: {odd:?}");
}

#[tokio::test]
async fn sources_join_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let src = orders(dir.path());
    write(&dir.path().join("customers.csv"), "id,name\n1,Ada\n2,Brian\n3,Chen\n");
    write(&dir.path().join("owners.csv"), "order_id,customer\n1,1\n2,1\n4,2\n6,3\n");
    // Unpartitioned, one file: `source` is the first source by name (customers).
    let spec = plan(&format!(
        "  sources:\n    owners: {d}/owners.csv\n    customers: {d}/customers.csv\n  target: {d}/joined.jsonl\n  steps:\n    - type: sql\n      query: \"SELECT o.order_id, c.name FROM owners o JOIN customers c ON o.customer = c.id ORDER BY o.order_id\"\n    - type: validate\n      row_count: \"source = 3 AND target = 4\"\n"
    ));
    let report = run(&spec, attempt(5), &opts(dir.path())).await.unwrap();
    assert_eq!(report.rows_written, 4);
    let text = std::fs::read_to_string(dir.path().join("joined.jsonl")).unwrap();
    assert_eq!(text.lines().next(), Some("{\"order_id\":1,\"name\":\"Ada\"}"));

    // Partitioned orders joined with whole sources, run in one task by run().
    let spec = plan(&format!(
        "  sources:\n    orders: {{url: \"{}/\", format: csv, partition: file}}\n    owners: {d}/owners.csv\n    customers: {d}/customers.csv\n  target: {{url: \"{d}/by-customer/\", format: csv}}\n  steps:\n    - type: sql\n      query: \"SELECT s.id, c.name, s.amount FROM source s JOIN owners o ON s.id = o.order_id JOIN customers c ON o.customer = c.id\"\n    - type: validate\n      row_count: \"target <= source\"\n",
        src.display()
    ));
    let report = run(&spec, attempt(9), &opts(dir.path())).await.unwrap();
    assert_eq!(report.rows_written, 4);
    assert_eq!(report.target, format!("file://{d}/by-customer/"));
    let m = manifest(&dir.path().join("by-customer"));
    assert_eq!((m["token"].as_u64(), m["generation"].as_u64()), (Some(9), Some(9)));
    let ctx = SessionContext::new();
    ctx.register_csv("t", format!("{d}/by-customer/"), Default::default()).await.unwrap();
    let b = ctx.sql("SELECT sum(amount) FROM t").await.unwrap().collect().await.unwrap();
    assert_eq!(b[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0), 10 + 20 + 40 + 60);
}

#[tokio::test]
async fn max_rows_per_file_alone_publishes_a_folder_version() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let rows: String = (1..=10).map(|i| format!("{i},x{i}\n")).collect();
    write(&dir.path().join("in.csv"), &format!("id,name\n{rows}"));
    let spec = plan(&format!(
        "  source: {d}/in.csv\n  target: {{url: \"{d}/out/\", format: csv, max_rows_per_file: 4}}\n  steps:\n    - type: sql\n      query: \"SELECT * FROM source ORDER BY id\"\n    - type: validate\n      row_count: equal\n"
    ));
    let report = run(&spec, attempt(3), &opts(dir.path())).await.unwrap();
    assert_eq!(report.rows_written, 10);
    let m = manifest(&dir.path().join("out"));
    let sizes: Vec<u64> = m["files"].as_array().unwrap().iter().map(|f| f["rows"].as_u64().unwrap()).collect();
    assert_eq!(sizes.iter().sum::<u64>(), 10);
    assert!(sizes.iter().all(|n| *n <= 4) && sizes.len() >= 3, "{sizes:?}");
    // A second run under a newer token replaces the folder whole.
    let report: Report = run(&spec, attempt(4), &opts(dir.path())).await.unwrap();
    assert_eq!(report.token, 4);
    assert_eq!(manifest(&dir.path().join("out"))["token"], 4);
    let csvs = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".csv"));
    assert!(csvs.map(|e| e.file_name().to_string_lossy().into_owned()).all(|n| n.contains("-4-")));
}

/// A CSV of `rows` rows (`id`, `payload` of ~60 bytes), ~`rows * 70` bytes.
fn big_csv(path: &Path, rows: usize) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,payload").unwrap();
    for i in 0..rows {
        // Not in id order, so a sort has work to do.
        let k = (i * 7919) % rows;
        writeln!(f, "{k},payload-{k:012}-abcdefghijklmnopqrstuvwxyz-{:016x}", k.wrapping_mul(2654435761)).unwrap();
    }
    f.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_spills_sorts_and_names_itself_when_a_join_needs_more() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let rows = 300_000;
    big_csv(&dir.path().join("big.csv"), rows);
    big_csv(&dir.path().join("big2.csv"), rows);
    assert!(std::fs::metadata(dir.path().join("big.csv")).unwrap().len() > 16 << 20);
    let limited = || opts(dir.path()).with_memory_limit(8 << 20).with_target_partitions(2);

    // A sort of ~20 MiB within 8 MiB: it spills, and succeeds.
    let spec = plan(&format!(
        "  source: {d}/big.csv\n  target: {d}/sorted.csv\n  steps:\n    - type: sql\n      query: \"SELECT id, payload FROM source ORDER BY payload DESC\"\n"
    ));
    // One stream: two sorters' merges in 8 MiB starve each other now and
    // then (what DataFusion 55 reserves for a merge cannot spill).
    let report = run(&spec, attempt(1), &limited().with_target_partitions(1)).await.unwrap();
    assert_eq!(report.rows_written, rows as u64);
    let text = std::fs::read_to_string(dir.path().join("sorted.csv")).unwrap();
    let mut lines = text.lines().skip(1);
    assert!(lines.next().unwrap().starts_with(&format!("{},", rows - 1)), "sorted descending");
    assert_eq!(std::fs::read_dir(dir.path().join("scratch")).unwrap().count(), 0, "spill files removed");

    // A hash join whose build side is larger than the limit cannot spill:
    // a clear, permanent error, not a panic.
    let spec = plan(&format!(
        "  sources:\n    a: {d}/big.csv\n    b: {d}/big2.csv\n  target: {d}/joined.csv\n  steps:\n    - type: sql\n      query: \"SELECT a.id, a.payload, b.payload AS other FROM a JOIN b ON a.payload = b.payload\"\n"
    ));
    let err = run(&spec, attempt(2), &limited()).await.unwrap_err();
    assert!(matches!(err, MigrateError::Plan(_)) && !err.is_retryable(), "{err}");
    assert!(
        err.to_string().starts_with("the migration needs more than the node's --migrate-memory of 8 MiB: "),
        "{err}"
    );
    assert!(!dir.path().join("joined.csv").exists());
}
