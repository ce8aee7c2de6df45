//! Where the API server is and how to authenticate to it: in-cluster (the ServiceAccount
//! mount) or a kubeconfig file.
//!
//! Only what a waypoint needs is read: the current context's cluster (`server`, its CA, or
//! `insecure-skip-tls-verify`) and user (a bearer token, inline or in a file, or a client
//! certificate). Credential plugins (`exec`, `auth-provider`) run arbitrary programs and are
//! refused with an error naming the field, rather than silently connecting without
//! credentials: a proxy that runs in a pod uses its ServiceAccount, and a developer can mint a
//! token (`kubectl create token`) for a kubeconfig.
//!
//! Tokens in files are re-read every [`TOKEN_REFRESH`]: projected ServiceAccount tokens rotate
//! (kubelet refreshes them at 80 % of their life, an hour by default).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

/// How often a token file is read again.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(60);

/// The ServiceAccount mount of a pod.
const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why no client configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig is not valid YAML of the expected shape.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The kubeconfig.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Something the configuration must say is missing or wrong (names the field).
    #[error("{0}")]
    Invalid(String),
    /// A credential plugin was configured; waypoint does not run them.
    #[error(
        "kubeconfig user `{user}` uses `{field}`, a credential plugin waypoint does not run; \
         use a token (`token`/`tokenFile`, e.g. from `kubectl create token`) or a client certificate"
    )]
    UnsupportedPlugin {
        /// The user entry.
        user: String,
        /// `exec` or `auth-provider`.
        field: &'static str,
    },
}

/// How requests authenticate. `Debug` never shows a token.
pub enum Auth {
    /// No credentials beyond a client certificate, if any.
    None,
    /// A fixed bearer token.
    Token(String),
    /// A bearer token read from a file, re-read every [`TOKEN_REFRESH`].
    TokenFile(TokenFile),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::TokenFile(file) => write!(f, "TokenFile({})", file.path.display()),
        }
    }
}

/// A token file and the last value read from it.
pub struct TokenFile {
    path: PathBuf,
    refresh: Duration,
    cached: Mutex<Option<(String, Instant)>>,
}

impl TokenFile {
    /// A token kept in `path`, re-read every [`TOKEN_REFRESH`].
    pub fn new(path: PathBuf) -> Self {
        Self::with_refresh(path, TOKEN_REFRESH)
    }

    /// A token kept in `path`, re-read every `refresh`.
    pub fn with_refresh(path: PathBuf, refresh: Duration) -> Self {
        TokenFile {
            path,
            refresh,
            cached: Mutex::new(None),
        }
    }

    /// The current token: the cached one when fresh, else the file read again. A read that
    /// fails keeps the last token (the API server will say if it expired).
    pub fn token(&self) -> Result<String, ConfigError> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, at)) = cached.as_ref()
            && at.elapsed() < self.refresh
        {
            return Ok(token.clone());
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let token = text.trim().to_owned();
                *cached = Some((token.clone(), Instant::now()));
                Ok(token)
            }
            Err(source) => match cached.as_ref() {
                Some((token, _)) => {
                    tracing::warn!(path = %self.path.display(), error = %source,
                        "cannot re-read the API token; using the last one");
                    Ok(token.clone())
                }
                None => Err(ConfigError::Read {
                    path: self.path.clone(),
                    source,
                }),
            },
        }
    }
}

/// Everything the HTTP client needs to reach and authenticate to the API server. `Debug`
/// shows neither the token nor the client key.
pub struct ClientConfig {
    /// The server URL (`https://10.96.0.1:443`).
    pub server: http::Uri,
    /// PEM CA bundle trusted for the server; `None` uses no roots (then only
    /// `insecure_skip_tls_verify` can connect over TLS).
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate (kubeconfig `insecure-skip-tls-verify`).
    pub insecure_skip_tls_verify: bool,
    /// PEM client certificate chain and key.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Bearer token.
    pub auth: Auth,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("client_identity", &self.client_identity.is_some())
            .field("auth", &self.auth)
            .finish()
    }
}

