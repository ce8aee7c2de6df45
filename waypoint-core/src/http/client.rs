//! One small HTTP/1.1 client for the waypoint's side calls: OTLP span export, ext_authz checks
//! and JWKS fetches. Each of them is a single request to a service the operator names, rare
//! next to the data path, so the client is deliberately plain: a fresh TCP connection per call,
//! one deadline over connect, request and response, a bound on how much body is read, and
//! typed errors the caller turns into its own message.
//!
//! ```text
//!  SideClient::send ──connect──▶ handshake ──▶ request ──▶ response head   (SideResponse)
//!                     └──────────── one deadline (SideClient::timeout) ────────────┐
//!  SideResponse::into_response / body / success_body ──▶ body, at most max_body bytes ┘
//! ```
//!
//! `http://` and `https://` are spoken ([`SideClient::send_url`]). Services on the node or in
//! the mesh (where ztunnel secures the hop) are usually plain HTTP; `https://` is for services
//! on the public internet (an identity provider's JWKS, a hosted trace collector), so its
//! server is verified against the Web-PKI roots compiled into waypoint
//! ([`crate::tls::web_pki_roots`]) and the URL's host name, with no trust setting of its own.
//!
//! Connection reuse is left out on purpose: at most one export per second, one JWKS fetch per
//! refresh interval, and one check per CUSTOM-policy request; a pool can come when a
//! measurement asks for it.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::{Arc, OnceLock};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Why a side call gave no usable answer. Each variant names the step that failed; the caller
/// adds which service it was talking to.
#[derive(Debug, thiserror::Error)]
pub enum SideCallError {
    /// The TCP connection could not be opened (refused, unreachable, name not resolved).
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The address dialled, `host:port`.
        addr: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The TLS handshake of an `https://` call failed (unknown CA, wrong name, refused).
    #[error("TLS handshake with {host}: {reason}")]
    Tls {
        /// The server name the certificate had to carry.
        host: String,
        /// rustls' reason.
        reason: String,
    },
    /// The HTTP/1.1 handshake failed.
    #[error("HTTP handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The request could not be sent or no response head came back.
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
    /// The deadline passed before the exchange (including the body) finished.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The service answered with a status the caller does not accept
    /// ([`SideResponse::success_body`]).
    #[error("status {0}")]
    Status(StatusCode),
    /// The response body is longer than the client's limit.
    #[error("the response body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The response body broke off.
    #[error("response body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// How a side call is made: its deadline and how much response body it reads.
///
/// ```no_run
/// # async fn fetch() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use waypoint_core::http::client::{HttpUrl, SideClient};
///
/// let url = HttpUrl::parse("http://issuer.example:8080/jwks.json")?;
/// let request = http::Request::get(url.path_and_query.as_str())
///     .header(http::header::HOST, url.authority.as_str())
///     .body(http_body_util::Empty::<bytes::Bytes>::new())?;
/// let keys = SideClient::new(Duration::from_secs(5), 1024 * 1024)
///     .send(&url.connect_addr(), request)
///     .await?
///     .success_body()
///     .await?;
/// # let _ = keys;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideClient {
    /// The deadline for the whole exchange: connect, handshake, request, response head and
    /// whatever body is read.
    pub timeout: Duration,
    /// The most response body bytes read; a longer body is [`SideCallError::BodyTooLarge`].
    pub max_body: usize,
}

impl SideClient {
    /// A client with this deadline and body limit.
    pub fn new(timeout: Duration, max_body: usize) -> Self {
        SideClient { timeout, max_body }
    }

    /// Sends `request` over a new HTTP/1.1 connection to `addr` (`host:port`, IPv6 in
    /// brackets; a name is resolved per call) and returns the response head, whatever its
    /// status. The request's URI should be origin-form (a path) and carry its own `Host`.
    pub async fn send<B>(
        &self,
        addr: &str,
        request: http::Request<B>,
    ) -> Result<SideResponse, SideCallError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.send_over(addr, None, request).await
    }

    /// [`SideClient::send`] to `url`'s host and port, over TLS verified against the Web-PKI
    /// roots when the URL is `https://`.
    pub async fn send_url<B>(
        &self,
        url: &HttpUrl,
        request: http::Request<B>,
    ) -> Result<SideResponse, SideCallError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tls = match url.tls {
            true => Some(SideTls::web_pki(&url.host)?),
            false => None,
        };
        self.send_over(&url.connect_addr(), tls, request).await
    }

    async fn send_over<B>(
        &self,
        addr: &str,
        tls: Option<SideTls>,
        request: http::Request<B>,
    ) -> Result<SideResponse, SideCallError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let deadline = Instant::now() + self.timeout;
        let exchange = async {
            let stream =
                TcpStream::connect(addr)
                    .await
                    .map_err(|source| SideCallError::Connect {
                        addr: addr.to_owned(),
                        source,
                    })?;
            // Latency matters more than packet count for a one-shot request.
            let _ = stream.set_nodelay(true);
            let stream: crate::wire::BoxedIo = match tls {
                Some(tls) => Box::new(tls.handshake(stream).await?),
                None => Box::new(stream),
            };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(SideCallError::Handshake)?;
            // The connection is driven by its own task, so the body can still be read after
            // `send` returns; `ConnectionTask` ends it when the response is dropped.
            let task = ConnectionTask(tokio::spawn(async move {
                let _ = conn.await;
            }));
            let response = sender
                .send_request(request)
                .await
                .map_err(SideCallError::Request)?;
            Ok((response, task))
        };
        let (response, task) = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| SideCallError::Timeout(self.timeout))??;
        let (head, body) = response.into_parts();
        Ok(SideResponse {
            head,
            body,
            deadline,
            client: *self,
            _connection: task,
        })
    }
}

