//! An `s3://` plan never makes the node call the cloud's instance metadata
//! service: before issue 15, a node without credentials in its environment
//! asked `169.254.169.254` for some. Here the metadata endpoint (which
//! `object_store` reads from `AWS_METADATA_ENDPOINT`) points at a loopback
//! listener, and nothing may connect to it.
//!
//! One test function in its own binary: it changes the process's
//! environment, which no other test may see.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skein_migrate::{run, Attempt, MigrateError, Options};
use skein_plan::{MigrationSpec, Plan};
use skein_raft::fsm::policy::{Credentials, DataRoot, NewRoot, PolicyState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn plan(source: &str, target: &str) -> MigrationSpec {
    let doc = format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: p\nspec:\n  type: migration-plan\n  owner: t\n  source: {{url: \"{source}\", format: csv}}\n  target: {{url: \"{target}\", format: csv}}\n  steps:\n    - type: copy\n"
    );
    let e = skein_plan::parse_yaml(&doc, "test").unwrap_or_else(|e| panic!("{e}")).remove(0);
    Plan::from_entity(&e).unwrap().migration
}

/// A loopback listener counting connections; answers 404 to each request.
async fn listener() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = conn.read(&mut buf).await;
                let _ =
                    conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    (url, count)
}

fn s3_root(url: &str, endpoint: &str, credentials: Credentials) -> DataRoot {
    let root =
        NewRoot { url: url.into(), endpoint: Some(endpoint.into()), region: None, credentials, allow_http: true }
            .validate()
            .unwrap();
    DataRoot { root, created_ms: 0, created_by: "test".into() }
}

#[tokio::test]
async fn s3_plans_never_ask_the_instance_metadata_service() {
    let (imds, imds_hits) = listener().await;
    let (s3, s3_hits) = listener().await;
    // A node with no credentials, whose metadata service is our listener.
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            std::env::remove_var(&k);
        }
    }
    std::env::set_var("AWS_METADATA_ENDPOINT", &imds);
    std::env::set_var("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds);
    std::env::set_var("AWS_ENDPOINT", &s3);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let attempt = Attempt { task: 1, attempt: 1, token: 1 };

    // Open mode (no policy): refused at once, saying what to set.
    let started = Instant::now();
    let open = Options::new(dir.path().join("scratch"));
    let err = run(&plan("s3://lake/in.csv", &format!("{d}/out.csv")), attempt, &open).await.unwrap_err();
    assert!(matches!(err, MigrateError::Credentials(_)) && !err.is_retryable(), "{err}");
    assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // Not enforced: the same.
    let lax = open.clone().with_policy(Arc::new(PolicyState { enforce: false, ..Default::default() }));
    let err = run(&plan("s3://lake/in.csv", &format!("{d}/out.csv")), attempt, &lax).await.unwrap_err();
    assert!(matches!(err, MigrateError::Credentials(_)), "{err}");

    // Enforced, a root taking its keys from the (empty) environment.
    let root = s3_root("s3://lake/", &s3, Credentials::Env);
    let policy = PolicyState { enforce: true, roots: [(root.root.url.clone(), root)].into(), ..Default::default() };
    let enforced = open.clone().with_policy(Arc::new(policy));
    let err = run(&plan("s3://lake/in.csv", "s3://lake/out.csv"), attempt, &enforced).await.unwrap_err();
    assert!(matches!(err, MigrateError::Credentials(_)), "{err}");
    assert!(err.to_string().contains("s3://lake/") && err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");

    // Enforced, anonymous: the root's endpoint is asked (the source is
    // not there), nothing else.
    let root = s3_root("s3://lake/", &s3, Credentials::Anonymous);
    let policy = PolicyState { enforce: true, roots: [(root.root.url.clone(), root)].into(), ..Default::default() };
    let anon = open.clone().with_policy(Arc::new(policy));
    let err = run(&plan("s3://lake/in.csv", "s3://lake/out.csv"), attempt, &anon).await.unwrap_err();
    // (What it says depends on the listener's bare 404s: not found, or a
    // failed listing.)
    assert!(!matches!(err, MigrateError::Credentials(_) | MigrateError::Forbidden(_)), "{err}");
    assert!(err.to_string().contains(&s3), "{err}");
    assert!(s3_hits.load(Ordering::SeqCst) > 0, "the root's endpoint was not asked");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(imds_hits.load(Ordering::SeqCst), 0, "the instance metadata service was asked");
}
