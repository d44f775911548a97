//! The HTTP client: tries the nodes of `--addr` in order, follows an answer
//! that names the leader and says nothing was carried out (`not_leader`,
//! `unavailable`) to that leader once, waits out a `rate_limited` answer's
//! `Retry-After` a few times, and maps every failure to one
//! [`ClientError`] that says what happened in words a user can act on.
//!
//! Answers are returned as JSON values: `-o json` prints them as the server
//! sent them, and the table renderers deserialize the typed bodies of
//! `skein_raft::api` from them.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;
use skein_raft::api::{ErrorBody, ErrorCode};

use crate::addr::{AddrList, NodeAddr};

/// How long to wait for a TCP connection before trying the next node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take once connected (a large batch is slow).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times one request waits out a `rate_limited` answer (429 with
/// `Retry-After`) and is sent again. The node refused it before doing
/// anything, so any request may be sent again.
pub const RATE_LIMIT_RETRIES: u32 = 3;
/// The longest `Retry-After` the client waits out; a longer one is
/// reported at once.
pub const RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(10);

/// Everything that can go wrong talking to the cluster.
#[derive(Debug)]
pub enum ClientError {
    /// A node answered with an error status and (usually) an `ErrorBody`.
    Api {
        status: u16,
        /// `Unknown` when the body was not an `ErrorBody`.
        code: ErrorCode,
        message: String,
        /// The leader's HTTP address, when the node knows it.
        leader: Option<String>,
    },
    /// The node runs an older release that lacks the route.
    OlderNode { message: String },
    /// No node could be reached; one reason per node tried.
    NoNodeAnswered { tried: Vec<(String, String)> },
    /// The request was sent but no answer came in time. Not retried on
    /// another node: a write may have been applied.
    Timeout { node: String },
    /// The connection broke after the request was (maybe) sent.
    Transport { node: String, detail: String },
    /// A success status with a body that is not JSON.
    BadAnswer { node: String, detail: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Api { code: ErrorCode::Unknown, message, .. } | ClientError::OlderNode { message } => {
                f.write_str(message)
            }
            ClientError::Api { status, code, message, .. } => write!(f, "{message} ({code}, HTTP {status})"),
            ClientError::NoNodeAnswered { tried } => {
                let list: Vec<String> = tried.iter().map(|(node, why)| format!("{node} ({why})")).collect();
                write!(
                    f,
                    "no skein node answered at {} — is the cluster running? set --addr or SKEIN_ADDR",
                    list.join(", ")
                )
            }
            ClientError::Timeout { node } => write!(
                f,
                "{node} did not answer within {} s (the request may still take effect; check before retrying a write)",
                REQUEST_TIMEOUT.as_secs()
            ),
            ClientError::Transport { node, detail } => write!(f, "lost the connection to {node}: {detail}"),
            ClientError::BadAnswer { node, detail } => write!(f, "{node} sent an answer that is not JSON: {detail}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// A line of advice to print under the error, if there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Api { code: ErrorCode::OutcomeUnknown, .. } => Some(
                "it may have taken effect: check (`skein tasks list`) before running it again, or run it again with \
                 the same --key"
                    .into(),
            ),
            ClientError::Api { leader: Some(leader), .. } => Some(format!("the leader is at {leader}")),
            ClientError::Api { code: ErrorCode::Unavailable | ErrorCode::NotLeader, .. } => Some(
                "nothing was carried out; the cluster may be electing a leader or has lost its quorum: try again \
                 shortly"
                    .into(),
            ),
            ClientError::Api { code: ErrorCode::Unauthenticated, .. } => Some(
                "give a token with --token or SKEIN_TOKEN; a new cluster's first admin token is in \
                 <data-dir>/admin.token on the node that bootstrapped it (skein token create makes more)"
                    .into(),
            ),
            ClientError::Api { code: ErrorCode::RateLimited, .. } => Some(format!(
                "nothing was carried out: the node limits requests per token and connections per address; the \
                 client waited and retried {RATE_LIMIT_RETRIES} times: try again in a few seconds, send fewer, \
                 larger requests (batches), or ask an operator to raise the limit the message names"
            )),
            // A policy refusal names the command that allows it already.
            ClientError::Api { code: ErrorCode::Forbidden, message, .. } if message.contains("`skein ") => None,
            ClientError::Api { code: ErrorCode::Forbidden, .. } => {
                Some("an admin can make a token with the role it needs: skein token create --role ...".into())
            }
            _ => None,
        }
    }
}

