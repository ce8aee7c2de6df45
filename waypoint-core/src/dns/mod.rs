//! DNS for ServiceEntries with `resolution: DNS`: the addresses of the names they resolve,
//! kept across config reloads.
//!
//! The design mirrors the endpoint stats cache (`config::build::EndpointStatsCache`): the
//! config build is pure and never waits on the network, so it reads whatever addresses the
//! [`DnsCache`] holds for a name and records the names it wanted. Resolution happens beside
//! it; an answer that changes a name's addresses triggers a rebuild. A failed lookup keeps
//! the last addresses: a resolver hiccup must not empty a backend that was working.
//!
//! Who rebuilds: the cache counts changes ([`DnsCache::generation`]); the file watcher
//! reloads when the count moved even if no file did (see `config::watch`), and a source that
//! waits for events (the Kubernetes one) also waits on [`DnsCache::changed_since`]. The
//! resolving loop is [`keep_resolved`].

mod resolve;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

pub use resolve::{DnsError, keep_resolved, resolver};

/// Resolved addresses by name, shared by every config build of a process.
#[derive(Debug, Default)]
pub struct DnsCache {
    state: Mutex<State>,
    /// Bumped on every change of some name's addresses.
    generation: AtomicU64,
    /// Wakes the tasks waiting in [`DnsCache::changed_since`] when `generation` moves.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The last good answer for each name.
    answers: HashMap<String, Vec<IpAddr>>,
    /// The names the latest build asked for.
    wanted: BTreeSet<String>,
}

impl DnsCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the maps valid: keep using them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last addresses resolved for `name` (empty before the first answer).
    pub fn addresses(&self, name: &str) -> Vec<IpAddr> {
        self.state()
            .answers
            .get(&normalize(name))
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces the names the config wants resolved (a build calls it with all of them);
    /// answers for names no longer wanted are forgotten.
    pub fn set_wanted(&self, names: impl IntoIterator<Item = String>) {
        let mut state = self.state();
        state.wanted = names.into_iter().map(|n| normalize(&n)).collect();
        let State { answers, wanted } = &mut *state;
        answers.retain(|name, _| wanted.contains(name));
    }

    /// How many answers changed some name's addresses so far: a build made before the count
    /// moved is out of date.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Returns once the change count differs from `seen` (at once if it already does): a
    /// source that builds on events waits on this beside its own events.
    pub async fn changed_since(&self, seen: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a change between the two still wakes us.
            notified.as_mut().enable();
            if self.generation() != seen {
                return;
            }
            notified.await;
        }
    }

    /// The names the latest build wants resolved, sorted.
    pub fn wanted(&self) -> Vec<String> {
        self.state().wanted.iter().cloned().collect()
    }

    /// Records an answer for `name`; true when its addresses changed (a rebuild is due).
    /// The addresses are kept sorted so that the same answer in another order is no change.
    pub fn record(&self, name: &str, mut addresses: Vec<IpAddr>) -> bool {
        addresses.sort();
        addresses.dedup();
        let mut state = self.state();
        let name = normalize(name);
        if !state.wanted.contains(&name) {
            return false;
        }
        match state.answers.get(&name) {
            Some(old) if *old == addresses => false,
            _ => {
                state.answers.insert(name, addresses);
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.changed.notify_waiters();
                true
            }
        }
    }
}

/// Names compare without case and without a trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_are_kept_for_wanted_names_and_changes_are_reported() {
        let cache = DnsCache::new();
        assert!(
            !cache.record("api.example.com", vec![ip("10.0.0.1")]),
            "not wanted yet"
        );
        cache.set_wanted(["API.example.com.".to_owned()]);
        assert_eq!(cache.wanted(), ["api.example.com"]);
        assert!(cache.record("api.example.com", vec![ip("10.0.0.2"), ip("10.0.0.1")]));
        assert!(!cache.record("api.example.com.", vec![ip("10.0.0.1"), ip("10.0.0.2")]));
        assert_eq!(cache.generation(), 1, "one change so far");
        assert_eq!(
            cache.addresses("Api.Example.Com"),
            [ip("10.0.0.1"), ip("10.0.0.2")]
        );
        cache.set_wanted(Vec::new());
        assert!(cache.addresses("api.example.com").is_empty());
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_an_answer_changes_addresses_and_not_before() {
        let cache = std::sync::Arc::new(DnsCache::new());
        cache.set_wanted(["api.example.com".to_owned()]);
        let seen = cache.generation();
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { cache.changed_since(seen).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing changed yet");
        cache.record("other.example.com", vec![ip("10.0.0.9")]);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "an unwanted name is no change");
        cache.record("api.example.com", vec![ip("10.0.0.1")]);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // A count that already moved returns at once.
        cache.changed_since(seen).await;
    }
}
