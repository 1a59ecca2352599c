//! The daemon's `/metrics` (Prometheus text format), read to check how it changed the
//! kernel: whole-table swaps versus element-only netlink transactions, reconcile repairs.

use std::collections::BTreeMap;

/// Counters the tests look at.
pub const FULL_REPLACES: &str = "podwall_full_replaces_total";
pub const STRUCTURAL_TRANSACTIONS: &str = "podwall_structural_transactions_total";
pub const STRUCTURAL_FALLBACKS: &str = "podwall_structural_fallbacks_total";
pub const ELEMENT_TRANSACTIONS: &str = "podwall_element_transactions_total";
pub const ELEMENTS_CHANGED: &str = "podwall_elements_changed_total";
pub const RECONCILE_REPAIRS: &str = "podwall_reconcile_repairs_total";
pub const MANIFEST_FILES_READ: &str = "podwall_manifest_files_read_total";

/// One scrape: `name{labels}` → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
}

impl Metrics {
    /// Parse the text format; comments and lines that are not samples are skipped.
    pub fn parse(text: &str) -> Self {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The value is the last field (a timestamp would follow it; podwall sends none).
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Ok(v) = value.parse::<f64>() {
                samples.insert(series.trim().to_string(), v);
            }
        }
        Metrics { samples }
    }

    /// The sum over every label set of metric `name`; `None` when the daemon does not
    /// export it at all.
    pub fn get(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for (series, v) in &self.samples {
            let base = series.split('{').next().unwrap_or(series);
            if base == name {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// Every series of metric `name`, labels included (`name{a="b"}`).
    pub fn series(&self, name: &str) -> Vec<&str> {
        (self.samples.keys())
            .filter(|series| series.split('{').next() == Some(name))
            .map(String::as_str)
            .collect()
    }

    /// Like `get`, but a missing metric is a test failure naming it.
    pub fn value(&self, name: &str) -> f64 {
        self.get(name).unwrap_or_else(|| {
            panic!(
                "/metrics has no {name}; it has: {:?}",
                self.samples.keys().collect::<Vec<_>>()
            )
        })
    }

    /// How much `name` grew since `before`.
    pub fn delta(&self, before: &Metrics, name: &str) -> f64 {
        self.value(name) - before.get(name).unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_over_labels() {
        let m = Metrics::parse(
            "# HELP podwall_x_total x\n# TYPE podwall_x_total counter\n\
             podwall_x_total{result=\"ok\"} 3\npodwall_x_total{result=\"error\"} 1\n\
             podwall_y_total 7\npodwall_h_bucket{le=\"+Inf\"} 2\n",
        );
        assert_eq!(m.get("podwall_x_total"), Some(4.0));
        assert_eq!(m.value("podwall_y_total"), 7.0);
        assert_eq!(m.get("podwall_h_bucket"), Some(2.0));
        assert_eq!(m.get("podwall_nope"), None);
        let before = Metrics::parse("podwall_y_total 5\n");
        assert_eq!(m.delta(&before, "podwall_y_total"), 2.0);
    }
}