/// A client for the nodes of `--addr`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    nodes: Vec<NodeAddr>,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` (`--token`, `SKEIN_TOKEN`).
    token: Option<String>,
}

impl Client {
    /// A client of `addrs`, sending `token`; with `ca` (`--ca`, `SKEIN_CA`)
    /// it speaks HTTPS to addresses given without a scheme, trusting only
    /// certificates that CA signed.
    pub fn new(addrs: AddrList, token: Option<String>, ca: Option<&std::path::Path>) -> anyhow::Result<Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .user_agent(concat!("skein-cli/", env!("CARGO_PKG_VERSION")));
        let mut nodes = addrs.0;
        if let Some(ca) = ca {
            let tls = skein_tls::client_trusting(ca).map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?;
            builder = builder.use_preconfigured_tls(tls);
            for node in &mut nodes {
                if !node.shown.starts_with("http://") {
                    node.base = node.base.replacen("http://", "https://", 1);
                }
            }
        }
        let http = builder.build().map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
        let token = token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        Ok(Client { nodes, http, token })
    }

    /// Adds the bearer token, if any.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        self.send(Method::POST, path, &[], body).await
    }

    pub async fn post_query(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(Method::POST, path, query, None).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.send(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::DELETE, path, &[], None).await
    }

    /// Sends one request, trying the nodes in order until one answers.
    ///
    /// A node that cannot be connected to is skipped (the request never
    /// left, so this is safe for writes too); a GET is also retried on the
    /// next node after any transport error. An answer with an error status
    /// is final, except one that names the leader and says nothing was
    /// carried out (`not_leader`, `unavailable`), which is sent there once.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut targets = self.nodes.clone();
        let mut tried = Vec::new();
        let mut redirected = false;
        let mut waits = 0;
        let mut i = 0;
        while i < targets.len() {
            let node = &targets[i];
            match self.send_to(node, method.clone(), path, query, body.as_ref()).await {
                Ok(value) => return Ok(value),
                Err(Failure::RateLimited(err, wait)) => {
                    if waits >= RATE_LIMIT_RETRIES || wait > RATE_LIMIT_MAX_WAIT {
                        return Err(err);
                    }
                    waits += 1;
                    eprintln!("{}: rate limited (429); sending it again in {} s", node.shown, wait.as_secs());
                    tokio::time::sleep(wait).await;
                    continue; // the same node again
                }
                Err(Failure::Unreachable(why)) => tried.push((node.shown.clone(), why)),
                Err(Failure::Broken(detail)) if method == Method::GET => tried.push((node.shown.clone(), detail)),
                Err(Failure::Broken(detail)) => {
                    return Err(ClientError::Transport { node: node.shown.clone(), detail });
                }
                Err(Failure::Error(err)) => {
                    let leader = if redirected { None } else { leader_to_follow(&err, node) };
                    match leader {
                        Some(leader) => {
                            redirected = true;
                            targets.insert(i + 1, leader);
                        }
                        None => return Err(err),
                    }
                }
            }
            i += 1;
        }
        Err(ClientError::NoNodeAnswered { tried })
    }

    /// Downloads `path` into `dest`: streamed into `dest` + `.partial`,
    /// checked against the announced length, then renamed into place, so
    /// `dest` is only ever a complete download. Follows `not_leader` to the
    /// leader once, like [`Client::send`]. Returns the bytes written and the
    /// `x-skein-snapshot` header.
    pub async fn download(&self, path: &str, dest: &std::path::Path) -> anyhow::Result<(u64, Option<String>)> {
        use anyhow::Context;
        use tokio::io::AsyncWriteExt;

        let mut targets = self.nodes.clone();
        let mut i = 0;
        let mut redirected = false;
        let mut tried = Vec::new();
        while i < targets.len() {
            let node = targets[i].clone();
            i += 1;
            let url = format!("{}{}", node.base, path);
            // A large state takes longer than the usual request timeout.
            let mut response =
                match self.authorized(self.http.get(&url)).timeout(Duration::from_secs(3600)).send().await {
                    Ok(r) => r,
                    Err(e) => {
                        tried.push((node.shown.clone(), innermost(&e)));
                        continue;
                    }
                };
            let status = response.status();
            if !status.is_success() {
                let bytes = response.bytes().await.unwrap_or_default();
                let err = api_error(status, &bytes);
                match leader_to_follow(&err, &node).filter(|_| !redirected) {
                    Some(leader) => {
                        redirected = true;
                        targets.insert(i, leader);
                        continue;
                    }
                    None => return Err(err.into()),
                }
            }
            let expected = response.content_length();
            let snapshot = response.headers().get("x-skein-snapshot").and_then(|v| v.to_str().ok()).map(str::to_string);
            let partial = dest.with_extension(match dest.extension() {
                Some(ext) => format!("{}.partial", ext.to_string_lossy()),
                None => "partial".to_string(),
            });
            let mut file =
                tokio::fs::File::create(&partial).await.with_context(|| format!("creating {}", partial.display()))?;
            let mut written = 0u64;
            let copied: anyhow::Result<()> = async {
                while let Some(chunk) =
                    response.chunk().await.with_context(|| format!("downloading from {}", node.shown))?
                {
                    file.write_all(&chunk).await.with_context(|| format!("writing {}", partial.display()))?;
                    written += chunk.len() as u64;
                }
                file.sync_all().await.with_context(|| format!("syncing {}", partial.display()))?;
                if let Some(n) = expected.filter(|n| *n != written) {
                    anyhow::bail!("the download from {} ended after {written} of {n} bytes", node.shown);
                }
                Ok(())
            }
            .await;
            if let Err(e) = copied {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
            tokio::fs::rename(&partial, dest)
                .await
                .with_context(|| format!("renaming {} to {}", partial.display(), dest.display()))?;
            return Ok((written, snapshot));
        }
        Err(ClientError::NoNodeAnswered { tried }.into())
    }

    async fn send_to(
        &self,
        node: &NodeAddr,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let shown = || node.shown.clone();
        let mut url = Url::parse(&format!("{}{}", node.base, path)).map_err(|e| {
            Failure::Error(ClientError::BadAnswer { node: shown(), detail: format!("bad request URL for {path}: {e}") })
        })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let route = format!("{method} {path}");
        let mut request = self.authorized(self.http.request(method, url));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| classify(&e, node))?;
        let status = response.status();
        let release = response.headers().get(RELEASE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|e| classify(&e, node))?;
        if let Some(err) = older_node(status, release.as_deref(), &bytes, &node.shown, &route) {
            return Err(Failure::Error(err));
        }
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Object(Default::default()));
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| Failure::Error(ClientError::BadAnswer { node: shown(), detail: e.to_string() }));
        }
        match api_error(status, &bytes) {
            err @ ClientError::Api { code: ErrorCode::RateLimited, .. } => Err(Failure::RateLimited(err, retry_after)),
            err => Err(Failure::Error(err)),
        }
    }
}

