//! A circuit breaker for one upstream key (today each provider's house key): after
//! `circuit_failures` consecutive failed calls it opens, and calls are skipped at once (no
//! connect timeout paid) until `circuit_cooldown_secs` passed; then one call goes through as a
//! probe, and its answer closes the circuit or its failure opens it for another cooldown.
//! Time is passed in, so that the state machine is tested without sleeping.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
// The pipeline's clock (tokio's, which tests may pause).
use tokio::time::Instant;

/// How one call through the circuit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallEnd {
    /// The upstream answered with a success.
    Answered,
    /// The upstream answered that the request was wrong (a 4xx other than 429): it is up.
    RefusedRequest,
    /// Unreachable, timed out, 429 or 5xx/529: the kinds worth another candidate.
    Failed,
}

/// What a call's end did to the circuit, for the Hawk's `provider_down` alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitChange {
    /// It opened, or a failure (a probe's) kept it open for another cooldown.
    Open,
    Closed,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive_failures: u32,
    },
    /// Skipped until `until`; then the first call is let through as the probe, and `until`
    /// moves a cooldown on (so a probe whose request was abandoned is followed by another).
    Open {
        until: Instant,
    },
}

/// `circuit_failures` and `circuit_cooldown_secs`.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Consecutive failures that open the circuit; 0: it never opens.
    pub failures_to_open: u32,
    pub cooldown: Duration,
}

impl Policy {
    pub fn from_config(config: &crate::config::Config) -> Policy {
        Policy {
            failures_to_open: config.circuit_failures,
            cooldown: Duration::from_secs(config.circuit_cooldown_secs),
        }
    }
}

pub struct Circuit {
    failures_to_open: u32,
    cooldown: Duration,
    /// Held only to read or switch the state, never across a call.
    state: Mutex<State>,
    /// `omi_upstream_circuit_open{provider}`: 1 open, 0 closed.
    open_gauge: metrics::Gauge,
    /// Named in the log lines of its openings and closings.
    provider: Arc<str>,
}

