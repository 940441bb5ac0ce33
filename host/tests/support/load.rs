//! Keep-alive load from concurrent clients, every request recorded with its status and the
//! version that answered it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::http::Http;

/// One request made by the load generator.
#[derive(Debug, Clone)]
pub struct Sample {
    pub started: Instant,
    pub finished: Instant,
    pub status: u16,
    /// The `x-baton-version` header, or the transport error.
    pub version: String,
}

/// Keep-alive load from `connections` concurrent clients until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl Load {
    pub fn start(url: String, connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..connections)
            .map(|_| {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    // One client per task: one keep-alive connection each.
                    let http = Http::new();
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = http.send("GET", &url, &[], bytes::Bytes::new()).await;
                        let finished = Instant::now();
                        samples.push(match result {
                            Ok(r) => Sample {
                                started,
                                finished,
                                status: r.status,
                                version: r.version().to_owned(),
                            },
                            Err(e) => Sample {
                                started,
                                finished,
                                status: 0,
                                version: format!("transport error: {e}"),
                            },
                        });
                    }
                    samples
                })
            })
            .collect();
        Load { stop, tasks }
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.unwrap());
        }
        all
    }
}

/// Panics if any request did not answer 200.
pub fn assert_no_failures(samples: &[Sample]) {
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
}

/// Panics if any request did not answer 200, other than the 500s version `bad` (an
/// `app@version`) answered itself.
pub fn assert_no_failures_but_from(samples: &[Sample], bad: &str) {
    let others: Vec<Sample> = samples
        .iter()
        .filter(|s| !(s.status == 500 && s.version == bad))
        .cloned()
        .collect();
    assert_no_failures(&others);
}

/// Panics unless every request answered 200 and the load made more than `at_least` of them.
pub fn assert_served(samples: &[Sample], at_least: usize) {
    assert_no_failures(samples);
    assert!(
        samples.len() > at_least,
        "the load kept running ({} requests)",
        samples.len()
    );
}