/// The header every node since 0.2.0 puts on its answers: its release.
pub const RELEASE_HEADER: &str = "x-skein-release";

/// A route this CLI knows that the node does not: the node runs an older
/// release (0.1.0 sends no release header). Said plainly, instead of a bare
/// 404.
fn older_node(
    status: reqwest::StatusCode,
    release: Option<&str>,
    body: &[u8],
    node: &str,
    route: &str,
) -> Option<ClientError> {
    // A node's 404 for a route it lacks says "no such route" (a missing
    // task or queue is a 404 too, with another message).
    let no_route = status == reqwest::StatusCode::NOT_FOUND
        && matches!(api_error(status, body), ClientError::Api { message, .. } if message == "no such route");
    let unknown_route = status == reqwest::StatusCode::METHOD_NOT_ALLOWED || no_route;
    if !unknown_route || release.is_some() {
        return None;
    }
    Some(ClientError::OlderNode {
        message: format!(
            "{node} runs skein 0.1.0 (its answers name no release), which does not know `{route}` (this CLI is \
             skein {}): upgrade that node, or use a CLI of its release (README, \"Upgrading\")",
            env!("CARGO_PKG_VERSION")
        ),
    })
}

/// The leader an answer from `from` names when nothing was carried out, if
/// it is another node: the one redirect [`Client::send`] and
/// [`Client::download`] follow.
fn leader_to_follow(err: &ClientError, from: &NodeAddr) -> Option<NodeAddr> {
    match err {
        ClientError::Api { code, leader: Some(leader), .. } if code.not_carried_out() => {
            NodeAddr::parse(leader).ok().filter(|l| l.base != from.base)
        }
        _ => None,
    }
}

