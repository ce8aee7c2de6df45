//! The Web-PKI trust: Mozilla's root certificates as the `webpki-roots` crate ships them,
//! compiled into the binary. Used wherever waypoint verifies a server on the public internet
//! and no CA was configured (DestinationRule `tls` origination without `caCertificates`), so
//! the proxy needs no system certificate store (distroless images have none) and trusts the
//! same roots on every machine. The crate is updated with Mozilla's list; upgrading it is how
//! the roots are refreshed.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;

/// The Web-PKI roots, built once per process and shared.
pub fn web_pki_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_pki_roots_are_mozillas_list_and_built_once() {
        let roots = web_pki_roots();
        // Mozilla's program has well over a hundred roots; an empty or tiny store would mean
        // the crate's data did not make it in.
        assert!(roots.roots.len() > 100, "{} roots", roots.roots.len());
        assert!(Arc::ptr_eq(&roots, &web_pki_roots()));
    }
}