impl Circuit {
    /// Registers its gauge once: a call then sets it without a registry lookup.
    pub fn new(provider: Arc<str>, policy: Policy) -> Circuit {
        let open_gauge = metrics::gauge!("omi_upstream_circuit_open", "provider" => provider.to_string());
        open_gauge.set(0.0);
        Circuit {
            failures_to_open: policy.failures_to_open,
            cooldown: policy.cooldown,
            state: Mutex::new(State::Closed { consecutive_failures: 0 }),
            open_gauge,
            provider,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go now: closed, or open with its cooldown over (the first caller
    /// after the cooldown becomes the probe; the others are skipped until it reports).
    pub fn admit(&self, now: Instant) -> bool {
        if self.failures_to_open == 0 {
            return true;
        }
        let mut state = self.state();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::Open { until: now + self.cooldown };
                true
            }
            State::Open { .. } => false,
        }
    }

    /// Whether `admit` would refuse now, without taking the probe's turn.
    pub fn skips(&self, now: Instant) -> bool {
        self.failures_to_open > 0 && matches!(*self.state(), State::Open { until } if now < until)
    }

    /// What the dashboard shows: open (skipped, or awaiting its probe) as the gauge says.
    pub fn is_open(&self) -> bool {
        matches!(*self.state(), State::Open { .. })
    }

    /// Books how an admitted call ended; returns the change when it is (still) open or closed.
    pub fn record(&self, end: CallEnd, now: Instant) -> Option<CircuitChange> {
        if self.failures_to_open == 0 {
            return None;
        }
        let mut state = self.state();
        match (&mut *state, end) {
            (State::Closed { consecutive_failures }, CallEnd::Failed) => {
                *consecutive_failures += 1;
                if *consecutive_failures < self.failures_to_open {
                    return None;
                }
                *state = State::Open { until: now + self.cooldown };
                self.open_gauge.set(1.0);
                tracing::warn!(provider = %self.provider, cooldown_secs = self.cooldown.as_secs(), "upstream circuit opened");
                Some(CircuitChange::Open)
            }
            (State::Closed { consecutive_failures }, CallEnd::Answered) => {
                *consecutive_failures = 0;
                None
            }
            (State::Closed { .. }, CallEnd::RefusedRequest) => None,
            // The probe (or a call begun before the circuit opened) failed: another cooldown.
            (State::Open { until }, CallEnd::Failed) => {
                *until = now + self.cooldown;
                Some(CircuitChange::Open)
            }
            // Any answer shows the upstream is up again.
            (State::Open { .. }, CallEnd::Answered | CallEnd::RefusedRequest) => {
                *state = State::Closed { consecutive_failures: 0 };
                self.open_gauge.set(0.0);
                tracing::info!(provider = %self.provider, "upstream circuit closed");
                Some(CircuitChange::Closed)
            }
        }
    }
}

impl std::fmt::Debug for Circuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuit").field("state", &*self.state()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn circuit(failures_to_open: u32) -> Circuit {
        Circuit::new("test".into(), Policy { failures_to_open, cooldown: COOLDOWN })
    }

    fn fail_times(circuit: &Circuit, times: u32, now: Instant) {
        for _ in 0..times {
            assert!(circuit.admit(now));
            circuit.record(CallEnd::Failed, now);
        }
    }

    #[test]
    fn it_opens_after_the_set_number_of_consecutive_failures_and_skips_while_open() {
        let (circuit, start) = (circuit(3), Instant::now());
        fail_times(&circuit, 2, start);
        assert!(circuit.admit(start) && !circuit.skips(start), "2 of 3 failures keep it closed");
        assert_eq!(circuit.record(CallEnd::Failed, start), Some(CircuitChange::Open));
        assert!(circuit.skips(start));
        assert!(!circuit.admit(start));
        assert!(!circuit.admit(start + COOLDOWN - Duration::from_millis(1)), "skipped until the cooldown is over");
    }

    #[test]
    fn a_success_resets_the_count_and_the_customers_4xx_do_not_count() {
        let (circuit, now) = (circuit(3), Instant::now());
        fail_times(&circuit, 2, now);
        assert_eq!(circuit.record(CallEnd::Answered, now), None);
        fail_times(&circuit, 2, now);
        for _ in 0..10 {
            circuit.record(CallEnd::RefusedRequest, now);
        }
        assert!(circuit.admit(now) && !circuit.skips(now), "4 failures, never 3 in a row");
        circuit.record(CallEnd::Failed, now);
        assert!(circuit.skips(now), "a 4xx neither counts nor resets");
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_answer_closes_the_circuit() {
        let (circuit, start) = (circuit(1), Instant::now());
        fail_times(&circuit, 1, start);
        let after = start + COOLDOWN;
        assert!(!circuit.skips(after));
        assert!(circuit.is_open(), "open until a probe is answered");
        assert!(circuit.admit(after), "the probe");
        assert!(!circuit.admit(after) && !circuit.admit(after + Duration::from_secs(1)), "the others still skip");
        assert_eq!(circuit.record(CallEnd::Answered, after + Duration::from_secs(1)), Some(CircuitChange::Closed));
        assert!(!circuit.is_open());
        assert!(circuit.admit(after + Duration::from_secs(1)) && circuit.admit(after + Duration::from_secs(1)));
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_another_cooldown() {
        let (circuit, start) = (circuit(1), Instant::now());
        fail_times(&circuit, 1, start);
        let probe_end = start + COOLDOWN + Duration::from_secs(5);
        assert!(circuit.admit(start + COOLDOWN));
        assert_eq!(circuit.record(CallEnd::Failed, probe_end), Some(CircuitChange::Open), "still down");
        assert!(!circuit.admit(probe_end + COOLDOWN - Duration::from_millis(1)));
        assert!(circuit.admit(probe_end + COOLDOWN), "the next probe");
    }

    #[test]
    fn a_probe_that_never_reports_is_followed_by_another_after_a_cooldown() {
        let (circuit, start) = (circuit(1), Instant::now());
        fail_times(&circuit, 1, start);
        assert!(circuit.admit(start + COOLDOWN));
        assert!(!circuit.admit(start + COOLDOWN * 2 - Duration::from_millis(1)));
        assert!(circuit.admit(start + COOLDOWN * 2));
    }

    #[test]
    fn a_customers_4xx_on_the_probe_closes_the_circuit() {
        let (circuit, start) = (circuit(1), Instant::now());
        fail_times(&circuit, 1, start);
        assert!(circuit.admit(start + COOLDOWN));
        circuit.record(CallEnd::RefusedRequest, start + COOLDOWN);
        assert!(!circuit.skips(start + COOLDOWN));
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let (circuit, now) = (circuit(0), Instant::now());
        fail_times(&circuit, 100, now);
        assert!(circuit.admit(now) && !circuit.skips(now));
    }
}
