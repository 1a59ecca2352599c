//! CPU time and memory of a running process, from `/proc`.

use std::time::Duration;

use anyhow::{Context, Result};

/// A process's accounting at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU since the process started, all its threads (those that ended too).
    pub cpu: Duration,
    /// Resident set now, KiB.
    pub rss_kib: u64,
    /// The largest resident set so far, KiB.
    pub peak_rss_kib: u64,
}

/// Read `pid`'s usage.
pub fn usage(pid: u32) -> Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(Usage {
        cpu: cpu_of(pid)?,
        rss_kib: status_kib(&status, "VmRSS").unwrap_or(0),
        peak_rss_kib: status_kib(&status, "VmHWM").unwrap_or(0),
    })
}

/// `pid`'s CPU clock: the scheduler's own count, to the nanosecond. `/proc/<pid>/stat`
/// counts in clock ticks (10 ms), too coarse for a restart that costs a few of them.
fn cpu_of(pid: u32) -> Result<Duration> {
    let pid = nix::unistd::Pid::from_raw(
        i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?,
    );
    let clock = nix::time::clock_getcpuclockid(pid)
        .with_context(|| format!("the CPU clock of process {pid}"))?;
    let now = nix::time::clock_gettime(clock)
        .with_context(|| format!("reading the CPU clock of process {pid}"))?;
    Ok(Duration::from(now))
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time of the calling thread (for work the benchmark does in-process, such as the
/// kube-router-shaped generator).
pub fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_from_status() {
        let status = "Name:\tpodwalld\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM"), Some(2048));
    }

    #[test]
    fn counts_cpu_finer_than_a_clock_tick() {
        let before = usage(std::process::id()).unwrap().cpu;
        let started = thread_cpu();
        while thread_cpu() - started < Duration::from_millis(3) {}
        let after = usage(std::process::id()).unwrap().cpu;
        // In 10 ms ticks, 3 ms of work often counts as none.
        assert!(
            after - before >= Duration::from_millis(3),
            "{before:?} → {after:?}"
        );
    }

    #[test]
    fn reads_its_own_process() {
        let me = usage(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib);
    }
}
