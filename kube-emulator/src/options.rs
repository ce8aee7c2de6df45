//! How an emulator is started.

use std::time::Duration;

/// How a watch from a compacted-away resourceVersion is told so. Both happen in practice:
/// etcd-backed servers answer 200 and one `ERROR` event carrying a 410 `Status`, some paths
/// (and the watch cache) answer HTTP 410 directly. A client must handle both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpiredWatch {
    /// 200, then `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}`,
    /// then the stream ends.
    #[default]
    ErrorEvent,
    /// HTTP 410 with the `Status` as body.
    HttpStatus,
}

/// Options of [`Emulator::start`](crate::Emulator::start).
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// When set, every request must carry `Authorization: Bearer <token>` (else 401).
    pub token: Option<String>,
    /// Serve HTTPS with a freshly generated CA and a server certificate for `127.0.0.1` and
    /// `localhost`.
    pub tls: bool,
    /// How often a watch that allowed bookmarks gets one. Real servers send one about every
    /// minute; tests want it short.
    pub bookmark_interval: Duration,
    /// How an expired watch is answered.
    pub expired_watch: ExpiredWatch,
    /// List items without `apiVersion` and `kind`, as a real server sends built-in types.
    pub omit_list_item_type: bool,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            token: None,
            tls: false,
            bookmark_interval: Duration::from_secs(60),
            expired_watch: ExpiredWatch::ErrorEvent,
            omit_list_item_type: false,
        }
    }
}
