//! Samples and the figures the benchmarks' tables print of them.

use std::time::Duration;

/// Measured durations of one thing.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile by nearest rank (p99 of fewer than 100 samples is their maximum).
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.0, q)
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The arithmetic mean; zero when there are none.
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.0.len()) {
            Ok(n) if n > 0 => self.0.iter().sum::<Duration>() / n,
            _ => Duration::ZERO,
        }
    }

    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }
}

/// The `q` quantile of `samples` by nearest rank; zero when there are none.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Milliseconds with a precision that suits the magnitude.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `b / a` as "×N" (how many times `b` is of `a`), or "-" when `a` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if a <= 0.0 || !a.is_finite() || !b.is_finite() {
        return "-".into();
    }
    let r = b / a;
    if r >= 10.0 {
        format!("×{r:.0}")
    } else {
        format!("×{r:.2}")
    }
}

/// The ratio of two durations.
pub fn dratio(a: Duration, b: Duration) -> String {
    ratio(a.as_secs_f64(), b.as_secs_f64())
}

/// The rotation of `n` contestants in round `round` (A B, then B A, ...): what interleaving
/// means here, so that drift over a run falls on all of them alike.
pub fn order(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round) % n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s = Samples((1..=100).map(Duration::from_millis).collect());
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        let few = Samples(vec![Duration::from_millis(3), Duration::from_millis(1)]);
        assert_eq!(few.p99(), Duration::from_millis(3));
        assert_eq!(Samples::default().p50(), Duration::ZERO);
    }

    #[test]
    fn ratios_and_rotation() {
        assert_eq!(ratio(2.0, 5.0), "×2.50");
        assert_eq!(ratio(1.0, 40.0), "×40");
        assert_eq!(ratio(0.0, 1.0), "-");
        assert_eq!(order(3, 1), vec![1, 2, 0]);
        assert_eq!(ms(Duration::from_micros(1500)), "1.50");
    }
}
