//! The migration engine on local files: every step type over the three
//! formats, validations that fail with a readable reason, and the fenced
//! publication (a stale token never replaces a newer result).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::sync::{Arc, Mutex};

use skein_migrate::{run, Attempt, MigrateError, Options, Progress};
use skein_plan::{MigrationSpec, Plan};

const CUSTOMERS: &str = "id,name,amount,country\n1,Ada,12.5,UK\n2,Brian,7,US\n3,Chen,0.25,CN\n4,Dana,100,US\n";

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

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("customers.csv"), CUSTOMERS).unwrap();
    dir
}

/// Reads a JSON lines file into values.
fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn sql_csv_to_parquet_folder_then_parquet_to_jsonl() {
    let dir = setup();
    let d = dir.path().display();
    let spec = plan(&format!(
        "  source: {{url: \"file://{d}/customers.csv\", format: csv}}\n  target: {{url: \"{d}/customers-v2/\", format: parquet}}\n  steps:\n    - type: sql\n      query: \"SELECT id, name, CAST(amount AS DOUBLE) * 100 AS amount_cents FROM source\"\n    - type: validate\n      row_count: equal\n      schema: [{{name: id, type: bigint}}, {{name: name, type: string}}, {{name: amount_cents, type: double}}]\n      assert: \"SELECT * FROM target WHERE amount_cents < 0\"\n"
    ));
    let progress: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let seen = progress.clone();
    let mut o = opts(dir.path());
    o.progress = Some(Arc::new(move |p: &Progress| seen.lock().unwrap().push(p.clone())));
    let report = run(&spec, attempt(7), &o).await.unwrap();
    assert_eq!(report.rows_written, 4);
    assert_eq!(report.token, 7);
    assert!(dir.path().join("customers-v2/part-00000.parquet").is_file());
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("customers-v2/_skein/published.json")).unwrap()).unwrap();
    assert_eq!(rec["token"], 7);
    assert!(progress.lock().unwrap().iter().any(|p| p.what == "write" && p.rows_done == 4));
    // Nothing left in the attempt folders or the scratch folder.
    assert_eq!(std::fs::read_dir(dir.path().join("customers-v2/_skein/attempts")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path().join("scratch")).unwrap().count(), 0);

    // Read the Parquet folder back into JSON lines.
    let spec = plan(&format!(
        "  source: {{url: \"{d}/customers-v2/\", format: parquet}}\n  target: {d}/out/customers.jsonl\n  steps:\n    - type: sql\n      query: \"SELECT * FROM source ORDER BY id\"\n    - type: validate\n      row_count: \"target = source AND target = 4\"\n"
    ));
    run(&spec, attempt(8), &opts(dir.path())).await.unwrap();
    let rows = jsonl(&dir.path().join("out/customers.jsonl"));
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0], serde_json::json!({"id": 1, "name": "Ada", "amount_cents": 1250.0}));
    assert_eq!(rows[3]["amount_cents"], 10000.0);
}

#[tokio::test]
async fn copy_with_cast_and_checksum_jsonl_to_csv() {
    let dir = setup();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("orders.jsonl"),
        "{\"order_id\": 1, \"total\": \"10\", \"note\": \"a\"}\n{\"order_id\": 2, \"total\": \"20\", \"note\": null}\n",
    )
    .unwrap();
    let spec = plan(&format!(
        "  source: {d}/orders.jsonl\n  target: {d}/orders.csv\n  steps:\n    - type: copy\n      schema: {{total: bigint}}\n    - type: validate\n      checksum: {{columns: [order_id, note]}}\n      schema: [{{name: note, type: varchar}}, {{name: order_id, type: bigint}}, {{name: total, type: bigint}}]\n"
    ));
    let report = run(&spec, attempt(3), &opts(dir.path())).await.unwrap();
    assert_eq!(report.rows_written, 2);
    let text = std::fs::read_to_string(dir.path().join("orders.csv")).unwrap();
    // DataFusion infers a JSON lines schema with the keys in name order.
    assert_eq!(text, "note,order_id,total\na,1,10\n,2,20\n");
}

