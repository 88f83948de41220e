//! The load generator: N callers in a closed loop for a fixed time, each
//! call timed into an HDR histogram.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// One caller's connection to a path: it makes one call at a time.
pub(crate) trait Caller: Send + 'static {
    /// Makes one call; `Err` says why it failed.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// How long a cell runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Calls made but not counted, so connections and caches are warm.
    pub(crate) warmup: Duration,
    /// The measured window.
    pub(crate) duration: Duration,
}

/// What one cell (a path at one concurrency) measured.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    /// Calls that succeeded in the window, per second.
    pub(crate) calls_per_sec: f64,
    /// Median latency.
    pub(crate) p50: Duration,
    /// 99th percentile latency.
    pub(crate) p99: Duration,
    /// Calls that failed in the window.
    pub(crate) errors: u64,
    /// The first failure seen, to show what went wrong.
    pub(crate) first_error: Option<String>,
    /// Every call made, warm-up included (what CPU time is divided by).
    pub(crate) all_calls: u64,
    /// CPU microseconds and context switches per call of each process.
    pub(crate) cpu: crate::cpu::PerCall,
}

impl std::fmt::Display for Cell {
    /// The progress line of a cell: rate, latencies, and the first error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} calls/s, p50 {:?}, p99 {:?}",
            self.calls_per_sec, self.p50, self.p99
        )?;
        match &self.first_error {
            Some(e) => write!(f, ", {} errors ({e})", self.errors),
            None => Ok(()),
        }
    }
}

/// Latencies are recorded in microseconds, 1 us to 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    // The bounds are constants that `new_with_bounds` accepts.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// Runs `concurrency` callers made by `make` for `timing`, each in its own
/// task: every caller waits for its answer before the next call (a closed
/// loop), so `concurrency` is exactly the number of calls in flight.
pub(crate) async fn run<C, F, Fut>(
    make: F,
    concurrency: usize,
    timing: Timing,
) -> Result<Cell, String>
where
    C: Caller,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<C, String>>,
{
    let mut callers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        callers.push(make().await?);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.duration;
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|mut caller| {
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut all = 0u64;
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let outcome = caller.call().await;
                    let t1 = Instant::now();
                    all += 1;
                    // Only calls wholly inside the window count.
                    if t0 < measure_from || t1 > end {
                        continue;
                    }
                    match outcome {
                        Ok(()) => {
                            let us = (t1 - t0).as_micros().max(1) as u64;
                            hist.saturating_record(us);
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (hist, errors, first_error, all)
            })
        })
        .collect();
    let mut hist = histogram();
    let mut errors = 0;
    let mut first_error = None;
    let mut all_calls = 0;
    for task in tasks {
        let (h, e, f, a) = task.await.map_err(|e| format!("a caller task died: {e}"))?;
        hist.add(&h)
            .map_err(|e| format!("cannot merge histograms: {e}"))?;
        errors += e;
        all_calls += a;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok(Cell {
        calls_per_sec: hist.len() as f64 / timing.duration.as_secs_f64(),
        p50: Duration::from_micros(hist.value_at_quantile(0.5)),
        p99: Duration::from_micros(hist.value_at_quantile(0.99)),
        errors,
        first_error,
        all_calls,
        cpu: Default::default(),
    })
}
