//! One figure of the tier comparison, kept round by round for both sides, so that a ratio
//! can be read against how far apart the two sides already are from one round to the next.

use std::time::Duration;

/// Side 0: podwall without the cluster policies; side 1: with them.
pub const SIDES: usize = 2;

/// The values of one figure: `rounds[r][side]` holds round `r`'s values of `side` (in the
/// unit the table prints: ms, MiB, Gbit/s, …).
#[derive(Debug, Clone, Default)]
pub struct Figure {
    pub rounds: Vec<[Vec<f64>; SIDES]>,
}

impl Figure {
    pub fn push(&mut self, round: usize, side: usize, value: f64) {
        if self.rounds.len() <= round {
            self.rounds.resize_with(round + 1, Default::default);
        }
        self.rounds[round][side].push(value);
    }

    /// A duration, in milliseconds.
    pub fn push_ms(&mut self, round: usize, side: usize, d: Duration) {
        self.push(round, side, d.as_secs_f64() * 1e3);
    }

    /// Every value of `side`, over all rounds.
    pub fn all(&self, side: usize) -> Vec<f64> {
        self.rounds.iter().flat_map(|r| r[side].clone()).collect()
    }

    pub fn len(&self, side: usize) -> usize {
        self.rounds.iter().map(|r| r[side].len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        (0..SIDES).all(|side| self.len(side) == 0)
    }

    /// The `q` quantile of `side`'s values by nearest rank (p99 of fewer than 100 values is
    /// their maximum); `None` without values.
    pub fn quantile(&self, side: usize, q: f64) -> Option<f64> {
        quantile(&self.all(side), q)
    }

    pub fn p50(&self, side: usize) -> Option<f64> {
        self.quantile(side, 0.5)
    }

    pub fn mean(&self, side: usize) -> Option<f64> {
        let all = self.all(side);
        (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64)
    }

    /// With over without, of the `q` quantiles of all rounds.
    pub fn ratio(&self, q: f64) -> Option<f64> {
        divide(self.quantile(1, q)?, self.quantile(0, q)?)
    }

    /// The lowest and the highest ratio of the two sides' medians within one round, over the
    /// rounds where both have values: the spread a ratio of the whole run is to be read
    /// against. `None` with fewer than two such rounds.
    pub fn round_ratios(&self) -> Option<(f64, f64)> {
        let ratios: Vec<f64> = (self.rounds.iter())
            .filter_map(|r| divide(quantile(&r[1], 0.5)?, quantile(&r[0], 0.5)?))
            .collect();
        if ratios.len() < 2 {
            return None;
        }
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((min, max))
    }
}

fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied()
}

fn divide(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_of_the_run_and_of_each_round() {
        let mut f = Figure::default();
        for (round, (a, b)) in [(10.0, 11.0), (20.0, 18.0), (10.0, 10.0)]
            .into_iter()
            .enumerate()
        {
            f.push(round, 0, a);
            f.push(round, 1, b);
        }
        assert_eq!(f.p50(0), Some(10.0));
        assert_eq!(f.p50(1), Some(11.0));
        assert_eq!(f.ratio(0.5), Some(1.1));
        assert_eq!(f.round_ratios(), Some((0.9, 1.1)));
        assert_eq!(f.quantile(0, 0.99), Some(20.0));
        assert_eq!(f.len(1), 3);
    }

    #[test]
    fn empty_and_zero_figures_have_no_ratio() {
        let mut f = Figure::default();
        assert!(f.is_empty() && f.p50(0).is_none() && f.ratio(0.5).is_none());
        f.push(0, 0, 0.0);
        f.push(0, 1, 1.0);
        assert_eq!(f.ratio(0.5), None);
        assert_eq!(f.round_ratios(), None);
    }
}
