//! The readiness latch behind `/readyz` (`/healthz`) and the plugin's STATUS: ready only once
//! the kernel was programmed, while the last commit and reconcile succeeded, and while every
//! watched source has synced (a heartbeat would be green while every sync fails).
//!
//! Liveness (`/livez`) is another question, whether the daemon works at all: whether its
//! core still answers. It is never tied to the API server or the kernel's answers, since a
//! restart fixes neither.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The core is taken for stuck when it has not answered the watchdog for this long: far
/// beyond the longest transaction (a whole-table swap at 100k pods takes seconds).
pub const STALL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct State {
    kernel: Result<(), String>,
    /// Each source that must be synced, by name (`pods`, `namespaces`, …).
    sources: BTreeMap<&'static str, Result<(), String>>,
    /// When the core last answered the watchdog; `None` until it runs.
    beat: Option<Instant>,
}

#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                kernel: Err("starting: kernel not programmed yet".to_string()),
                sources: BTreeMap::new(),
                beat: None,
            }),
        }
    }
}

impl Health {
    /// The last kernel commit (or reconcile) succeeded.
    pub fn set_ready(&self) {
        self.lock().kernel = Ok(());
    }

    /// The last kernel commit (or reconcile) failed.
    pub fn set_failed(&self, reason: String) {
        self.lock().kernel = Err(reason);
    }

    /// A source's state: `Err` with the reason while it has not synced or is failing.
    pub fn set_source(&self, name: &'static str, state: Result<(), String>) {
        self.lock().sources.insert(name, state);
    }

    pub fn is_ready(&self) -> bool {
        self.reason().is_none()
    }

    /// Why the daemon is not ready, if it is not: every reason, `; `-separated.
    pub fn reason(&self) -> Option<String> {
        let state = self.lock();
        let mut reasons: Vec<String> = state.kernel.clone().err().into_iter().collect();
        reasons.extend(
            state
                .sources
                .iter()
                .filter_map(|(name, s)| s.as_ref().err().map(|e| format!("{name}: {e}"))),
        );
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// The core answered the watchdog.
    pub fn beat(&self) {
        self.lock().beat = Some(Instant::now());
    }

    /// Why the daemon is not live at `now`, if it is not: its core has not answered for
    /// `STALL` (a start still compiling has not beaten yet and is live).
    pub fn stalled(&self, now: Instant) -> Option<String> {
        let beat = self.lock().beat?;
        let silent = now.saturating_duration_since(beat);
        (silent > STALL).then(|| format!("the core has not answered for {}s", silent.as_secs()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_unready_and_follows_the_last_outcome() {
        let health = Health::default();
        assert!(!health.is_ready());
        health.set_ready();
        assert_eq!(health.reason(), None);
        health.set_failed("last commit failed: boom".into());
        assert_eq!(health.reason().as_deref(), Some("last commit failed: boom"));
        health.set_ready();
        assert!(health.is_ready());
    }

    #[test]
    fn live_until_the_core_stops_answering_whatever_readiness_says() {
        let health = Health::default();
        let start = Instant::now();
        assert_eq!(health.stalled(start + STALL * 2), None, "not started yet");
        health.beat();
        health.set_failed("the API server is down".into());
        health.set_source("pods", Err("not synced".into()));
        assert_eq!(health.stalled(Instant::now()), None);
        let reason = health.stalled(Instant::now() + STALL + Duration::from_secs(5));
        assert!(reason.is_some_and(|r| r.contains("has not answered")));
    }

    #[test]
    fn every_source_must_be_synced() {
        let health = Health::default();
        health.set_ready();
        health.set_source("pods", Err("not synced yet".into()));
        health.set_source("namespaces", Ok(()));
        assert_eq!(health.reason().as_deref(), Some("pods: not synced yet"));
        health.set_source("pods", Ok(()));
        assert!(health.is_ready());
    }
}
