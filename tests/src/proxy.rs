//! [`Net`]: a fault-injecting TCP proxy on every node-to-node link, so a
//! test can partition the cluster on loopback without touching the kernel's
//! network setup.
//!
//! For every ordered pair (i, j) of nodes there is a listener `P(i→j)`;
//! node i is started with `--route <rpc of j>=<P(i→j)>`, so every
//! connection i opens to j (Raft and node-to-node RPCs both) passes through
//! it. Each connection has two pumps, one per direction, and a pump only
//! moves bytes while its *directed* pair is not cut: cutting (i, j) stalls
//! every byte from i to j, on connections i opened and on those j opened,
//! while j's bytes to i still flow. That is a real one-way cut; cutting
//! both directions is a partition.
//!
//! A cut stalls bytes, it does not drop them: the pump stops reading, TCP's
//! flow control holds the rest in the kernel's buffers, and callers see
//! their deadlines pass, as across a real partition. Healing lets the held
//! bytes through late (TCP would retransmit them the same way), which the
//! RPC layer must tolerate: answers to requests it gave up on long ago.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The cut directed pairs `(from, to)`, and a generation that wakes the
/// pumps when it changes.
struct Cuts {
    cut: Mutex<BTreeSet<(u64, u64)>>,
    changed: watch::Sender<u64>,
}

impl Cuts {
    fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.lock().map(|c| c.contains(&(from, to))).unwrap_or(false)
    }

    /// Waits until bytes may flow from `from` to `to`.
    async fn open(&self, from: u64, to: u64) {
        let mut rx = self.changed.subscribe();
        while self.is_cut(from, to) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The proxies of a cluster; see the module docs. Dropping it stops every
/// listener and connection.
pub struct Net {
    cuts: Arc<Cuts>,
    /// `(from, to)` → the proxy address `from` dials to reach `to`.
    links: BTreeMap<(u64, u64), String>,
    /// Each node's real RPC address.
    rpc: BTreeMap<u64, String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Net {
    /// Starts a proxy for every ordered pair of `nodes` (id → real RPC
    /// address). The nodes need not run yet: a proxy dials its target per
    /// connection.
    pub async fn start(nodes: &BTreeMap<u64, String>) -> anyhow::Result<Net> {
        let (changed, _) = watch::channel(0);
        let cuts = Arc::new(Cuts { cut: Mutex::new(BTreeSet::new()), changed });
        let mut links = BTreeMap::new();
        let mut tasks = Vec::new();
        for &from in nodes.keys() {
            for (&to, target) in nodes {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a proxy listener")?;
                links.insert((from, to), listener.local_addr()?.to_string());
                tasks.push(tokio::spawn(serve(listener, target.clone(), from, to, cuts.clone())));
            }
        }
        Ok(Net { cuts, links, rpc: nodes.clone(), tasks })
    }

    /// The `--route` flags node `id` needs so that it reaches every peer
    /// through its proxy.
    pub fn route_args(&self, id: u64) -> Vec<String> {
        let mut args = Vec::new();
        for ((from, to), proxy) in &self.links {
            if *from == id {
                args.push("--route".to_string());
                args.push(format!("{}={proxy}", self.rpc[to]));
            }
        }
        args
    }

    /// Stalls every byte from `from` to `to` (one way).
    pub fn cut(&self, from: u64, to: u64) {
        self.edit(|c| {
            c.insert((from, to));
        });
    }

    /// Cuts both ways between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        self.edit(|c| {
            for &x in a {
                for &y in b {
                    c.insert((x, y));
                    c.insert((y, x));
                }
            }
        });
    }

    /// Cuts everything `node` sends to the others (it still hears them).
    pub fn cut_outbound(&self, node: u64) {
        let others: Vec<u64> = self.rpc.keys().copied().filter(|&n| n != node).collect();
        self.edit(|c| {
            for &o in &others {
                c.insert((node, o));
            }
        });
    }

    /// Lets every byte flow again.
    pub fn heal(&self) {
        self.edit(BTreeSet::clear);
    }

    /// The directed pairs cut now.
    pub fn cuts(&self) -> BTreeSet<(u64, u64)> {
        self.cuts.cut.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn edit(&self, f: impl FnOnce(&mut BTreeSet<(u64, u64)>)) {
        if let Ok(mut c) = self.cuts.cut.lock() {
            f(&mut c);
        }
        self.cuts.changed.send_modify(|g| *g += 1);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Accepts connections for the link `from → to` and pumps each one; the
/// connections die with this task (their `JoinSet`).
async fn serve(listener: TcpListener, target: String, from: u64, to: u64, cuts: Arc<Cuts>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                conns.spawn(connect(client, target.clone(), from, to, cuts.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connect(client: TcpStream, target: String, from: u64, to: u64, cuts: Arc<Cuts>) {
    // A connection attempt across a cut hangs like an unanswered SYN.
    cuts.open(from, to).await;
    let Ok(server) = TcpStream::connect(&target).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, from, to, cuts.clone());
    let down = pump(sr, cw, to, from, cuts);
    // When either side closes, the connection is over: dropping both
    // halves closes the other side too.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Moves bytes from `r` to `w` while `(from, to)` is not cut.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    from: u64,
    to: u64,
    cuts: Arc<Cuts>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        cuts.open(from, to).await;
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before a cut wait for the heal too.
        cuts.open(from, to).await;
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An echo server, and a client that sends a line and reads it back.
    async fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(within, s.read_exact(&mut buf)).await.ok()?.ok()?;
        Some(buf)
    }

    #[tokio::test]
    async fn cuts_stall_one_direction_and_heal_delivers() {
        let server = echo_server().await;
        let net = Net::start(&BTreeMap::from([(1, "127.0.0.1:1".to_string()), (2, server)])).await.unwrap();
        let route = net.route_args(1);
        assert_eq!(route.len(), 2, "{route:?}");
        let proxy = route[1].split_once('=').unwrap().1.to_string();
        let mut s = TcpStream::connect(&proxy).await.unwrap();
        let short = Duration::from_millis(300);
        assert_eq!(round_trip(&mut s, b"hello", short).await.as_deref(), Some(&b"hello"[..]));

        // 2 → 1 cut: the request reaches the echo server, its answer stalls.
        net.cut(2, 1);
        assert_eq!(round_trip(&mut s, b"again", short).await, None, "bytes crossed a cut");
        net.heal();
        let mut late = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut late)).await.unwrap().unwrap();
        assert_eq!(&late, b"again", "held bytes were not delivered after the heal");

        // A partition stalls new connections too.
        net.partition(&[1], &[2]);
        assert!(net.cuts().contains(&(1, 2)) && net.cuts().contains(&(2, 1)));
        let mut s2 = TcpStream::connect(&proxy).await.unwrap();
        assert_eq!(round_trip(&mut s2, b"x", short).await, None);
        net.heal();
        let mut held = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(2), s2.read_exact(&mut held)).await.unwrap().unwrap();
        assert_eq!(&held, b"x");
        assert_eq!(round_trip(&mut s, b"back", Duration::from_secs(2)).await.as_deref(), Some(&b"back"[..]));
    }
}
