//! Parsing and validating plans: the issue's example as written, every
//! kind of error with its file, entity and field, cycles and missing refs.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use super::*;

/// The plan format as the issue gives it, verbatim.
const SEED: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: customer-dataset-v2-migration
  annotations:
    honk/queue: dataset-migrations
spec:
  type: migration-plan
  lifecycle: production
  owner: team-infra
  system: data-platform
  dependsOn:
    - component:default/source-dataset
  source: {url: "file:///data/src/customers.csv", format: csv}
  target: {url: "s3://bucket/customers-v2/", format: parquet}
  steps:
    - type: sql
      query: "SELECT id, name, CAST(amount AS DOUBLE) * 100 AS amount_cents FROM source"
    - type: validate
      row_count: equal
"#;

const DATASET: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: source-dataset
  labels: {tier: gold}
spec:
  type: dataset
  owner: team-data
  lifecycle: production
"#;

fn one(text: &str) -> Entity {
    let mut v = parse_yaml(text, "plans.yaml").unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn err_of(text: &str) -> PlanError {
    let mut errs = parse_yaml(text, "plans.yaml").unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.remove(0)
}

#[test]
fn the_issue_example_parses_as_written() {
    let e = one(SEED);
    assert_eq!(e.entity_ref().to_string(), "component:default/customer-dataset-v2-migration");
    assert!(e.is_plan());
    assert_eq!(e.queue().as_deref(), Some("dataset-migrations"));
    assert_eq!(e.owner().as_deref(), Some("team-infra"));
    assert_eq!(e.system().as_deref(), Some("data-platform"));
    let plan = Plan::from_entity(&e).unwrap();
    assert_eq!(plan.depends_on, vec![EntityRef::new("component", "default", "source-dataset")]);
    let m = plan.migration;
    assert_eq!(m.sources.keys().collect::<Vec<_>>(), vec!["source"]);
    assert_eq!(m.primary().0, "source");
    assert_eq!(m.primary().1.url, "file:///data/src/customers.csv");
    assert_eq!(m.primary().1.format(), Some(Format::Csv));
    assert!(m.partitioned().is_none() && !m.versioned_output());
    assert_eq!(m.target.format(), Some(Format::Parquet));
    assert_eq!(
        m.steps,
        vec![
            Step::Sql { query: "SELECT id, name, CAST(amount AS DOUBLE) * 100 AS amount_cents FROM source".into() },
            Step::Validate(Validation { row_count: Some("equal".into()), ..Validation::default() }),
        ]
    );
    // The stored document has the namespace filled in and round-trips.
    let again = Plan::from_json(&e.to_json(), "catalog").unwrap();
    assert_eq!(again.entity_ref, plan.entity_ref);
    assert_eq!(e.document()["metadata"]["namespace"], "default");
}

#[test]
fn multi_document_yaml_and_json_items() {
    let text = format!("{SEED}\n---\n{DATASET}\n---\n");
    let v = parse_yaml(&text, "all.yaml").unwrap();
    assert_eq!(v.len(), 2);
    assert!(!v[1].is_plan());
    assert_eq!(v[1].metadata.labels.get("tier").map(String::as_str), Some("gold"));
    let json = serde_json::json!({"items": [v[0].document(), v[1].document()], "totalItems": 2});
    assert_eq!(parse_text(&json.to_string(), "api").unwrap().len(), 2);
    validate_set(&v, &Catalog::new()).unwrap();
}

#[test]
fn queue_from_either_annotation() {
    let e = one(&SEED.replace("honk/queue", "skein.dev/queue"));
    assert_eq!(e.queue().as_deref(), Some("dataset-migrations"));
    let e = one(&SEED.replace("honk/queue: dataset-migrations", "other: x"));
    assert_eq!(e.queue(), None);
}

#[test]
fn kinds_and_refs_are_case_insensitive() {
    let e = one(&SEED
        .replace("kind: Component", "kind: COMPONENT")
        .replace("component:default/source-dataset", "Source-Dataset"));
    assert!(e.is_plan());
    assert_eq!(e.depends_on().unwrap()[0].to_string(), "component:default/source-dataset");
}

#[test]
fn errors_name_file_entity_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "    - type: validate\n      row_count: equal\n",
            "    - type: transmogrify\n",
            "plans.yaml: component:default/customer-dataset-v2-migration: spec.steps[1].type: unknown step type \"transmogrify\"",
        ),
        (
            "  source: {url: \"file:///data/src/customers.csv\", format: csv}\n",
            "",
            "plans.yaml: component:default/customer-dataset-v2-migration: spec.source: missing",
        ),
        ("    - type: sql\n      query:", "    - type: sql\n      statement:", "spec.steps[0].query: missing"),
        ("format: parquet", "format: xls", "spec.target.format: unknown format \"xls\""),
        ("  name: customer-dataset-v2-migration\n", "  title: no name\n", "plans.yaml: metadata.name: missing"),
        ("apiVersion: backstage.io/v1alpha1\n", "", "apiVersion: missing"),
        ("component:default/source-dataset", "component:default/bad name", "spec.dependsOn[0]: entity reference"),
        ("      row_count: equal\n", "      note: nothing to check\n", "spec.steps[1]: a validate step needs"),
    ];
    for (from, to, want) in cases {
        let text = SEED.replacen(from, to, 1);
        let e = err_of(&text);
        assert!(e.to_string().contains(want), "replacing {from:?}: got {e}, want {want}");
    }
}

