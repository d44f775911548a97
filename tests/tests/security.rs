//! Who may connect and what they may do, against real nodes: the 401/403
//! matrix over every route and role, owner-scoped tokens, revocation and
//! expiry, the audit trail, the refusal of a non-loopback bind without
//! TLS, and a cluster on mutual TLS and HTTPS whose certificates are
//! replaced on disk while it runs.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skein_raft::api::ErrorCode;
use skein_testkit::api::Reply;
use skein_testkit::process::free_port;
use skein_testkit::{wait_until, Api, Cluster, Spec};

/// Every route, with a body that gets past parsing where it matters, and
/// the least role that may call it (`None`: public).
fn routes() -> Vec<(Method, &'static str, Option<Value>, Option<&'static str>)> {
    use Method as M;
    let plan = json!({"entities": [plan_entity("matrix-plan", "team-x")]});
    vec![
        (M::GET, "/healthz", None, None),
        (M::GET, "/readyz", None, None),
        (M::GET, "/api/v1/openapi.json", None, None),
        (M::GET, "/", None, None),
        (M::GET, "/dashboard.js", None, None),
        (M::GET, "/dashboard.css", None, None),
        (M::GET, "/signin", None, None),
        (M::POST, "/signout", None, None),
        (M::GET, "/metrics", None, Some("read")),
        (M::GET, "/api/v1/overview", None, Some("read")),
        (M::GET, "/api/v1/stuck", None, Some("read")),
        (M::GET, "/api/v1/tasks", None, Some("read")),
        (M::GET, "/api/v1/tasks/1", None, Some("read")),
        (M::GET, "/api/v1/queues", None, Some("read")),
        (M::GET, "/api/v1/cluster", None, Some("read")),
        (M::GET, "/api/v1/plans", None, Some("read")),
        (M::GET, "/api/v1/plans/matrix-plan", None, Some("read")),
        (M::GET, "/api/v1/plans/component/default/matrix-plan", None, Some("read")),
        (M::GET, "/api/v1/auth", None, Some("read")),
        (M::GET, "/api/v1/policy", None, Some("read")),
        (M::GET, "/api/v1/scale", None, Some("read")),
        (M::POST, "/api/honk/tasks", Some(json!({"queue": "m", "payload": {}})), Some("submit")),
        (M::POST, "/api/v1/tasks", Some(json!({"queue": "m"})), Some("submit")),
        (M::POST, "/api/v1/tasks/1/cancel", None, Some("submit")),
        (M::POST, "/api/v1/tasks/1/retry", None, Some("submit")),
        (M::POST, "/api/v1/plans", Some(plan), Some("submit")),
        (M::POST, "/api/v1/plans/run", Some(json!({"refs": ["component:default/nothing"]})), Some("submit")),
        (M::PATCH, "/api/v1/queues/m", Some(json!({"lease_ms": 30000})), Some("operate")),
        (M::POST, "/api/v1/queues/m/pause", None, Some("operate")),
        (M::POST, "/api/v1/queues/m/resume", None, Some("operate")),
        (M::POST, "/api/v1/queues/m/redrive", None, Some("operate")),
        (M::POST, "/api/v1/cluster/join", Some(json!({"bogus": true})), Some("operate")),
        (M::POST, "/api/v1/cluster/workers", Some(json!({"bogus": true})), Some("operate")),
        (M::POST, "/api/v1/cluster/finalize", None, Some("operate")),
        (M::DELETE, "/api/v1/cluster/nodes/99", None, Some("operate")),
        (M::POST, "/api/v1/cluster/nodes/99/drain", None, Some("operate")),
        (M::GET, "/api/v1/admin/digest", None, Some("operate")),
        (M::GET, "/api/v1/audit", None, Some("operate")),
        (M::GET, "/api/v1/admin/backup", None, Some("admin")),
        (M::GET, "/api/v1/tokens", None, Some("admin")),
        (M::POST, "/api/v1/tokens", Some(json!({"role": "read", "name": "made-in-matrix"})), Some("admin")),
        (M::DELETE, "/api/v1/tokens/00000000000000ff", None, Some("admin")),
        (M::POST, "/api/v1/tokens/00000000000000ff/rotate", None, Some("admin")),
        (M::POST, "/api/v1/auth", Some(json!({"audit_retention_ms": 86400000})), Some("admin")),
        (M::POST, "/api/v1/policy", Some(json!({"mode": "open"})), Some("admin")),
        (M::POST, "/api/v1/policy/exec", Some(json!({"program": "/usr/bin/true"})), Some("admin")),
        (M::POST, "/api/v1/policy/exec/deny", Some(json!({"program": "/usr/bin/false"})), Some("admin")),
        (M::POST, "/api/v1/policy/roots", Some(json!({"url": "/srv/matrix/"})), Some("admin")),
        (M::POST, "/api/v1/policy/roots/deny", Some(json!({"url": "/srv/nowhere/"})), Some("admin")),
    ]
}

