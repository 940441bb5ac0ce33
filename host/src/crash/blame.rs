//! Which live versions a death of the serving process is blamed on.
//!
//! 1. A **clue**: the dead process's last stderr lines name the thread that brought it down
//!    (`thread 'baton-hello' (1234) has overflowed its stack`, or std's `thread 'baton-hello'
//!    (1234) panicked at` of a panic that aborted). Worker threads are named `baton-<app>`, so the
//!    versions of that app are blamed.
//! 2. Without a clue (a segfault, an abort without a message, an OOM kill, `kill -9`), or when
//!    the thread is no app's: the versions that changed most recently, i.e. loading, warming,
//!    a canary, or the new version of an open guard window.
//! 3. If there are none: every live version.
//!
//! Within the app a clue names, the same preference holds: its recent versions if it has any,
//! otherwise all of its live versions.

use serde::Serialize;

use super::live::{Live, LiveVersion};

/// Which rule picked the blamed versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Rule {
    /// The last stderr lines named an app's worker thread.
    Thread,
    /// No clue: the versions that changed most recently.
    Recent,
    /// No clue and nothing changed recently: every live version.
    Everything,
}

impl Rule {
    /// The rule's name, as logged.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rule::Thread => "thread",
            Rule::Recent => "recent",
            Rule::Everything => "everything",
        }
    }
}

/// The outcome of [`blame`].
#[derive(Debug)]
pub(crate) struct Blame<'a> {
    /// How the versions were picked.
    pub rule: Rule,
    /// The stderr line that named the thread, if any.
    pub clue: Option<String>,
    /// The versions blamed (none when nothing was live).
    pub versions: Vec<&'a LiveVersion>,
}

/// The app whose worker thread a raw stderr line of the runtime names, if it names one.
///
/// Only lines that *start* with `thread '`: log lines start with `{` (JSON) or a timestamp, so
/// an app that logs such a text cannot frame another.
fn thread_app(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("thread 'baton-")?;
    let (app, rest) = rest.split_once('\'')?;
    (rest.contains("overflowed its stack") || rest.contains("panicked")).then_some(app)
}

/// Picks the versions of `live` to blame for the death, given the process's last stderr lines
/// (oldest first).
pub(crate) fn blame<'a>(live: &'a Live, last_lines: &[String]) -> Blame<'a> {
    let prefer_recent = |candidates: Vec<&'a LiveVersion>| {
        let recent: Vec<&LiveVersion> = candidates
            .iter()
            .copied()
            .filter(|v| v.is_recent())
            .collect();
        if recent.is_empty() {
            candidates
        } else {
            recent
        }
    };
    for line in last_lines.iter().rev() {
        let Some(app) = thread_app(line) else {
            continue;
        };
        let versions: Vec<&LiveVersion> = live.versions.iter().filter(|v| v.app == app).collect();
        if versions.is_empty() {
            // A host thread (`baton-io`) or an app no longer live: no clue after all.
            break;
        }
        return Blame {
            rule: Rule::Thread,
            clue: Some(line.trim().to_owned()),
            versions: prefer_recent(versions),
        };
    }
    let recent: Vec<&LiveVersion> = live.versions.iter().filter(|v| v.is_recent()).collect();
    if recent.is_empty() {
        Blame {
            rule: Rule::Everything,
            clue: None,
            versions: live.versions.iter().collect(),
        }
    } else {
        Blame {
            rule: Rule::Recent,
            clue: None,
            versions: recent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::live::LiveState;

    fn version(app: &str, version: &str, state: LiveState, guarded: bool) -> LiveVersion {
        LiveVersion {
            app: app.to_owned(),
            version: version.to_owned(),
            hash: format!("{app}{version}"),
            source: format!("/m/{app}.so").into(),
            state,
            canary: false,
            guarded,
        }
    }

    fn live(versions: Vec<LiveVersion>) -> Live {
        Live { pid: 1, versions }
    }

    fn names(blame: &Blame<'_>) -> Vec<String> {
        blame
            .versions
            .iter()
            .map(|v| format!("{}@{}", v.app, v.version))
            .collect()
    }

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn a_named_worker_thread_blames_its_app_only() {
        let live = live(vec![
            version("faulty", "1.0.0", LiveState::Active, false),
            version("hello", "2.0.0", LiveState::Active, true),
        ]);
        let last = lines(&[
            r#"{"message":"listening"}"#,
            "",
            "thread 'baton-faulty' (4242) has overflowed its stack",
            "fatal runtime error: stack overflow, aborting",
        ]);
        let blame = blame(&live, &last);
        assert_eq!(blame.rule, Rule::Thread);
        assert_eq!(names(&blame), ["faulty@1.0.0"]);
        assert_eq!(
            blame.clue.as_deref(),
            Some("thread 'baton-faulty' (4242) has overflowed its stack")
        );
    }

    #[test]
    fn within_the_named_app_the_guarded_version_is_blamed() {
        let live = live(vec![
            version("hello", "1.0.0", LiveState::Active, false),
            version("hello", "2.0.0", LiveState::Active, true),
        ]);
        let last = lines(&["thread 'baton-hello' panicked at src/lib.rs:3:5:"]);
        assert_eq!(names(&blame(&live, &last)), ["hello@2.0.0"]);
    }

    #[test]
    fn log_lines_quoting_a_thread_are_no_clue() {
        let live = live(vec![
            version("faulty", "1.0.0", LiveState::Active, false),
            version("hello", "1.0.0", LiveState::Active, false),
        ]);
        let last = lines(&[
            r#"{"message":"thread 'baton-faulty' has overflowed its stack"}"#,
            "2026-01-01T00:00:00Z  WARN app: thread 'baton-faulty' panicked at x",
        ]);
        let blame = blame(&live, &last);
        assert_eq!(blame.rule, Rule::Everything);
        assert_eq!(names(&blame), ["faulty@1.0.0", "hello@1.0.0"]);
    }

    #[test]
    fn without_a_clue_recent_changes_are_blamed_before_everything() {
        let mut live = live(vec![
            version("counter", "1.0.0", LiveState::Active, false),
            version("hello", "2.0.0", LiveState::Active, true),
            version("", "", LiveState::Loading, false),
        ]);
        // A host thread is no app's: no clue.
        let last = lines(&["thread 'baton-io' has overflowed its stack"]);
        let blame1 = blame(&live, &last);
        assert_eq!(blame1.rule, Rule::Recent);
        assert_eq!(names(&blame1), ["hello@2.0.0", "@"]);
        // Nor is the thread that copies and maps modules, even beside an app named `deploy`.
        live.versions
            .push(version("deploy", "1.0.0", LiveState::Active, false));
        let last = lines(&["thread 'baton/deploy' has overflowed its stack"]);
        let blame1 = blame(&live, &last);
        assert_eq!(blame1.rule, Rule::Recent);
        assert_eq!(names(&blame1), ["hello@2.0.0", "@"]);
        live.versions.retain(|v| !v.is_recent());
        let blame2 = blame(&live, &[]);
        assert_eq!(blame2.rule, Rule::Everything);
        assert_eq!(names(&blame2), ["counter@1.0.0", "deploy@1.0.0"]);
    }
}
