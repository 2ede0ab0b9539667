//! Latency and throughput measurements against a running cluster, printed
//! as tables with ratios to an upstream baseline measured in the same run.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

/// Measured latencies of one operation.
#[derive(Clone, Debug)]
pub struct Sample {
    pub operation: String,
    pub target: String,
    pub latencies: Vec<Duration>,
    pub wall: Duration,
    pub errors: usize,
}

impl Sample {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }
}

/// Runs `count` calls of `call(i)` with `concurrency` in flight and times each.
pub async fn measure<F, Fut>(
    operation: &str,
    target: &str,
    count: usize,
    concurrency: usize,
    call: F,
) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    // The first few errors are shown: a figure with errors needs a why.
    let shown = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let results: Vec<(Duration, bool)> = futures::stream::iter(0..count)
        .map(|i| {
            let (call, shown) = (call.clone(), shown.clone());
            async move {
                let begun = Instant::now();
                let outcome = call(i).await;
                if let Err(err) = &outcome
                    && shown.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3
                {
                    eprintln!("  {operation} {target} #{i}: {err:#}");
                }
                (begun.elapsed(), outcome.is_ok())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let wall = started.elapsed();
    let errors = results.iter().filter(|(_, ok)| !ok).count();
    Sample {
        operation: operation.into(),
        target: target.into(),
        latencies: results
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(d, _)| d)
            .collect(),
        wall,
        errors,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Prints the samples, and for each operation the ratio of every target to
/// `baseline` (p50, p99 and throughput).
pub fn report(samples: &[Sample], baseline: &str) {
    println!(
        "{:<8} {:<34} {:>6} {:>6} {:>9} {:>9} {:>9} {:>10}",
        "op", "target", "n", "errors", "p50 ms", "p95 ms", "p99 ms", "ops/s"
    );
    for s in samples {
        println!(
            "{:<8} {:<34} {:>6} {:>6} {:>9} {:>9} {:>9} {:>10.1}",
            s.operation,
            s.target,
            s.latencies.len(),
            s.errors,
            ms(s.percentile(50.0)),
            ms(s.percentile(95.0)),
            ms(s.percentile(99.0)),
            s.throughput()
        );
    }
    println!(
        "\nratios to {baseline} (higher latency ratio = slower; throughput ratio < 1 = slower):"
    );
    for s in samples.iter().filter(|s| s.target != baseline) {
        let Some(base) = samples
            .iter()
            .find(|b| b.operation == s.operation && b.target == baseline)
        else {
            continue;
        };
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON);
        println!(
            "{:<8} {:<34} p50 x{:.2}  p95 x{:.2}  p99 x{:.2}  throughput x{:.2}",
            s.operation,
            s.target,
            ratio(s.percentile(50.0), base.percentile(50.0)),
            ratio(s.percentile(95.0), base.percentile(95.0)),
            ratio(s.percentile(99.0), base.percentile(99.0)),
            s.throughput() / base.throughput().max(f64::EPSILON)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sample = Sample {
            operation: "get".into(),
            target: "x".into(),
            latencies: (1..=100).map(Duration::from_millis).collect(),
            wall: Duration::from_secs(1),
            errors: 0,
        };
        assert_eq!(sample.percentile(50.0), Duration::from_millis(50));
        assert_eq!(sample.percentile(99.0), Duration::from_millis(99));
        assert_eq!(sample.throughput(), 100.0);
    }
}
