//! JSON Web Key Sets: parsed once into verification keys, and for `jwksUri` fetched over HTTP,
//! cached across config snapshots, refreshed in the background and refetched (rate-limited) when
//! a token names a key the cached set lacks. A failed fetch never loses the last good key set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::Empty;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use waypoint_core::http::client::{HttpUrl, SideClient};

/// Largest JWKS (or OpenID discovery document) body accepted from the network.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How the waypoint fetches and caches remote key sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksSettings {
    /// How long a fetched key set is used before it is refreshed in the background (Istio's
    /// default: 20 minutes).
    pub refresh_interval: Duration,
    /// The fetch timeout when a jwtRule sets none (Istio's default: 5 seconds).
    pub fetch_timeout: Duration,
    /// The shortest time between two fetch attempts of one URI, so tokens naming unknown keys
    /// cannot turn the waypoint into a load generator against the issuer.
    pub min_refetch_interval: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            refresh_interval: Duration::from_secs(20 * 60),
            fetch_timeout: Duration::from_secs(5),
            min_refetch_interval: Duration::from_secs(30),
        }
    }
}

/// Why a key set could not be read or fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The URI cannot be fetched by this waypoint.
    #[error("jwksUri {uri:?}: {reason}")]
    BadUri {
        /// The URI as configured.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The fetch failed (connection, status, size, timeout).
    #[error("fetching {uri}: {reason}")]
    Fetch {
        /// The URI fetched.
        uri: String,
        /// What went wrong.
        reason: String,
    },
    /// The document is not a JWKS with at least one usable public key.
    #[error("invalid JWKS: {0}")]
    Invalid(String),
}

/// One public key of a set, ready to verify signatures.
pub(crate) struct VerifyKey {
    kid: Option<String>,
    /// The `alg` the JWK restricts itself to, if any.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

/// The usable public keys of a JWKS. Private, symmetric, encryption-only and malformed keys are
/// left out: one bad key must not make the whole set unusable.
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| k.kid.as_deref().unwrap_or("<no kid>")),
            )
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Fails when it is not JSON of that shape or
    /// holds no usable public key.
    pub fn parse(json: &[u8]) -> Result<KeySet, JwksError> {
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| JwksError::Invalid(e.to_string()))?;
        let Some(entries) = doc.get("keys").and_then(|k| k.as_array()) else {
            return Err(JwksError::Invalid("no \"keys\" array".into()));
        };
        let keys: Vec<VerifyKey> = entries.iter().filter_map(verify_key).collect();
        if keys.is_empty() {
            return Err(JwksError::Invalid(format!(
                "none of its {} keys is a usable RSA, EC or Ed25519 signing key",
                entries.len()
            )));
        }
        Ok(KeySet { keys })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when some key carries exactly this `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys that may have signed a token with this `kid` and `alg`. As Envoy does, a key
    /// without `kid` is a candidate for any token, and a token without `kid` tries every key.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| match (kid, k.kid.as_deref()) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .filter(move |k| k.family == alg.family() && k.alg.is_none_or(|a| a == alg))
            .map(|k| &k.key)
    }
}

fn verify_key(entry: &serde_json::Value) -> Option<VerifyKey> {
    // Deserialized one key at a time so that a key of an unknown shape is skipped alone.
    let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
        // Symmetric keys in a public JWKS would let anyone who reads it sign tokens.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => match Algorithm::try_from(a) {
            Ok(a) if a.family() == family => Some(a),
            _ => return None,
        },
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg,
        family,
        key,
    })
}

/// Remote key sets shared by every config snapshot, so a reload does not refetch them.
///
/// The request path never waits on this cache's lock: each compiled rule holds its
/// [`RemoteJwks`] directly; the lock is taken only while a snapshot is built.
#[derive(Debug, Default)]
pub struct JwksCache {
    settings: JwksSettings,
    sources: Mutex<HashMap<String, Weak<RemoteJwks>>>,
}

impl JwksCache {
    /// An empty cache fetching with `settings`.
    pub fn new(settings: JwksSettings) -> Self {
        JwksCache {
            settings,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// The fetch settings.
    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// The key set served at `uri` (`http://`, or `https://` verified against the Web-PKI roots).
    pub fn remote(&self, uri: &str) -> Result<Arc<RemoteJwks>, JwksError> {
        let target = HttpTarget::parse(uri)?;
        Ok(self.shared(uri.to_owned(), || Origin::Jwks(target)))
    }

    /// The key set an OpenID provider publishes: `<issuer>/.well-known/openid-configuration`
    /// names its `jwks_uri` (`http://` or `https://`).
    pub fn discovered(&self, issuer: &str) -> Result<Arc<RemoteJwks>, JwksError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let target = HttpTarget::parse(&url)?;
        Ok(self.shared(format!("oidc:{url}"), || Origin::Discovery(target)))
    }

    fn shared(&self, key: String, origin: impl FnOnce() -> Origin) -> Arc<RemoteJwks> {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sources.retain(|_, s| s.strong_count() > 0);
        if let Some(existing) = sources.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let source = Arc::new(RemoteJwks::new(origin(), self.settings.clone()));
        sources.insert(key, Arc::downgrade(&source));
        source
    }
}

