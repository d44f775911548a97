//! The container image running a cluster: the repository's `Dockerfile` is
//! built with Debian's podman (`deploy/docker/build-image.sh`: the base from
//! Debian's packages with mmdebstrap, the workspace's own binaries; both
//! cached, the image built again only when its inputs changed), then three
//! containers of it form a cluster the way deploy/README.md recommends and
//! the Kubernetes StatefulSet does (deploy/kubernetes/base/members):
//!
//! - members `--id-from-hostname` (host names `skein-0..2`), all started at
//!   once with `--bootstrap-expect 3 --join <the three>`, the first admin
//!   token from a mounted secret (`--admin-token-file`), and `SKEIN_TOKEN`
//!   (the members but the first join with it);
//! - TLS from `skein cert ca` / `skein cert node`, mounted as one read-only
//!   bundle of every member's certificate (`SKEIN_TLS_BUNDLE`) that the
//!   image's entrypoint links into a tmpfs (`SKEIN_TLS_DIR`);
//! - non-root (the image's uid 10001), a read-only root file system, no
//!   capabilities, no new privileges.
//!
//! Then it checks that the three are one cluster (a leader, two voters, the
//! addresses given), that the nodes run as uid 10001, that the image's
//! health check passes, that a call without a token is refused and plain
//! HTTP is not answered, that the image's own `skein` CLI works from
//! inside a container, and runs a real migration through a follower with
//! the host's `skein` CLI: the seed's plan (examples/plans/catalog-info.yaml,
//! CSV -> Parquet with SQL, validated), in a folder every container mounts
//! at the same path, after allowing that folder as a data root (a new
//! cluster enforces its policy); the task must succeed with every row
//! written, the Parquet files owned by the containers' user, and `plan run
//! --wait` must report the same run succeeded. Last, a SIGTERM (`podman
//! stop`) drains a member and it exits 0 after closing its store.
//!
//! The containers share the host's network (`--network host`) and listen on
//! free loopback ports only. They are removed (`podman rm -f`) when the test
//! ends, failed or not (a guard), and those a killed run left behind are
//! removed by the next run. A failed test prints the end of each
//! container's log.
//!
//! Needs root, podman, runc and mmdebstrap (`scripts/deps.sh` installs them),
//! Debian's package mirror the first time (the base image), and the binaries
//! (`cargo build --workspace --bins --locked`). A missing tool fails the
//! test, it never skips. Podman runs with build-image.sh's `containers.conf`
//! (runc, cgroupfs, no default ulimits: this kind of machine needs them).

use std::collections::BTreeSet;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use skein_raft::fsm::TaskStatus;
use skein_testkit::auth::admin_token;
use skein_testkit::process::{free_port, Binaries};
use skein_testkit::{wait_for, Api};
use skein_tests::checks::say;

/// The image the test builds and runs (not build-image.sh's default tag, so
/// that a person's own build is left alone).
const IMAGE: &str = "localhost/skein-node:test";
/// The image's user (the Dockerfile's `skein`).
const UID: u32 = 10001;
/// The label every container of this test carries, and the one with the
/// test process's pid (a later run removes those whose process is gone).
const LABEL: &str = "skein.test=containers";
const PID_LABEL: &str = "skein.test.pid";
/// The whole test, the image build included: a cold build (the base with
/// mmdebstrap, then the image) takes some 2 minutes on 2 cores.
const TEST_TIMEOUT: Duration = Duration::from_secs(480);
/// The image build alone (build-image.sh), cold.
const BUILD_SECONDS: u32 = 360;
/// Each container to answer `/readyz`, and the three to be one cluster.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The migration, from `plan run` to its end.
const MIGRATION_SECONDS: u64 = 120;
const PLAN: &str = "customer-dataset-v2-migration";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `program args` under `timeout(1)` (every step here is bounded),
/// with podman's settings in the environment.
fn run(conf: &Path, seconds: u32, program: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new("timeout")
        .arg("--kill-after=5")
        .arg(seconds.to_string())
        .arg(program)
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))
}