/// Why one node did not give an answer.
enum Failure {
    /// Never connected: try the next node.
    Unreachable(String),
    /// Connected, then broke: retry only what is safe to repeat.
    Broken(String),
    /// A final answer.
    Error(ClientError),
    /// `rate_limited`: nothing was carried out; the same node may take it
    /// after the wait (`Retry-After`).
    RateLimited(ClientError, Duration),
}

/// The wait a `Retry-After` header asks for, in seconds (1 s if it says
/// nothing readable; the date form is not sent by skein nodes).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let secs = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.max(1))
}

fn classify(e: &reqwest::Error, node: &NodeAddr) -> Failure {
    if e.is_connect() {
        return Failure::Unreachable(connect_reason(e));
    }
    if e.is_timeout() {
        return Failure::Error(ClientError::Timeout { node: node.shown.clone() });
    }
    Failure::Broken(innermost(e))
}

/// "connection refused", "timed out after 3 s", "failed to lookup address ...".
fn connect_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                _ => {}
            }
        }
        source = err.source();
    }
    if e.is_timeout() {
        return format!("no connection within {} s", CONNECT_TIMEOUT.as_secs());
    }
    innermost(e)
}

/// The deepest cause's message, without the `(os error N)` tail.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = last.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".into(),
    }
}

