//! moto's S3 server (PyPI `moto[server]`, installed by `scripts/deps.sh`)
//! on a free loopback port: the S3 API the migration tests run against.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use skein_testkit::process::free_port;
use skein_testkit::wait_until;

/// moto's S3 server on a free loopback port, killed on drop.
pub struct Moto {
    child: tokio::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start(log: &Path) -> anyhow::Result<Moto> {
        let port = free_port()?;
        let file = std::fs::File::create(log)?;
        let spawn = |program: &str, args: &[String]| {
            tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file.try_clone()?)
                .kill_on_drop(true)
                .spawn()
        };
        let args = vec!["-H".to_string(), "127.0.0.1".into(), "-p".into(), port.to_string()];
        let child = match spawn("moto_server", &args) {
            Ok(c) => c,
            Err(_) => {
                let mut py = vec!["-m".to_string(), "moto.server".into()];
                py.extend(args);
                spawn("python3", &py).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot start moto's S3 server ({e}): run scripts/deps.sh (pip install 'moto[server]')"
                    )
                })?
            }
        };
        let mut moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        skein_tls::install_provider();
        let http = reqwest::Client::new();
        let url = moto.endpoint.clone();
        let up = wait_until(Duration::from_secs(30), "moto's S3 server to answer", async || {
            if let Some(status) = moto.child.try_wait()? {
                bail!(
                    "moto_server exited ({status}); is moto[server] installed? run scripts/deps.sh; its log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            Ok(http.get(&url).send().await.is_ok())
        })
        .await;
        up.context("starting moto's S3 server (pip install 'moto[server]', or run scripts/deps.sh)")?;
        Ok(moto)
    }

    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// moto does not check signatures, but it needs an access key to know
    /// whose request it is (an anonymous GET of a private object is refused).
    const AUTH: &'static str =
        "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

    pub async fn put(&self, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let r = reqwest::Client::new()
            .put(format!("{}/{key}", self.endpoint))
            .header("authorization", Self::AUTH)
            .body(body)
            .send()
            .await?;
        ensure!(r.status().is_success(), "PUT {key}: {}", r.status());
        Ok(())
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let r = reqwest::Client::new()
            .get(format!("{}/{key}", self.endpoint))
            .header("authorization", Self::AUTH)
            .send()
            .await?;
        if r.status() == 404 {
            return Ok(None);
        }
        ensure!(r.status().is_success(), "GET {key}: {}", r.status());
        Ok(Some(r.bytes().await?.to_vec()))
    }
}
