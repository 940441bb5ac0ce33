//! The grammar of `sessions.store`, and the one place its passwords are hidden.
//!
//! - `memory`: this process only.
//! - `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` and `rediss://…` (TLS; a `#insecure`
//!   fragment skips the certificate check): one server, read by the `redis` crate itself.
//! - `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT],HOST[:PORT]…/MASTER[/DB]`: the sentinels
//!   (port 26379 by default) name the master of the set `MASTER`; the credentials and the
//!   database are the Redis servers', the sentinels are asked without.
//! - `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT],HOST[:PORT]…`: any nodes of a Redis Cluster
//!   (the client learns the others from them); a cluster has database 0 only.
//!
//! Each sentinel or cluster node becomes a `redis://` URL of its own with the credentials, so
//! the `redis` crate parses (and percent-decodes) every part the same way for each form.
//! [`redact_url`] is what any message, log line or status shows of a store URL.

use std::fmt;

/// The default port of a Redis Sentinel.
const SENTINEL_PORT: u16 = 26379;
/// The default port of a Redis server.
const REDIS_PORT: u16 = 6379;

/// How a store URL keeps sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum StoreKind {
    /// In this process.
    Memory,
    /// One Redis server, plain or TLS.
    Redis,
    /// The master of a Redis Sentinel set, followed through failovers.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
}

/// A parsed `sessions.store`. Its `Debug` and `Display` show the URL with passwords hidden.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoreUrl {
    text: String,
    kind: StoreKind,
    nodes: Vec<String>,
    master: Option<String>,
}

/// Why `sessions.store` is not a store URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store {url:?} {reason}")]
pub(crate) struct StoreUrlError {
    /// The URL, passwords hidden.
    url: String,
    /// What is wrong with it.
    reason: String,
}

impl StoreUrl {
    /// Parses `text` (`memory` or one of the Redis URL forms).
    ///
    /// # Errors
    /// If `text` is none of the forms, or a part of it does not parse.
    pub(crate) fn parse(text: &str) -> Result<StoreUrl, StoreUrlError> {
        let fail = |reason: String| StoreUrlError {
            url: redact_url(text),
            reason,
        };
        let url = |kind, nodes, master| StoreUrl {
            text: text.to_owned(),
            kind,
            nodes,
            master,
        };
        if text == "memory" {
            return Ok(url(StoreKind::Memory, Vec::new(), None));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(fail(FORMS.to_owned()));
        };
        match scheme {
            "redis" | "rediss" => {
                check_node(text).map_err(fail)?;
                Ok(url(StoreKind::Redis, vec![text.to_owned()], None))
            }
            "redis+sentinel" => {
                let (auth, hosts, path) = split(rest);
                let (master, db) = match path.trim_end_matches('/').split_once('/') {
                    Some((master, db)) => (master, db),
                    None => (path.trim_end_matches('/'), "0"),
                };
                if master.is_empty() {
                    return Err(fail(
                        "names no master: redis+sentinel://HOST:PORT,…/MASTER/DB".to_owned(),
                    ));
                }
                let nodes = nodes(auth, hosts, SENTINEL_PORT, db).map_err(fail)?;
                Ok(url(StoreKind::Sentinel, nodes, Some(master.to_owned())))
            }
            "redis+cluster" => {
                let (auth, hosts, path) = split(rest);
                if !path.is_empty() {
                    return Err(fail(
                        "has a path: a cluster has database 0 only (redis+cluster://HOST:PORT,…)"
                            .to_owned(),
                    ));
                }
                let nodes = nodes(auth, hosts, REDIS_PORT, "0").map_err(fail)?;
                Ok(url(StoreKind::Cluster, nodes, None))
            }
            "rediss+sentinel" | "rediss+cluster" => Err(fail(
                "is not supported: TLS works with one server (rediss://) only".to_owned(),
            )),
            _ => Err(fail(FORMS.to_owned())),
        }
    }

    /// How it keeps sessions.
    pub(crate) fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Whether it speaks TLS (`rediss://`).
    pub(crate) fn is_tls(&self) -> bool {
        self.text.starts_with("rediss://")
    }

    /// Whether it skips the server certificate check (`rediss://…#insecure`).
    pub(crate) fn is_insecure(&self) -> bool {
        self.is_tls() && self.text.ends_with("#insecure")
    }

    /// The servers to connect to, each a `redis://` or `rediss://` URL with the credentials:
    /// the one server, the sentinels, or the cluster nodes given.
    pub(crate) fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The name of the Sentinel master set.
    pub(crate) fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.text))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({:?})", redact_url(&self.text))
    }
}

const FORMS: &str = "must be \"memory\", redis://HOST:PORT/DB, rediss://HOST:PORT/DB, \
    redis+sentinel://HOST:PORT,…/MASTER/DB or redis+cluster://HOST:PORT,…";

