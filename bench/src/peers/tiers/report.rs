//! The tier comparison as Markdown tables (what docs/benchmarks.md quotes).

use std::fmt;

use super::figure::SIDES;
use super::{Report, Row};
use crate::peers::guardrails::admin_count;
use crate::peers::podstart::PHASES;
use crate::stats::ratio;

pub(super) const SIDE_NAMES: [&str; SIDES] = ["without", "with"];

/// A value with a precision that suits its magnitude.
fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn times(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| ratio(1.0, r))
}

/// The head of a figure table whose first columns are `first`.
fn head(f: &mut fmt::Formatter<'_>, first: &[&str], more: &[&str]) -> fmt::Result {
    let cols = [
        "n",
        "without p50",
        "with p50",
        "p50 ratio",
        "without p99",
        "with p99",
        "p99 ratio",
        "round ratios",
    ];
    let all: Vec<&str> = first.iter().chain(&cols).chain(more).copied().collect();
    writeln!(f, "| {} |", all.join(" | "))?;
    let rule: Vec<&str> = (0..all.len())
        .map(|i| if i < first.len() { "---" } else { "---:" })
        .collect();
    writeln!(f, "|{}|", rule.join("|"))
}

/// One row of a figure table: its first cells, then the figure's columns and `more`.
fn line(f: &mut fmt::Formatter<'_>, first: &[&str], row: &Row, more: &[String]) -> fmt::Result {
    let fig = &row.figure;
    let n = fig.len(0).min(fig.len(1)).to_string();
    let tail = |side| row.tail.then(|| fig.quantile(side, 0.99)).flatten();
    let spread = fig.round_ratios().map_or("-".into(), |(lo, hi)| {
        format!("{}–{}", ratio(1.0, lo), ratio(1.0, hi))
    });
    let mut cells: Vec<String> = first.iter().map(|c| c.to_string()).collect();
    cells.extend([
        n,
        num(fig.p50(0)),
        num(fig.p50(1)),
        times(fig.ratio(0.5)),
        num(tail(0)),
        num(tail(1)),
        times(row.tail.then(|| fig.ratio(0.99)).flatten()),
        spread,
    ]);
    cells.extend(more.iter().cloned());
    writeln!(f, "| {} |", cells.join(" | "))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = self.took.as_secs_f64();
        writeln!(f, "{}; run took {took:.0} s\n", self.machine)?;
        let admin = admin_count(self.cluster_policies);
        let baseline = self.cluster_policies - admin;
        writeln!(
            f,
            "# podwall without and with {} ClusterNetworkPolicies ({admin} Admin, {baseline} Baseline)\n\n\
             Ratios are with / without. \"round ratios\" are the lowest and the highest ratio of \
             the two sides' medians within one round, over {} rounds ({} of the change cycles): \
             the spread a ratio of the whole run is read against.\n",
            self.cluster_policies,
            self.rounds,
            self.worlds
                .first()
                .map_or(0, |w| w.changes.rows[0].figure.rounds.len()),
        )?;
        self.verdicts(f)?;
        self.tables(f)?;
        self.podstart(f)?;
        self.changes(f)?;
        writeln!(f, "## 3. First sync and restart\n")?;
        head(f, &["world", "figure"], &[])?;
        for w in &self.worlds {
            for row in &w.cost {
                line(f, &[&w.spec.label(), &row.label], row, &[])?;
            }
        }
        writeln!(
            f,
            "\n## 4. Per packet, client → target (medians of rounds)\n"
        )?;
        head(f, &["world", "figure"], &[])?;
        for w in &self.worlds {
            for row in &w.packet {
                line(f, &[&w.spec.label(), &row.label], row, &[])?;
            }
        }
        writeln!(f, "\n## 5. podwalld at idle (world L's policies)\n")?;
        head(f, &["cluster pods", "figure"], &[])?;
        for (pods, rows) in &self.footprint {
            for row in rows {
                line(f, &[&pods.to_string(), &row.label], row, &[])?;
            }
        }
        Ok(())
    }
}

impl Report {
    fn verdicts(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "## Verdicts the sections probe, by the evaluator over each side's API server\n"
        )?;
        writeln!(f, "| world | probe | expected | without | with |")?;
        writeln!(f, "|---|---|---|---|---|")?;
        let word = |allowed: bool| if allowed { "allowed" } else { "denied" };
        for w in &self.worlds {
            for a in &w.verdicts {
                writeln!(
                    f,
                    "| {} | {} | {} | {} | {} |",
                    w.spec.label(),
                    a.what,
                    a.expected.map_or("-", word),
                    word(a.without),
                    word(a.with),
                )?;
            }
        }
        writeln!(f)
    }

    fn tables(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## Each side's table\n")?;
        writeln!(
            f,
            "| world | side | chains | rules | sets | set elements | target's IPv4 ingress path: rules per chain |"
        )?;
        writeln!(f, "|---|---|---:|---:|---:|---:|---|")?;
        for w in &self.worlds {
            for (side, t) in w.tables.iter().enumerate() {
                let path: Vec<String> = (t.target_path.iter())
                    .map(|(chain, rules)| format!("{chain} ({rules})"))
                    .collect();
                writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    w.spec.label(),
                    SIDE_NAMES[side],
                    t.chains,
                    t.rules,
                    t.sets,
                    t.elements,
                    path.join(" → "),
                )?;
            }
        }
        writeln!(f)
    }

    fn podstart(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## 1. Pod start: CNI ADD and DEL through libcni, ms\n")?;
        head(f, &["world", "pods: operation"], &[])?;
        for w in &self.worlds {
            for row in &w.podstart.rows {
                line(f, &[&w.spec.label(), &row.label], row, &[])?;
            }
        }
        writeln!(
            f,
            "\n### The daemon's phases per sequential ADD (`podwall_attach_phase_seconds_total`), mean ms\n"
        )?;
        writeln!(f, "| world | pods | side | {} |", PHASES.join(" | "))?;
        writeln!(f, "|---|---|---|{}", "---:|".repeat(PHASES.len()))?;
        for w in &self.worlds {
            for (kind, sides) in &w.podstart.phases {
                for (side, phases) in sides.iter().enumerate() {
                    let cells: Vec<String> = phases.iter().map(|p| num(Some(*p))).collect();
                    writeln!(
                        f,
                        "| {} | {kind} | {} | {} |",
                        w.spec.label(),
                        SIDE_NAMES[side],
                        cells.join(" | ")
                    )?;
                }
            }
        }
        writeln!(f)
    }

    fn changes(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "## 2. Change → enforced (prober every ~2 ms), ms; podwalld CPU per change, ms\n"
        )?;
        head(
            f,
            &["world", "change"],
            &["CPU without", "CPU with", "CPU ratio"],
        )?;
        for w in &self.worlds {
            let c = &w.changes;
            for (k, row) in c.rows.iter().enumerate() {
                let cpu = c
                    .cpu
                    .get(k)
                    .map_or(["".into(), "".into(), "".into()], |cpu| {
                        [
                            num(Some(cpu[0])),
                            num(Some(cpu[1])),
                            times((cpu[0] > 0.0).then(|| cpu[1] / cpu[0])),
                        ]
                    });
                line(f, &[&w.spec.label(), &row.label], row, &cpu)?;
            }
        }
        writeln!(f)?;
        for w in &self.worlds {
            writeln!(
                f,
                "{}: podwalld's largest RSS over the changes: {:.1} MiB without, {:.1} MiB with.",
                w.spec.label(),
                w.changes.rss_mib[0],
                w.changes.rss_mib[1],
            )?;
        }
        writeln!(f)
    }
}
