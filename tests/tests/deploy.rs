//! The deployment files of `deploy/` and the `Dockerfile`, checked without a
//! cluster (deploy/README.md says what they are):
//!
//! - every kustomization renders (`kubectl kustomize`), every built-in object
//!   of it passes Kubernetes' schemas (kubernetes-validate from PyPI, strict,
//!   for the oldest and newest release it knows of that we support), every
//!   custom resource (KEDA's ScaledObject and TriggerAuthentication,
//!   prometheus-operator's ServiceMonitor) passes its CRD's schema (vendored
//!   in deploy/kubernetes/crds/), and what refers to what exists
//!   (deploy/kubernetes/check.py does those);
//! - every container that would run, with its args and env as the kubelet
//!   would expand them, goes through the image's entrypoint
//!   (deploy/docker/entrypoint.sh) to `skein-node --check-config`, in a UTS
//!   namespace whose host name is the pod's: the node must accept it, and
//!   take the id and the certificate of that pod;
//! - the systemd unit passes `systemd-analyze verify`, its `ExecStart` with its
//!   environment file passes `--check-config`, and its
//!   `systemd-analyze security` exposure is printed.
//!
//! Needs `kubectl`, `systemd-analyze`, `unshare` and the Python packages
//! kubernetes-validate, jsonschema and PyYAML: `scripts/deps.sh` installs
//! them. A missing tool fails the test (it says so), it never skips. And the
//! binaries: `cargo build --workspace --bins --locked` first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use skein_testkit::process::Binaries;
use skein_tests::checks::say;

/// The kustomizations a user applies (the Secrets' are rendered separately,
/// from stand-in files).
/// (base/monitoring is checked inside the overlays: on its own, its
/// ServiceMonitor has no members' Service to select.)
const KUSTOMIZATIONS: &[&str] = &["base/members", "base/workers", "overlays/example", "overlays/five-members"];

/// Kubernetes releases the built-in objects must be valid in: the oldest
/// still maintained when this was written (1.29: the apps/v1, policy/v1 and
/// probe fields used here are all older) and the newest kubernetes-validate
/// knows.
const KUBERNETES: &[&str] = &["1.29.0", "1.37.0"];

fn repo() -> PathBuf {
    // Normalized: systemd refuses a unit's paths with `..` in them.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// Runs a command under `timeout` (every step here is bounded), returning
/// its output; `what` names it in errors.
fn run(what: &str, seconds: u32, cmd: &mut Command) -> anyhow::Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut bounded = Command::new("timeout");
    bounded.arg("--kill-after=5").arg(seconds.to_string()).arg(&program).args(&args);
    if let Some(dir) = cmd.get_current_dir() {
        bounded.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => bounded.env(k, v),
            None => bounded.env_remove(k),
        };
    }
    bounded.output().with_context(|| format!("{what}: running {program}"))
}

