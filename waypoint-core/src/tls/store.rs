//! The waypoint's current certificates, swapped atomically when the files rotate.
//!
//! Rotation semantics: each handshake takes the [`rustls::ServerConfig`] current at that
//! moment, so new handshakes use the new pair as soon as [`CertStore::reload`] succeeds, while
//! established connections keep the configuration (and certificate) they were accepted with
//! until they close. A rejected rotation (unreadable, mismatched, expired...) leaves the
//! previous pair in service.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::{CertPaths, TlsError, WorkloadCerts, server_config};
use crate::identity::SpiffeId;
use crate::shutdown::Shutdown;

struct Loaded {
    certs: Arc<WorkloadCerts>,
    server: Arc<rustls::ServerConfig>,
}

/// The current [`WorkloadCerts`] and the [`rustls::ServerConfig`] built from them.
pub struct CertStore {
    paths: Option<CertPaths>,
    trust_domains: Vec<String>,
    current: ArcSwap<Loaded>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("paths", &self.paths)
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads and checks the files; `trust_domains` as in [`server_config`] (empty = the
    /// waypoint's own trust domain).
    pub fn load(paths: CertPaths, trust_domains: Vec<String>) -> Result<Arc<Self>, TlsError> {
        let certs = WorkloadCerts::load(&paths)?;
        Self::build(Some(paths), certs, trust_domains)
    }

    /// A store over certificates already in memory (tests, embedders with their own source).
    /// It has no files: [`CertStore::reload`] returns `Ok(false)` and [`CertStore::watch`] only
    /// waits for shutdown.
    pub fn from_certs(
        certs: WorkloadCerts,
        trust_domains: Vec<String>,
    ) -> Result<Arc<Self>, TlsError> {
        Self::build(None, certs, trust_domains)
    }

    fn build(
        paths: Option<CertPaths>,
        certs: WorkloadCerts,
        trust_domains: Vec<String>,
    ) -> Result<Arc<Self>, TlsError> {
        let loaded = Self::prepare(certs, &trust_domains)?;
        Ok(Arc::new(CertStore {
            paths,
            trust_domains,
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    fn prepare(certs: WorkloadCerts, trust_domains: &[String]) -> Result<Loaded, TlsError> {
        let server = server_config(&certs, trust_domains)?;
        Ok(Loaded {
            certs: Arc::new(certs),
            server,
        })
    }

    /// The certificates in service now.
    pub fn current(&self) -> Arc<WorkloadCerts> {
        self.current.load().certs.clone()
    }

    /// The server configuration for the next handshake.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load().server.clone()
    }

    /// The waypoint's identity, from the certificate in service now.
    pub fn identity(&self) -> SpiffeId {
        self.current.load().certs.identity.clone()
    }

    /// Re-reads the files. `Ok(true)` when a new pair is now in service, `Ok(false)` when the
    /// files hold the same material (or the store has no files). On error the previous pair
    /// stays in service and the error is returned for the caller to log.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some(paths) = &self.paths else {
            return Ok(false);
        };
        let certs = WorkloadCerts::load(paths)?;
        if certs.same_material(&self.current.load().certs) {
            return Ok(false);
        }
        let loaded = Self::prepare(certs, &self.trust_domains)?;
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// Puts `certs` in service (a certificate renewed from the CA): new handshakes use them,
    /// established connections keep theirs. On error the previous pair stays in service.
    pub(crate) fn rotate(&self, certs: WorkloadCerts) -> Result<(), TlsError> {
        let loaded = Self::prepare(certs, &self.trust_domains)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// Polls the three files every `interval` (modification time, size and a hash of the
    /// contents, so atomic-rename and in-place writes are both seen) and reloads on change,
    /// until `shutdown`. Logs `info` on rotation and `warn` on a rejected one; a rejected
    /// rotation is retried when the files change again (e.g. the key lands after the chain).
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: Shutdown) {
        let Some(paths) = self.paths.clone() else {
            shutdown.wait().await;
            return;
        };
        let mut seen = fingerprint(&paths).await;
        // The files may have changed between `load` and this task starting.
        self.reload_and_log();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = ticker.tick() => {}
            }
            let now = fingerprint(&paths).await;
            if now != seen {
                seen = now;
                self.reload_and_log();
            }
        }
    }

    fn reload_and_log(&self) {
        match self.reload() {
            Ok(true) => {
                let certs = self.current();
                tracing::info!(
                    identity = %certs.identity,
                    expires_in_s = certs
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .as_secs(),
                    "workload certificate rotated"
                );
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, identity = %self.identity(), "workload certificate rotation rejected, keeping the current one");
            }
        }
    }
}

/// What identifies a file's state for change detection: `None` when it cannot be read.
type FileState = Option<(Option<SystemTime>, u64, u64)>;

async fn fingerprint(paths: &CertPaths) -> [FileState; 3] {
    [
        file_state(&paths.cert_chain).await,
        file_state(&paths.key).await,
        file_state(&paths.roots).await,
    ]
}

async fn file_state(path: &Path) -> FileState {
    let meta = tokio::fs::metadata(path).await.ok()?;
    let contents = tokio::fs::read(path).await.ok()?;
    let mut hasher = DefaultHasher::new();
    contents.hash(&mut hasher);
    Some((meta.modified().ok(), meta.len(), hasher.finish()))
}
