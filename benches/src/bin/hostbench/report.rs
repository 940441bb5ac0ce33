//! Turns what the phases recorded into figures, checks them against the targets, prints a table.

use std::fmt::Write;

use baton_benches::load::{FAIL_BODY, FAIL_IO, FAIL_STATUS, FAIL_TIMEOUT, Sample};
use baton_benches::report::{Check, Machine, checks_table, latency_row, spread_row};
use baton_benches::stats::{Latency, Spread};
use serde::Serialize;

use crate::Settings;
use crate::events::{Event, Kind, Phase};

/// Requests in the first moments of the load (connections ramping up) are not steady state.
const RAMP_US: u64 = 500_000;

/// Failed requests by kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Failures {
    pub(crate) total: usize,
    /// Connection refused, reset or closed before a whole response.
    pub(crate) io: usize,
    /// No whole response within the request timeout.
    pub(crate) timeout: usize,
    /// A status other than 2xx.
    pub(crate) status: usize,
    /// A `counter` body that was not the connection's next count: its session was lost.
    pub(crate) body: usize,
}

impl Failures {
    fn add(&mut self, sample: &Sample) {
        let kind = match sample.outcome {
            FAIL_IO => &mut self.io,
            FAIL_TIMEOUT => &mut self.timeout,
            FAIL_STATUS => &mut self.status,
            FAIL_BODY => &mut self.body,
            _ => return,
        };
        *kind += 1;
        self.total += 1;
    }

    /// Everything but lost sessions: requests that got no answer or a wrong status.
    pub(crate) fn unanswered(&self) -> usize {
        self.io + self.timeout + self.status
    }
}

/// One event's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventFigures {
    #[serde(flatten)]
    pub(crate) event: Event,
    /// The longest gap between two consecutive successful responses overlapping the event.
    pub(crate) without_service_ms: f64,
    /// Requests that failed from this event's signal to the next one's (or the phase's end).
    pub(crate) failed: Failures,
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseFigures {
    pub(crate) kind: Kind,
    pub(crate) requested: usize,
    pub(crate) completed: usize,
    pub(crate) duration_s: f64,
    pub(crate) requests: usize,
    pub(crate) throughput_rps: f64,
    pub(crate) failed: Failures,
    /// Failed before the first event's signal.
    pub(crate) failed_before_events: usize,
    /// The most requests failed by one event (all kinds; `unanswered` apart).
    pub(crate) max_failed_per_event: usize,
    pub(crate) max_unanswered_per_event: usize,
    pub(crate) max_sessions_lost_per_event: usize,
    /// Session cookies given to the `/counter/` connections (one each when none is lost).
    pub(crate) sessions: usize,
    pub(crate) counts_ok: usize,
    pub(crate) without_service: Spread,
    pub(crate) signal_to_new_process_serving: Spread,
    pub(crate) signal_to_old_process_gone: Spread,
    pub(crate) signal_to_supervisor_reexecuted: Spread,
    /// Successful requests that started outside every event window (after the ramp-up).
    pub(crate) steady: Latency,
    /// Successful requests that started inside an event window.
    pub(crate) in_events: Latency,
    pub(crate) p99_ratio: f64,
    pub(crate) request_errors: Vec<String>,
    pub(crate) per_event: Vec<EventFigures>,
}

