//! The admin API's wire format, shared by the server and the `baton` client: one type per
//! request body and answer (serde both ways, so the field names are written once), the query
//! strings of `POST /apps` and `GET /sessions` (form-urlencoded on both sides), and the
//! percent-encoding of path segments such as `/apps/{app}`.
//!
//! The dashboard (`dashboard.html`) reads the same JSON: renaming a field here breaks it too.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::crash::Quarantined;
use crate::deploy::{CanaryStatus, Rejection, Running, State, SwapTimings};

/// `GET /status` (and `GET /apps`): every app, refused files, the host's resources.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Every app.
    pub apps: Vec<AppStatus>,
    /// Refused module files whose app could not be identified.
    pub rejected: Vec<Rejection>,
    /// Process-wide resources that bound how many versions can still be deployed.
    pub host: HostStatus,
    /// Versions that crashed the serving process too often: not loaded until cleared.
    pub quarantine: Vec<Quarantined>,
}

/// Process-wide resources in the status document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    /// The serving process's pid (it changes with a restart or an upgrade).
    pub pid: u32,
    /// The version of the `baton` binary serving (see `baton --version`).
    pub version: String,
    /// Whether a supervisor restarts this process and can upgrade it.
    pub supervised: bool,
    /// pthread keys in use (modules' copies of std take them); `None` if they cannot be counted.
    pub pthread_keys_in_use: Option<usize>,
    /// The C library's limit on pthread keys.
    pub pthread_keys_max: usize,
    /// Keys deleted after the modules that created them were unloaded.
    pub pthread_keys_reclaimed: u64,
    /// New modules are refused until the host is restarted (too few pthread keys left).
    pub restart_required: bool,
}

/// One app: an entry of [`Status::apps`], and `GET /apps/{app}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    /// App name.
    pub name: String,
    /// Mount path.
    pub mount: String,
    /// The active version, if any.
    pub active: Option<String>,
    /// The canary split, if one is set.
    pub canary: Option<CanaryStatus>,
    /// Versions, oldest first.
    pub versions: Vec<VersionStatus>,
    /// Timeline of the last swap.
    pub last_swap: Option<SwapTimings>,
    /// Last deploy error.
    pub last_error: Option<String>,
}

/// One version in the status document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionStatus {
    /// Deployment id.
    pub id: u64,
    /// Version.
    pub version: String,
    /// State.
    pub state: State,
    /// Share of the app's new requests it takes, in percent.
    pub weight: u8,
    /// Requests running now.
    pub in_flight: usize,
    /// Requests finished.
    pub served: u64,
    /// Module file deployed.
    pub source: String,
    /// The private copy the library is mapped from.
    pub copy: String,
    /// When it was loaded (Unix milliseconds).
    pub loaded_unix_ms: u64,
    /// Version of `baton-sdk` it was built with.
    pub sdk_version: String,
    /// Compiler that built it.
    pub rustc_version: String,
    /// Its private copy is kept for rollback.
    pub stored: bool,
    /// Requests running on it now, longest first.
    pub running: Vec<Running>,
    /// Handlers running past the request timeout now.
    pub stuck: usize,
    /// More handlers are stuck than `max_stuck_threads`: it answers 503 until some return.
    pub unhealthy: bool,
    /// Worker threads alive (replacements for stuck handlers included).
    pub worker_threads: usize,
    /// Its last error.
    pub error: Option<String>,
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The new version is active.
    Deployed,
    /// The new version takes its share of new requests beside the active one.
    Canary,
    /// The same bytes were already live: nothing changed.
    Unchanged,
}

/// What `POST /apps` and `POST /apps/{app}/rollback` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployOutcome {
    /// What the deploy did.
    pub outcome: Outcome,
    /// App name.
    pub app: String,
    /// The version deployed (or found already live).
    pub version: String,
    /// Deployment id of that version.
    pub id: u64,
    /// The version it replaced, if any.
    pub replaced: Option<String>,
    /// The canary's share of new requests, for a canary deploy.
    pub percent: Option<u8>,
    /// The timeline of the app's last swap.
    pub last_swap: Option<SwapTimings>,
}

/// The query of `POST /apps`: `name=FILE[&canary=PERCENT]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployQuery {
    /// The module's file name (`upload.so` when not given).
    pub name: Option<String>,
    /// Deploy as a canary taking this share of new requests.
    pub canary: Option<u8>,
}

