//! The worker's side of the policy: plans read and write only under their
//! data roots (links resolved right before opening, so a link swapped in
//! after the apply is still refused), `exec` steps run only allowed
//! programs, and object stores are set up from their root alone.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use skein_migrate::roots::{self, Env};
use skein_migrate::{run, Attempt, FenceFn, MigrateError, Options};
use skein_plan::{MigrationSpec, Plan};
use skein_raft::fsm::policy::{Credentials, DataRoot, ExecRule, NewRoot, PolicyState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

fn root(url: &str, endpoint: Option<&str>, credentials: Credentials) -> DataRoot {
    let root = NewRoot {
        url: url.into(),
        endpoint: endpoint.map(str::to_string),
        region: None,
        credentials,
        allow_http: endpoint.is_some_and(|e| e.starts_with("http://")),
    }
    .validate()
    .unwrap();
    DataRoot { root, created_ms: 0, created_by: "test".into() }
}

fn local_root(path: &Path) -> DataRoot {
    root(&format!("file://{}", path.display()), None, Credentials::None)
}

/// An enforced policy with these roots and programs (program, leading args).
fn policy(roots: Vec<DataRoot>, programs: &[(&str, &[&str])]) -> Arc<PolicyState> {
    Arc::new(PolicyState {
        enforce: true,
        programs: programs
            .iter()
            .map(|(p, args)| ExecRule {
                program: p.to_string(),
                args: args.iter().map(|a| a.to_string()).collect(),
                created_ms: 0,
                created_by: "test".into(),
            })
            .collect(),
        roots: roots.into_iter().map(|r| (r.root.url.clone(), r)).collect::<BTreeMap<_, _>>(),
    })
}

/// A temporary folder with `data/` (the root, holding `in/customers.csv`)
/// and `outside/` (not a root), both resolved (the temp dir may be a link).
struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    data: PathBuf,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let data = base.join("data");
        let outside = base.join("outside");
        std::fs::create_dir_all(data.join("in")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(data.join("in/customers.csv"), CUSTOMERS).unwrap();
        std::fs::write(outside.join("secret.csv"), CUSTOMERS).unwrap();
        Fixture { _dir: dir, base, data, outside }
    }

    fn opts(&self) -> Options {
        Options::new(self.base.join("scratch")).with_policy(policy(vec![local_root(&self.data)], &[]))
    }

    /// What `outside/` holds (names, recursively), to show nothing was written there.
    fn outside_listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.outside.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                out.push(e.path().strip_prefix(&self.outside).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}

fn copy_plan(source: &str, target: &str) -> MigrationSpec {
    plan(&format!(
        "  source: {{url: \"{source}\", format: csv}}\n  target: {{url: \"{target}\", format: csv}}\n  steps:\n    - type: copy\n"
    ))
}

async fn refused(spec: &MigrationSpec, opts: &Options, wants: &str) -> String {
    let err = run(spec, attempt(5), opts).await.unwrap_err();
    assert!(matches!(err, MigrateError::Forbidden(_)), "not Forbidden: {err}");
    assert!(!err.is_retryable(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(wants), "{msg:?} lacks {wants:?}");
    msg
}

#[tokio::test]
async fn a_plan_inside_its_root_runs_and_a_new_target_folder_is_fine() {
    let f = Fixture::new();
    let d = f.data.display();
    // The target folder does not exist yet (nor its parent).
    let spec = copy_plan(&format!("{d}/in/customers.csv"), &format!("{d}/out/new/deep/"));
    let report = run(&spec, attempt(3), &f.opts()).await.unwrap();
    assert_eq!(report.rows_written, 4);
    assert!(f.data.join("out/new/deep/part-00000.csv").is_file());
    // A link whose target stays inside the root is fine, as a file or a folder.
    symlink(f.data.join("in/customers.csv"), f.data.join("alias.csv")).unwrap();
    symlink(f.data.join("in"), f.data.join("in-alias")).unwrap();
    run(&copy_plan(&format!("{d}/alias.csv"), &format!("{d}/out/a.csv")), attempt(4), &f.opts()).await.unwrap();
    run(&copy_plan(&format!("{d}/in-alias/"), &format!("{d}/out/b.csv")), attempt(4), &f.opts()).await.unwrap();
    assert!(f.data.join("out/a.csv").is_file() && f.data.join("out/b.csv").is_file());
    // An unenforced policy, or none, behaves as before.
    let mut open = Options::new(f.base.join("scratch"));
    let spec = copy_plan(&format!("{}/secret.csv", f.outside.display()), &format!("{d}/out/c.csv"));
    run(&spec, attempt(4), &open).await.unwrap();
    open.policy = Some(Arc::new(PolicyState { enforce: false, ..Default::default() }));
    run(&spec, attempt(5), &open).await.unwrap();
}

#[tokio::test]
async fn outside_a_root_dotdot_and_skein_folders_are_refused() {
    let f = Fixture::new();
    let (d, o) = (f.data.display(), f.outside.display());
    let opts = f.opts();
    refused(&copy_plan(&format!("{o}/secret.csv"), &format!("{d}/out/x.csv")), &opts, "not under an allowed data root")
        .await;
    refused(&copy_plan(&format!("{d}/in/customers.csv"), &format!("{o}/x.csv")), &opts, "skein roots allow").await;
    refused(&copy_plan(&format!("{d}/../outside/secret.csv"), &format!("{d}/out/x.csv")), &opts, "`..`").await;
    refused(&copy_plan(&format!("{d}/in/customers.csv"), &format!("{d}/out/_skein/x.csv")), &opts, "_skein").await;
    // Even with the policy not enforced, `..` and `_skein` stay refused.
    let lax = Options::new(f.base.join("scratch"))
        .with_policy(Arc::new(PolicyState { enforce: false, ..Default::default() }));
    refused(&copy_plan(&format!("{d}/in/../in/customers.csv"), &format!("{d}/out/y.csv")), &lax, "`..`").await;
    assert!(!f.data.join("out").exists(), "nothing written");
    assert_eq!(f.outside_listing(), vec!["secret.csv"]);
}

#[tokio::test]
async fn links_leading_out_of_the_root_are_refused_and_nothing_is_written_outside() {
    let f = Fixture::new();
    let (d, o) = (f.data.display(), f.outside.display());
    let opts = f.opts();
    // A source file linked out.
    symlink(f.outside.join("secret.csv"), f.data.join("link.csv")).unwrap();
    let msg = refused(&copy_plan(&format!("{d}/link.csv"), &format!("{d}/out/x.csv")), &opts, "resolves to").await;
    assert!(msg.contains(&format!("{o}/secret.csv")) && msg.contains("outside its data root"), "{msg}");
    // A source folder holding a link out.
    std::fs::create_dir_all(f.data.join("folder")).unwrap();
    std::fs::write(f.data.join("folder/a.csv"), CUSTOMERS).unwrap();
    symlink(f.outside.join("secret.csv"), f.data.join("folder/b.csv")).unwrap();
    refused(&copy_plan(&format!("{d}/folder/"), &format!("{d}/out/x.csv")), &opts, "outside its data root").await;
    // A target folder linked out, existing or not.
    symlink(&f.outside, f.data.join("outlink")).unwrap();
    refused(&copy_plan(&format!("{d}/in/customers.csv"), &format!("{d}/outlink/x.csv")), &opts, "outside").await;
    refused(&copy_plan(&format!("{d}/in/customers.csv"), &format!("{d}/outlink/new/")), &opts, "outside").await;
    // A dangling link as the target: writing would create its target.
    symlink(f.outside.join("created.csv"), f.data.join("dangling.csv")).unwrap();
    refused(&copy_plan(&format!("{d}/in/customers.csv"), &format!("{d}/dangling.csv")), &opts, "does not exist").await;
    // The target's control folder linked out.
    std::fs::create_dir_all(f.data.join("t")).unwrap();
    symlink(&f.outside, f.data.join("t/_skein")).unwrap();
    refused(&copy_plan(&format!("{d}/in/customers.csv"), &format!("{d}/t/x.csv")), &opts, "control folder").await;
    // A link into a `_skein` folder.
    std::fs::create_dir_all(f.data.join("p/_skein")).unwrap();
    std::fs::write(f.data.join("p/_skein/x.csv"), CUSTOMERS).unwrap();
    symlink(f.data.join("p/_skein/x.csv"), f.data.join("sneaky.csv")).unwrap();
    refused(&copy_plan(&format!("{d}/sneaky.csv"), &format!("{d}/out/x.csv")), &opts, "_skein/ control folders").await;
    assert_eq!(f.outside_listing(), vec!["secret.csv"], "nothing written outside the root");
    assert!(!f.data.join("out").exists());
}

#[test]
fn a_link_swapped_in_after_a_check_is_refused_at_the_next() {
    let f = Fixture::new();
    let r = local_root(&f.data);
    let file = f.data.join("in/swap.csv");
    std::fs::write(&file, CUSTOMERS).unwrap();
    assert_eq!(roots::confine(&file, &r, "source", false).unwrap(), file);
    std::fs::remove_file(&file).unwrap();
    symlink(f.outside.join("secret.csv"), &file).unwrap();
    let err = roots::confine(&file, &r, "source", false).unwrap_err();
    assert!(err.is_forbidden() && err.to_string().contains("outside its data root"), "{err}");
    // A path not created yet resolves through its nearest existing ancestor.
    let new = f.data.join("a/b/c.csv");
    assert_eq!(roots::confine(&new, &r, "target", false).unwrap(), new);
    std::fs::rename(f.data.join("in"), f.base.join("in-moved")).unwrap();
    symlink(&f.outside, f.data.join("in")).unwrap();
    assert!(roots::confine(&f.data.join("in/new.csv"), &r, "target", false).is_err());
}

#[tokio::test]
async fn a_target_swapped_for_a_link_before_publishing_is_refused() {
    let f = Fixture::new();
    let d = f.data.display();
    std::fs::create_dir_all(f.data.join("out")).unwrap();
    // The fence runs right before publishing: swap the target's folder
    // for a link out of the root there.
    let (data, outside, base) = (f.data.clone(), f.outside.clone(), f.base.clone());
    let fence: FenceFn = Arc::new(move || -> BoxFuture<'static, Result<(), String>> {
        let (data, outside, base) = (data.clone(), outside.clone(), base.clone());
        Box::pin(async move {
            std::fs::rename(data.join("out"), base.join("out-moved")).unwrap();
            symlink(&outside, data.join("out")).unwrap();
            Ok(())
        })
    });
    let mut opts = f.opts();
    opts.fence = Some(fence);
    let err = run(&copy_plan(&format!("{d}/in/customers.csv"), &format!("{d}/out/x.csv")), attempt(9), &opts)
        .await
        .unwrap_err();
    assert!(err.is_forbidden() && err.to_string().contains("outside its data root"), "{err}");
    assert_eq!(f.outside_listing(), vec!["secret.csv"], "nothing published outside the root");
    assert!(!f.base.join("out-moved/x.csv").exists());
}

#[tokio::test]
async fn exec_steps_run_only_allowed_programs() {
    let f = Fixture::new();
    let d = f.data.display();
    let marker = f.outside.join("marker");
    let allowed = f.data.join("allowed-marker");
    let exec_plan = |file: &Path| {
        plan(&format!(
            "  source: {d}/in/customers.csv\n  target: {d}/out/x.jsonl\n  steps:\n    - type: exec\n      command: [\"/usr/bin/touch\", \"{}\"]\n",
            file.display()
        ))
    };
    let allowed_s = allowed.display().to_string();
    let opts = Options::new(f.base.join("scratch"))
        .with_policy(policy(vec![local_root(&f.data)], &[("/usr/bin/touch", &[allowed_s.as_str()])]));
    // Not allowed (other arguments): refused, nothing started.
    let err = run(&exec_plan(&marker), attempt(2), &opts).await.unwrap_err();
    assert!(err.is_forbidden(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("step 1 (exec)") && msg.contains("only with the leading arguments"), "{msg}");
    assert!(!marker.exists(), "the refused program ran");
    // A shell command is refused too (sh is not allowed).
    let shell =
        plan(&format!("  source: {d}/in/customers.csv\n  target: {d}/out/x.jsonl\n  steps:\n    - type: exec\n      command: \"touch {}\"\n", marker.display()));
    assert!(run(&shell, attempt(2), &opts).await.unwrap_err().is_forbidden());
    assert!(!marker.exists(), "the refused shell ran");
    // Allowed: it runs.
    run(&exec_plan(&allowed), attempt(3), &opts).await.unwrap();
    assert!(allowed.exists(), "the allowed program did not run");
}

// ----- object stores -----------------------------------------------------------

fn env(vars: &[(&str, &str)]) -> Env {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn object_store_roots_take_credentials_from_where_they_say_only() {
    let r = root("s3://bucket/prefix/", Some("https://s3.example.com"), Credentials::Env);
    // Env without the variables: a clear error, no fallback.
    let err = roots::builder_from_root("bucket", &r, &Env::default()).unwrap_err();
    assert!(matches!(err, MigrateError::Credentials(_)) && !err.is_retryable(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("s3://bucket/prefix/") && msg.contains("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"),
        "{msg}"
    );
    let err = roots::builder_from_root("bucket", &r, &env(&[("AWS_ACCESS_KEY_ID", "AKIDX")])).unwrap_err();
    assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY is not set"), "{err}");
    roots::s3_store("bucket", Some(&r), &env(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")])).unwrap();

    // Files: parsed; missing keys and unreadable files are errors that do
    // not quote the file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds");
    std::fs::write(&file, "# skein\naccess_key_id = AKIDFILE\n\nsecret_access_key=s3cr3t\nsession_token=tok\n")
        .unwrap();
    assert_eq!(
        roots::read_credentials_file(&file).unwrap(),
        ("AKIDFILE".to_string(), "s3cr3t".to_string(), Some("tok".to_string()))
    );
    std::fs::write(&file, "access_key_id=AKIDFILE\nsecret_acess_key=s3cr3t\n").unwrap();
    let e = roots::read_credentials_file(&file).unwrap_err();
    assert!(e.contains("line 2: unknown key") && !e.contains("s3cr3t") && !e.contains("AKIDFILE"), "{e}");
    std::fs::write(&file, "access_key_id=AKIDFILE\n").unwrap();
    let e = roots::read_credentials_file(&file).unwrap_err();
    assert!(e.contains("no secret_access_key= line") && !e.contains("AKIDFILE"), "{e}");
    std::fs::write(&file, "s3cr3t-on-its-own\n").unwrap();
    let e = roots::read_credentials_file(&file).unwrap_err();
    assert!(e.contains("not a key=value line") && !e.contains("s3cr3t"), "{e}");
    let missing = root("s3://bucket/", Some("https://s3.example.com"), Credentials::File("/nonexistent/creds".into()));
    let err = roots::s3_store("bucket", Some(&missing), &Env::default()).unwrap_err();
    assert!(matches!(err, MigrateError::Credentials(_)) && err.to_string().contains("/nonexistent/creds"), "{err}");

    // Anonymous builds, with nothing in the environment.
    let anon = root("s3://public/", Some("https://s3.example.com"), Credentials::Anonymous);
    roots::s3_store("public", Some(&anon), &Env::default()).unwrap();

    // Without a root: the environment's static keys or unsigned requests only.
    let err = roots::s3_store("bucket", None, &Env::default()).unwrap_err();
    assert!(matches!(err, MigrateError::Credentials(_)), "{err}");
    assert!(err.to_string().contains("AWS_ACCESS_KEY_ID") && err.to_string().contains("instance metadata"), "{err}");
    // Web identity, container credentials or a metadata endpoint do not count.
    let other = env(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/token"),
        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds"),
        ("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9"),
    ]);
    assert!(matches!(roots::s3_store("bucket", None, &other).unwrap_err(), MigrateError::Credentials(_)));
    let err = roots::s3_store("bucket", None, &env(&[("AWS_SECRET_ACCESS_KEY", "x")])).unwrap_err();
    assert!(err.to_string().contains("only one of"), "{err}");
    roots::s3_store("bucket", None, &env(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")])).unwrap();
    roots::s3_store("bucket", None, &env(&[("AWS_SKIP_SIGNATURE", "true")])).unwrap();
}

/// A loopback HTTP server answering 404 to everything; records the request heads.
async fn fake_s3() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                log.lock().unwrap().push(String::from_utf8_lossy(&buf).to_lowercase());
                let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>no</Message></Error>";
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn object_store_roots_contact_their_endpoint_with_their_credentials() {
    let (endpoint, seen) = fake_s3().await;
    let anon = root("s3://public/data/", Some(&endpoint), Credentials::Anonymous);
    let store = roots::s3_store("public", Some(&anon), &Env::default()).unwrap();
    let err = store.get(&ObjectPath::from("data/x.csv")).await.unwrap_err();
    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("get /public/data/x.csv"), "{}", seen[0]);
        assert!(!seen[0].contains("authorization:"), "anonymous requests are unsigned: {}", seen[0]);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds");
    std::fs::write(&file, "access_key_id=AKIDFROMFILE\nsecret_access_key=s3cr3t\n").unwrap();
    let signed = root("s3://private/", Some(&endpoint), Credentials::File(file.display().to_string()));
    let store = roots::s3_store("private", Some(&signed), &Env::default()).unwrap();
    assert!(store.get(&ObjectPath::from("k.csv")).await.is_err());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].contains("authorization: aws4-hmac-sha256 credential=akidfromfile/"), "{}", seen[1]);
}
