//! Per-uuid attempt counters behind `/retry/?uuid=..&succeedAfter=n`: the first n attempts of a
//! uuid fail, later ones succeed. Bounded: past the capacity the oldest uuid is forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The default number of uuids remembered at once.
pub const DEFAULT_RETRY_UUIDS: usize = 10_000;

#[derive(Debug)]
pub(super) struct RetryCounters {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    attempts: HashMap<String, i64>,
    order: VecDeque<String>,
}

impl RetryCounters {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
        }
    }

    /// Counts an attempt for `uuid`; true when it must fail (fewer than `succeed_after` failed
    /// attempts so far). Successes are not counted, as upstream.
    pub(super) fn attempt_fails(&self, uuid: &str, succeed_after: i64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let seen = state.attempts.get(uuid).copied().unwrap_or(0);
        if seen >= succeed_after {
            return false;
        }
        if seen == 0 && !state.attempts.contains_key(uuid) {
            if state.order.len() >= self.capacity
                && let Some(oldest) = state.order.pop_front()
            {
                state.attempts.remove(&oldest);
            }
            state.order.push_back(uuid.to_owned());
        }
        state.attempts.insert(uuid.to_owned(), seen + 1);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap().attempts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_n_times_then_succeeds() {
        let c = RetryCounters::new(10);
        let seq: Vec<bool> = (0..4).map(|_| c.attempt_fails("u", 2)).collect();
        assert_eq!(seq, [true, true, false, false]);
        // Another uuid has its own counter; zero or negative succeedAfter never fails.
        assert!(c.attempt_fails("v", 1));
        assert!(!c.attempt_fails("w", 0));
        assert!(!c.attempt_fails("x", -3));
    }

    #[test]
    fn bounded() {
        let c = RetryCounters::new(2);
        assert!(c.attempt_fails("a", 5));
        assert!(c.attempt_fails("b", 5));
        assert!(c.attempt_fails("c", 5));
        assert_eq!(c.len(), 2);
        // "a" was forgotten, so it starts again; "c" kept its count.
        assert!(c.attempt_fails("a", 1));
        assert!(!c.attempt_fails("a", 1));
        assert!(c.attempt_fails("c", 2));
        assert!(!c.attempt_fails("c", 2));
    }
}