/// `podman args`, which must succeed; its stdout.
fn podman(conf: &Path, seconds: u32, args: &[&str]) -> anyhow::Result<String> {
    let o = run(conf, seconds, "podman", args)?;
    ensure!(o.status.success(), "podman {} failed ({}): {}", args.join(" "), o.status, text(&o));
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Fails, saying to run scripts/deps.sh, if a tool is missing or this is
/// not root.
fn need_tools() -> anyhow::Result<()> {
    for tool in ["podman", "runc", "mmdebstrap", "strip", "timeout", "flock"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output()?.status.success();
        ensure!(found, "no `{tool}` on PATH: run scripts/deps.sh (it installs what the container test needs)");
    }
    let uid = Command::new("id").arg("-u").output()?;
    ensure!(String::from_utf8_lossy(&uid.stdout).trim() == "0", "the container test runs podman as root (CI does)");
    Ok(())
}

/// Builds (or finds up to date) the image from these binaries; returns
/// podman's settings file.
fn build_image(bins: &Binaries) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let bin_dir = bins.node.parent().context("the binaries' folder")?;
    let work = PathBuf::from("/var/tmp/skein-image");
    let script = repo().join("deploy/docker/build-image.sh");
    let o = Command::new("timeout")
        .arg("--kill-after=10")
        .arg(BUILD_SECONDS.to_string())
        .arg(&script)
        .arg(IMAGE)
        .env("SKEIN_BIN_DIR", bin_dir)
        .env("SKEIN_IMAGE_WORK", &work)
        .env_remove("EXTRA_PACKAGES")
        .env_remove("SKEIN_IMAGE_REBUILD")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
    ensure!(o.status.success(), "build-image.sh {IMAGE} failed ({}):\n{}", o.status, tail.join("\n"));
    say(format!(
        "image {IMAGE} ready in {:.1} s: {} ({})",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&o.stdout).trim(),
        if stderr.contains("is up to date") { "cached" } else { "built" }
    ));
    Ok(work.join("containers.conf"))
}

/// The prefix of this test's temporary folder (under the system's temp
/// dir), followed by the test process's pid.
const TEMP_PREFIX: &str = "skein-containers-";

/// Removes the containers and temporary folders (some 200 MB each) of
/// earlier runs of this test whose process is gone (a run killed before
/// its guard could).
fn remove_stale(conf: &Path) -> anyhow::Result<()> {
    let filter = format!("label={LABEL}");
    let format = format!("{{{{.Names}}}} {{{{index .Labels \"{PID_LABEL}\"}}}}");
    let listed = podman(conf, 30, &["ps", "-a", "--filter", &filter, "--format", &format])?;
    for line in listed.lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), pid) = (parts.next(), parts.next()) else { continue };
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            say(format!("removing {name}, left behind by an earlier run"));
            let _ = run(conf, 60, "podman", &["rm", "-f", "-v", "-t", "0", name]);
        }
    }
    for entry in std::fs::read_dir(std::env::temp_dir())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(TEMP_PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            say(format!("removing {}, left behind by an earlier run", entry.path().display()));
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The test's containers: removed (`podman rm -f`) when dropped, after
/// printing the end of their logs if the test is failing.
struct Containers {
    conf: PathBuf,
    names: Vec<String>,
}

impl Containers {
    fn logs(&self, name: &str, lines: usize) -> String {
        match run(&self.conf, 30, "podman", &["logs", "--tail", &lines.to_string(), name]) {
            Ok(o) => text(&o),
            Err(e) => format!("(no logs: {e:#})"),
        }
    }

    fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in &self.names {
            out.push_str(&format!("---- container {name}, its log ends with:\n{}\n", self.logs(name, lines)));
        }
        out
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("==== the test failed; the end of each container's log:\n{}", self.log_tails(60));
        }
        let mut args = vec!["rm", "-f", "-v", "-t", "0"];
        args.extend(self.names.iter().map(String::as_str));
        match run(&self.conf, 120, "podman", &args) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("podman rm -f {} failed: {}", self.names.join(" "), text(&o)),
            Err(e) => eprintln!("podman rm -f {} failed: {e:#}", self.names.join(" ")),
        }
    }
}