fn plan_entity(name: &str, owner: &str) -> Value {
    json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": "migration-plan",
            "owner": owner,
            "source": {"url": "/nonexistent/in.csv", "format": "csv"},
            "target": {"url": "/nonexistent/out/", "format": "parquet"},
            "steps": [{"type": "sql", "query": "SELECT * FROM source"}]
        }
    })
}

const ROLES: [&str; 4] = ["read", "submit", "operate", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap_or(usize::MAX)
}

/// Makes a token with the admin token of the harness.
async fn make_token(c: &Cluster, body: Value) -> anyhow::Result<String> {
    let reply = c.api.raw(Method::POST, &c.addr(1), "/api/v1/tokens", Some(body.to_string().into_bytes())).await?;
    ensure!(reply.status == StatusCode::CREATED, "creating a token: {} {}", reply.status, reply.body);
    reply.body["token"].as_str().map(str::to_string).context("no token in the answer")
}

async fn call(api: &Api, addr: &str, method: &Method, path: &str, body: &Option<Value>) -> anyhow::Result<Reply> {
    api.raw(method.clone(), addr, path, body.as_ref().map(|b| b.to_string().into_bytes())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_needs_its_role() {
    let c = Cluster::start(1).await.expect("starting a node");
    let result = matrix(&c).await;
    c.finish(result);
}

async fn matrix(c: &Cluster) -> anyhow::Result<()> {
    let addr = c.addr(1);
    // The matrix covers every route the node serves: each path written in
    // the router is in `routes()`.
    let listed: BTreeSet<String> = routes().iter().map(|(_, p, _, _)| normalize(p)).collect();
    for source in [include_str!("../../node/src/api/mod.rs"), include_str!("../../node/src/api/dashboard.rs")] {
        for (i, _) in source.match_indices(".route(\"") {
            let rest = &source[i + 8..];
            let path = &rest[..rest.find('"').unwrap_or(0)];
            ensure!(listed.contains(&normalize(path)), "route {path} is not in the 401/403 matrix");
        }
    }
    let mut tokens = Vec::new();
    for role in ROLES {
        tokens.push((role, make_token(c, json!({"role": role, "name": format!("matrix-{role}")})).await?));
    }
    let anonymous = Api::new().without_token();
    for (method, path, body, needed) in routes() {
        let reply = call(&anonymous, &addr, &method, path, &body).await?;
        match needed {
            None => ensure!(
                reply.status != StatusCode::UNAUTHORIZED && reply.status != StatusCode::FORBIDDEN,
                "{method} {path} is public, yet without a token: {} {}",
                reply.status,
                reply.body
            ),
            Some(_) => ensure!(
                reply.status == StatusCode::UNAUTHORIZED && reply.error_code() == Some(ErrorCode::Unauthenticated),
                "{method} {path} without a token: expected 401, got {} {}",
                reply.status,
                reply.body
            ),
        }
        let bad = Api::new()
            .with_token("skein_00000000000000aa_0000000000000000000000000000000000000000000000000000000000000000");
        if needed.is_some() {
            let reply = call(&bad, &addr, &method, path, &body).await?;
            ensure!(
                reply.status == StatusCode::UNAUTHORIZED,
                "{method} {path} with an unknown token: {}",
                reply.status
            );
        }
        for (role, token) in &tokens {
            let reply = call(&Api::new().with_token(token), &addr, &method, path, &body).await?;
            let allowed = needed.is_none_or(|n| rank(role) >= rank(n));
            if allowed {
                ensure!(
                    reply.status != StatusCode::UNAUTHORIZED && reply.status != StatusCode::FORBIDDEN,
                    "{method} {path} as {role}: should be allowed, got {} {}",
                    reply.status,
                    reply.body
                );
            } else {
                let message = reply.body.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
                ensure!(
                    reply.status == StatusCode::FORBIDDEN
                        && message.contains(needed.unwrap_or_default())
                        && message.contains(role),
                    "{method} {path} as {role}: expected 403 naming both roles, got {} {}",
                    reply.status,
                    reply.body
                );
            }
        }
    }
    // The dashboard's sign-in keeps the token in an HttpOnly, SameSite=Strict
    // cookie, which the dashboard's reads then work with.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let read_token = &tokens[0].1;
    let r = browser
        .post(format!("http://{addr}/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={read_token}"))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::SEE_OTHER, "signing in: {}", r.status());
    let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    ensure!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "the cookie: {cookie}");
    let pair = cookie.split(';').next().unwrap_or_default();
    let r = browser.get(format!("http://{addr}/api/v1/overview")).header("cookie", pair).send().await?;
    ensure!(r.status() == StatusCode::OK, "the dashboard's poll with the cookie: {}", r.status());
    let r = browser
        .post(format!("http://{addr}/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=skein_nonsense")
        .send()
        .await?;
    ensure!(r.status() == StatusCode::UNAUTHORIZED, "signing in with a bad token: {}", r.status());
    ensure!(r.text().await?.contains("Not signed in"), "the sign-in page says why");

    // Never a token in an answer or a log.
    let logs = std::fs::read_to_string(c.node(1).log_path())?;
    for (role, token) in &tokens {
        let secret = token.rsplit('_').next().unwrap_or(token);
        ensure!(!logs.contains(secret), "the {role} token's secret is in the node's log");
    }
    Ok(())
}

/// `{id}` and concrete values alike: `/api/v1/tasks/1` ~ `/api/v1/tasks/{id}`.
fn normalize(path: &str) -> String {
    let known = [
        ("/api/v1/tasks/1", "/api/v1/tasks/{id}"),
        ("/api/v1/queues/m", "/api/v1/queues/{name}"),
        ("/api/v1/cluster/nodes/99", "/api/v1/cluster/nodes/{id}"),
        ("/api/v1/tokens/00000000000000ff", "/api/v1/tokens/{id}"),
        ("/api/v1/plans/matrix-plan", "/api/v1/plans/{entity_ref}"),
        ("/api/v1/plans/component/default/matrix-plan", "/api/v1/plans/{kind}/{namespace}/{name}"),
    ];
    let mut p = path.to_string();
    for (concrete, pattern) in known {
        p = p.replacen(concrete, pattern, 1);
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owners_revocation_expiry_and_audit() {
    let c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = owners_and_revocation(&c).await;
    c.finish(result);
}

async fn owners_and_revocation(c: &Cluster) -> anyhow::Result<()> {
    let addr = c.addr(1);
    let team_a = Api::new().with_token(
        &make_token(c, json!({"role": "submit", "owners": ["group:default/team-a"], "name": "ci-a"})).await?,
    );
    let team_b =
        Api::new().with_token(&make_token(c, json!({"role": "submit", "owners": ["team-b"], "name": "ci-b"})).await?);

    // A task of team a: team b may neither cancel nor retry it.
    let ids = team_a.enqueue(&addr, &[json!({"queue": "owned", "kind": "sleep", "payload": {"ms": 60000}})]).await?;
    let id = ids[0];
    for action in ["cancel", "retry"] {
        let r = team_b.raw(Method::POST, &addr, &format!("/api/v1/tasks/{id}/{action}"), None).await?;
        ensure!(r.status == StatusCode::FORBIDDEN, "team b {action}s team a's task: {} {}", r.status, r.body);
        ensure!(r.body.to_string().contains("team-a"), "the refusal names the task's owner: {}", r.body);
    }
    // Nor enqueue for team a.
    let r = team_b
        .raw(
            Method::POST,
            &addr,
            "/api/v1/tasks",
            Some(json!({"queue": "owned", "owner": "team-a"}).to_string().into_bytes()),
        )
        .await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "team b enqueues for team a: {} {}", r.status, r.body);
    let r = team_a.raw(Method::POST, &addr, &format!("/api/v1/tasks/{id}/cancel"), None).await?;
    ensure!(r.status.is_success(), "team a cancels its own task: {} {}", r.status, r.body);

    // Plans: team b cannot run or overwrite team a's plan.
    let apply = |e: Value| json!({"entities": [e]}).to_string().into_bytes();
    let r = team_a.raw(Method::POST, &addr, "/api/v1/plans", Some(apply(plan_entity("a-plan", "team-a")))).await?;
    ensure!(r.status.is_success(), "team a applies its plan: {} {}", r.status, r.body);
    let run = json!({"refs": ["component:default/a-plan"]}).to_string().into_bytes();
    let r = team_b.raw(Method::POST, &addr, "/api/v1/plans/run", Some(run.clone())).await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "team b runs team a's plan: {} {}", r.status, r.body);
    let r = team_b.raw(Method::POST, &addr, "/api/v1/plans", Some(apply(plan_entity("a-plan", "team-b")))).await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "team b takes over team a's plan: {} {}", r.status, r.body);
    let r = team_a.raw(Method::POST, &addr, "/api/v1/plans/run", Some(run)).await?;
    ensure!(r.status.is_success(), "team a runs its plan: {} {}", r.status, r.body);

    // The audit trail names who did it; so does the task's history.
    let audit: Value = c.api.call(Method::GET, &addr, "/api/v1/audit?principal=ci-b", None).await?;
    let records = audit["records"].as_array().context("no records")?;
    ensure!(
        records
            .iter()
            .any(|r| r["action"] == "cancel" && r["outcome"].as_str().is_some_and(|o| o.starts_with("refused"))),
        "team b's refused cancel is audited: {audit}"
    );
    let audit: Value = c.api.call(Method::GET, &addr, "/api/v1/audit?principal=ci-a", None).await?;
    let actions: Vec<&str> =
        audit["records"].as_array().into_iter().flatten().filter_map(|r| r["action"].as_str()).collect();
    for want in ["enqueue", "cancel", "apply plans", "run plans"] {
        ensure!(actions.contains(&want), "ci-a's {want} is audited: {actions:?}");
    }
    let detail: Value = c.api.call(Method::GET, &addr, &format!("/api/v1/tasks/{id}"), None).await?;
    ensure!(detail.to_string().contains("ci-a"), "the task's history names ci-a: {detail}");

    // A revoked token: its writes and, within a second, its reads stop on every node.
    let doomed_text = make_token(c, json!({"role": "submit", "name": "doomed"})).await?;
    let doomed = Api::new().with_token(&doomed_text);
    doomed.enqueue(&addr, &[json!({"queue": "r"})]).await?;
    let list: Value = c.api.call(Method::GET, &addr, "/api/v1/tokens", None).await?;
    let doomed_id = list["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "doomed")
        .and_then(|t| t["id"].as_str())
        .context("the doomed token is listed")?
        .to_string();
    ensure!(!list.to_string().contains(doomed_text.rsplit('_').next().unwrap_or("x")), "a listing shows a secret");
    let revoked_at = Instant::now();
    let r = c.api.raw(Method::DELETE, &addr, &format!("/api/v1/tokens/{doomed_id}"), None).await?;
    ensure!(r.status.is_success(), "revoking: {} {}", r.status, r.body);
    let r =
        doomed.raw(Method::POST, &addr, "/api/v1/tasks", Some(json!({"queue": "r"}).to_string().into_bytes())).await?;
    ensure!(r.status == StatusCode::UNAUTHORIZED, "a write with a revoked token: {} {}", r.status, r.body);
    for id in c.ids() {
        let node = c.addr(id);
        wait_until(Duration::from_secs(1), &format!("node {id} to refuse the revoked token"), async || {
            Ok(doomed.raw(Method::GET, &node, "/api/v1/queues", None).await?.status == StatusCode::UNAUTHORIZED)
        })
        .await?;
    }
    skein_tests::checks::say(format!(
        "reads with a revoked token stopped on every node {:?} after the revocation",
        revoked_at.elapsed()
    ));

    // An expired token.
    let brief = Api::new().with_token(&make_token(c, json!({"role": "read", "expires_in_ms": 1500})).await?);
    ensure!(brief.raw(Method::GET, &addr, "/api/v1/queues", None).await?.status.is_success(), "a fresh token reads");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let r = brief.raw(Method::GET, &addr, "/api/v1/queues", None).await?;
    ensure!(
        r.status == StatusCode::UNAUTHORIZED && r.body.to_string().contains("expired"),
        "expired: {} {}",
        r.status,
        r.body
    );
    Ok(())
}

#[tokio::test]
async fn a_non_loopback_bind_without_tls_is_refused() {
    let bins = skein_testkit::process::Binaries::locate().expect("the binaries");
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = free_port().expect("a port");
    let out = std::process::Command::new(&bins.node)
        .args(["--id", "1", "--listen", &format!("0.0.0.0:{port}"), "--http", "127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .arg("--bootstrap")
        .output()
        .expect("running skein-node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "skein-node served 0.0.0.0 without TLS");
    assert!(stderr.contains("--tls-dir") && stderr.contains("--insecure"), "the refusal says what to do: {stderr}");
    assert!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0) == 0, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_on_mutual_tls_rotates_its_certificates_without_a_restart() {
    let certs = tempfile::tempdir().expect("a temp dir");
    let spec = Spec::new(3).with_tls(certs.path(), 0).expect("certificates");
    let c = spec.start().await.expect("starting 3 nodes on mutual TLS");
    let result = tls_cluster(&c, certs.path()).await;
    c.finish(result);
}

async fn tls_cluster(c: &Cluster, certs: &std::path::Path) -> anyhow::Result<()> {
    let addr = c.addr(2);
    // Forwarded writes, leases and completions all cross mutual TLS.
    let ids = c.api.enqueue(&addr, &[json!({"queue": "tls"}), json!({"queue": "tls"})]).await?;
    for id in ids {
        wait_until(Duration::from_secs(20), &format!("task {id} to succeed over TLS"), async || {
            Ok(c.api.task(&addr, id).await?.task.status == skein_raft::fsm::TaskStatus::Succeeded)
        })
        .await?;
    }
    // Plain HTTP to an HTTPS port gets no answer; plain TCP to the RPC port nothing.
    let plain = Api::new().raw(Method::GET, &addr, "/readyz", None).await;
    ensure!(plain.map_or(true, |r| !r.status.is_success()), "plain HTTP was served by a TLS-required node");
    let mut s = tokio::net::TcpStream::connect(&c.node(2).rpc).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await.unwrap_or(Ok(0)).unwrap_or(0);
    // At most a TLS alert record (type 0x15) saying the bytes were not TLS.
    ensure!(
        n == 0 || buf[0] == 0x15,
        "a plain TCP client got {n} bytes of an answer from the RPC port: {:?}",
        &buf[..n]
    );

    // Replace node 1's certificate (30 days instead of a year): /metrics
    // shows the new expiry without a restart.
    let expiry = async || -> anyhow::Result<f64> {
        let r = c.api.raw(Method::GET, &c.addr(1), "/metrics", None).await?;
        let text = r.body.as_str().unwrap_or_default().to_string();
        text.lines()
            .find(|l| l.starts_with("skein_certificate_expiry_timestamp_seconds{cert=\"node\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .context("no node certificate expiry in /metrics")
    };
    let before = expiry().await?;
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    skein_tls::issue::issue_node_with_days(&certs.join("ca"), 1, "member", &hosts, &certs.join("node-1"), 30)?;
    let mut after = before;
    wait_until(Duration::from_secs(20), "node 1 to load its new certificate", async || {
        after = expiry().await?;
        Ok(after < before - 86_400.0 * 300.0)
    })
    .await?;
    // The cluster still works across the new certificate.
    let ids = c.api.enqueue(&c.addr(1), &[json!({"queue": "tls"})]).await?;
    wait_until(Duration::from_secs(20), "a task after the rotation", async || {
        Ok(c.api.task(&c.addr(1), ids[0]).await?.task.status == skein_raft::fsm::TaskStatus::Succeeded)
    })
    .await?;
    Ok(())
}
