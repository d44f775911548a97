//! Limits on the connections a listener holds open at once: per remote
//! address and in all. [`ConnectionLimiter::try_acquire`] is asked right
//! after `accept`, before any handshake; the [`ConnectionSlot`] it hands
//! out lives as long as the connection and frees its place when dropped.
//!
//! One address is one IPv4 address, or one IPv6 /64 (a host gets a whole
//! /64, so counting its single addresses would limit nothing). The counts
//! cover open connections only, so the memory is bounded by the total.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// A flood is logged once per this long (with the count), not per connection.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How many connections a listener holds open at once; 0: no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnectionLimits {
    /// From one address (see [`address_key`]).
    pub per_address: usize,
    /// In all.
    pub total: usize,
}

impl ConnectionLimits {
    /// No limit at all.
    pub const UNLIMITED: ConnectionLimits = ConnectionLimits { per_address: 0, total: 0 };
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address already holds [`ConnectionLimits::per_address`].
    PerAddress,
    /// The listener already holds [`ConnectionLimits::total`].
    Total,
}

impl Refused {
    /// A metric label: `connections_per_address` or `connections`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::PerAddress => "connections_per_address",
            Refused::Total => "connections",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::PerAddress => "too many connections from this address",
            Refused::Total => "too many connections",
        })
    }
}

/// What a listener calls for each refused connection (to count it).
pub type OnRefusal = Box<dyn Fn(IpAddr, Refused) + Send + Sync>;

/// Counts a listener's open connections against its [`ConnectionLimits`].
/// Cheap to clone (clones share the counts).
#[derive(Clone)]
pub struct ConnectionLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The listener, for the log: `http` or `rpc`.
    name: &'static str,
    limits: ConnectionLimits,
    open: Mutex<Open>,
    on_refusal: Option<OnRefusal>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Only addresses with a connection open: at most `total` entries.
    by_address: HashMap<IpAddr, usize>,
    /// Refusals not yet logged, and when the last were.
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl fmt::Debug for ConnectionLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionLimiter")
            .field("name", &self.inner.name)
            .field("limits", &self.inner.limits)
            .field("open", &self.open())
            .finish_non_exhaustive()
    }
}

impl ConnectionLimiter {
    /// A limiter of `limits` for the listener `name` (`http`, `rpc`: for
    /// the log); `on_refusal` is called for each refusal.
    pub fn new(name: &'static str, limits: ConnectionLimits, on_refusal: Option<OnRefusal>) -> ConnectionLimiter {
        let open = Mutex::new(Open::default());
        ConnectionLimiter { inner: Arc::new(Inner { name, limits, open, on_refusal }) }
    }

    /// One that refuses nothing (it still counts).
    pub fn unlimited() -> ConnectionLimiter {
        ConnectionLimiter::new("", ConnectionLimits::UNLIMITED, None)
    }

    /// Its limits.
    pub fn limits(&self) -> ConnectionLimits {
        self.inner.limits
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.inner.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more connection from `peer`, or why not.
    pub fn try_acquire(&self, peer: IpAddr) -> Result<ConnectionSlot, Refused> {
        let key = address_key(peer);
        let limits = self.inner.limits;
        let (refused, to_log) = {
            let mut open = self.lock();
            let from_peer = open.by_address.get(&key).copied().unwrap_or(0);
            let refused = if limits.total > 0 && open.total >= limits.total {
                Some(Refused::Total)
            } else if limits.per_address > 0 && from_peer >= limits.per_address {
                Some(Refused::PerAddress)
            } else {
                open.total += 1;
                open.by_address.insert(key, from_peer + 1);
                None
            };
            let mut to_log = None;
            if refused.is_some() {
                open.unlogged += 1;
                let now = Instant::now();
                if open.logged_at.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
                    open.logged_at = Some(now);
                    to_log = Some((std::mem::take(&mut open.unlogged), open.total, from_peer));
                }
            }
            (refused, to_log)
        };
        match refused {
            Some(why) => {
                debug!(listener = self.inner.name, peer = %peer, reason = %why, "connection refused");
                if let Some((refusals, open, from_peer)) = to_log {
                    warn!(
                        listener = self.inner.name,
                        peer = %peer,
                        reason = %why,
                        refusals,
                        open,
                        from_peer,
                        per_address = limits.per_address,
                        total = limits.total,
                        "refusing connections over the limit (refusals: since the last such line)"
                    );
                }
                if let Some(f) = &self.inner.on_refusal {
                    f(peer, why);
                }
                Err(why)
            }
            None => Ok(ConnectionSlot { inner: Arc::clone(&self.inner), key }),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Connections open now from `peer`'s address.
    pub fn open_from(&self, peer: IpAddr) -> usize {
        self.lock().by_address.get(&address_key(peer)).copied().unwrap_or(0)
    }
}

/// One open connection's place; dropping it frees the place.
pub struct ConnectionSlot {
    inner: Arc<Inner>,
    key: IpAddr,
}

impl fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSlot").field("address", &self.key).finish()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.inner.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_address.remove(&self.key);
            }
        }
    }
}

/// The address a limit counts `ip` under: an IPv4 address (also when
/// written as IPv4-mapped IPv6) as it is, an IPv6 address as its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_and_total_limits_hold_and_free_on_drop() {
        let refusals = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&refusals);
        let limiter = ConnectionLimiter::new(
            "test",
            ConnectionLimits { per_address: 2, total: 3 },
            Some(Box::new(move |_, _| {
                counted.fetch_add(1, Ordering::Relaxed);
            })),
        );
        let a1 = limiter.try_acquire(ip("10.0.0.1")).unwrap();
        let a2 = limiter.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(limiter.try_acquire(ip("10.0.0.1")).unwrap_err(), Refused::PerAddress);
        // The IPv4-mapped form is the same address.
        assert_eq!(limiter.try_acquire(ip("::ffff:10.0.0.1")).unwrap_err(), Refused::PerAddress);
        let b1 = limiter.try_acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(limiter.try_acquire(ip("10.0.0.3")).unwrap_err(), Refused::Total);
        assert_eq!((limiter.open(), limiter.open_from(ip("10.0.0.1"))), (3, 2));
        drop(a1);
        let a3 = limiter.try_acquire(ip("10.0.0.1")).unwrap();
        drop((a2, a3, b1));
        assert_eq!((limiter.open(), limiter.open_from(ip("10.0.0.1"))), (0, 0));
        assert!(limiter.lock().by_address.is_empty(), "no entry outlives its connections");
        assert_eq!(refusals.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let limiter = ConnectionLimiter::new("test", ConnectionLimits { per_address: 1, total: 0 }, None);
        let _a = limiter.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(limiter.try_acquire(ip("2001:db8:1:2:ffff::9")).unwrap_err(), Refused::PerAddress);
        assert!(limiter.try_acquire(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn unlimited_refuses_nothing() {
        let limiter = ConnectionLimiter::unlimited();
        let slots: Vec<_> = (0..1000).map(|_| limiter.try_acquire(ip("127.0.0.1")).unwrap()).collect();
        assert_eq!(limiter.open(), 1000);
        drop(slots);
        assert_eq!(limiter.open(), 0);
    }
}