#[test]
fn every_bad_document_is_reported() {
    let bad1 = SEED.replace("type: sql", "type: nope");
    let bad2 = DATASET.replace("  name: source-dataset\n", "");
    let errs = parse_yaml(&format!("{bad1}\n---\n{bad2}"), "f.yaml").unwrap_err();
    assert_eq!(errs.0.len(), 2, "{errs}");
}

#[test]
fn missing_refs_duplicates_and_cycles_are_refused() {
    let seed = one(SEED);
    // source-dataset is neither in the batch nor in the catalog.
    let errs = validate_set(std::slice::from_ref(&seed), &Catalog::new()).unwrap_err();
    assert_eq!(errs.0.len(), 1);
    assert!(errs.0[0].to_string().contains("spec.dependsOn[0]: component:default/source-dataset is neither"), "{errs}");
    // ... but a catalog that has it is enough.
    let catalog: Catalog = [(EntityRef::new("component", "default", "source-dataset"), vec![])].into();
    validate_set(std::slice::from_ref(&seed), &catalog).unwrap();

    let dup = validate_set(&[seed.clone(), seed.clone()], &catalog).unwrap_err();
    assert!(dup.to_string().contains("defined twice"), "{dup}");

    // a -> b in the batch, and the catalog already has b -> a.
    let a = one(&SEED.replace("customer-dataset-v2-migration", "a").replace("component:default/source-dataset", "b"));
    let catalog: Catalog =
        [(EntityRef::new("component", "default", "b"), vec![EntityRef::new("component", "default", "a")])].into();
    let cyc = validate_set(std::slice::from_ref(&a), &catalog).unwrap_err();
    assert!(
        cyc.to_string().contains("dependency cycle: component:default/a -> component:default/b -> component:default/a"),
        "{cyc}"
    );
}

#[test]
fn self_dependency_is_refused() {
    let e = err_of(&SEED.replace("component:default/source-dataset", "customer-dataset-v2-migration"));
    assert!(e.to_string().contains("cannot depend on itself"), "{e}");
}

