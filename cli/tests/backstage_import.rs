//! `skein plan import --backstage` against a fake Backstage that answers in
//! Backstage's real catalog API format (by-query with cursor paging,
//! by-name, bearer tokens), and a fake skein node that records what it is
//! sent. Also `skein plan apply`'s checks, which run before anything is sent.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};
use skein_cli::Cli;

const TOKEN: &str = "s3cr3t";

/// A Backstage entity as the catalog API returns it: with uid, etag,
/// managed-by annotations and relations.
fn entity(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "namespace": "default",
            "name": name,
            "uid": format!("uid-{name}"),
            "etag": format!("etag-{name}"),
            "annotations": {
                "backstage.io/managed-by-location": "url:https://git.example.com/data/catalog-info.yaml",
                "backstage.io/managed-by-origin-location": "url:https://git.example.com/data/catalog-info.yaml",
                "honk/queue": "dataset-migrations"
            }
        },
        "spec": spec,
        "relations": [{"type": "ownedBy", "targetRef": "group:default/team-infra"}]
    })
}

fn plan_spec(depends_on: &[&str]) -> Value {
    json!({
        "type": "migration-plan", "lifecycle": "production", "owner": "group:default/team-infra",
        "dependsOn": depends_on,
        "source": {"url": "s3://lake/src/a.csv", "format": "csv"},
        "target": {"url": "s3://lake/a/", "format": "parquet"},
        "steps": [{"type": "sql", "query": "SELECT * FROM source"}, {"type": "validate", "row_count": "equal"}]
    })
}

#[derive(Default)]
struct Seen {
    queries: Vec<String>,
    by_name: Vec<String>,
    auth: Vec<Option<String>>,
    applied: Vec<Value>,
}

type Shared = Arc<Mutex<Seen>>;