/// `AUTH@HOSTS/PATH` as (`AUTH@` or empty, `HOSTS`, `PATH`).
fn split(rest: &str) -> (&str, &str, &str) {
    let (auth, rest) = match rest.rfind('@') {
        Some(at) => rest.split_at(at + 1),
        None => ("", rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    (auth, hosts, path)
}

/// One `redis://AUTH@HOST:PORT/DB` URL per host of the comma-separated `hosts`.
fn nodes(auth: &str, hosts: &str, port: u16, db: &str) -> Result<Vec<String>, String> {
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err("has an empty host in its list (HOST:PORT,HOST:PORT,…)".to_owned());
        }
        let has_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        let host = if has_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let node = format!("redis://{auth}{host}/{db}");
        check_node(&node)?;
        nodes.push(node);
    }
    Ok(nodes)
}

/// Whether the `redis` crate reads `url` as a TCP server address.
fn check_node(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    match url.into_connection_info() {
        Ok(info) if matches!(info.addr(), redis::ConnectionAddr::Unix(_)) => {
            Err("names a Unix socket, which is not supported".to_owned())
        }
        Ok(_) => Ok(()),
        // The crate's messages name the part that is wrong, never the URL itself.
        Err(e) => Err(format!("does not parse: {e}")),
    }
}

/// `url` with its password hidden: the user information before the last `@` keeps only the
/// user name (`redis://user:***@host`, `redis://:***@host`, `redis://***@host` when it has no
/// `:`), and `pass=`/`password=` query values become `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("***@{hosts}"),
        },
        None => rest.to_owned(),
    };
    let Some((before, query)) = rest.split_once('?') else {
        return format!("{scheme}{rest}");
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, format!("#{fragment}")),
        None => (query, String::new()),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if matches!(name, "pass" | "password") => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{scheme}{before}?{}{fragment}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_into_its_nodes() {
        let url = StoreUrl::parse("memory").unwrap();
        assert_eq!(url.kind(), StoreKind::Memory);

        let url = StoreUrl::parse("rediss://:pw@cache.example:6380/2#insecure").unwrap();
        assert_eq!(url.kind(), StoreKind::Redis);
        assert!(url.is_tls() && url.is_insecure());
        assert_eq!(url.nodes(), ["rediss://:pw@cache.example:6380/2#insecure"]);
        assert!(!StoreUrl::parse("redis://h/0").unwrap().is_tls());

        let url = StoreUrl::parse("redis+sentinel://u:p%40w@a:1,b,[::1]:3/main/4").unwrap();
        assert_eq!(url.kind(), StoreKind::Sentinel);
        assert_eq!(url.master(), Some("main"));
        assert_eq!(
            url.nodes(),
            [
                "redis://u:p%40w@a:1/4",
                "redis://u:p%40w@b:26379/4",
                "redis://u:p%40w@[::1]:3/4"
            ]
        );
        let url = StoreUrl::parse("redis+sentinel://a:1/main").unwrap();
        assert_eq!(url.nodes(), ["redis://a:1/0"]);

        let url = StoreUrl::parse("redis+cluster://:pw@a:7000,b:7001,c").unwrap();
        assert_eq!(url.kind(), StoreKind::Cluster);
        assert_eq!(
            url.nodes(),
            [
                "redis://:pw@a:7000/0",
                "redis://:pw@b:7001/0",
                "redis://:pw@c:6379/0"
            ]
        );
    }

    #[test]
    fn malformed_urls_are_refused_without_their_password() {
        for bad in [
            "postgres://:secret@x",
            "redis:secret@x",
            "redis://:secret@x/notadb",
            "redis+sentinel://:secret@a:1",
            "redis+sentinel://:secret@a:1,,b:2/m",
            "redis+sentinel://:secret@a:1/m/x",
            "redis+cluster://:secret@a:1/3",
            "redis+cluster://:secret@a:port",
            "rediss+cluster://:secret@a:1",
            "rediss://:secret@a:1/0#other",
        ] {
            let err = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{bad}: {err}");
            assert!(err.contains(":***@"), "{bad}: {err}");
        }
    }

    #[test]
    fn passwords_are_hidden_wherever_a_url_is_shown() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
            ("redis://user:pw@h:1/0", "redis://user:***@h:1/0"),
            ("redis://pw@h", "redis://***@h"),
            ("redis://u:p@w@h", "redis://u:***@h"),
            ("redis://u:p/w@h/0", "redis://u:***@h/0"),
            ("rediss://:pw@h/0#insecure", "rediss://:***@h/0#insecure"),
            (
                "redis+sentinel://:pw@a:1,b:2/m/0",
                "redis+sentinel://:***@a:1,b:2/m/0",
            ),
            (
                "redis+unix:///s.sock?db=1&pass=pw",
                "redis+unix:///s.sock?db=1&pass=***",
            ),
            ("garbage:pw@h", "garbage:***@h"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        let url = StoreUrl::parse("redis+cluster://:hunter2@a:1").unwrap();
        assert_eq!(url.to_string(), "redis+cluster://:***@a:1");
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