impl DeployQuery {
    /// The file name the upload is stored under.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("upload.so")
    }

    /// The query string.
    pub fn encode(&self) -> String {
        encode_query([
            ("name", self.name.clone()),
            ("canary", self.canary.map(|p| p.to_string())),
        ])
    }

    /// Reads a query string; the first of repeated keys counts, unknown keys are ignored.
    ///
    /// # Errors
    /// [`QueryError::Percent`] for a `canary` that is not 0 to 100.
    pub fn decode(query: &str) -> Result<DeployQuery, QueryError> {
        let name = param(query, "name").map(Cow::into_owned);
        let canary = param(query, "canary")
            .map(|text| percent(&text))
            .transpose()?;
        Ok(DeployQuery { name, canary })
    }
}

/// A canary share in percent, 0 to 100.
///
/// # Errors
/// [`QueryError::Percent`] for anything else.
pub fn percent(text: &str) -> Result<u8, QueryError> {
    text.parse::<u8>()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| QueryError::Percent(text.to_owned()))
}

/// The body of `PUT /apps/{app}/canary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// The canary version.
    pub version: String,
    /// Its share of new requests, 0 to 100.
    pub percent: u8,
}

/// What `PUT /apps/{app}/canary` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanarySet {
    /// App name.
    pub app: String,
    /// The canary version.
    pub canary: String,
    /// Its share of new requests.
    pub percent: u8,
}

/// What `POST /apps/{app}/canary/promote` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promoted {
    /// App name.
    pub app: String,
    /// The former canary, now active.
    pub active: String,
}

/// What `DELETE /apps/{app}/canary` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aborted {
    /// App name.
    pub app: String,
    /// The canary version, now draining.
    pub aborted: String,
}

/// What `DELETE /apps/{app}` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Undeployed {
    /// App name.
    pub app: String,
    /// The version that was active, now draining.
    pub undeployed: String,
}

/// What `POST /upgrade` answers (`202`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeStarted {
    /// Always `upgrading`.
    pub outcome: String,
    /// The serving process being replaced.
    pub pid: u32,
    /// Its `baton` version.
    pub version: String,
    /// The supervisor's pid.
    pub supervisor: i32,
}

/// Whose sessions a session answer covers: always the host's (sessions are shared by its apps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every app of the host.
    Host,
}

/// One session in the admin API's answers (`GET /sessions/{id}`, and in listings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionShown {
    /// The first characters of its id: enough to name it, not enough to use it as a cookie.
    pub id_prefix: String,
    /// When it was created (Unix milliseconds).
    pub created_unix_ms: u64,
    /// When it was last used (Unix milliseconds).
    pub accessed_unix_ms: u64,
    /// Its idle timeout.
    pub timeout_ms: u64,
    /// Time left before it expires unused.
    pub expires_in_ms: u64,
    /// Its attributes' names (never their values).
    pub attributes: Vec<String>,
}

/// What `GET /sessions` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionList {
    /// The store's kind: `memory` or `redis`.
    pub store: String,
    /// Whose sessions these are.
    pub scope: Scope,
    /// The page size asked for.
    pub limit: usize,
    /// More sessions matched than are listed.
    pub more: bool,
    /// The sessions, most recently used first.
    pub sessions: Vec<SessionShown>,
}

/// The query of `GET /sessions`: `limit=N&prefix=HEX`, both optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionsQuery {
    /// Most sessions to list, 1 to [`SessionsQuery::MAX_LIMIT`].
    pub limit: Option<usize>,
    /// Only sessions whose id starts with these hex digits.
    pub prefix: Option<String>,
}

impl SessionsQuery {
    /// Sessions listed when no `limit` is given.
    pub const DEFAULT_LIMIT: usize = 100;
    /// Most sessions one listing returns.
    pub const MAX_LIMIT: usize = 1000;

    /// The page size: the one asked for, or the default.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(Self::DEFAULT_LIMIT)
    }

    /// The query string (empty when nothing is set).
    pub fn encode(&self) -> String {
        encode_query([
            ("limit", self.limit.map(|n| n.to_string())),
            ("prefix", self.prefix.clone()),
        ])
    }

    /// Reads a query string; the first of repeated keys counts, unknown keys are ignored.
    ///
    /// # Errors
    /// [`QueryError::Limit`] for a `limit` that is not 1 to [`SessionsQuery::MAX_LIMIT`].
    pub fn decode(query: &str) -> Result<SessionsQuery, QueryError> {
        let limit = param(query, "limit")
            .map(|text| {
                text.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=Self::MAX_LIMIT).contains(n))
                    .ok_or_else(|| QueryError::Limit {
                        given: text.into_owned(),
                        max: Self::MAX_LIMIT,
                    })
            })
            .transpose()?;
        let prefix = param(query, "prefix").map(Cow::into_owned);
        Ok(SessionsQuery { limit, prefix })
    }
}

