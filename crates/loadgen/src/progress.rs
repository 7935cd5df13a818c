//! The dispatch phase watched while it runs: completions and the master's
//! resident memory sampled every 100 ms, for the rate of the run's last tenth
//! and the memory at its start, middle and end.

use crate::master::process_usage;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One sample: when, tasks completed so far, master RSS.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    completed: u64,
    rss: Option<u64>,
}

/// Samples taken until [`Watch::stop`].
pub struct Watch {
    samples: Arc<Mutex<Vec<Sample>>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Starts sampling the master `pid` and the `completed` counter.
    pub fn start(pid: u32, completed: Arc<AtomicU64>) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let taken = samples.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let sample = Sample {
                    at: Instant::now(),
                    completed: completed.load(Ordering::Relaxed),
                    rss: process_usage(pid).map(|(_, rss)| rss),
                };
                taken.lock().unwrap().push(sample);
            }
        });
        Self { samples, sampler }
    }

    /// Stops sampling; returns the summary for a run of `total` tasks.
    pub fn stop(self, total: u64) -> serde_json::Value {
        self.sampler.abort();
        let samples = self.samples.lock().unwrap().clone();
        let first_reaching = |count: u64| samples.iter().find(|s| s.completed >= count).copied();
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return serde_json::Value::Null;
        };
        // The last tenth: from the first sample at 90 % to the last.
        let tail = first_reaching(total - total / 10)
            .filter(|s| last.at > s.at && last.completed > s.completed)
            .map(|s| (last.completed - s.completed) as f64 / (last.at - s.at).as_secs_f64());
        serde_json::json!({
            "last_tenth_per_second": tail,
            "master_rss_bytes": {
                "start": first.rss,
                "middle": first_reaching(total / 2).and_then(|s| s.rss),
                "end": last.rss,
            },
        })
    }
}
