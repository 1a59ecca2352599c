//! The instruments `Metrics` is made of, and how each renders as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds in seconds: attach and commit times range from sub-millisecond (netlink) to
/// seconds (a large rebuild).
const BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so that it stays an integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A counter split by `result="ok"|"error"`.
#[derive(Debug, Default)]
pub struct ResultCounter {
    ok: AtomicU64,
    error: AtomicU64,
}

impl ResultCounter {
    pub(super) fn record(&self, ok: bool) {
        if ok { &self.ok } else { &self.error }.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let _ = writeln!(
            out,
            "{name}{{result=\"ok\"}} {}",
            self.ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "{name}{{result=\"error\"}} {}",
            self.error.load(Ordering::Relaxed)
        );
    }
}

/// One gauge or counter per row: name, help text, value.
pub(super) fn write_family<'a>(
    out: &mut String,
    kind: &str,
    rows: impl IntoIterator<Item = (&'a str, &'a str, &'a AtomicU64)>,
) {
    for (name, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
}