impl ClientConfig {
    /// `KUBECONFIG` when set; else the in-cluster config when `KUBERNETES_SERVICE_HOST` is
    /// set; else `~/.kube/config`.
    pub fn from_environment() -> Result<Self, ConfigError> {
        if let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
            // Like kubectl, the first file of a list (merging is not supported).
            let first = std::env::split_paths(&path)
                .next()
                .unwrap_or_else(|| PathBuf::from(&path));
            return Self::from_kubeconfig(&first);
        }
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            return Self::in_cluster();
        }
        let home = std::env::var_os("HOME").ok_or_else(|| {
            ConfigError::Invalid(
                "no API server configured: set KUBECONFIG, run in a pod, or set HOME".into(),
            )
        })?;
        Self::from_kubeconfig(&Path::new(&home).join(".kube/config"))
    }

    /// The pod's ServiceAccount: `KUBERNETES_SERVICE_HOST`/`_PORT`, its token and CA.
    pub fn in_cluster() -> Result<Self, ConfigError> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError::Invalid(format!("{name} is not set")))
        };
        Self::in_cluster_at(
            &var("KUBERNETES_SERVICE_HOST")?,
            &var("KUBERNETES_SERVICE_PORT")?,
            Path::new(IN_CLUSTER_DIR),
        )
    }

    /// [`ClientConfig::in_cluster`] with the host, port and mount directory given.
    pub fn in_cluster_at(host: &str, port: &str, dir: &Path) -> Result<Self, ConfigError> {
        // An IPv6 service host needs brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let server = parse_server(&format!("https://{host}:{port}"))?;
        let ca = dir.join("ca.crt");
        let ca_pem = std::fs::read(&ca).map_err(|source| ConfigError::Read { path: ca, source })?;
        let token = TokenFile::new(dir.join("token"));
        token.token()?; // fail at start, not at the first request
        Ok(ClientConfig {
            server,
            ca_pem: Some(ca_pem),
            insecure_skip_tls_verify: false,
            client_identity: None,
            auth: Auth::TokenFile(token),
        })
    }

    /// The current context of the kubeconfig at `path`. Relative file paths in it are relative
    /// to its directory, as kubectl reads them.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: KubeconfigFile =
            serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        file.resolve(dir)
    }
}

fn parse_server(server: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = server
        .trim_end_matches('/')
        .parse()
        .map_err(|e| ConfigError::Invalid(format!("cluster server `{server}`: {e}")))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https" | "http"), Some(_)) => Ok(uri),
        _ => Err(ConfigError::Invalid(format!(
            "cluster server `{server}`: expected https://host[:port]"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KubeconfigFile {
    #[serde(default)]
    current_context: String,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: Option<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    exec: Option<serde_json::Value>,
    auth_provider: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

impl KubeconfigFile {
    fn resolve(self, dir: &Path) -> Result<ClientConfig, ConfigError> {
        if self.current_context.is_empty() {
            return Err(ConfigError::Invalid(
                "kubeconfig has no `current-context`".into(),
            ));
        }
        let context = find(&self.contexts, &self.current_context, "contexts")?;
        let cluster = find(&self.clusters, &context.cluster, "clusters")?;
        let user = if context.user.is_empty() {
            None
        } else {
            Some(find(&self.users, &context.user, "users")?)
        };
        let ca_pem = file_or_data(
            dir,
            cluster.certificate_authority.as_deref(),
            cluster.certificate_authority_data.as_deref(),
            "certificate-authority-data",
        )?;
        let mut config = ClientConfig {
            server: parse_server(&cluster.server)?,
            ca_pem,
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
            client_identity: None,
            auth: Auth::None,
        };
        let Some(user) = user else {
            return Ok(config);
        };
        let name = context.user.clone();
        if user.exec.is_some() {
            return Err(ConfigError::UnsupportedPlugin {
                user: name,
                field: "exec",
            });
        }
        if user.auth_provider.is_some() {
            return Err(ConfigError::UnsupportedPlugin {
                user: name,
                field: "auth-provider",
            });
        }
        config.auth = match (&user.token, &user.token_file) {
            (Some(token), _) => Auth::Token(token.trim().to_owned()),
            (None, Some(file)) => {
                let token = TokenFile::new(dir.join(file));
                token.token()?;
                Auth::TokenFile(token)
            }
            (None, None) => Auth::None,
        };
        let cert = file_or_data(
            dir,
            user.client_certificate.as_deref(),
            user.client_certificate_data.as_deref(),
            "client-certificate-data",
        )?;
        let key = file_or_data(
            dir,
            user.client_key.as_deref(),
            user.client_key_data.as_deref(),
            "client-key-data",
        )?;
        config.client_identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "kubeconfig user `{name}`: client-certificate and client-key go together"
                )));
            }
        };
        Ok(config)
    }
}

fn find<'a, T>(entries: &'a [Named<T>], name: &str, list: &str) -> Result<&'a T, ConfigError> {
    entries
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_ref())
        .ok_or_else(|| ConfigError::Invalid(format!("kubeconfig `{list}` has no entry `{name}`")))
}

/// Inline base64 data (`*-data`, which wins, as in kubectl) or the file it names.
fn file_or_data(
    dir: &Path,
    file: Option<&Path>,
    data: Option<&str>,
    data_field: &str,
) -> Result<Option<Vec<u8>>, ConfigError> {
    if let Some(data) = data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| ConfigError::Invalid(format!("kubeconfig `{data_field}`: {e}")))?;
        return Ok(Some(bytes));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let path = dir.join(file);
    std::fs::read(&path)
        .map(Some)
        .map_err(|source| ConfigError::Read { path, source })
}
