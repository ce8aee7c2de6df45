//! A fake istiod CA with its token and root files on disk, and a look at the certificate an
//! HBONE listener presents.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use waypoint_core::identity::SpiffeId;
use waypoint_core::tls::testing::FakeIstiod;
use waypoint_core::tls::{DevCa, ExpectedIdentity, IstiodCa, WorkloadCerts, client_config};

/// The token the fake CA is sent, as kubelet would mount it.
pub(crate) const TOKEN: &str = "token-from-kubelet";

/// A fake CA for trust domain `cluster.local`, the files a pod would have, and a client
/// workload (`ns/shop/sa/cart`) issued by the same CA.
pub(crate) struct CaFixture {
    pub fake: FakeIstiod,
    pub client: WorkloadCerts,
    pub token_path: PathBuf,
    pub root_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl CaFixture {
    pub(crate) async fn start() -> CaFixture {
        let ca = DevCa::generate("cluster.local").unwrap();
        let cart = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        let client = ca.workload_certs(&cart, Duration::from_secs(3600)).unwrap();
        let fake = FakeIstiod::start(ca).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (token_path, root_path) = (
            dir.path().join("istio-token"),
            dir.path().join("root-cert.pem"),
        );
        std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
        std::fs::write(&root_path, fake.root_pem()).unwrap();
        CaFixture {
            fake,
            client,
            token_path,
            root_path,
            _dir: dir,
        }
    }

    /// The client settings for `identity` against the fake CA.
    pub(crate) fn istiod_ca(&self, identity: &SpiffeId, validity: Duration) -> IstiodCa {
        IstiodCa {
            address: self.fake.addr().to_string(),
            token_path: self.token_path.clone(),
            root_path: self.root_path.clone(),
            cluster_id: "east".into(),
            identity: identity.clone(),
            validity,
        }
    }

    /// A fresh TLS handshake as the client workload with the HBONE listener at `addr`, which
    /// must present `expected`; returns the leaf certificate it presented.
    pub(crate) async fn presented_leaf(
        &self,
        addr: SocketAddr,
        expected: &SpiffeId,
    ) -> CertificateDer<'static> {
        let config = client_config(
            &self.client,
            vec![ExpectedIdentity::Exact(expected.clone())],
        )
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
            .connect(name, tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    }
}