/// Percent-encodes one path segment (a queue name may hold any character).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error a node answered: its `ErrorBody`, or the status and text when
/// the body is something else (a proxy's page, an older node).
pub fn api_error(status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            leader: error.leader,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let reason = status.canonical_reason().unwrap_or("");
    let message = if text.is_empty() {
        format!("the node answered HTTP {} {reason}", status.as_u16())
    } else {
        let short: String = text.chars().take(200).collect();
        format!("the node answered HTTP {} {reason}: {short}", status.as_u16())
    };
    ClientError::Api { status: status.as_u16(), code: ErrorCode::Unknown, message, leader: None }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn error_body_becomes_the_message() {
        let body = br#"{"error":{"code":"unavailable","message":"no leader elected yet"}}"#;
        let err = api_error(StatusCode::SERVICE_UNAVAILABLE, body);
        assert_eq!(err.to_string(), "no leader elected yet (unavailable, HTTP 503)");
        assert!(err.hint().is_some_and(|h| h.contains("nothing was carried out")));
        let body = br#"{"error":{"code":"outcome_unknown","message":"no majority answered in time"}}"#;
        let err = api_error(StatusCode::SERVICE_UNAVAILABLE, body);
        assert!(err.hint().is_some_and(|h| h.contains("--key")), "{:?}", err.hint());
        // A code from a newer node is kept as unknown, with its message.
        let body = br#"{"error":{"code":"slow_down_more","message":"slow down"}}"#;
        let err = api_error(StatusCode::TOO_MANY_REQUESTS, body);
        assert!(matches!(err, ClientError::Api { code: ErrorCode::Unknown, status: 429, .. }), "{err:?}");
        assert_eq!(err.to_string(), "slow down");
        let body = br#"{"error":{"code":"rate_limited","message":"token ci is over its rate"}}"#;
        let err = api_error(StatusCode::TOO_MANY_REQUESTS, body);
        assert!(matches!(err, ClientError::Api { code: ErrorCode::RateLimited, status: 429, .. }), "{err:?}");
        assert!(err.hint().is_some_and(|h| h.contains("nothing was carried out")), "{:?}", err.hint());
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), Duration::from_secs(1));
        headers.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("4"));
        assert_eq!(retry_after(&headers), Duration::from_secs(4));
        headers.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("0"));
        assert_eq!(retry_after(&headers), Duration::from_secs(1));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Duration::from_secs(1));
    }

    #[test]
    fn only_answers_that_changed_nothing_are_sent_to_the_leader() {
        let from = NodeAddr::parse("127.0.0.1:7701").unwrap();
        let answer = |code: &str| {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m","leader":"127.0.0.1:7711"}}}}"#);
            api_error(StatusCode::SERVICE_UNAVAILABLE, body.as_bytes())
        };
        for (code, follows) in
            [("unavailable", true), ("not_leader", true), ("outcome_unknown", false), ("invalid", false)]
        {
            assert_eq!(leader_to_follow(&answer(code), &from).is_some(), follows, "{code}");
        }
        let same = api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":{"code":"unavailable","message":"m","leader":"127.0.0.1:7701"}}"#,
        );
        assert!(leader_to_follow(&same, &from).is_none(), "not back to the node that answered");
    }

    #[test]
    fn leader_is_hinted() {
        let body = br#"{"error":{"code":"not_leader","message":"not the leader","leader":"10.0.0.2:7701"}}"#;
        let err = api_error(StatusCode::MISDIRECTED_REQUEST, body);
        assert_eq!(err.hint().as_deref(), Some("the leader is at 10.0.0.2:7701"));
    }

    #[test]
    fn other_bodies_keep_status_and_text() {
        let err = api_error(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(err.to_string(), "the node answered HTTP 502 Bad Gateway: upstream down");
        let err = api_error(StatusCode::NOT_FOUND, b"");
        assert!(err.to_string().starts_with("the node answered HTTP 404 Not Found"), "{err}");
    }

    #[test]
    fn an_unknown_route_on_a_node_without_a_release_is_an_older_node() {
        let no_route = br#"{"error":{"code":"not_found","message":"no such route"}}"#;
        let err = older_node(StatusCode::NOT_FOUND, None, no_route, "127.0.0.1:7701", "POST /api/v1/cluster/finalize")
            .expect("a 0.1.0 node");
        assert!(err.to_string().contains("runs skein 0.1.0"), "{err}");
        assert!(err.to_string().contains("POST /api/v1/cluster/finalize"), "{err}");
        assert!(older_node(StatusCode::NOT_FOUND, Some("0.2.0"), no_route, "n", "GET /x").is_none(), "a new node");
        let no_task = br#"{"error":{"code":"not_found","message":"no task 9"}}"#;
        assert!(older_node(StatusCode::NOT_FOUND, None, no_task, "n", "GET /x").is_none(), "a real 404");
        assert!(older_node(StatusCode::CONFLICT, None, no_route, "n", "GET /x").is_none());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("migrations-v2_x.y~"), "migrations-v2_x.y~");
        assert_eq!(path_segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn no_node_message_names_every_node_and_the_fix() {
        let err = ClientError::NoNodeAnswered { tried: vec![("127.0.0.1:7701".into(), "connection refused".into())] };
        assert_eq!(
            err.to_string(),
            "no skein node answered at 127.0.0.1:7701 (connection refused) — is the cluster running? set --addr or SKEIN_ADDR"
        );
    }
}
