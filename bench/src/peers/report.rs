//! The report as Markdown tables (what docs/benchmarks.md quotes).

use std::fmt;
use std::time::Duration;

use super::{change, packet, podstart, Report};
use crate::stats::{dratio, ms, ratio, Samples};

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[(v.len() - 1) / 2]
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// CPU per sample, in milliseconds.
fn per(cpu: Duration, n: usize) -> String {
    if n == 0 {
        return "-".into();
    }
    ms(cpu / n as u32)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = self.took.as_secs_f64();
        writeln!(f, "{}; run took {took:.0} s\n", self.machine)?;
        self.podstart(f)?;
        self.isolation(f)?;
        self.changes(f)?;
        self.cost(f)?;
        self.packet(f)?;
        self.footprint(f)
    }
}

impl Report {
    fn podstart(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## 1. Pod start: CNI ADD and DEL through libcni, ms\n")?;
        writeln!(
            f,
            "| world | chain | ADD p50 | ADD p99 | DEL p50 | DEL p99 | ADD ×{n} p50 | ADD ×{n} p99 | DEL ×{n} p50 | DEL ×{n} p99 | ADD p50 / bridge |",
            n = podstart::PARALLEL
        )?;
        writeln!(f, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for w in &self.worlds {
            let bridge = w
                .podstart
                .iter()
                .find(|r| r.chain == podstart::Chain::Bridge)
                .map(|r| r.add.p50());
            for r in &w.podstart {
                writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    w.spec.label(),
                    r.chain.name(),
                    ms(r.add.p50()),
                    ms(r.add.p99()),
                    ms(r.del.p50()),
                    ms(r.del.p99()),
                    ms(r.add_parallel.p50()),
                    ms(r.add_parallel.p99()),
                    ms(r.del_parallel.p50()),
                    ms(r.del_parallel.p99()),
                    bridge.map_or("-".into(), |b| dratio(b, r.add.p50())),
                )?;
            }
        }
        writeln!(f)?;
        self.add_breakdown(f)
    }

