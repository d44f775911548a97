//! Limits per caller: how many requests one token may make to this node
//! (`--requests-per-second-per-token`, `--request-burst-per-token`), and
//! how many connections one address may hold open on each listener
//! (`--max-connections-per-address`, `--max-connections`; counted by
//! [`skein_tls::ConnectionLimiter`] in the listeners, made here).
//!
//! Requests: a token bucket per caller. The caller is the token that
//! [`super::auth::require`] let through; a request without one (public
//! routes, the dashboard's sign-in, a cluster in auth mode `warn`) is
//! counted against its client address instead, never against a token it
//! merely names (anyone could name another's token id to use up its
//! bucket). A bucket holds `burst` requests and refills at `rate` per
//! second; a request finding it empty is refused before its handler runs,
//! with 429 `rate_limited` and `Retry-After` (whole seconds, at least 1):
//! nothing was carried out, so it is safe to send again. `/healthz` and
//! `/readyz` are not limited (they are routed without this layer).
//!
//! Memory is bounded: a bucket that has refilled is the same as none and
//! is dropped by a sweep (once a minute, or when the map is full); a full
//! map after a sweep drops its least recently used bucket. `queue_full`
//! (a queue at its `max_depth`) is another 429 and keeps its meaning.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use skein_raft::api::ErrorCode;
use skein_raft::fsm::Caller;
use skein_tls::limit::{address_key, ConnectionLimiter, Refused};

use crate::api::auth::Who;
use crate::api::errors::ApiError;
use crate::config::Limits;
use crate::metrics::{Labels, Metrics};

/// Buckets kept at most (about 64 bytes each).
pub const MAX_BUCKETS: usize = 10_000;

/// How often refilled buckets are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Who a bucket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A token, by id.
    Token(u64),
    /// A client address without a token ([`address_key`]: IPv6 by /64).
    Address(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Requests it holds, as of `at`.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn tokens_at(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(burst)
    }
}

/// Token buckets by [`Key`]: the pure part, given the time.
#[derive(Debug)]
pub struct Buckets {
    /// Refill per second.
    rate: f64,
    /// Size.
    burst: f64,
    max: usize,
    buckets: HashMap<Key, Bucket>,
    swept_at: Instant,
}

impl Buckets {
    /// Buckets of `burst` requests refilling at `rate` per second, at most
    /// `max` of them. `rate` must be positive.
    pub fn new(rate: u32, burst: u32, max: usize, now: Instant) -> Buckets {
        Buckets {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            max: max.max(1),
            buckets: HashMap::new(),
            swept_at: now,
        }
    }

    /// Takes one request from `key`'s bucket at `now`, or says how long
    /// until it holds one.
    pub fn take(&mut self, key: Key, now: Instant) -> Result<(), Duration> {
        if now.saturating_duration_since(self.swept_at) >= SWEEP_EVERY {
            self.sweep(now);
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max {
            self.sweep(now);
            if self.buckets.len() >= self.max {
                // Every bucket is in use: forget the one idle longest (a
                // caller that comes back starts full, as a new one does).
                if let Some(oldest) = self.buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                    self.buckets.remove(&oldest);
                }
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(key).or_insert(Bucket { tokens: burst, at: now });
        let tokens = bucket.tokens_at(now, rate, burst);
        *bucket = Bucket { tokens, at: now.max(bucket.at) };
        if tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }

    /// Drops every bucket that has refilled (it is the same as none).
    fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| b.tokens_at(now, rate, burst) < burst);
        self.swept_at = now;
    }

    /// Buckets kept now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The request limit of one node's API: [`Buckets`] behind a lock, and the
/// counter of refusals.
#[derive(Debug)]
pub struct RequestLimiter {
    limits: Limits,
    buckets: Mutex<Buckets>,
    refused: Family<Labels, Counter>,
}

impl RequestLimiter {
    /// The limiter of `limits`, counting refusals in `metrics`; `None` when
    /// the limit is off (`--requests-per-second-per-token 0`).
    pub fn new(limits: Limits, metrics: &Metrics) -> Option<Arc<RequestLimiter>> {
        if limits.requests_per_second == 0 {
            return None;
        }
        let buckets = Buckets::new(limits.requests_per_second, limits.request_burst, MAX_BUCKETS, Instant::now());
        Some(Arc::new(RequestLimiter { limits, buckets: Mutex::new(buckets), refused: metrics.rate_limited.clone() }))
    }

    fn take(&self, key: Key) -> Result<(), Duration> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).take(key, Instant::now())
    }
}

