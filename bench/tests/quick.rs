//! The bench's smoke test: `skein-bench --quick` runs every scenario end to
//! end against real `skein-node` processes (and NATS when `nats-server` is
//! installed; `scripts/deps.sh` installs it). It checks that the harness
//! works: the run succeeds, prints its tables and writes JSON with figures
//! from every scenario and each system's fsync policy. It asserts no timing.
//!
//! A second, tiny run checks `--tls` (a lifecycle over mutual TLS and
//! HTTPS).
//!
//! Needs the skein-node binary next to skein-bench (`cargo build --workspace
//! --bins`, what scripts/test.sh does) or `$SKEIN_BIN_DIR`.

use std::process::Command;

#[test]
fn quick_run_measures_every_scenario() {
    let bin = env!("CARGO_BIN_EXE_skein-bench");
    let dir = tempfile::Builder::new().prefix("skein-bench-smoke-").tempdir_in("/var/tmp").expect("a temp dir");
    let json = dir.path().join("bench.json");
    let out = Command::new(bin)
        .args(["--quick", "--json"])
        .arg(&json)
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .expect("running skein-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "skein-bench --quick failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("fsync before acknowledging"), "no fsync policies in the table:\n{stdout}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON results")).expect("valid JSON");
    let rows = report["rows"].as_array().expect("rows");
    for scenario in ["lifecycle", "latency", "failover", "depth", "scale-out", "fleet"] {
        assert!(
            rows.iter().any(|r| r["scenario"] == scenario && r["value"].as_f64().is_some()),
            "no figures for {scenario}:\n{stdout}"
        );
    }
    let lost = rows.iter().find(|r| r["metric"] == "tasks lost").and_then(|r| r["value"].as_f64());
    assert_eq!(lost, Some(0.0), "the failover lost acknowledged tasks:\n{stdout}");
    // Each fleet size ran with every worker holding a lease at some point
    // and the joiners getting a task (the run fails otherwise).
    let fleet = report["details"]["fleet"].as_array().expect("the fleet's details");
    assert_eq!(fleet.len(), 2, "two fleet sizes in a quick run:\n{stdout}");
    for f in fleet {
        assert!(f["tasks"].as_u64().is_some_and(|n| n > 0), "a fleet run completed nothing: {f}");
        assert!(f["busy_share_mean"].as_f64().is_some_and(|b| b > 0.5), "a fleet mostly idle: {f}");
        assert_eq!(f["first_task_ms"].as_array().map(Vec::len), Some(3), "joiners without a first task: {f}");
    }
    let nats = report["machine"]["nats_server"].is_string();
    if nats {
        assert!(
            rows.iter().any(|r| r["scenario"] == "compare"),
            "nats-server is installed but nothing was compared:\n{stdout}"
        );
    } else {
        eprintln!("nats-server not installed: the JetStream comparison was skipped");
    }
    assert!(report["fsync_policies"].as_array().is_some_and(|p| !p.is_empty()));
    // Every node and server was killed and the work directory removed.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("reading the temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("skein-bench-"))
        .collect();
    assert!(left.is_empty(), "work directories left behind: {left:?}");
}

/// `--tls` keeps working: a tiny lifecycle run on a cluster with mutual TLS
/// and HTTPS (the bench's clients trusting its CA, sending the admin
/// token), reported as such.
#[test]
fn tls_run_measures_the_lifecycle() {
    let bin = env!("CARGO_BIN_EXE_skein-bench");
    let dir = tempfile::Builder::new().prefix("skein-bench-tls-").tempdir_in("/var/tmp").expect("a temp dir");
    let json = dir.path().join("bench.json");
    let out = Command::new(bin)
        .args(["--quick", "--tls", "--scenarios", "lifecycle", "--tasks", "500", "--clients", "4", "--json"])
        .arg(&json)
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .expect("running skein-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "skein-bench --tls failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("TLS: on"), "the table does not say TLS was on:\n{stdout}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON results")).expect("valid JSON");
    assert_eq!(report["tls"], true, "the JSON does not say TLS was on:\n{stdout}");
    let rows = report["rows"].as_array().expect("rows");
    for batch in [1, 100] {
        let metric = format!("full lifecycle, batch {batch}");
        assert!(
            rows.iter().any(|r| r["scenario"] == "lifecycle" && r["metric"] == metric && r["value"].as_f64().is_some()),
            "no {metric} figure:\n{stdout}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("reading the temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("skein-bench-"))
        .collect();
    assert!(left.is_empty(), "work directories left behind: {left:?}");
}
