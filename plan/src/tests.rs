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
    assert_eq!(m.source.url, "file:///data/src/customers.csv");
    assert_eq!(m.source.format(), Some(Format::Csv));
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
    assert_eq!(m.source.format(), Some(Format::Parquet));
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
    assert_eq!(m.source.url, format!("file://{}/data/customers.csv", base.display()));
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