/// `path` and what is under it owned by `uid:gid`, with `mode` on files.
fn give(path: &Path, uid: u32, gid: u32, dir_mode: u32, file_mode: u32) -> anyhow::Result<()> {
    chown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode))?;
        for entry in std::fs::read_dir(path)? {
            give(&entry?.path(), uid, gid, dir_mode, file_mode)?;
        }
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode))?;
    }
    Ok(())
}

/// Runs the host's `skein` CLI against the cluster (TLS, the admin token);
/// its stdout, or an error with its output.
fn cli(bins: &Binaries, ca: Option<&Path>, addrs: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=5").arg((MIGRATION_SECONDS + 30).to_string()).arg(&bins.cli).arg("--addr").arg(addrs);
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    let o = cmd
        .args(args)
        .env("SKEIN_TOKEN", admin_token())
        .env_remove("SKEIN_ADDR")
        .env_remove("SKEIN_CA")
        .output()
        .with_context(|| format!("running skein {}", args.join(" ")))?;
    ensure!(o.status.success(), "skein {} failed ({}): {}", args.join(" "), o.status, text(&o));
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// One member: its container's name, host name, id and loopback addresses.
struct Member {
    name: String,
    id: u64,
    http: String,
    rpc: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_containers_of_the_image_form_a_secure_cluster_and_migrate() {
    let started = Instant::now();
    match tokio::time::timeout(TEST_TIMEOUT, body()).await {
        Ok(Ok(())) => say(format!("the container test took {:.1} s", started.elapsed().as_secs_f64())),
        Ok(Err(e)) => panic!("{e:?}"),
        Err(_) => panic!("the container test did not finish within {TEST_TIMEOUT:?}"),
    }
}

async fn body() -> anyhow::Result<()> {
    need_tools()?;
    let bins = Binaries::locate()?;
    let conf = build_image(&bins)?;
    remove_stale(&conf)?;

    // Files on the host, each mounted into the containers.
    let pid = std::process::id();
    let tmp = tempfile::Builder::new().prefix(&format!("{TEMP_PREFIX}{pid}-")).tempdir()?;
    let root = tmp.path().to_path_buf();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
    let ca_dir = root.join("ca");
    let bundle = root.join("tls-bundle");
    let secrets = root.join("secrets");
    let work = root.join("work");
    for dir in [&bundle, &secrets, &work] {
        std::fs::create_dir_all(dir)?;
    }

    let mut members = Vec::new();
    for i in 0..3u64 {
        members.push(Member {
            name: format!("skein-test-{pid}-{i}"),
            id: i + 1,
            http: format!("127.0.0.1:{}", free_port()?),
            rpc: format!("127.0.0.1:{}", free_port()?),
        });
    }
    let all_http: Vec<&str> = members.iter().map(|m| m.http.as_str()).collect();
    let join = all_http.join(",");

    // TLS as deploy/README.md says: a CA, a certificate per member naming the
    // addresses clients dial, gathered in one bundle as the StatefulSet's
    // Secret is (ca.pem, node-<id>.pem, node-<id>.key; group skein, 0440).
    cli(&bins, None, &join, &["cert", "ca", "--dir", &ca_dir.display().to_string()])?;
    for m in &members {
        let out = root.join(format!("issued/node-{}", m.id));
        cli(
            &bins,
            None,
            &join,
            &[
                "cert",
                "node",
                "--ca-dir",
                &ca_dir.display().to_string(),
                "--id",
                &m.id.to_string(),
                "--host",
                "127.0.0.1",
                "--host",
                "localhost",
                "--out",
                &out.display().to_string(),
            ],
        )?;
        std::fs::copy(out.join("node.pem"), bundle.join(format!("node-{}.pem", m.id)))?;
        std::fs::copy(out.join("node.key"), bundle.join(format!("node-{}.key", m.id)))?;
    }
    let ca = ca_dir.join("ca.pem");
    std::fs::copy(&ca, bundle.join("ca.pem"))?;
    give(&bundle, 0, UID, 0o750, 0o440)?;
    // The first admin token, from a secret (`skein token generate` makes
    // one; the testkit's is this process's, which its clients send).
    std::fs::write(secrets.join("admin.token"), format!("{}\n", admin_token()))?;
    give(&secrets, 0, UID, 0o750, 0o440)?;
    // The migration's folder: the seed's plan and its dataset, at the same
    // path on the host and in every container (the plan's paths are made
    // absolute by `skein plan apply` on the host).
    std::fs::create_dir_all(work.join("plans"))?;
    std::fs::create_dir_all(work.join("data"))?;
    std::fs::copy(repo().join("examples/plans/catalog-info.yaml"), work.join("plans/catalog-info.yaml"))?;
    std::fs::copy(repo().join("examples/data/customers.csv"), work.join("data/customers.csv"))?;
    give(&work, UID, UID, 0o755, 0o644)?;
    let rows = std::fs::read_to_string(work.join("data/customers.csv"))?.lines().skip(1).count() as u64;

    // The three members, started at once.
    let mut containers = Containers { conf: conf.clone(), names: Vec::new() };
    let starting = Instant::now();
    for (i, m) in members.iter().enumerate() {
        let data = root.join(format!("data-{}", m.id));
        std::fs::create_dir_all(&data)?;
        give(&data, UID, UID, 0o700, 0o600)?;
        let pid_label = format!("{PID_LABEL}={pid}");
        let hostname = format!("skein-{i}");
        let data_mount = format!("{}:/var/lib/skein", data.display());
        let bundle_mount = format!("{}:/etc/skein/tls-bundle:ro", bundle.display());
        let token_mount = format!("{}:/run/secrets/admin.token:ro", secrets.join("admin.token").display());
        let work_mount = format!("{0}:{0}", work.display());
        // `U`: owned by the container's user (the entrypoint links into it).
        let tls_tmpfs = "/run/skein/tls:rw,mode=0700,U";
        let env_http = format!("SKEIN_HTTP={}", m.http);
        let env_listen = format!("SKEIN_LISTEN={}", m.rpc);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &m.name,
            "--label",
            LABEL,
            "--label",
            &pid_label,
            "--network",
            "host",
            "--hostname",
            &hostname,
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            tls_tmpfs,
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &data_mount,
            "-v",
            &bundle_mount,
            "-v",
            &token_mount,
            "-v",
            &work_mount,
            // The StatefulSet's settings; the addresses through the
            // environment, so that the image's health check finds the port.
            "-e",
            "SKEIN_TLS_BUNDLE=/etc/skein/tls-bundle",
            "-e",
            "SKEIN_TLS_DIR=/run/skein/tls",
            // A token for the members after the first (the lowest id
            // bootstraps alone; the others join it). Under mutual TLS they
            // could join with their certificates alone
            // (`bootstrap_expect_members_join_with_their_certificates_and_no_token`
            // in workers.rs); the test gives them the cluster's first admin
            // token anyway, from podman's environment (not on the command
            // line), as the harness does for every node.
            "-e",
            "SKEIN_TOKEN",
            "-e",
            &env_http,
            "-e",
            &env_listen,
            IMAGE,
        ];
        args.extend([
            "--id-from-hostname",
            "--role=member",
            "--bootstrap-expect=3",
            "--join",
            &join,
            "--voters=3",
            "--standby-learners=0",
            "--drain-timeout=10",
            "--admin-token-file=/run/secrets/admin.token",
        ]);
        let name = m.name.clone();
        // Registered before it runs: a `podman run` that fails half way
        // may have left the container.
        containers.names.push(name);
        let o = Command::new("timeout")
            .args(["--kill-after=5", "60", "podman"])
            .args(&args)
            .env("CONTAINERS_CONF", &conf)
            .env("SKEIN_TOKEN", admin_token())
            .output()
            .context("running podman run")?;
        ensure!(o.status.success(), "podman {} failed ({}): {}", args.join(" "), o.status, text(&o));
    }
    say(format!("started {} containers in {:.1} s", members.len(), starting.elapsed().as_secs_f64()));

    let api = Api::with_timeout(Duration::from_secs(10)).with_ca(&ca)?;
    let result = async {
        // Every member ready, then one cluster of three.
        for m in &members {
            wait_for(READY_TIMEOUT, &format!("{} ({}) to be ready", m.name, m.http), async || {
                Ok(api.ready(&m.http).await?.then_some(()))
            })
            .await?;
        }
        let status = wait_for(READY_TIMEOUT, "a leader and two voters", async || {
            let s = api.cluster(&members[0].http).await?;
            let voters = s.nodes.iter().filter(|n| n.role == "voter").count();
            Ok((s.leader.is_some() && s.nodes.len() == 3 && voters == 2).then_some(s))
        })
        .await?;
        say(format!("the cluster formed {:.1} s after the containers started", starting.elapsed().as_secs_f64()));
        let ids: BTreeSet<u64> = status.nodes.iter().map(|n| n.id).collect();
        ensure!(ids == BTreeSet::from([1, 2, 3]), "members {ids:?}, not the ids of skein-0..2");
        let roles: Vec<&str> = status.nodes.iter().map(|n| n.role.as_str()).collect();
        ensure!(
            roles.iter().filter(|r| **r == "leader").count() == 1
                && roles.iter().filter(|r| **r == "voter").count() == 2,
            "roles {roles:?}: want a leader and two voters"
        );
        for m in &members {
            let n = status.nodes.iter().find(|n| n.id == m.id).context("a member's row")?;
            ensure!(
                n.http_addr == m.http && n.rpc_addr == m.rpc,
                "node {} is at {} / {}, its container {} listens on {} / {}",
                m.id,
                n.http_addr,
                n.rpc_addr,
                m.name,
                m.http,
                m.rpc
            );
        }
        // Every member agrees on the leader.
        let leader = status.leader.context("no leader")?;
        for m in &members {
            let s = api.cluster(&m.http).await?;
            ensure!(s.leader == Some(leader), "{} sees leader {:?}, node 1 sees {leader}", m.name, s.leader);
        }

        // Each container: the node runs as the image's user, and the image's
        // health check (HTTPS /readyz over the container's loopback) passes.
        for m in &members {
            let pid = podman(&conf, 30, &["inspect", "--format", "{{.State.Pid}}", &m.name])?;
            let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))?;
            let uid = status.lines().find(|l| l.starts_with("Uid:")).context("no Uid line")?;
            ensure!(
                uid.split_whitespace().skip(1).all(|u| u == UID.to_string()),
                "{}'s process runs as {uid}, not uid {UID}",
                m.name
            );
            let o = run(&conf, 30, "podman", &["healthcheck", "run", &m.name])?;
            ensure!(o.status.success(), "{}'s health check failed: {}", m.name, text(&o));
        }
        // Tokens are enforced from the first second.
        let anonymous = Api::with_timeout(Duration::from_secs(10)).with_ca(&ca)?.without_token();
        let reply = anonymous.raw(Method::GET, &members[1].http, "/api/v1/cluster", None).await?;
        ensure!(reply.status == StatusCode::UNAUTHORIZED, "a call without a token answered {}", reply.status);
        // And the API is HTTPS only: plain HTTP gets no answer.
        let plain = Api::with_timeout(Duration::from_secs(5));
        if let Ok(reply) = plain.raw(Method::GET, &members[1].http, "/api/v1/cluster", None).await {
            bail!("plain HTTP was answered {} {}", reply.status, reply.body);
        }
        // The image's own CLI, inside a member, over HTTPS with the bundle's CA.
        let token_env = format!("SKEIN_TOKEN={}", admin_token());
        let inside = podman(
            &conf,
            60,
            &[
                "exec",
                "-e",
                &token_env,
                &members[2].name,
                "skein",
                "--ca",
                "/run/skein/tls/ca.pem",
                "--addr",
                &members[0].http,
                "cluster",
                "status",
            ],
        )?;
        say(format!("skein cluster status, run inside {}:\n{}", members[2].name, inside.trim_end()));
        ensure!(
            inside.matches("voter").count() == 2 && inside.contains("leader"),
            "the CLI inside the container shows:\n{inside}"
        );

        // A real migration, submitted through a follower.
        let follower = members.iter().find(|m| m.id != leader).context("no follower")?;
        let root_url = format!("file://{}/", work.display());
        cli(&bins, Some(&ca), &follower.http, &["roots", "allow", &root_url])?;
        let plan_file = work.join("plans/catalog-info.yaml");
        cli(&bins, Some(&ca), &follower.http, &["plan", "apply", &plan_file.display().to_string()])?;
        let migrating = Instant::now();
        let out = cli(&bins, Some(&ca), &follower.http, &["-o", "json", "plan", "run", PLAN])?;
        let runs: Value = serde_json::from_str(&out).with_context(|| format!("plan run's output: {out}"))?;
        let run = match runs["runs"].as_array().map(Vec::as_slice) {
            Some([run]) => run.clone(),
            _ => bail!("plan run {PLAN} answered {runs}, not one run"),
        };
        ensure!(run["created"] == true, "plan run {PLAN} started nothing: {run}");
        let id = run["task"].as_u64().context("the run's task id")?;
        // Waited for here, on the follower, rather than with `plan run
        // --wait`: that returns at once, with no task, when the follower has
        // not applied the new task yet (it takes a task it does not list for
        // one that ended long ago).
        let task =
            wait_for(Duration::from_secs(MIGRATION_SECONDS), &format!("migration task {id} to end"), async || {
                let t = api.task(&follower.http, id).await?.task;
                Ok(t.status.is_terminal().then_some(t))
            })
            .await?;
        ensure!(task.status == TaskStatus::Succeeded, "the migration ended {}: {:?}", task.status, task.last_error);
        // Run again, it is the same run, which `--wait` reports succeeded.
        let again = cli(
            &bins,
            Some(&ca),
            &follower.http,
            &["-o", "json", "plan", "run", PLAN, "--wait", "--timeout", &MIGRATION_SECONDS.to_string()],
        )?;
        let again: Value =
            serde_json::from_str(&again).with_context(|| format!("plan run --wait's output: {again}"))?;
        ensure!(
            again["runs"][0]["created"] == false
                && again["tasks"][0]["id"] == id
                && again["tasks"][0]["status"] == "succeeded",
            "plan run {PLAN} --wait, again: {again}"
        );
        let detail = api.task(&members[0].http, id).await?;
        let result = detail.result.context("the migration has no result")?;
        ensure!(
            result["migration"]["rows_written"] == rows,
            "the migration wrote {} rows, the dataset has {rows}: {result}",
            result["migration"]["rows_written"]
        );
        let ran_on = detail.task.last_node.map_or("?".to_string(), |n| n.to_string());
        say(format!(
            "migration task {id} succeeded in {:.1} s ({rows} rows, CSV -> Parquet, on node {ran_on})",
            migrating.elapsed().as_secs_f64()
        ));
        // Published under the shared folder, written by the containers' user.
        let target = work.join("out/customers-v2");
        let parquet: Vec<PathBuf> = std::fs::read_dir(&target)
            .with_context(|| format!("the migration's target {}", target.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        ensure!(!parquet.is_empty(), "no Parquet file in {}", target.display());
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(&parquet[0])?.uid();
        ensure!(owner == UID, "{} is owned by uid {owner}, not the image's {UID}", parquet[0].display());

        // SIGTERM drains a member and it exits 0 once its store is closed
        // (tini passes the signal on).
        let stopping = Instant::now();
        podman(&conf, 60, &["stop", "-t", "40", &follower.name])?;
        let code = podman(&conf, 30, &["inspect", "--format", "{{.State.ExitCode}}", &follower.name])?;
        ensure!(code.trim() == "0", "{} exited {} after SIGTERM", follower.name, code.trim());
        let log = containers.logs(&follower.name, 200);
        ensure!(log.contains("StoreClosed"), "{}'s log does not end with StoreClosed:\n{log}", follower.name);
        say(format!("{} drained and exited 0 in {:.1} s", follower.name, stopping.elapsed().as_secs_f64()));
        Ok(())
    }
    .await;
    if let Err(e) = result {
        bail!("{e:?}\n{}", containers.log_tails(40));
    }
    drop(containers);
    Ok(())
}
