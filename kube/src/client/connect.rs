//! Opening HTTP/1.1 connections to the API server: TCP, then TLS with the configured trust
//! (CA bundle, or none at all for `insecure-skip-tls-verify`) and client certificate.
//!
//! HTTP/1.1 on purpose: a watch holds its own connection for minutes, and short requests are
//! few (lists at start and after an outage, status writes), so HTTP/2 multiplexing would buy
//! little for its extra machinery.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use waypoint_core::tls::{CheckedServerVerifier, ServerCertCheck};

use super::config::{ClientConfig, ConfigError};
use crate::api::KubeError;

/// How long opening a connection (TCP and TLS) may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect.
#[derive(Clone)]
pub(super) struct Connector {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    pub(super) fn new(config: &ClientConfig) -> Result<Self, ConfigError> {
        let uri = &config.server;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| ConfigError::Invalid(format!("cluster server host `{host}`: {e}")))?;
            Some((TlsConnector::from(Arc::new(tls_config(config)?)), name))
        } else {
            None
        };
        Ok(Connector { host, port, tls })
    }

    /// `host:port` for the `Host` header.
    pub(super) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A fresh HTTP/1.1 connection, its driver spawned.
    pub(super) async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, KubeError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner())
            .await
            .map_err(|_| {
                KubeError::Transport(format!(
                    "connecting to {}:{} timed out after {CONNECT_TIMEOUT:?}",
                    self.host, self.port
                ))
            })?
    }

    async fn connect_inner(&self) -> Result<SendRequest<Full<Bytes>>, KubeError> {
        let transport = |e: &dyn std::fmt::Display| {
            KubeError::Transport(format!("{}:{}: {e}", self.host, self.port))
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| transport(&e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| transport(&format!("TLS: {e}")))?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<Full<Bytes>>, KubeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| KubeError::Transport(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "API server connection closed");
        }
    });
    Ok(sender)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_config(config: &ClientConfig) -> Result<rustls::ClientConfig, ConfigError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("TLS: {e}")))?;
    let builder = if config.insecure_skip_tls_verify {
        tracing::warn!(server = %config.server,
            "insecure-skip-tls-verify: the API server's certificate is not checked");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CheckedServerVerifier::with_check(
                AnyServer,
                provider().signature_verification_algorithms,
            )))
    } else {
        let mut roots = RootCertStore::empty();
        let pem = config.ca_pem.as_deref().ok_or_else(|| {
            ConfigError::Invalid(
                "no certificate authority for an https server (certificate-authority(-data))"
                    .into(),
            )
        })?;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| ConfigError::Invalid(format!("certificate authority: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ConfigError::Invalid(format!("certificate authority: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ConfigError::Invalid(
                "certificate authority: no certificate in the PEM data".into(),
            ));
        }
        builder.with_root_certificates(roots)
    };
    match &config.client_identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::Invalid(format!("client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| ConfigError::Invalid(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::Invalid(format!("client certificate: {e}")))
        }
    }
}

/// `insecure-skip-tls-verify`: any certificate passes; [`CheckedServerVerifier`] still checks
/// the handshake signatures so the handshake itself stays sound.
#[derive(Debug)]
struct AnyServer;

impl ServerCertCheck for AnyServer {
    fn check(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        Ok(())
    }
}
