//! What one app may take from the host, under `[limits]`, and an app's overrides of it under
//! `[apps.NAME.limits]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::first_zero;
use crate::error::{Error, Result};

/// Limits that bound what one app can take from the host.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted; larger is a 413.
    pub max_body_bytes: u64,
    /// Requests one app runs or queues at once; more wait up to `queue_timeout_ms`.
    pub max_concurrent_requests: usize,
    /// How long a request waits for a slot before a 503 with `Retry-After`.
    pub queue_timeout_ms: u64,
    /// How long a handler may take before the client gets a 504.
    pub request_timeout_ms: u64,
    /// Worker threads per loaded version (handlers run on them, never on the I/O threads).
    pub worker_threads: usize,
    /// Stack size of each worker thread, in MiB (a stack overflow ends the whole process).
    pub worker_stack_mib: usize,
    /// Handlers past `request_timeout_ms` whose threads are replaced so the version keeps its
    /// capacity; with more stuck than this, the version answers 503 until some return.
    pub max_stuck_threads: usize,
    /// How long a streamed response waits for a slow client to take more data before it gives
    /// up (the handler's write fails and the response is cut).
    pub stream_send_timeout_ms: u64,
    /// Streamed responses one version sends at once (each holds a worker thread while it
    /// runs); one more is a 503 with `Retry-After`, so streams cannot take every worker.
    pub max_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 2 * 1024 * 1024,
            max_concurrent_requests: 256,
            queue_timeout_ms: 1_000,
            request_timeout_ms: 30_000,
            worker_threads: 16,
            worker_stack_mib: 8,
            max_stuck_threads: 16,
            stream_send_timeout_ms: 60_000,
            max_streams: 8,
        }
    }
}

impl Limits {
    millis_getters! {
        queue_timeout => queue_timeout_ms;
        request_timeout => request_timeout_ms;
        stream_send_timeout => stream_send_timeout_ms;
    }

    /// `worker_stack_mib` in bytes.
    pub fn worker_stack_bytes(&self) -> usize {
        self.worker_stack_mib.saturating_mul(1024 * 1024)
    }

    pub(super) fn validate(&self, scope: &str) -> Result<()> {
        let zero = first_zero(&[
            (
                "max_concurrent_requests",
                self.max_concurrent_requests as u64,
            ),
            ("worker_threads", self.worker_threads as u64),
            ("request_timeout_ms", self.request_timeout_ms),
            ("worker_stack_mib", self.worker_stack_mib as u64),
            ("stream_send_timeout_ms", self.stream_send_timeout_ms),
            ("max_streams", self.max_streams as u64),
        ]);
        if let Some(what) = zero {
            return Err(Error::Config(format!("{scope}: {what} must be at least 1")));
        }
        if self.worker_stack_mib > 1024 {
            return Err(Error::Config(format!(
                "{scope}: worker_stack_mib must be at most 1024"
            )));
        }
        Ok(())
    }
}

/// Limits an app overrides; unset fields take the global value.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    /// See [`Limits::max_body_bytes`].
    pub max_body_bytes: Option<u64>,
    /// See [`Limits::max_concurrent_requests`].
    pub max_concurrent_requests: Option<usize>,
    /// See [`Limits::queue_timeout_ms`].
    pub queue_timeout_ms: Option<u64>,
    /// See [`Limits::request_timeout_ms`].
    pub request_timeout_ms: Option<u64>,
    /// See [`Limits::worker_threads`].
    pub worker_threads: Option<usize>,
    /// See [`Limits::worker_stack_mib`].
    pub worker_stack_mib: Option<usize>,
    /// See [`Limits::max_stuck_threads`].
    pub max_stuck_threads: Option<usize>,
    /// See [`Limits::stream_send_timeout_ms`].
    pub stream_send_timeout_ms: Option<u64>,
    /// See [`Limits::max_streams`].
    pub max_streams: Option<usize>,
}
