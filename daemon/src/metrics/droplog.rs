//! What the drop log did: lines written by verdict, lines held back by the per-pod rate,
//! the times the kernel had more for it than its socket could hold, and the logged packets
//! whose prefix was not one podwall writes.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::instruments::write_family;

#[derive(Debug, Default)]
pub struct DropLogCounts {
    /// Lines written: denied, allowed.
    lines: [AtomicU64; 2],
    suppressed: AtomicU64,
    overruns: AtomicU64,
    malformed: AtomicU64,
}

impl DropLogCounts {
    pub fn count_line(&self, allowed: bool) {
        self.lines[usize::from(allowed)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_suppressed(&self) {
        self.suppressed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_overrun(&self) {
        self.overruns.fetch_add(1, Ordering::Relaxed);
    }

    /// A logged packet's prefix is not one podwall's log rules write: skipped.
    pub fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String) {
        let name = "podwall_drop_log_lines_total";
        let _ = writeln!(
            out,
            "# HELP {name} Lines the drop log wrote, by verdict.\n# TYPE {name} counter"
        );
        for (verdict, count) in ["deny", "allow"].iter().zip(&self.lines) {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{verdict=\"{verdict}\"}} {count}");
        }
        write_family(
            out,
            "counter",
            [
                (
                    "podwall_drop_log_suppressed_total",
                    "Lines held back by the per-pod rate (each told in a suppression line).",
                    &self.suppressed,
                ),
                (
                    "podwall_drop_log_overruns_total",
                    "Times the drop log's socket overflowed and logged packets were lost.",
                    &self.overruns,
                ),
                (
                    "podwall_drop_log_malformed_total",
                    "Logged packets skipped because their prefix is not one podwall's log rules write.",
                    &self.malformed,
                ),
            ],
        );
    }
}