fn auth(headers: &HeaderMap) -> Option<String> {
    headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn by_query(
    State(s): State<Shared>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, StatusCode> {
    let q = q.unwrap_or_default();
    let mut seen = s.lock().unwrap();
    seen.auth.push(auth(&headers));
    seen.queries.push(q.clone());
    if auth(&headers).as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    // Page 1 without a cursor, page 2 with the cursor page 1 gave.
    if q.contains("cursor=page2") {
        Ok(Json(json!({
            "items": [entity("plan-b", plan_spec(&["component:default/plan-a"]))],
            "totalItems": 2,
            "pageInfo": {"prevCursor": "page1"}
        })))
    } else {
        Ok(Json(json!({
            "items": [entity("plan-a", plan_spec(&["source-dataset"]))],
            "totalItems": 2,
            "pageInfo": {"nextCursor": "page2"}
        })))
    }
}

async fn by_name(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((kind, ns, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, StatusCode> {
    let mut seen = s.lock().unwrap();
    seen.auth.push(auth(&headers));
    seen.by_name.push(format!("{kind}/{ns}/{name}"));
    if name == "source-dataset" {
        Ok(Json(entity("source-dataset", json!({"type": "dataset", "owner": "team-data", "lifecycle": "production"}))))
    } else {
        Err(StatusCode::NOT_FOUND)
    }
}

/// A node with an empty catalog that accepts any plans.
fn node_routes() -> Router<Shared> {
    Router::new().route(
        "/api/v1/plans",
        get(|| async { Json(json!({"plans": []})) }).post(|State(s): State<Shared>, Json(body): Json<Value>| async move {
            let entities: Vec<Value> = body["entities"].as_array().cloned().unwrap_or_default();
            let reply: Vec<Value> = entities
                .iter()
                .map(|e| json!({"entity_ref": format!("component:default/{}", e["metadata"]["name"].as_str().unwrap_or("")), "created": true, "changed": true, "revision": 1}))
                .collect();
            s.lock().unwrap().applied = entities;
            Json(json!({"entities": reply}))
        }),
    )
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn fakes() -> (Shared, SocketAddr, SocketAddr) {
    let seen: Shared = Arc::default();
    let backstage = Router::new()
        .route("/api/catalog/entities/by-query", get(by_query))
        .route("/api/catalog/entities/by-name/{kind}/{ns}/{name}", get(by_name))
        .with_state(seen.clone());
    let bs = serve(backstage).await;
    let node = serve(node_routes().with_state(seen.clone())).await;
    (seen, bs, node)
}

async fn skein(args: &[&str]) -> (anyhow::Result<()>, String) {
    let cli = Cli::try_parse_from(std::iter::once("skein").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    let r = skein_cli::run(cli, &mut out).await;
    (r, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn import_pages_through_by_query_and_fetches_dependencies_by_name() {
    let (seen, bs, node) = fakes().await;
    let (r, out) = skein(&[
        "--addr",
        &node.to_string(),
        "plan",
        "import",
        "--backstage",
        &format!("http://{bs}"),
        "--token",
        TOKEN,
    ])
    .await;
    r.unwrap();
    let seen = seen.lock().unwrap();
    // Two pages: the filter on the first, only the cursor on the second.
    assert_eq!(seen.queries.len(), 2, "{:?}", seen.queries);
    assert!(seen.queries[0].contains("filter=kind%3Dcomponent%2Cspec.type%3Dmigration-plan"), "{}", seen.queries[0]);
    assert!(seen.queries[1].contains("cursor=page2") && !seen.queries[1].contains("filter="), "{}", seen.queries[1]);
    // The plain entity plan-a depends on was fetched by name.
    assert_eq!(seen.by_name, vec!["component/default/source-dataset"]);
    assert!(seen.auth.iter().all(|a| a.as_deref() == Some("Bearer s3cr3t")), "{:?}", seen.auth);
    let names: Vec<&str> = seen.applied.iter().map(|e| e["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["plan-a", "plan-b", "source-dataset"]);
    assert!(out.contains("3 entities: 3 created"), "{out}");
}

#[tokio::test]
async fn import_without_a_valid_token_says_so() {
    let (seen, bs, node) = fakes().await;
    let (r, _) = skein(&[
        "--addr",
        &node.to_string(),
        "plan",
        "import",
        "--backstage",
        &format!("http://{bs}"),
        "--token",
        "wrong",
    ])
    .await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("Backstage refused") && e.contains("--token"), "{e}");
    assert!(seen.lock().unwrap().applied.is_empty());
}

#[tokio::test]
async fn apply_reports_every_problem_with_file_entity_and_field_and_sends_nothing() {
    let (seen, _bs, node) = fakes().await;
    let dir = tempfile_dir();
    let bad = "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: p1\nspec:\n  type: migration-plan\n  owner: me\n  source: a.csv\n  target: b.parquet\n  steps:\n    - type: frobnicate\n---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: p2\nspec:\n  type: migration-plan\n  owner: me\n  dependsOn: [nowhere]\n  source: a.csv\n  target: b.parquet\n  steps:\n    - type: copy\n";
    let file = dir.join("plans.yaml");
    std::fs::write(&file, bad).unwrap();
    let (r, _) = skein(&["--addr", &node.to_string(), "plan", "apply", file.to_str().unwrap()]).await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("1 problem found; nothing was stored"), "{e}");
    assert!(
        e.contains(&format!(
            "{}: component:default/p1: spec.steps[0].type: unknown step type \"frobnicate\"",
            file.display()
        )),
        "{e}"
    );
    // Once the step is fixed, the missing reference is what is left.
    std::fs::write(&file, bad.replace("frobnicate", "copy")).unwrap();
    let (r, _) = skein(&["--addr", &node.to_string(), "plan", "apply", file.to_str().unwrap()]).await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("component:default/p2: spec.dependsOn[0]: component:default/nowhere is neither in this batch nor in the catalog"), "{e}");
    assert!(seen.lock().unwrap().applied.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn apply_names_the_file_entity_and_field_of_a_missing_field_and_of_a_cycle() {
    let (seen, _bs, node) = fakes().await;
    let dir = tempfile_dir().join("cycle");
    std::fs::create_dir_all(&dir).unwrap();
    let doc = |name: &str, dep: &str| {
        format!("apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: migration-plan\n  owner: me\n  dependsOn: [{dep}]\n  source: a.csv\n  target: b.parquet\n  steps:\n    - type: copy\n")
    };
    // A folder: a.yaml has a -> b, b.yaml has b -> a.
    std::fs::write(dir.join("a.yaml"), doc("a", "b")).unwrap();
    std::fs::write(dir.join("b.yaml"), doc("b", "component:default/a")).unwrap();
    let (r, _) = skein(&["--addr", &node.to_string(), "plan", "apply", dir.to_str().unwrap()]).await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("nothing was stored"), "{e}");
    assert!(
        e.contains("component:default/") && e.contains("spec.dependsOn: dependency cycle: component:default/"),
        "{e}"
    );
    assert!(
        e.contains(&dir.join("a.yaml").display().to_string()) || e.contains(&dir.join("b.yaml").display().to_string()),
        "no file named: {e}"
    );
    // A missing field, in the second file of the folder.
    std::fs::write(dir.join("b.yaml"), doc("b", "source-dataset").replace("  target: b.parquet\n", "")).unwrap();
    std::fs::write(dir.join("a.yaml"), doc("a", "b")).unwrap();
    let (r, _) = skein(&["--addr", &node.to_string(), "plan", "apply", dir.to_str().unwrap()]).await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains(&format!("{}: component:default/b: spec.target: missing", dir.join("b.yaml").display())), "{e}");
    assert!(seen.lock().unwrap().applied.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d =
        std::env::temp_dir().join(format!("skein-cli-plan-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