/// Fails, saying to run scripts/deps.sh, if a tool is missing.
fn need_tools() -> anyhow::Result<()> {
    for tool in ["kubectl", "systemd-analyze", "unshare", "python3", "timeout"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output()?.status.success();
        ensure!(found, "no `{tool}` on PATH: run scripts/deps.sh (it installs what the deploy tests need)");
    }
    let py = Command::new("python3").arg("-c").arg("import kubernetes_validate, jsonschema, yaml").output()?;
    ensure!(
        py.status.success(),
        "python3 lacks kubernetes-validate, jsonschema or PyYAML: run scripts/deps.sh ({})",
        String::from_utf8_lossy(&py.stderr).trim()
    );
    Ok(())
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `kubectl kustomize DIR` into `out`.
fn render(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let o = run("kubectl kustomize", 60, Command::new("kubectl").arg("kustomize").arg(dir))?;
    ensure!(o.status.success(), "kubectl kustomize {}: {}", dir.display(), text(&o));
    std::fs::write(out, &o.stdout)?;
    Ok(())
}

/// The Secrets' kustomizations, rendered from stand-in files in a copy
/// (the real ones are never in the repository): the names the pods may use.
fn render_secrets(work: &Path) -> anyhow::Result<PathBuf> {
    let src = repo().join("deploy/kubernetes/secrets");
    let mut all = String::new();
    for (dir, files) in [
        (
            "tls",
            &[
                "members/ca.pem",
                "members/node-1.pem",
                "members/node-1.key",
                "members/node-2.pem",
                "members/node-2.key",
                "members/node-3.pem",
                "members/node-3.key",
                "worker/ca.pem",
                "worker/node.pem",
                "worker/node.key",
            ][..],
        ),
        ("tokens", &["join.token", "read.token"][..]),
    ] {
        let copy = work.join("secrets").join(dir);
        std::fs::create_dir_all(&copy)?;
        std::fs::copy(src.join(dir).join("kustomization.yaml"), copy.join("kustomization.yaml"))?;
        for f in files {
            let path = copy.join("files").join(f);
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(&path, format!("stand-in for {f}\n"))?;
        }
        let out = work.join(format!("secrets-{dir}.yaml"));
        render(&copy, &out)?;
        all.push_str("---\n");
        all.push_str(&std::fs::read_to_string(&out)?);
    }
    let path = work.join("secrets.yaml");
    std::fs::write(&path, all)?;
    Ok(path)
}

/// Runs one container of a rendered pod through the image's entrypoint to
/// `skein-node --check-config`, as the pod's host name. Mount paths are
/// moved into `work`: the TLS bundle holds stand-in certificates for ids
/// 1..=5, as the Secret does. Returns what --check-config printed.
fn check_container(bins: &Binaries, pod: &Value, work: &Path) -> anyhow::Result<String> {
    let name = pod["pod"].as_str().context("pod name")?;
    ensure!(pod["command"].is_null(), "{name}: the container sets a command: it must run the image's entrypoint");
    let mut env: BTreeMap<String, String> = pod["env"]
        .as_object()
        .context("env")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").into()))
        .collect();
    let sandbox = work.join("pods").join(name);
    let bundle = sandbox.join("tls-bundle");
    std::fs::create_dir_all(&bundle)?;
    std::fs::write(bundle.join("ca.pem"), "ca")?;
    for id in 1..=5 {
        std::fs::write(bundle.join(format!("node-{id}.pem")), format!("cert {id}"))?;
        std::fs::write(bundle.join(format!("node-{id}.key")), format!("key {id}"))?;
    }
    if env.contains_key("SKEIN_TLS_BUNDLE") {
        env.insert("SKEIN_TLS_BUNDLE".into(), bundle.display().to_string());
        env.insert("SKEIN_TLS_DIR".into(), sandbox.join("tls").display().to_string());
    }
    let bin_dir = bins.node.parent().context("bin dir")?;
    env.insert("PATH".into(), format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display()));
    let entrypoint = repo().join("deploy/docker/entrypoint.sh");
    let args: Vec<String> =
        pod["args"].as_array().context("args")?.iter().map(|a| a.as_str().unwrap_or("").to_string()).collect();
    // A UTS namespace with the pod's host name (as root, or in a user
    // namespace of our own otherwise).
    let mut cmd = Command::new("unshare");
    if !is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", name])
        .arg("sh")
        .arg(&entrypoint)
        .args(&args)
        .arg("--check-config")
        .env_clear()
        .envs(&env);
    let o = run(&format!("{name}'s container"), 30, &mut cmd)?;
    ensure!(
        o.status.success(),
        "{name} ({}): skein-node refused the rendered command (exit {:?}):\n  args: {args:?}\n  {}",
        pod["workload"],
        o.status.code(),
        text(&o)
    );
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    // A StatefulSet pod skein-N is node N+1, and its TLS dir links that
    // node's certificate out of the bundle.
    if pod["workload"].as_str().is_some_and(|w| w.starts_with("StatefulSet/")) {
        let ordinal: u64 = name.rsplit('-').next().context("ordinal")?.parse()?;
        let id = ordinal + 1;
        ensure!(printed.contains(&format!("id: {id},")), "{name} should be node {id}:\n{printed}");
        let linked = std::fs::read_to_string(sandbox.join("tls/node.pem"))?;
        ensure!(
            linked == format!("cert {id}"),
            "{name}: the entrypoint linked {linked:?}, not node {id}'s certificate"
        );
        std::fs::read_to_string(sandbox.join("tls/node.key"))?;
        std::fs::read_to_string(sandbox.join("tls/ca.pem"))?;
    }
    Ok(printed)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

#[test]
fn kubernetes_manifests_validate_and_the_node_accepts_every_container() {
    let started = Instant::now();
    need_tools().unwrap();
    let bins = Binaries::locate().unwrap();
    let work = tempfile::tempdir().unwrap();
    let secrets = render_secrets(work.path()).unwrap();
    let k8s = repo().join("deploy/kubernetes");
    let crds: Vec<PathBuf> = std::fs::read_dir(k8s.join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(crds.len() >= 3, "the CRDs of ScaledObject, TriggerAuthentication and ServiceMonitor are vendored");
    let mut failures = Vec::new();
    for dir in KUSTOMIZATIONS {
        let result = (|| -> anyhow::Result<()> {
            let rendered = work.path().join(format!("{}.yaml", dir.replace('/', "-")));
            render(&k8s.join(dir), &rendered)?;
            let mut check = Command::new("python3");
            check
                .arg(k8s.join("check.py"))
                .arg("--dockerfile")
                .arg(repo().join("Dockerfile"))
                .arg("--secrets")
                .arg(&secrets)
                .arg("--crds")
                .args(&crds);
            for v in KUBERNETES {
                check.arg("--k8s").arg(v);
            }
            check.arg(&rendered);
            let o = run("check.py", 120, &mut check)?;
            ensure!(o.status.success(), "{dir}: {}", String::from_utf8_lossy(&o.stderr));
            let report: Value = serde_json::from_slice(&o.stdout).context("check.py's JSON")?;
            let pods = report["pods"].as_array().context("pods")?;
            say(format!(
                "{dir}: {} built-in and {} custom objects valid, {} pods to check",
                report["builtin"],
                report["custom"],
                pods.len()
            ));
            for pod in pods {
                let grace = pod["termination_grace"].as_u64().unwrap_or(30);
                if let Some(drain) = pod["drain_timeout"].as_u64() {
                    ensure!(
                        grace > drain + 5,
                        "{}: terminationGracePeriodSeconds {grace} must exceed --drain-timeout {drain} (and the preStop sleep)",
                        pod["pod"]
                    );
                } else {
                    bail!("{}: give --drain-timeout explicitly, to size the grace period by it", pod["pod"]);
                }
                check_container(&bins, pod, work.path())?;
            }
            let members = pods.iter().filter(|p| p["workload"] == "StatefulSet/skein").count();
            let workers = pods.iter().filter(|p| p["workload"] == "Deployment/skein-worker").count();
            match *dir {
                "base/members" => ensure!(members == 3 && workers == 0, "{dir}: {members} members, {workers} workers"),
                "base/workers" => ensure!(members == 0 && workers == 1, "{dir}: {members} members, {workers} workers"),
                "overlays/example" => ensure!(members == 3 && workers == 1, "{dir}: {members} members"),
                "overlays/five-members" => ensure!(members == 5 && workers == 1, "{dir}: {members} members"),
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{dir}: {e:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    say(format!("kubernetes manifests checked in {:.1}s", started.elapsed().as_secs_f64()));
}

#[test]
fn the_image_entrypoint_refuses_a_pod_it_cannot_name() {
    let bins = Binaries::locate().unwrap();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("ca.pem"), "ca").unwrap();
    let entrypoint = repo().join("deploy/docker/entrypoint.sh");
    let path = format!("{}:/usr/bin:/bin", bins.node.parent().unwrap().display());
    let tls = work.path().join("tls").display().to_string();
    // No node-2.pem for SKEIN_ID=2: refused before skein-node starts, saying what to issue.
    let o = run(
        "entrypoint",
        20,
        Command::new("sh").arg(&entrypoint).arg("--check-config").env_clear().envs([
            ("PATH", path.as_str()),
            ("SKEIN_TLS_BUNDLE", bundle.to_str().unwrap()),
            ("SKEIN_TLS_DIR", tls.as_str()),
            ("SKEIN_ID", "2"),
        ]),
    )
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("skein cert node --id 2"), "{}", text(&o));
    // Without a bundle it is skein-node itself: the image's defaults alone
    // (no --listen, no --id) are refused with the reason.
    let o = run(
        "entrypoint",
        20,
        Command::new("sh").arg(&entrypoint).arg("--check-config").env_clear().envs([
            ("PATH", path.as_str()),
            ("SKEIN_DATA_DIR", "/var/lib/skein"),
            ("SKEIN_TLS_DIR", tls.as_str()),
        ]),
    )
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // The Dockerfile's promises: non-root, a volume, a health check, the entrypoint.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for line in ["USER skein", "VOLUME [\"/var/lib/skein\"]", "HEALTHCHECK", "skein-entrypoint\"]", "EXPOSE 7700 7800"]
    {
        assert!(dockerfile.contains(line), "the Dockerfile has no {line:?}");
    }
}

#[test]
fn the_systemd_unit_verifies_and_the_node_accepts_its_environment() {
    let started = Instant::now();
    need_tools().unwrap();
    let bins = Binaries::locate().unwrap();
    let dir = repo().join("deploy/systemd");
    let unit = std::fs::read_to_string(dir.join("skein-node.service")).unwrap();
    let env_file = dir.join("skein-node.env");
    let env: Vec<(String, String)> = std::fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    // systemd-analyze wants ExecStart's binary to exist: a copy of the unit
    // that starts the built one, with the environment file of the repository.
    let work = tempfile::tempdir().unwrap();
    let exec_start = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart=");
    let mut parts = exec_start.split_whitespace();
    assert_eq!(parts.next(), Some("/usr/local/bin/skein-node"));
    let exec_args: Vec<&str> = parts.collect();
    let copy = unit
        .replace("ExecStart=/usr/local/bin/skein-node", &format!("ExecStart={}", bins.node.display()))
        .replace("EnvironmentFile=/etc/skein/skein-node.env", &format!("EnvironmentFile={}", env_file.display()));
    let copy_path = work.path().join("skein-node.service");
    std::fs::write(&copy_path, copy).unwrap();
    let o = run("systemd-analyze verify", 60, Command::new("systemd-analyze").arg("verify").arg(&copy_path)).unwrap();
    assert!(o.status.success() && text(&o).trim().is_empty(), "systemd-analyze verify: {}", text(&o));
    let o = run(
        "systemd-analyze security",
        60,
        Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(&copy_path),
    )
    .unwrap();
    let report = text(&o);
    let overall = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("no overall line").trim();
    say(format!("systemd-analyze security --offline=yes: {overall}"));
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {report}"));
    assert!(score <= 2.0, "the unit's exposure rose to {score} (was 1.4): {report}");
    // The unit's promises.
    for line in [
        "User=skein",
        "StateDirectory=skein",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "Restart=on-failure",
        "KillMode=mixed",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has no {line}");
    }
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec=<seconds>s");
    let drain: u64 = env
        .iter()
        .find(|(k, _)| k == "SKEIN_DRAIN_TIMEOUT")
        .map(|(_, v)| v.parse().unwrap())
        .expect("SKEIN_DRAIN_TIMEOUT");
    assert!(stop > drain, "TimeoutStopSec {stop} must exceed SKEIN_DRAIN_TIMEOUT {drain}");
    // The exec allow list's programs stay reachable: nothing hides /usr.
    for hidden in ["InaccessiblePaths=", "NoExecPaths=", "TemporaryFileSystem=/usr"] {
        assert!(!unit.contains(hidden), "the unit has {hidden}: exec tasks' programs may become unreachable");
    }
    // ExecStart with the environment file, as systemd would start it.
    let o = run(
        "skein-node --check-config",
        30,
        Command::new(&bins.node)
            .args(&exec_args)
            .arg("--check-config")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )
    .unwrap();
    assert!(o.status.success(), "skein-node refused the unit's settings: {}", text(&o));
    say(format!("systemd unit checked in {:.1}s", started.elapsed().as_secs_f64()));
}
