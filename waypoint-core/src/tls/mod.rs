//! Workload certificates and the mutual TLS that HBONE runs on.
//!
//! HBONE is HTTP/2 `CONNECT` inside TLS 1.3 with a client certificate on both ends, and the
//! identity of each end is the single SPIFFE URI SAN of its leaf certificate (see `docs/wire.md`).
//! This module holds:
//!
//! - [`WorkloadCerts`]: the waypoint's own certificate chain, key and trust bundle, loaded from
//!   the files Istio mounts ([`CertPaths`]) and checked before use.
//! - [`server_config`] / [`client_config`]: rustls configurations with the HBONE parameters
//!   (TLS 1.3 only, AES-GCM, ALPN `h2`, no SNI, no resumption) and SPIFFE-aware verifiers
//!   (`SpiffeClientVerifier`, [`SpiffeServerVerifier`]).
//! - [`ServerCertCheck`] / [`CheckedServerVerifier`]: a client verifier written as one decision
//!   about the presented certificate, with the handshake-signature plumbing rustls asks for
//!   written once (the Kubernetes client and the conformance runner use it too).
//! - [`CertStore`]: the current pair behind an atomic pointer, reloaded when the files rotate.
//! - [`DevCa`]: a small CA for development clusters, tests and tooling.
//! - [`IstiodCa`]: the certificate from istiod's CA (native HBONE in a cluster), renewed at
//!   half-life into the [`CertStore`].
//! - `testing` (feature `test-helpers`): an in-process stand-in for istiod's CA.
//! - [`web_pki_roots`]: the Web-PKI roots (Mozilla's list, compiled in) for servers outside
//!   the mesh.
//! - `frontend`: TLS termination for Gateway HTTPS listeners (certificates from Secrets,
//!   chosen by SNI), unrelated to the mesh identity above.

mod ca;
mod certs;
pub(crate) mod frontend;
pub(crate) mod istiod;
mod server_check;
mod store;
#[cfg(any(test, feature = "test-helpers"))]
pub mod testing;
mod verify;
mod web_pki;

use std::path::PathBuf;

use crate::identity::SpiffeIdError;

pub use ca::{DevCa, IssuedCert};
pub use certs::{CertPaths, WorkloadCerts, spiffe_identities};
pub use frontend::FrontendTls;
pub use istiod::{IstiodCa, IstiodError};
pub use server_check::{CheckedServerVerifier, ServerCertCheck};
pub use store::CertStore;
pub use verify::{
    ExpectedIdentity, SpiffeServerCheck, SpiffeServerVerifier, client_config, negotiated_h2,
    peer_identity, server_config,
};
pub use web_pki::web_pki_roots;

/// The only application protocol HBONE speaks inside TLS.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// Why certificates could not be loaded, checked, issued or turned into a TLS configuration.
///
/// `origin` fields name where the data came from: a file path when loaded from disk, a short
/// description ("certificate chain PEM") when given as bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// The PEM text is malformed or holds no item of the expected kind.
    #[error("{origin}: bad PEM: {reason}")]
    Pem {
        /// Where the PEM came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate is not valid DER X.509 or has a malformed extension.
    #[error("{origin}: bad certificate: {reason}")]
    Certificate {
        /// Where the certificate came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the one the leaf certificate was issued for.
    #[error("private key {key} does not match the leaf certificate of {chain}")]
    KeyMismatch {
        /// Where the key came from.
        key: String,
        /// Where the chain came from.
        chain: String,
    },
    /// The leaf certificate's validity ended.
    #[error("{origin}: certificate expired on {not_after} (now {now})")]
    Expired {
        /// Where the certificate came from.
        origin: String,
        /// The certificate's notAfter.
        not_after: String,
        /// The current time.
        now: String,
    },
    /// The leaf certificate's validity has not started yet.
    #[error("{origin}: certificate is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// Where the certificate came from.
        origin: String,
        /// The certificate's notBefore.
        not_before: String,
        /// The current time.
        now: String,
    },
    /// The leaf certificate carries no `spiffe://` URI SAN, so it names no workload.
    #[error("{origin}: certificate has no SPIFFE URI SAN")]
    NoSpiffeId {
        /// Where the certificate came from.
        origin: String,
    },
    /// The leaf certificate carries several SPIFFE ids; Istio issues exactly one.
    #[error("{origin}: certificate has {} SPIFFE URI SANs, exactly one is allowed: {}", ids.len(), ids.join(", "))]
    MultipleSpiffeIds {
        /// Where the certificate came from.
        origin: String,
        /// The URIs found.
        ids: Vec<String>,
    },
    /// A `spiffe://` URI SAN is not an Istio identity.
    #[error("{origin}: {error}")]
    InvalidSpiffeId {
        /// Where the certificate came from.
        origin: String,
        /// Why the URI is not an identity.
        error: SpiffeIdError,
    },
    /// The trust bundle holds no certificate, so no peer could ever be verified.
    #[error("{origin}: no root certificate")]
    NoRoots {
        /// Where the bundle came from.
        origin: String,
    },
    /// A peer's certificate was refused because of the identity it carries.
    #[error("{0}")]
    PeerIdentity(String),
    /// The development CA could not be built or could not sign.
    #[error("development CA: {0}")]
    Ca(String),
    /// rustls refused the configuration (for example a key type it cannot use).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}