/// Where a remote key set comes from.
#[derive(Debug)]
enum Origin {
    Jwks(HttpTarget),
    Discovery(HttpTarget),
}

/// A fetched key set and when it was fetched.
struct Fetched {
    keys: Arc<KeySet>,
    at: Instant,
}

/// One remote key set: the last good copy (read lock-free) and the fetch machinery.
pub struct RemoteJwks {
    origin: Origin,
    settings: JwksSettings,
    current: ArcSwapOption<Fetched>,
    /// One fetch at a time; waiters reuse its result.
    fetch_lock: tokio::sync::Mutex<()>,
    /// Bumped after every completed attempt, so waiters know one happened.
    attempts: AtomicU64,
    last_attempt: Mutex<Option<Instant>>,
    last_error: Mutex<Option<JwksError>>,
    refreshing: AtomicBool,
    fetches: AtomicU64,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    fn new(origin: Origin, settings: JwksSettings) -> Self {
        RemoteJwks {
            origin,
            settings,
            current: ArcSwapOption::empty(),
            fetch_lock: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many HTTP fetch attempts were made (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The last good key set, if any, without fetching.
    pub fn cached(&self) -> Option<Arc<KeySet>> {
        self.current.load().as_ref().map(|f| f.keys.clone())
    }

    /// The keys to verify with. With a cached set this returns at once (starting a background
    /// refresh when the set is older than the refresh interval); without one it awaits a fetch,
    /// bounded by `timeout`.
    pub async fn keys(self: &Arc<Self>, timeout: Duration) -> Result<Arc<KeySet>, JwksError> {
        if let Some(fetched) = self.current.load_full() {
            if fetched.at.elapsed() >= self.settings.refresh_interval {
                self.refresh_in_background(timeout);
            }
            return Ok(fetched.keys.clone());
        }
        self.refetch(timeout).await
    }

    /// Starts fetching now, without waiting, when no fetch is running (a snapshot build calls
    /// this so the first request does not wait). Needs a Tokio runtime; without one it does
    /// nothing and the first request fetches.
    pub fn prefetch(self: &Arc<Self>) {
        if self.current.load().is_none() {
            self.refresh_in_background(self.settings.fetch_timeout);
        }
    }

    fn refresh_in_background(self: &Arc<Self>, timeout: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            // The result is in `current` (or logged): nobody waits for it here.
            let _ = this.refetch(timeout).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches the set again unless an attempt finished within the minimum refetch interval,
    /// and returns the newest good set. On failure the last good set is kept and returned.
    pub async fn refetch(&self, timeout: Duration) -> Result<Arc<KeySet>, JwksError> {
        let started = Instant::now();
        let seen = self.attempts.load(Ordering::Acquire);
        let Ok(_guard) = tokio::time::timeout(timeout, self.fetch_lock.lock()).await else {
            return self.cached_or_error();
        };
        if self.attempts.load(Ordering::Acquire) != seen || !self.may_attempt() {
            // Another request fetched while this one waited, or one did so very recently.
            return self.cached_or_error();
        }
        *lock(&self.last_attempt) = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // Waiting for another fetch counts against this caller's timeout too.
        let result = self.fetch(timeout.saturating_sub(started.elapsed())).await;
        match result {
            Ok(keys) => {
                tracing::debug!(origin = ?self.origin, keys = keys.len(), "JWKS fetched");
                self.current.store(Some(Arc::new(Fetched {
                    keys: Arc::new(keys),
                    at: Instant::now(),
                })));
                *lock(&self.last_error) = None;
            }
            Err(e) => {
                tracing::warn!(
                    origin = ?self.origin,
                    error = %e,
                    kept_last_good = self.current.load().is_some(),
                    "JWKS fetch failed"
                );
                *lock(&self.last_error) = Some(e);
            }
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
        self.cached_or_error()
    }

    fn may_attempt(&self) -> bool {
        lock(&self.last_attempt).is_none_or(|at| at.elapsed() >= self.settings.min_refetch_interval)
    }

    fn cached_or_error(&self) -> Result<Arc<KeySet>, JwksError> {
        self.cached().ok_or_else(|| {
            lock(&self.last_error)
                .clone()
                .unwrap_or_else(|| JwksError::Fetch {
                    uri: self.origin.target().display.clone(),
                    reason: "no key set fetched yet".into(),
                })
        })
    }

    async fn fetch(&self, timeout: Duration) -> Result<KeySet, JwksError> {
        let started = Instant::now();
        let jwks_target = match &self.origin {
            Origin::Jwks(target) => std::borrow::Cow::Borrowed(target),
            Origin::Discovery(target) => {
                let doc = http_get(target, timeout).await?;
                let uri = serde_json::from_slice::<serde_json::Value>(&doc)
                    .ok()
                    .and_then(|d| d.get("jwks_uri")?.as_str().map(str::to_owned))
                    .ok_or_else(|| JwksError::Fetch {
                        uri: target.display.clone(),
                        reason: "the discovery document has no jwks_uri".into(),
                    })?;
                std::borrow::Cow::Owned(HttpTarget::parse(&uri)?)
            }
        };
        let remaining = timeout.saturating_sub(started.elapsed());
        let body = http_get(&jwks_target, remaining).await?;
        KeySet::parse(&body)
    }
}

impl Origin {
    fn target(&self) -> &HttpTarget {
        match self {
            Origin::Jwks(t) | Origin::Discovery(t) => t,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An `http://` or `https://` URL split into what a GET needs, and the URL as configured for
/// messages.
#[derive(Clone, Debug)]
struct HttpTarget {
    display: String,
    url: HttpUrl,
}

impl HttpTarget {
    fn parse(uri: &str) -> Result<HttpTarget, JwksError> {
        let url = HttpUrl::parse(uri).map_err(|e| JwksError::BadUri {
            uri: uri.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(HttpTarget {
            display: uri.to_owned(),
            url,
        })
    }
}

/// GETs `target` over the side-call client; only a 2xx body of at most [`MAX_JWKS_BYTES`]
/// is returned.
async fn http_get(target: &HttpTarget, timeout: Duration) -> Result<Bytes, JwksError> {
    let failed = |reason: String| JwksError::Fetch {
        uri: target.display.clone(),
        reason,
    };
    let request = http::Request::get(target.url.path_and_query.as_str())
        .header(http::header::HOST, target.url.authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "waypoint-jwks")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(format!("request: {e}")))?;
    let client = SideClient::new(timeout, MAX_JWKS_BYTES);
    let response = client
        .send_url(&target.url, request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    response
        .success_body()
        .await
        .map_err(|e| failed(e.to_string()))
}