/// The longest gap between consecutive `ends` (sorted) whose interval overlaps `[from, to]`.
fn longest_gap(ends: &[u64], from: u64, to: u64) -> u64 {
    // The last success at or before `from`, through the first one after `to`.
    let first = ends.partition_point(|&e| e <= from).saturating_sub(1);
    let last = ends
        .partition_point(|&e| e <= to)
        .min(ends.len().saturating_sub(1));
    ends.get(first..=last)
        .unwrap_or(&[])
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn analyse(phase: Phase) -> PhaseFigures {
    let Phase {
        kind,
        requested,
        events,
        samples,
        elapsed,
        errors,
        sessions,
        counts_ok,
    } = phase;
    let mut ends: Vec<u64> = samples
        .iter()
        .filter(|s| !s.failed())
        .map(|s| u64::from(s.end_us()))
        .collect();
    ends.sort_unstable();
    let windows: Vec<(u64, u64)> = events.iter().map(Event::window).collect();
    let event_at = |t: u64| {
        windows
            .partition_point(|&(sent, _)| sent <= t)
            .checked_sub(1)
    };
    let mut failed = Failures::default();
    let mut per_event = vec![Failures::default(); events.len()];
    let mut failed_before_events = 0;
    let (mut steady, mut inside) = (Vec::new(), Vec::new());
    for sample in &samples {
        if sample.failed() {
            failed.add(sample);
            match event_at(u64::from(sample.end_us())) {
                Some(i) => per_event[i].add(sample),
                None => failed_before_events += 1,
            }
            continue;
        }
        let start = u64::from(sample.start_us);
        match event_at(start) {
            Some(i) if start <= windows[i].1 => inside.push(sample.latency_us),
            _ if start >= RAMP_US => steady.push(sample.latency_us),
            _ => {}
        }
    }
    let per_event: Vec<EventFigures> = events
        .into_iter()
        .zip(per_event)
        .map(|(event, failed)| {
            let (from, to) = event.window();
            EventFigures {
                without_service_ms: ms(longest_gap(&ends, from, to)),
                event,
                failed,
            }
        })
        .collect();
    let done: Vec<&EventFigures> = per_event.iter().filter(|e| e.event.ok).collect();
    let since_signal = |at: fn(&Event) -> Option<u64>| {
        let values: Vec<f64> = done
            .iter()
            .filter_map(|e| at(&e.event).map(|t| ms(t - e.event.sent_us)))
            .collect();
        Spread::from_ms(&values)
    };
    let gaps: Vec<f64> = done.iter().map(|e| e.without_service_ms).collect();
    let steady = Latency::from_micros(&mut steady);
    let in_events = Latency::from_micros(&mut inside);
    let requests = samples.len();
    let sessions_lost = |f: &Failures| f.body;
    PhaseFigures {
        kind,
        requested,
        completed: done.len(),
        duration_s: elapsed.as_secs_f64(),
        requests,
        throughput_rps: (requests - failed.total) as f64 / elapsed.as_secs_f64(),
        failed,
        failed_before_events,
        max_failed_per_event: per_event.iter().map(|e| e.failed.total).max().unwrap_or(0),
        max_unanswered_per_event: per_event
            .iter()
            .map(|e| e.failed.unanswered())
            .max()
            .unwrap_or(0),
        max_sessions_lost_per_event: per_event
            .iter()
            .map(|e| sessions_lost(&e.failed))
            .max()
            .unwrap_or(0),
        sessions,
        counts_ok,
        without_service: Spread::from_ms(&gaps),
        signal_to_new_process_serving: since_signal(|e| e.serving_us),
        signal_to_old_process_gone: since_signal(|e| e.done_us),
        signal_to_supervisor_reexecuted: since_signal(|e| e.reexecuted_us),
        p99_ratio: in_events.p99_ms / steady.p99_ms,
        steady,
        in_events,
        request_errors: errors,
        per_event,
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Result {
    machine: Machine,
    settings: Settings,
    phases: Vec<PhaseFigures>,
    host_alive: bool,
    /// Warnings and errors the host logged (a crash is one), the first 20.
    host_warnings: Vec<String>,
    targets: Vec<Check>,
}

impl Result {
    pub(crate) fn new(
        settings: Settings,
        phases: Vec<Phase>,
        host_alive: bool,
        warnings: Vec<String>,
    ) -> Result {
        let phases: Vec<PhaseFigures> = phases.into_iter().map(analyse).collect();
        let connections = settings.connections + settings.session_connections;
        let mut targets = Vec::new();
        for p in &phases {
            match p.kind {
                Kind::Upgrade => targets.push(Check {
                    name: "failed requests during upgrades",
                    target: "0".into(),
                    measured: format!(
                        "{} of {} over {} of {} upgrades",
                        p.failed.total, p.requests, p.completed, p.requested
                    ),
                    met: p.failed.total == 0 && p.completed == p.requested,
                }),
                Kind::Crash => {
                    targets.push(Check {
                        name: "requests failed per crash",
                        target: format!("<= {connections}"),
                        measured: format!(
                            "max {} (one per connection at most); {} of {} over {} of {} crashes",
                            p.max_unanswered_per_event,
                            p.failed.unanswered(),
                            p.requests,
                            p.completed,
                            p.requested
                        ),
                        met: p.max_unanswered_per_event <= connections
                            && p.failed_before_events == 0
                            && p.completed == p.requested,
                    });
                    targets.push(Check {
                        name: "in-memory sessions lost per crash",
                        target: format!("<= {}", settings.session_connections),
                        measured: format!(
                            "max {} (documented: they do not survive a crash)",
                            p.max_sessions_lost_per_event
                        ),
                        met: p.max_sessions_lost_per_event <= settings.session_connections,
                    });
                }
            }
        }
        targets.push(Check {
            name: "host alive at the end",
            target: "yes".into(),
            measured: host_alive.to_string(),
            met: host_alive,
        });
        Result {
            machine: Machine::current(),
            settings,
            phases,
            host_alive,
            host_warnings: warnings.into_iter().take(20).collect(),
            targets,
        }
    }

    pub(crate) fn passed(&self) -> bool {
        self.targets.iter().all(|c| c.met)
    }
}

/// The table for people.
pub(crate) fn table(r: &Result) -> String {
    let mut out = String::new();
    let s = &r.settings;
    let _ = writeln!(
        out,
        "\nhostbench: {} cores ({}), supervised host, {} + {} connections (/hello/ + /counter/ \
         with in-memory sessions), {} client threads, {} build",
        r.machine.cores,
        r.machine.cpu,
        s.connections,
        s.session_connections,
        s.common.client_threads,
        s.common.profile()
    );
    for p in &r.phases {
        let (title, signal) = match p.kind {
            Kind::Upgrade => ("upgrades (SIGUSR2 to the supervisor)", "SIGUSR2"),
            Kind::Crash => ("crash restarts (SIGKILL to the serving process)", "SIGKILL"),
        };
        let f = &p.failed;
        let _ = writeln!(
            out,
            "\n{title}: {} of {} done in {:.1} s; requests {} total, {:.0} req/s\n  failed {} \
             (io {}, timeout {}, status {}, body {}); per event at most {} (io/timeout/status {}, \
             body {}); before the first event {}\n  sessions given {}, counts right {}",
            p.completed,
            p.requested,
            p.duration_s,
            p.requests,
            p.throughput_rps,
            f.total,
            f.io,
            f.timeout,
            f.status,
            f.body,
            p.max_failed_per_event,
            p.max_unanswered_per_event,
            p.max_sessions_lost_per_event,
            p.failed_before_events,
            p.sessions,
            p.counts_ok
        );
        latency_row(&mut out, "steady state", &p.steady);
        latency_row(&mut out, "inside event windows", &p.in_events);
        let _ = writeln!(
            out,
            "  p99 inside event windows / steady: {:.2}",
            p.p99_ratio
        );
        spread_row(&mut out, "time without service", &p.without_service);
        spread_row(
            &mut out,
            &format!("{signal} -> new process serving"),
            &p.signal_to_new_process_serving,
        );
        spread_row(
            &mut out,
            &format!("{signal} -> old process gone"),
            &p.signal_to_old_process_gone,
        );
        if p.kind == Kind::Upgrade {
            spread_row(
                &mut out,
                "SIGUSR2 -> supervisor re-executed",
                &p.signal_to_supervisor_reexecuted,
            );
        }
        for e in &p.per_event {
            let at = |t: Option<u64>| {
                t.map_or_else(
                    || "-".to_owned(),
                    |t| format!("{:.1}", ms(t - e.event.sent_us)),
                )
            };
            let _ = writeln!(
                out,
                "    #{:<3} pid {} -> {}  serving {:>7} ms  gone {:>7} ms  no service {:>7.1} ms  \
                 failed {} (io {}, timeout {}, status {}, body {}){}",
                e.event.index,
                e.event.old_pid,
                e.event
                    .new_pid
                    .map_or_else(|| "-".to_owned(), |p| p.to_string()),
                at(e.event.serving_us),
                at(e.event.done_us),
                e.without_service_ms,
                e.failed.total,
                e.failed.io,
                e.failed.timeout,
                e.failed.status,
                e.failed.body,
                e.event
                    .error
                    .as_ref()
                    .map_or_else(String::new, |err| format!("  error: {err}"))
            );
        }
        for e in p.request_errors.iter().take(6) {
            let _ = writeln!(out, "  request error: {e}");
        }
    }
    let _ = writeln!(
        out,
        "\nhost: alive {}; warnings/errors logged {}",
        r.host_alive,
        r.host_warnings.len()
    );
    checks_table(&mut out, &r.targets);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_is_the_one_that_overlaps_the_window() {
        let ends = [10, 20, 30, 100, 110, 300, 310];
        // 30 -> 100 overlaps [40, 50]; 110 -> 300 does not.
        assert_eq!(longest_gap(&ends, 40, 50), 70);
        // Both gaps overlap [105, 200].
        assert_eq!(longest_gap(&ends, 105, 200), 190);
        // A window at the very end: the gap into it counts.
        assert_eq!(longest_gap(&ends, 305, 400), 10);
        assert_eq!(longest_gap(&[], 0, 10), 0);
    }
}
