//! Which logged packets become lines: one per flow (a flow's retransmitted SYNs, or a
//! stream of datagrams, are one line), and at most `rate` lines a second for any one pod,
//! however many flows it sends or receives; what is held back is counted and told in one
//! line when the pod's second ends. Pure: time is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A flow is the same flow while its packets come less than this apart: longer than the
/// longest gap between a SYN's retransmissions (32 s with Linux's defaults).
pub const FLOW_MEMORY: Duration = Duration::from_secs(60);
/// The flows remembered at most; past it new flows are not remembered (each may log again,
/// still within its pod's rate).
const MAX_FLOWS: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write the line.
    Write,
    /// A packet of a flow already logged.
    Repeat,
    /// The pod's lines for this second are used up; counted for its suppression line.
    Suppressed,
}

/// `P` names a pod, `F` a flow.
#[derive(Debug)]
pub struct Limiter<P, F> {
    rate: u32,
    flows: HashMap<F, Instant>,
    windows: HashMap<P, Window>,
    /// Windows that ended with lines held back, not yet told.
    ended: Vec<(P, u64)>,
    /// When flows not seen for `FLOW_MEMORY` were last forgotten.
    swept: Option<Instant>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    lines: u32,
    suppressed: u64,
}

impl<P: Hash + Eq + Clone, F: Hash + Eq> Limiter<P, F> {
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            flows: HashMap::new(),
            windows: HashMap::new(),
            ended: Vec::new(),
            swept: None,
        }
    }

    /// Whether a packet of `flow`, judged for `pod`, becomes a line.
    pub fn admit(&mut self, pod: &P, flow: F, now: Instant) -> Decision {
        let room = self.flows.len() < MAX_FLOWS;
        match self.flows.get_mut(&flow) {
            Some(seen) if now.saturating_duration_since(*seen) < FLOW_MEMORY => {
                *seen = now;
                return Decision::Repeat;
            }
            Some(seen) => *seen = now,
            None if room => {
                self.flows.insert(flow, now);
            }
            None => {}
        }
        let ended = (self.windows.get(pod))
            .is_none_or(|w| now.saturating_duration_since(w.start) >= WINDOW);
        if ended {
            let fresh = Window {
                start: now,
                lines: 0,
                suppressed: 0,
            };
            if let Some(old) = self.windows.insert(pod.clone(), fresh) {
                if old.suppressed > 0 {
                    self.ended.push((pod.clone(), old.suppressed));
                }
            }
        }
        let Some(window) = self.windows.get_mut(pod) else {
            return Decision::Suppressed; // inserted just above
        };
        if window.lines < self.rate {
            window.lines += 1;
            Decision::Write
        } else {
            window.suppressed += 1;
            Decision::Suppressed
        }
    }

    /// The pods whose second has ended with lines held back, and how many; forgets ended
    /// seconds, and (once a second: the flows may be many, and this runs at every batch)
    /// flows not seen for `FLOW_MEMORY`.
    pub fn due(&mut self, now: Instant) -> Vec<(P, u64)> {
        let mut out = std::mem::take(&mut self.ended);
        self.windows.retain(|pod, w| {
            let open = now.saturating_duration_since(w.start) < WINDOW;
            if !open && w.suppressed > 0 {
                out.push((pod.clone(), w.suppressed));
            }
            open
        });
        if self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= WINDOW)
        {
            self.flows
                .retain(|_, seen| now.saturating_duration_since(*seen) < FLOW_MEMORY);
            self.swept = Some(now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(start: Instant, n: u64) -> Instant {
        start + Duration::from_millis(n)
    }

    #[test]
    fn a_flow_logs_once_while_its_packets_keep_coming() {
        let t = Instant::now();
        let mut limiter = Limiter::new(50);
        assert_eq!(limiter.admit(&"a", 1, t), Decision::Write);
        // SYN retransmissions at 1, 3, 7, 15, 31 and 63 s.
        for at in [1_000, 3_000, 7_000, 15_000, 31_000, 63_000] {
            assert_eq!(limiter.admit(&"a", 1, ms(t, at)), Decision::Repeat);
        }
        // A new flow (another source port) is a line; the old one, once quiet, again too.
        assert_eq!(limiter.admit(&"a", 2, ms(t, 63_000)), Decision::Write);
        assert_eq!(limiter.admit(&"a", 1, ms(t, 124_000)), Decision::Write);
    }

    #[test]
    fn a_pod_gets_its_rate_and_one_line_for_the_rest() {
        let t = Instant::now();
        let mut limiter = Limiter::new(50);
        let written = (0..10_000u32)
            .filter(|port| limiter.admit(&"scanned", *port, ms(t, 0)) == Decision::Write)
            .count();
        assert_eq!(written, 50);
        // Another pod has its own rate.
        assert_eq!(limiter.admit(&"other", 99_999, ms(t, 10)), Decision::Write);
        assert_eq!(limiter.due(ms(t, 500)), []);
        assert_eq!(limiter.due(ms(t, 1_000)), [("scanned", 9_950)]);
        assert_eq!(limiter.due(ms(t, 2_000)), []);
        // The next second starts afresh.
        assert_eq!(
            limiter.admit(&"scanned", 10_001, ms(t, 2_000)),
            Decision::Write
        );
    }

    #[test]
    fn a_second_ended_by_the_next_packet_is_still_told() {
        let t = Instant::now();
        let mut limiter = Limiter::new(1);
        assert_eq!(limiter.admit(&"p", 1, t), Decision::Write);
        assert_eq!(limiter.admit(&"p", 2, ms(t, 10)), Decision::Suppressed);
        assert_eq!(limiter.admit(&"p", 3, ms(t, 1_200)), Decision::Write);
        assert_eq!(limiter.due(ms(t, 1_300)), [("p", 1)]);
    }
}