    /// Where a sequential ADD's time goes: means, so that the parts add up.
    fn add_breakdown(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "### Where podwall's ADD time goes: means per sequential ADD, ms\n\n\
             \"podwall's share\" is the chain's ADD less bridge's alone; the daemon's phases are \
             its `podwall_attach_phase_seconds_total`; the rest is the plugin's run, the socket \
             and the reply, and the runner's work for a second plugin in the chain. Timed alone \
             on the same node: the plugin's run (`VERSION`, no socket) and one `status` request \
             on the socket (means).\n"
        )?;
        writeln!(
            f,
            "| world | chain | ADD | bridge ADD | podwall's share | {} | daemon | rest | plugin run alone | socket round trip alone |",
            podstart::PHASES.join(" | ")
        )?;
        writeln!(
            f,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for w in &self.worlds {
            let Some(bridge) = (w.podstart.iter())
                .find(|r| r.chain == podstart::Chain::Bridge)
                .map(|r| r.add.mean())
            else {
                continue;
            };
            for r in w.podstart.iter().filter(|r| !r.phases.is_empty()) {
                let share = r.add.mean().saturating_sub(bridge);
                let daemon: Duration = r.phases.iter().sum();
                let phases: Vec<String> = r.phases.iter().map(|d| ms(*d)).collect();
                let (run, trip) = w.outside.as_ref().map_or(("-".into(), "-".into()), |o| {
                    (ms(o.plugin_run.mean()), ms(o.socket_round_trip.mean()))
                });
                writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    w.spec.label(),
                    r.chain.name(),
                    ms(r.add.mean()),
                    ms(bridge),
                    ms(share),
                    phases.join(" | "),
                    ms(daemon),
                    ms(share.saturating_sub(daemon)),
                    run,
                    trip,
                )?;
            }
        }
        writeln!(f)
    }

    fn isolation(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((spec, pw, kr)) = &self.isolation else {
            return Ok(());
        };
        writeln!(
            f,
            "## 2. Isolation before the first packet: pod starts into a deny-all namespace, world {}\n",
            spec.label()
        )?;
        writeln!(
            f,
            "| enforcer | starts | pods that accepted a denied connection | connections accepted | probes sent | ADD p50 ms | ADD return → rules applied p50 ms | p99 ms |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
        for (name, l) in [("podwall", pw), ("kube-router shape", kr)] {
            let exposed = |q: f64| {
                if l.exposed.is_empty() {
                    "0 (before ADD returns)".to_string()
                } else {
                    ms(l.exposed.quantile(q))
                }
            };
            writeln!(
                f,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                l.starts,
                l.pods,
                l.connections,
                l.probes,
                ms(l.add.p50()),
                exposed(0.5),
                exposed(0.99),
            )?;
        }
        writeln!(f)
    }

    fn changes(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "## 3. Change → enforced (prober every ~2 ms), ms; CPU per change, ms\n"
        )?;
        writeln!(
            f,
            "| world | change | n | podwall p50 | podwall p99 | kube-router p50 | kube-router p99 | p50 ratio | podwalld CPU | resync CPU | podwalld RSS MiB | restore RSS MiB |"
        )?;
        writeln!(
            f,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for w in &self.worlds {
            let mut all_pw = Samples::default();
            let mut all_kr = Samples::default();
            for r in &w.changes {
                all_pw.extend(&r.podwall.latency);
                all_kr.extend(&r.kuberouter.latency);
                self.change_row(f, &w.spec.label(), r.kind.name(), r)?;
            }
            writeln!(
                f,
                "| {} | **all** | {} | {} | {} | {} | {} | {} | | | | |",
                w.spec.label(),
                all_pw.len(),
                ms(all_pw.p50()),
                ms(all_pw.p99()),
                ms(all_kr.p50()),
                ms(all_kr.p99()),
                dratio(all_pw.p50(), all_kr.p50()),
            )?;
        }
        writeln!(f)
    }

    fn change_row(
        &self,
        f: &mut fmt::Formatter<'_>,
        world: &str,
        kind: &str,
        r: &change::Row,
    ) -> fmt::Result {
        let (pw, kr) = (&r.podwall, &r.kuberouter);
        writeln!(
            f,
            "| {world} | {kind} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            pw.latency.len(),
            ms(pw.latency.p50()),
            ms(pw.latency.p99()),
            ms(kr.latency.p50()),
            ms(kr.latency.p99()),
            dratio(pw.latency.p50(), kr.latency.p50()),
            per(pw.cpu, pw.latency.len()),
            per(kr.cpu, kr.latency.len()),
            mib(pw.rss_kib),
            mib(kr.rss_kib),
        )
    }

    fn cost(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "## 4. Programming cost of a full sync: wall and CPU p50, ms; peak RSS, MiB\n"
        )?;
        writeln!(
            f,
            "| world | podwalld first sync | podwalld restart → serving | → healthy | CPU | peak RSS | after a crash → serving | kube-router cold wall | CPU | restore RSS | kube-router resync wall | CPU | restore RSS | resync / serving | resync / healthy | resync / serving after a crash |"
        )?;
        writeln!(
            f,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for w in &self.worlds {
            let c = &w.cost;
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                w.spec.label(),
                ms(w.first_sync),
                ms(c.serving.p50()),
                ms(c.podwall.wall.p50()),
                ms(c.podwall.cpu.p50()),
                mib(c.podwall.peak_rss_kib),
                ms(c.crash_serving.p50()),
                ms(c.cold.wall.p50()),
                ms(c.cold.cpu.p50()),
                mib(c.cold.peak_rss_kib),
                ms(c.warm.wall.p50()),
                ms(c.warm.cpu.p50()),
                mib(c.warm.peak_rss_kib),
                dratio(c.serving.p50(), c.warm.wall.p50()),
                dratio(c.podwall.wall.p50(), c.warm.wall.p50()),
                dratio(c.crash_serving.p50(), c.warm.wall.p50()),
            )?;
        }
        writeln!(f)
    }

    fn packet(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((spec, rows)) = &self.packet else {
            return Ok(());
        };
        writeln!(
            f,
            "## 5. Per packet, world {}: one TCP stream, new connections (medians of rounds)\n",
            spec.label()
        )?;
        writeln!(
            f,
            "| path | stream Gbit/s | connections/s | connect p50 µs | connect p99 µs | conn/s vs no rules | conn/s vs conntrack only |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|")?;
        let rate_of = |wanted: packet::Path| {
            (rows.iter())
                .find(|(path, _)| *path == wanted)
                .map_or(0.0, |(_, r)| median(&r.rate))
        };
        let (none, tracked) = (
            rate_of(packet::Path::NoRules),
            rate_of(packet::Path::ConntrackOnly),
        );
        for (path, r) in rows {
            writeln!(
                f,
                "| {} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {} |",
                path.name(),
                median(&r.gbits),
                median(&r.rate),
                r.connect.p50().as_secs_f64() * 1e6,
                r.connect.p99().as_secs_f64() * 1e6,
                ratio(none, median(&r.rate)),
                ratio(tracked, median(&r.rate)),
            )?;
        }
        writeln!(f)
    }

    fn footprint(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## 6. podwalld at idle (world L's policies)\n")?;
        // The daemon column only when another binary was measured beside this build.
        let compared = self.footprint.iter().any(|r| r.baseline.is_some());
        let (head, rule) = if compared {
            ("| daemon ", "|---")
        } else {
            ("", "")
        };
        writeln!(
            f,
            "{head}| cluster pods | start to healthy s | RSS MiB | peak RSS MiB | idle CPU % of a core |"
        )?;
        writeln!(f, "{rule}|---:|---:|---:|---:|---:|")?;
        for r in &self.footprint {
            if compared {
                match &r.baseline {
                    Some(path) => write!(f, "| {} ", path.display())?,
                    None => write!(f, "| this build ")?,
                }
            }
            writeln!(
                f,
                "| {} | {:.2} | {} | {} | {:.2} |",
                r.cluster_pods,
                r.sync.as_secs_f64(),
                mib(r.rss_kib),
                mib(r.peak_rss_kib),
                r.idle_cpu * 100.0
            )?;
        }
        Ok(())
    }
}