/// The client's address, as the HTTP listener accepted it: the connect
/// info of [`super::serve`].
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, skein_tls::HttpsListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, skein_tls::HttpsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Middleware: lets a request through if its caller's bucket holds one,
/// else answers 429 `rate_limited` with `Retry-After`. Runs after
/// [`super::auth::require`] on the routes that need a token (it reads the
/// [`Who`]), and alone on the public routes it is layered on.
pub async fn per_caller(State(limiter): State<Option<Arc<RequestLimiter>>>, req: Request, next: Next) -> Response {
    let Some(limiter) = limiter else { return next.run(req).await };
    let who = req.extensions().get::<Who>();
    let (key, caller) = match who.map(|w| (&w.caller, &w.name)) {
        Some((Caller::Token(id), name)) => (Key::Token(*id), format!("token {name}")),
        _ => match req.extensions().get::<ConnectInfo<ClientAddr>>() {
            Some(ConnectInfo(ClientAddr(addr))) => {
                let ip = address_key(addr.ip());
                (Key::Address(ip), format!("address {ip} (no token)"))
            }
            // Not served by `serve` (a test calling the router): no address.
            None => return next.run(req).await,
        },
    };
    match limiter.take(key) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let label = if matches!(key, Key::Token(_)) { "token" } else { "address" };
            Metrics::count(&limiter.refused, vec![("limit", label.into()), ("listener", "http".into())], 1);
            let secs = retry_after_secs(wait);
            let limits = &limiter.limits;
            let message = format!(
                "{caller} is over its rate of {} requests per second (bursts of {}) on this node: retry after {secs} s; \
                 an operator can raise --requests-per-second-per-token and --request-burst-per-token",
                limits.requests_per_second, limits.request_burst
            );
            tracing::debug!(%caller, method = %req.method(), path = %req.uri().path(), retry_after = secs, "rate limited");
            too_many(message, secs)
        }
    }
}

/// Whole seconds to wait, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// A 429 `rate_limited` answer with `Retry-After: secs`.
fn too_many(message: String, secs: u64) -> Response {
    let mut response = ApiError::new(ErrorCode::RateLimited, message).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The connection limiter of the listener `listener` (`http` or `rpc`),
/// counting its refusals in `metrics`.
pub fn connection_limiter(listener: &'static str, limits: &Limits, metrics: &Metrics) -> ConnectionLimiter {
    let refused = metrics.rate_limited.clone();
    let count = move |_: IpAddr, why: Refused| {
        Metrics::count(&refused, vec![("limit", why.label().into()), ("listener", listener.into())], 1);
    };
    ConnectionLimiter::new(listener, limits.connections, Some(Box::new(count)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Key = Key::Token(7);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Buckets::new(10, 3, 100, t0);
        for _ in 0..3 {
            assert_eq!(b.take(T, t0), Ok(()));
        }
        // Empty: one request refills in 100 ms.
        let wait = b.take(T, t0).unwrap_err();
        assert!(wait > ms(90) && wait <= ms(100), "{wait:?}");
        assert!(b.take(T, t0 + ms(50)).is_err());
        assert_eq!(b.take(T, t0 + ms(101)), Ok(()));
        assert!(b.take(T, t0 + ms(102)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(T, later), Ok(()));
        }
        assert!(b.take(T, later).is_err());
    }

    #[test]
    fn callers_have_their_own_buckets() {
        let t0 = Instant::now();
        let mut b = Buckets::new(1, 1, 100, t0);
        assert_eq!(b.take(T, t0), Ok(()));
        assert!(b.take(T, t0).is_err());
        assert_eq!(b.take(Key::Token(8), t0), Ok(()));
        assert_eq!(b.take(Key::Address("127.0.0.1".parse().unwrap()), t0), Ok(()));
        assert!(b.take(T, t0 + ms(999)).is_err());
        assert_eq!(b.take(T, t0 + ms(1000)), Ok(()));
    }

    #[test]
    fn a_steady_caller_gets_the_rate() {
        let t0 = Instant::now();
        let mut b = Buckets::new(100, 10, 100, t0);
        // Asking every millisecond for 10 s: the burst, then 100 a second.
        let served = (0..10_000).filter(|i| b.take(T, t0 + ms(*i)).is_ok()).count();
        assert!((1005..=1011).contains(&served), "{served}");
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut b = Buckets::new(1, 1, 50, t0);
        // Many callers at once, each with an empty bucket: the map stays
        // at its cap, dropping the one idle longest.
        for i in 0..1000u64 {
            assert_eq!(b.take(Key::Token(i), t0 + ms(i)), Ok(()));
            assert!(b.len() <= 50);
        }
        assert!(b.take(Key::Token(999), t0 + ms(999)).is_err(), "the newest caller is still counted");
        // Once they have refilled, a sweep drops them all.
        let later = t0 + Duration::from_secs(120);
        assert_eq!(b.take(T, later), Ok(()));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(ms(1)), 1);
        assert_eq!(retry_after_secs(ms(1000)), 1);
        assert_eq!(retry_after_secs(ms(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn the_answer_is_429_rate_limited_with_retry_after() {
        let r = too_many("over".into(), 3);
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("3"));
    }
}