/// The TLS side of an `https://` call: the server name to verify and the configuration.
struct SideTls {
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl SideTls {
    /// Verified against the Web-PKI roots, for `host`.
    fn web_pki(host: &str) -> Result<SideTls, SideCallError> {
        static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
        let config = CONFIG.get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(crate::tls::web_pki_roots())
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        });
        match config {
            Ok(config) => SideTls::with_config(host, config.clone()),
            Err(reason) => Err(SideCallError::Tls {
                host: host.to_owned(),
                reason: reason.clone(),
            }),
        }
    }

    fn with_config(host: &str, config: Arc<ClientConfig>) -> Result<SideTls, SideCallError> {
        let name = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned()).map_err(|_| SideCallError::Tls {
                host: host.to_owned(),
                reason: "not a valid server name".to_owned(),
            })?,
        };
        Ok(SideTls { name, config })
    }

    async fn handshake(
        self,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SideCallError> {
        let host = self.name.to_str().into_owned();
        tokio_rustls::TlsConnector::from(self.config)
            .connect(self.name, stream)
            .await
            .map_err(|e| SideCallError::Tls {
                host,
                reason: match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => tls.to_string(),
                    None => e.to_string(),
                },
            })
    }
}

/// Aborts the connection task when the response is done with, read or not.
#[derive(Debug)]
struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response head whose body has not been read yet; reading it stays under the deadline
/// and the size limit of the [`SideClient`] that sent the request.
#[derive(Debug)]
pub struct SideResponse {
    head: http::response::Parts,
    body: Incoming,
    deadline: Instant,
    client: SideClient,
    _connection: ConnectionTask,
}

impl SideResponse {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.head.status
    }

    /// The response headers.
    pub fn headers(&self) -> &http::HeaderMap {
        &self.head.headers
    }

    /// Reads the body (at most `max_body` bytes, before the deadline) and returns the whole
    /// response.
    pub async fn into_response(self) -> Result<http::Response<Bytes>, SideCallError> {
        let limit = self.client.max_body;
        let read = Limited::new(self.body, limit).collect();
        let body = tokio::time::timeout_at(self.deadline, read)
            .await
            .map_err(|_| SideCallError::Timeout(self.client.timeout))?
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    SideCallError::BodyTooLarge(limit)
                } else {
                    SideCallError::Body(e)
                }
            })?
            .to_bytes();
        Ok(http::Response::from_parts(self.head, body))
    }

    /// Reads the body, whatever the status.
    pub async fn body(self) -> Result<Bytes, SideCallError> {
        Ok(self.into_response().await?.into_body())
    }

    /// Reads the body of a 2xx response; any other status is [`SideCallError::Status`] and its
    /// body is not read.
    pub async fn success_body(self) -> Result<Bytes, SideCallError> {
        if !self.status().is_success() {
            return Err(SideCallError::Status(self.status()));
        }
        self.body().await
    }
}

/// Why a URL cannot be used for a side call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("not a URL")]
    NotAUrl,
    /// Another scheme, or none.
    #[error("the scheme must be http:// or https://")]
    NotHttp,
    /// No host after the scheme.
    #[error("no host")]
    NoHost,
    /// `user:password@` in the authority, which would be sent nowhere.
    #[error("credentials in the URL are not supported")]
    Credentials,
}

/// An `http://` or `https://` URL split into what a side call needs, checked once when
/// configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or IP, without IPv6 brackets.
    pub host: String,
    /// The port, 80 (443 for `https://`) when the URL names none.
    pub port: u16,
    /// `https://`: TLS, the server verified against the Web-PKI roots and [`HttpUrl::host`].
    pub tls: bool,
    /// `host[:port]` as written, for the `Host` header.
    pub authority: String,
    /// Path and query, `/` when the URL has neither.
    pub path_and_query: String,
}

impl HttpUrl {
    /// Parses `url`, which must be `http://host[:port][/path][?query]` (or `https://`).
    pub fn parse(url: &str) -> Result<HttpUrl, UrlError> {
        let uri: http::Uri = url.trim().parse().map_err(|_| UrlError::NotAUrl)?;
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            _ => return Err(UrlError::NotHttp),
        };
        let authority = uri.authority().ok_or(UrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::Credentials);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        Ok(HttpUrl {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            tls,
            authority: authority.as_str().to_owned(),
            path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }

    /// The address to dial, `host:port` (IPv6 in brackets), for [`SideClient::send`].
    pub fn connect_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(path, _)| path)
    }

    /// The query, when the URL has one.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, query)| query)
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
