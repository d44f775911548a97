//! Node addresses as the user writes them (`host:port`, `http://host:port`,
//! a comma-separated list) and the base URLs the client sends requests to.

use std::fmt;

/// The port a skein node serves HTTP on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7701;

/// One node to try: what the user wrote and the base URL made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    /// As the user wrote it, for messages ("no skein node answered at ...").
    pub shown: String,
    /// `http://host:port`, no trailing slash; request paths are appended.
    pub base: String,
}

impl NodeAddr {
    /// Parses one address; see [`normalize`].
    pub fn parse(s: &str) -> Result<NodeAddr, String> {
        let shown = s.trim().to_string();
        let base = normalize(&shown)?;
        Ok(NodeAddr { shown, base })
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The nodes of `--addr`, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrList(pub Vec<NodeAddr>);

/// Parses `--addr`: one or more addresses separated by commas. Used as the
/// clap value parser, so a bad address is a usage error (exit code 2).
pub fn parse_addr_list(s: &str) -> Result<AddrList, String> {
    let nodes = s
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(NodeAddr::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err("no address given: expected host:port, e.g. 127.0.0.1:7701".into());
    }
    Ok(AddrList(nodes))
}

/// Turns `host`, `host:port`, `http://host:port/` or `[::1]:port` into
/// `http://host:port`. The port defaults to 7701. Only plain HTTP: skein
/// nodes do not serve TLS, and this client is built without it.
pub fn normalize(s: &str) -> Result<String, String> {
    let s = s.trim();
    let rest = match s.split_once("://") {
        None => s,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!("{s:?}: scheme {scheme:?} is not supported, skein nodes serve plain http://"));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !path.chars().all(|c| c == '/') {
        return Err(format!("{s:?}: give only host:port, without a path ({path:?})"));
    }
    if authority.is_empty() {
        return Err(format!("{s:?}: no host, expected host:port, e.g. 127.0.0.1:7701"));
    }
    if authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(format!("{s:?}: expected host:port, e.g. 127.0.0.1:7701"));
    }
    // Split off the port; an IPv6 literal keeps its colons inside brackets.
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6.split_once(']').ok_or_else(|| format!("{s:?}: unclosed '[' in an IPv6 address"))?;
        if inside.is_empty() {
            return Err(format!("{s:?}: empty IPv6 address"));
        }
        match after {
            "" => (&authority[..inside.len() + 2], None),
            p => match p.strip_prefix(':') {
                Some(port) => (&authority[..inside.len() + 2], Some(port)),
                None => return Err(format!("{s:?}: expected [ipv6]:port")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!("{s:?}: write an IPv6 address in brackets, e.g. [::1]:7701"));
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?}: no host, expected host:port, e.g. 127.0.0.1:7701"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{s:?}: {p:?} is not a port number"))?
        }
    };
    Ok(format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_the_forms_users_write() {
        let cases = [
            ("127.0.0.1:7701", "http://127.0.0.1:7701"),
            ("  127.0.0.1:7701  ", "http://127.0.0.1:7701"),
            ("http://127.0.0.1:7701", "http://127.0.0.1:7701"),
            ("http://127.0.0.1:7701/", "http://127.0.0.1:7701"),
            ("HTTP://node-1.internal:80", "http://node-1.internal:80"),
            ("localhost", "http://localhost:7701"),
            ("http://localhost", "http://localhost:7701"),
            ("[::1]:9000", "http://[::1]:9000"),
            ("[::1]", "http://[::1]:7701"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_what_cannot_be_a_node() {
        for bad in [
            "",
            "https://h:7701",
            "ftp://h",
            "h:notaport",
            "h:70000",
            "h:0",
            ":7701",
            "h:7701/api",
            "::1",
            "[::1",
            "[::1]x",
            "user@h:1",
            "h h:1",
        ] {
            assert!(normalize(bad).is_err(), "accepted {bad:?}");
        }
        let msg = normalize("https://h:1").expect_err("https");
        assert!(msg.contains("plain http"), "{msg}");
    }

    #[test]
    fn lists_keep_order_and_what_the_user_wrote() {
        let list = parse_addr_list("a:1, http://b:2 ,,c").expect("parses");
        let got: Vec<(&str, &str)> = list.0.iter().map(|n| (n.shown.as_str(), n.base.as_str())).collect();
        assert_eq!(got, vec![("a:1", "http://a:1"), ("http://b:2", "http://b:2"), ("c", "http://c:7701")]);
        assert!(parse_addr_list(" , ").is_err());
        assert!(parse_addr_list("a:1,b:x").is_err());
    }
}