/// What `GET /sessions/count` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCount {
    /// The store's kind: `memory` or `redis`.
    pub store: String,
    /// Whose sessions these are.
    pub scope: Scope,
    /// Live sessions.
    pub count: u64,
}

/// What `DELETE /sessions/{id}` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invalidated {
    /// The first characters of the invalidated session's id.
    pub invalidated: String,
}

/// What `GET /quarantine` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineList {
    /// The quarantined versions.
    pub quarantine: Vec<Quarantined>,
}

/// The body of `POST /quarantine/clear`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// App name.
    pub app: String,
    /// The quarantined version.
    pub version: String,
}

/// What `POST /quarantine/clear` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cleared {
    /// The entries lifted.
    pub cleared: Vec<Quarantined>,
}

/// Every error answer's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong, for an operator.
    pub error: String,
}

/// Why a query string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A canary share out of range.
    #[error("percent must be between 0 and 100, not {0:?}")]
    Percent(String),
    /// A listing's page size out of range.
    #[error("limit must be between 1 and {max}, not {given:?}")]
    Limit {
        /// What was given.
        given: String,
        /// The largest page.
        max: usize,
    },
}

/// A form-urlencoded query of the `pairs` that have a value.
fn encode_query<'k>(pairs: impl IntoIterator<Item = (&'k str, Option<String>)>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value {
            query.append_pair(key, &value);
        }
    }
    query.finish()
}

/// The first value of `key` in a form-urlencoded `query`, decoded.
fn param<'q>(query: &'q str, key: &str) -> Option<Cow<'q, str>> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| (k == key).then_some(v))
}

/// What a path segment escapes: everything but letters, digits and `- . _ ~` (RFC 3986's
/// unreserved characters), so a name cannot add a segment or start a query.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` as one path segment, percent-encoded.
pub fn encode_segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A path segment percent-decoded (`+` stays a plus: it means a space only in a query).
pub fn decode_segment(segment: &str) -> Cow<'_, str> {
    percent_decode_str(segment).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_queries_round_trip_names_with_reserved_characters() {
        for name in ["hello+1.so", "hello 1.so", "a&b=c.so", "100%.so", "ünï.so"] {
            let query = DeployQuery {
                name: Some(name.to_owned()),
                canary: Some(10),
            };
            let encoded = query.encode();
            assert!(!encoded.contains(' '), "{encoded}");
            assert_eq!(DeployQuery::decode(&encoded).unwrap(), query, "{encoded}");
        }
        assert_eq!(
            DeployQuery::decode("name=hello%2B1.so").unwrap().name(),
            "hello+1.so"
        );
        assert_eq!(DeployQuery::decode("").unwrap().name(), "upload.so");
    }

    #[test]
    fn percentages_and_limits_are_bounded() {
        assert_eq!(DeployQuery::decode("canary=100").unwrap().canary, Some(100));
        for bad in ["101", "-1", "ten", ""] {
            let query = format!("name=a.so&canary={bad}");
            assert_eq!(
                DeployQuery::decode(&query),
                Err(QueryError::Percent(bad.to_owned()))
            );
        }
        assert_eq!(
            SessionsQuery::decode("").unwrap().limit(),
            SessionsQuery::DEFAULT_LIMIT
        );
        assert_eq!(SessionsQuery::decode("limit=5").unwrap().limit, Some(5));
        for bad in ["0", "1001", "many"] {
            let err = SessionsQuery::decode(&format!("limit={bad}")).unwrap_err();
            assert!(matches!(err, QueryError::Limit { ref given, max: 1000 } if given == bad));
        }
        let query = SessionsQuery {
            limit: Some(3),
            prefix: Some("ab12".to_owned()),
        };
        assert_eq!(SessionsQuery::decode(&query.encode()).unwrap(), query);
        assert_eq!(SessionsQuery::default().encode(), "");
    }

    #[test]
    fn path_segments_round_trip() {
        for name in ["hello", "a/b", "a b", "a+b", "x?y#z", "100%"] {
            let encoded = encode_segment(name);
            assert!(!encoded.contains(['/', '?', '#', ' ']), "{encoded}");
            assert_eq!(decode_segment(&encoded), name);
        }
        assert_eq!(decode_segment("a+b"), "a+b");
    }
}