#[tokio::test]
async fn failed_validations_say_what_differed_and_publish_nothing() {
    let dir = setup();
    let d = dir.path().display();
    let cases = [
        ("    - type: sql\n      query: \"SELECT * FROM source WHERE country = 'US'\"\n    - type: validate\n      row_count: equal\n", "row count: source has 4 rows, target 2"),
        ("    - type: copy\n    - type: validate\n      assert: \"SELECT id, name FROM target WHERE amount > 50\"\n", "assertion returned 1 row(s)"),
        ("    - type: copy\n    - type: validate\n      schema: {id: bigint, name: string}\n", "unexpected extra columns: amount, country"),
        ("    - type: sql\n      query: \"SELECT id, upper(name) AS name FROM source\"\n    - type: validate\n      checksum: [id, name]\n", "checksum of [id, name]"),
    ];
    for (steps, want) in cases {
        let spec = plan(&format!(
            "  source: {d}/customers.csv\n  target: {{url: \"{d}/bad/\", format: parquet}}\n  steps:\n{steps}"
        ));
        let err = run(&spec, attempt(1), &opts(dir.path())).await.unwrap_err();
        assert!(matches!(err, MigrateError::Validation(_)), "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains(want), "{err} should say {want}");
        assert!(!dir.path().join("bad/part-00000.parquet").exists(), "nothing published");
    }
}

#[tokio::test]
async fn bad_plans_and_missing_sources_fail_for_good() {
    let dir = setup();
    let d = dir.path().display();
    let spec = plan(&format!("  source: {d}/customers.csv\n  target: {d}/o.csv\n  steps:\n    - type: sql\n      query: \"SELECT nope FROM source\"\n"));
    let err = run(&spec, attempt(1), &opts(dir.path())).await.unwrap_err();
    assert!(matches!(err, MigrateError::Plan(_)) && err.to_string().contains("step 1 (sql)"), "{err}");
    let spec = plan(&format!("  source: {d}/missing.csv\n  target: {d}/o.csv\n  steps:\n    - type: copy\n"));
    let err = run(&spec, attempt(1), &opts(dir.path())).await.unwrap_err();
    assert!(matches!(err, MigrateError::SourceNotFound(_)), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn exec_steps_transform_or_fail_by_exit_code() {
    let dir = setup();
    let d = dir.path().display();
    // The program keeps US rows (JSON lines in, JSON lines out), then SQL sorts them.
    let spec = plan(&format!(
        "  source: {d}/customers.csv\n  target: {d}/us.jsonl\n  steps:\n    - type: exec\n      command: \"grep '\\\"US\\\"' \\\"$SKEIN_INPUT\\\" > \\\"$SKEIN_OUTPUT_DIR/us.jsonl\\\"\"\n    - type: sql\n      query: \"SELECT id FROM input ORDER BY id DESC\"\n    - type: exec\n      command: [\"true\"]\n"
    ));
    run(&spec, attempt(2), &opts(dir.path())).await.unwrap();
    assert_eq!(jsonl(&dir.path().join("us.jsonl")), vec![serde_json::json!({"id": 4}), serde_json::json!({"id": 2})]);

    for (code, retryable) in [(75, true), (3, false)] {
        let spec = plan(&format!(
            "  source: {d}/customers.csv\n  target: {d}/x.jsonl\n  steps:\n    - type: exec\n      command: \"echo broken >&2; exit {code}\"\n"
        ));
        let err = run(&spec, attempt(2), &opts(dir.path())).await.unwrap_err();
        assert_eq!(err.is_retryable(), retryable, "{err}");
        assert!(err.to_string().contains(&format!("exited with {code}: broken")), "{err}");
    }
}

#[tokio::test]
async fn a_stale_token_never_replaces_a_newer_result() {
    let dir = setup();
    let d = dir.path().display();
    let spec_for = |filter: &str| {
        plan(&format!(
            "  source: {d}/customers.csv\n  target: {d}/t.jsonl\n  steps:\n    - type: sql\n      query: \"SELECT id FROM source WHERE {filter}\"\n"
        ))
    };
    // The attempt under token 9 publishes ...
    run(&spec_for("id > 2"), attempt(9), &opts(dir.path())).await.unwrap();
    // ... then a stale attempt (token 5) finishes: refused, target kept.
    let err = run(&spec_for("id <= 2"), attempt(5), &opts(dir.path())).await.unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert!(err.to_string().contains("newer result (token 9"), "{err}");
    assert_eq!(jsonl(&dir.path().join("t.jsonl")).len(), 2);
    assert_eq!(jsonl(&dir.path().join("t.jsonl"))[0]["id"], 3);
    // A newer token replaces it.
    run(&spec_for("id = 1"), attempt(11), &opts(dir.path())).await.unwrap();
    assert_eq!(jsonl(&dir.path().join("t.jsonl")), vec![serde_json::json!({"id": 1})]);

    // A fence that says the lease is gone stops the publication.
    let mut o = opts(dir.path());
    o.fence = Some(Arc::new(|| Box::pin(async { Err("lease revoked".to_string()) })));
    let err = run(&spec_for("id = 4"), attempt(12), &o).await.unwrap_err();
    assert!(err.is_fenced() && err.to_string().contains("lease revoked"), "{err}");
    assert_eq!(jsonl(&dir.path().join("t.jsonl")), vec![serde_json::json!({"id": 1})]);
    assert!(!dir.path().join("_skein/t.jsonl/attempts/12").exists(), "the fenced attempt's staging is gone");
}

#[tokio::test]
async fn plan_sql_may_only_query() {
    let dir = setup();
    let d = dir.path().display();
    let secret = dir.path().join("secret.csv");
    std::fs::write(&secret, "token\nhunter2\n").unwrap();
    let hostile = [
        format!("CREATE EXTERNAL TABLE s STORED AS CSV LOCATION '{}'", secret.display()),
        format!("COPY (SELECT * FROM source) TO '{d}/stolen.csv' STORED AS CSV"),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "INSERT INTO source VALUES (5, 'Eve', 1, 'XX')".to_string(),
        "DROP TABLE source".to_string(),
    ];
    for query in hostile {
        let step = format!("    - type: sql\n      query: \"{}\"\n", query.replace('"', "\\\""));
        let spec = plan(&format!("  source: {d}/customers.csv\n  target: {d}/o.csv\n  steps:\n{step}"));
        let err = run(&spec, attempt(1), &opts(dir.path())).await.unwrap_err();
        assert!(matches!(err, MigrateError::Plan(_)) && err.to_string().contains("not supported"), "{query}: {err}");
        assert!(!dir.path().join("stolen.csv").exists() && !dir.path().join("o.csv").exists(), "{query} wrote a file");
    }
    // An assertion is SQL too.
    let spec = plan(&format!(
        "  source: {d}/customers.csv\n  target: {d}/o.csv\n  steps:\n    - type: copy\n    - type: validate\n      assert: \"SET datafusion.execution.batch_size = 1\"\n"
    ));
    let err = run(&spec, attempt(1), &opts(dir.path())).await.unwrap_err();
    assert!(err.to_string().contains("not supported"), "{err}");
}
