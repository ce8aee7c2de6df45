//! The state the server and the test-side handle share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::kinds::KindTable;
use crate::options::EmulatorOptions;
use crate::store::Store;

/// One request the emulator answered, for tests to assert on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method (`GET`, `PUT`, ...).
    pub method: String,
    /// URL path.
    pub path: String,
    /// Query string (`""` without one).
    pub query: String,
    /// The status code answered (200 for a watch that started streaming).
    pub status_code: u16,
    /// When the answer was sent (for a watch: when its stream started).
    pub time: SystemTime,
}

impl RecordedRequest {
    /// Whether this was a watch (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
    }

    /// Whether this wrote anything (POST, PUT, PATCH, DELETE).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// Locks a mutex, taking the data even if a panicking holder poisoned it: the state is
/// always consistent between statements, and a test server must not cascade panics.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the server and the handle share.
pub(crate) struct Shared {
    pub(crate) options: EmulatorOptions,
    store: Mutex<Store>,
    kinds: Mutex<KindTable>,
    unavailable: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl Shared {
    pub(crate) fn new(options: EmulatorOptions) -> Shared {
        Shared {
            options,
            store: Mutex::new(Store::default()),
            kinds: Mutex::new(KindTable::default()),
            unavailable: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// The store, locked.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// The kind table, locked.
    pub(crate) fn kinds(&self) -> MutexGuard<'_, KindTable> {
        lock(&self.kinds)
    }

    /// Whether every request is answered 503.
    pub(crate) fn unavailable(&self) -> bool {
        self.unavailable.load(Ordering::SeqCst)
    }

    pub(crate) fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.requests).clear();
    }
}
