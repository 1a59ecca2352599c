//! Waiting with a deadline: tests poll a condition instead of sleeping a guessed time.

use std::time::{Duration, Instant};

/// How often a condition is polled: short enough not to slow tests, long enough not to spin.
const POLL: Duration = Duration::from_millis(20);

/// Poll `cond` until it holds or `deadline` has passed; true when it held. The condition is
/// always evaluated at least once, and once more after the deadline, so a slow machine that
/// reaches the state exactly at the deadline still passes.
pub fn eventually(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return cond();
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_condition_returns_at_once() {
        let start = Instant::now();
        assert!(eventually(Duration::from_secs(5), || true));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn false_condition_gives_up_after_the_deadline() {
        let start = Instant::now();
        assert!(!eventually(Duration::from_millis(100), || false));
        assert!(start.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn condition_that_turns_true_is_seen() {
        let mut calls = 0;
        assert!(eventually(Duration::from_secs(5), || {
            calls += 1;
            calls >= 3
        }));
    }
}
