//! The readiness latch behind `/healthz` and the plugin's STATUS: ready only once the kernel
//! was programmed, and not while the last commit failed (a heartbeat would be green while
//! every sync fails).

use std::sync::Mutex;

#[derive(Debug)]
pub struct Health {
    state: Mutex<Result<(), String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Mutex::new(Err("starting: kernel not programmed yet".to_string())),
        }
    }
}

impl Health {
    pub fn set_ready(&self) {
        *self.lock() = Ok(());
    }

    pub fn set_failed(&self, reason: String) {
        *self.lock() = Err(reason);
    }

    pub fn is_ready(&self) -> bool {
        self.lock().is_ok()
    }

    /// Why the daemon is not ready, if it is not.
    pub fn reason(&self) -> Option<String> {
        self.lock().clone().err()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Result<(), String>> {
        // A panic while holding this lock cannot leave the Result half-written.
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
}