#[test]
fn step_synonyms_and_shapes() {
    let text = SEED.replace(
        "    - type: validate\n      row_count: equal\n",
        "    - type: copy\n      schema: {id: bigint}\n    - type: exec\n      command: \"python3 fix.py\"\n      output_format: csv\n    - type: validate\n      rowCount: \"target >= source\"\n      schema: [{name: id, type: bigint}]\n      checksum: {columns: [id, name]}\n      assert: \"SELECT * FROM target WHERE id IS NULL\"\n",
    );
    let m = Plan::from_entity(&one(&text)).unwrap().migration;
    assert_eq!(m.steps.len(), 4);
    assert_eq!(m.steps[1], Step::Copy { schema: vec![Column { name: "id".into(), data_type: "bigint".into() }] });
    match &m.steps[2] {
        Step::Exec(x) => {
            assert_eq!(x.command, vec!["sh", "-c", "python3 fix.py"]);
            assert_eq!(x.output_format, Some(Format::Csv));
        }
        other => panic!("{other:?}"),
    }
    match &m.steps[3] {
        Step::Validate(v) => {
            assert_eq!(v.row_count.as_deref(), Some("target >= source"));
            assert_eq!(v.checksum.as_ref().unwrap().columns, vec!["id", "name"]);
            assert!(v.assert.is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn formats_are_inferred_from_extensions() {
    let text = SEED.replace("{url: \"file:///data/src/customers.csv\", format: csv}", "/data/src/orders.parquet");
    let m = Plan::from_entity(&one(&text)).unwrap().migration;
    assert_eq!(m.primary().1.format(), Some(Format::Parquet));
    let text = SEED.replace("{url: \"file:///data/src/customers.csv\", format: csv}", "/data/src/folder/");
    assert!(err_of(&text).to_string().contains("spec.source.format: missing"));
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let dir = std::env::temp_dir().join(format!("skein-plan-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("plans")).unwrap();
    let text = SEED
        .replace("file:///data/src/customers.csv", "../data/customers.csv")
        .replace("s3://bucket/customers-v2/", "../out/customers-v2/")
        .replace(
            "    - type: validate\n",
            "    - type: exec\n      command: [python3, ../bin/fix.py, \"--flag\"]\n    - type: validate\n",
        );
    std::fs::write(dir.join("plans/p.yaml"), text).unwrap();
    let files = plan_files(&dir).unwrap();
    assert_eq!(files.len(), 1);
    let e = read_file(&files[0]).unwrap().remove(0);
    let m = Plan::from_entity(&e).unwrap().migration;
    let base = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(m.primary().1.url, format!("file://{}/data/customers.csv", base.display()));
    assert_eq!(m.target.url, format!("file://{}/out/customers-v2/", base.display()));
    match &m.steps[1] {
        Step::Exec(x) => assert_eq!(
            x.command,
            // A bare program is what PATH finds (the exec allow list names programs by path).
            vec![
                crate::on_path("python3").map_or_else(|| "python3".to_string(), |p| p.display().to_string()),
                format!("{}/bin/fix.py", base.display()),
                "--flag".into()
            ]
        ),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The seed with `source:` replaced by `text` (a `sources:` block, or a
/// `source:` line) and `target:` by `target`.
fn with_datasets(sources: &str, target: &str) -> String {
    SEED.replace("  source: {url: \"file:///data/src/customers.csv\", format: csv}\n", sources)
        .replace("  target: {url: \"s3://bucket/customers-v2/\", format: parquet}\n", target)
}

const FOLDER_TARGET: &str = "  target: {url: \"s3://bucket/out/\", format: parquet}\n";

#[test]
fn many_sources_by_table_name() {
    let text = with_datasets(
        "  sources:\n    orders: {url: \"s3://bucket/orders/\", format: parquet, partition: {bytes: 256MiB}}\n    customers: s3://bucket/customers.csv\n",
        "  target: {url: \"s3://bucket/out/\", format: parquet, partition_by: [dt, country], max_rows_per_file: 1000}\n",
    );
    let m = Plan::from_entity(&one(&text)).unwrap().migration;
    assert_eq!(m.sources.keys().collect::<Vec<_>>(), vec!["customers", "orders"]);
    assert_eq!(m.sources["customers"].format(), Some(Format::Csv));
    // The partitioned source is the primary one, whatever the names.
    assert_eq!(m.primary().0, "orders");
    let (name, _, p) = m.partitioned().unwrap();
    assert_eq!((name, p), ("orders", &Partitioning::Bytes(256 << 20)));
    assert_eq!(m.target.partition_by, vec!["dt", "country"]);
    assert_eq!(m.target.max_rows_per_file, Some(1000));
    assert!(m.versioned_output());
    // The JSON form round-trips (what the node passes around).
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["sources"]["orders"]["partition"], serde_json::json!({"bytes": 268435456}));
    assert!(json["sources"]["customers"].get("partition").is_none(), "{json}");
    assert_eq!(serde_json::from_value::<MigrationSpec>(json).unwrap(), m);

    // Without a partitioned source: `source` if there is one, else the first by name.
    let m = Plan::from_entity(&one(&with_datasets(
        "  sources:\n    b: /data/b.csv\n    a: /data/a.csv\n",
        "  target: /out/x.parquet\n",
    )))
    .unwrap()
    .migration;
    assert_eq!(m.primary().0, "a");
    assert!(!m.versioned_output());
    let m = Plan::from_entity(&one(&with_datasets(
        "  sources:\n    b: /data/b.csv\n    source: /data/s.csv\n",
        "  target: /out/x.parquet\n",
    )))
    .unwrap()
    .migration;
    assert_eq!(m.primary(), ("source", &m.sources["source"]));
}

#[test]
fn partitioning_shapes_and_sizes() {
    let cases: &[(&str, Partitioning)] = &[
        ("file", Partitioning::Files(1)),
        ("{files: 8}", Partitioning::Files(8)),
        ("{bytes: 1000}", Partitioning::Bytes(1000)),
        ("{bytes: \"256MiB\"}", Partitioning::Bytes(256 << 20)),
        ("{bytes: 1GB}", Partitioning::Bytes(1_000_000_000)),
        ("{bytes: 512kB}", Partitioning::Bytes(512_000)),
        ("{bytes: 3 KiB}", Partitioning::Bytes(3072)),
        ("{key: dt}", Partitioning::Key("dt".into())),
    ];
    for (shape, want) in cases {
        let text = with_datasets(
            &format!("  sources:\n    orders: {{url: \"s3://b/orders/\", format: csv, partition: {shape}}}\n"),
            FOLDER_TARGET,
        );
        let m = Plan::from_entity(&one(&text)).unwrap_or_else(|e| panic!("{shape}: {e}")).migration;
        assert_eq!(m.partitioned().unwrap().2, want, "{shape}");
    }
    // `source:` may be partitioned too.
    let text = with_datasets("  source: {url: \"s3://b/orders/\", format: csv, partition: file}\n", FOLDER_TARGET);
    assert_eq!(Plan::from_entity(&one(&text)).unwrap().migration.primary().0, "source");
}

#[test]
fn partitioning_and_sources_errors_name_the_field() {
    let src = |p: &str| format!("  sources:\n    orders: {{url: \"s3://b/orders/\", format: csv{p}}}\n");
    let cases: Vec<(String, &str, &str)> = vec![
        // Both, or an empty mapping.
        (
            "  source: /data/a.csv\n  sources: {b: /data/b.csv}\n".into(),
            FOLDER_TARGET,
            "spec.sources: give either `source:`",
        ),
        ("  sources: {}\n".into(), FOLDER_TARGET, "spec.sources: names no dataset"),
        ("  sources: [/data/a.csv]\n".into(), FOLDER_TARGET, "spec.sources: must be a mapping"),
        // Names.
        ("  sources: {1st: /data/a.csv}\n".into(), FOLDER_TARGET, "spec.sources.1st: \"1st\" is not a valid table name"),
        ("  sources: {my-orders: /data/a.csv}\n".into(), FOLDER_TARGET, "spec.sources.my-orders: "),
        (format!("  sources: {{{}: /data/a.csv}}\n", "a".repeat(65)), FOLDER_TARGET, "at most 64"),
        ("  sources: {input: /data/a.csv}\n".into(), FOLDER_TARGET, "spec.sources.input: \"input\" is a table the engine"),
        ("  sources: {Target: /data/a.csv}\n".into(), FOLDER_TARGET, "spec.sources.Target: "),
        ("  sources: {staged_target: /data/a.csv}\n".into(), FOLDER_TARGET, "spec.sources.staged_target: "),
        ("  sources: {orders: {format: csv}}\n".into(), FOLDER_TARGET, "spec.sources.orders.url: missing"),
        ("  sources: {orders: /data/folder/}\n".into(), FOLDER_TARGET, "spec.sources.orders.format: missing"),
        // Partitioning shapes.
        (src(", partition: {files: 0}"), FOLDER_TARGET, "spec.sources.orders.partition: files: must be a whole number"),
        (src(", partition: {bytes: 0}"), FOLDER_TARGET, "spec.sources.orders.partition: bytes: must be at least 1 byte"),
        (src(", partition: {bytes: 12 parsecs}"), FOLDER_TARGET, "spec.sources.orders.partition: bytes: "),
        (src(", partition: {key: \"\"}"), FOLDER_TARGET, "spec.sources.orders.partition: key: must be a non-empty"),
        (src(", partition: {rows: 5}"), FOLDER_TARGET, "spec.sources.orders.partition: unknown partitioning \"rows\""),
        (src(", partition: daily"), FOLDER_TARGET, "spec.sources.orders.partition: must be `file`"),
        // Which side a setting belongs to.
        (src(", partition_by: [dt]"), FOLDER_TARGET, "spec.sources.orders.partition_by: is for targets"),
        (src(", max_rows_per_file: 10"), FOLDER_TARGET, "spec.sources.orders.max_rows_per_file: is for targets"),
        (src(""), "  target: {url: \"s3://b/out/\", format: csv, partition: file}\n", "spec.target.partition: is for sources"),
        // partition_by entries and max_rows_per_file.
        (src(""), "  target: {url: \"s3://b/out/\", format: csv, partition_by: [dt, \"\"]}\n", "spec.target.partition_by[1]: must be a non-empty"),
        (src(""), "  target: {url: \"s3://b/out/\", format: csv, partition_by: [\"a b\"]}\n", "spec.target.partition_by[0]: \"a b\" is not a plain column name"),
        (src(""), "  target: {url: \"s3://b/out/\", format: csv, partition_by: [_dt]}\n", "spec.target.partition_by[0]: \"_dt\": a folder"),
        (src(""), "  target: {url: \"s3://b/out/\", format: csv, partition_by: [dt, dt]}\n", "spec.target.partition_by[1]: \"dt\" is named twice"),
        (src(""), "  target: {url: \"s3://b/out/\", format: csv, max_rows_per_file: 0}\n", "spec.target.max_rows_per_file: must be a whole number, at least 1"),
        // One partitioned source, a folder; folder targets for versioned output.
        (
            "  sources:\n    a: {url: \"s3://b/a/\", format: csv, partition: file}\n    b: {url: \"s3://b/b/\", format: csv, partition: file}\n".into(),
            FOLDER_TARGET,
            "spec.sources.b.partition: only one source may be partitioned (here: a, b)",
        ),
        (
            "  sources: {orders: {url: \"s3://b/orders.csv\", partition: file}}\n".into(),
            FOLDER_TARGET,
            "spec.sources.orders.partition: a partitioned source must be a folder",
        ),
        (
            "  source: {url: \"s3://b/orders.csv\", partition: file}\n".into(),
            FOLDER_TARGET,
            "spec.source.partition: a partitioned source must be a folder",
        ),
        (
            "  sources:\n    orders: {url: \"s3://b/o/\", format: csv, partition: file}\n    source: /data/a.csv\n".into(),
            FOLDER_TARGET,
            "spec.sources.source: the table `source` stands for the partitioned source (orders)",
        ),
        (src(", partition: file"), "  target: s3://b/out.parquet\n", "spec.target.url: a partitioned plan's target is written as many files"),
        (src(""), "  target: {url: \"s3://b/out.csv\", partition_by: [dt]}\n", "spec.target.url: a target with partition_by"),
        (src(""), "  target: {url: \"/out/x.csv\", max_rows_per_file: 5}\n", "spec.target.url: a target with max_rows_per_file"),
    ];
    for (sources, target, want) in cases {
        let text = with_datasets(&sources, target);
        let e = err_of(&text);
        assert!(e.to_string().contains(want), "{sources}{target}: got {e}, want {want}");
        assert!(e.to_string().starts_with("plans.yaml: component:default/customer-dataset-v2-migration: "), "{e}");
    }
}

#[test]
fn byte_sizes() {
    use serde_json::json;
    assert_eq!(parse_bytes(&json!(42)), Ok(42));
    assert_eq!(parse_bytes(&json!("42")), Ok(42));
    assert_eq!(parse_bytes(&json!("42B")), Ok(42));
    assert_eq!(parse_bytes(&json!("2MB")), Ok(2_000_000));
    assert_eq!(parse_bytes(&json!("2mib")), Ok(2 << 20));
    assert_eq!(parse_bytes(&json!("1TiB")), Ok(1 << 40));
    assert!(parse_bytes(&json!("1.5GB")).is_err());
    assert!(parse_bytes(&json!("-1")).is_err());
    assert!(parse_bytes(&json!("99999999999999TiB")).unwrap_err().contains("too large"));
    assert!(parse_bytes(&json!(true)).is_err());
}

#[test]
fn relative_paths_of_every_source_resolve_against_the_file() {
    let dir = std::env::temp_dir().join(format!("skein-plan-sources-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("plans")).unwrap();
    let text = with_datasets(
        "  sources:\n    orders: {url: ../data/orders/, format: parquet, partition: file}\n    customers: ../data/customers.csv\n    remote: s3://b/r.csv\n",
        "  target: {url: ../out/v2/, format: parquet}\n",
    );
    std::fs::write(dir.join("plans/p.yaml"), text).unwrap();
    let e = read_file(&plan_files(&dir).unwrap()[0]).unwrap().remove(0);
    let m = Plan::from_entity(&e).unwrap().migration;
    let base = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(m.sources["orders"].url, format!("file://{}/data/orders/", base.display()));
    assert_eq!(m.sources["customers"].url, format!("file://{}/data/customers.csv", base.display()));
    assert_eq!(m.sources["remote"].url, "s3://b/r.csv");
    assert_eq!(m.target.url, format!("file://{}/out/v2/", base.display()));
    std::fs::remove_dir_all(&dir).unwrap();
}
