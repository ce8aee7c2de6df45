//! HBONE mutual TLS end to end: real rustls handshakes over in-memory streams between the
//! server and client configurations, certificate loading errors, and certificate rotation.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::{ClientConfig, ProtocolVersion, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use waypoint_core::identity::SpiffeId;
use waypoint_core::shutdown;
use waypoint_core::tls::{
    CertPaths, CertStore, DevCa, ExpectedIdentity, IssuedCert, SpiffeServerVerifier, TlsError,
    WorkloadCerts, client_config, negotiated_h2, peer_identity, server_config, spiffe_identities,
};

const TD: &str = "cluster.local";
const HOUR: Duration = Duration::from_secs(3600);

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

fn workload(ca: &DevCa, id: &SpiffeId) -> WorkloadCerts {
    ca.workload_certs(id, HOUR).unwrap()
}

fn exact(id: &SpiffeId) -> Vec<ExpectedIdentity> {
    vec![ExpectedIdentity::Exact(id.clone())]
}

/// A client configuration like [`client_config`] but built by hand, for client certificates
/// that `WorkloadCerts` would refuse (or none at all).
fn raw_client(
    issued: Option<&IssuedCert>,
    roots: &[CertificateDer<'static>],
    expected: Vec<ExpectedIdentity>,
    alpn: &[u8],
) -> Arc<ClientConfig> {
    let verifier = SpiffeServerVerifier::new(roots, expected).unwrap();
    let builder = ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match issued {
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_sni = false;
    Arc::new(config)
}

type Sides = (
    io::Result<server::TlsStream<DuplexStream>>,
    io::Result<client::TlsStream<DuplexStream>>,
);

/// Both ends of one handshake. The client dials an IP, as HBONE does.
async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Sides {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::IpAddress(Ipv4Addr::new(10, 0, 0, 7).into());
    let both = async {
        tokio::join!(
            TlsAcceptor::from(server).accept(s),
            TlsConnector::from(client).connect(name, c)
        )
    };
    tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .unwrap()
}

/// Asserts the server refused the client, and that the client cannot use the connection.
async fn assert_client_refused(sides: Sides, reason: &str) {
    let (server, client) = sides;
    let err = server.expect_err("server must refuse the client");
    assert!(err.to_string().contains(reason), "{err}");
    // TLS 1.3 clients finish before the server checks their certificate: the refusal shows
    // up as an alert on the first read.
    if let Ok(mut client) = client {
        let mut buf = [0u8; 1];
        let read = client.read(&mut buf).await;
        assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
    }
}

/// Round trips a few bytes both ways: the tunnel works.
async fn exchange(
    server: &mut server::TlsStream<DuplexStream>,
    client: &mut client::TlsStream<DuplexStream>,
) {
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").await.unwrap();
    server.flush().await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn mutual_handshake_sees_both_identities_with_h2_and_tls13() {
    let ca = DevCa::generate(TD).unwrap();
    let (wp, app) = (id("istio-system", "waypoint"), id("shop", "cart"));
    let server_certs = workload(&ca, &wp);
    let client_certs = workload(&ca, &app);
    let (server, client) = handshake(
        server_config(&server_certs, &[]).unwrap(),
        client_config(&client_certs, exact(&wp)).unwrap(),
    )
    .await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    exchange(&mut server, &mut client).await;

    let s = server.get_ref().1;
    assert_eq!(peer_identity(s), Some(app));
    assert_eq!(s.alpn_protocol(), Some(&b"h2"[..]));
    assert!(negotiated_h2(s));
    assert_eq!(s.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    let suite = s.negotiated_cipher_suite().unwrap().suite();
    assert!(
        [
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        ]
        .contains(&suite),
        "{suite:?}"
    );
    assert_eq!(s.server_name(), None, "HBONE clients send no SNI");

    let c = client.get_ref().1;
    assert_eq!(peer_identity(c), Some(wp));
    assert_eq!(c.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));
}

#[tokio::test]
async fn client_offering_other_alpn_is_refused() {
    let ca = DevCa::generate(TD).unwrap();
    let wp = id("istio-system", "waypoint");
    let server_certs = workload(&ca, &wp);
    let issued = ca.issue(&id("shop", "cart"), HOUR).unwrap();
    let client = raw_client(Some(&issued), &server_certs.roots, exact(&wp), b"http/1.1");
    let (server, client) = handshake(server_config(&server_certs, &[]).unwrap(), client).await;
    let err = server.err().unwrap();
    assert!(err.to_string().contains("known protocol"), "{err}");
    assert!(client.is_err());
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let (ca, other_ca) = (DevCa::generate(TD).unwrap(), DevCa::generate(TD).unwrap());
    let wp = id("istio-system", "waypoint");
    let server_certs = workload(&ca, &wp);
    let mut client_certs = workload(&other_ca, &id("shop", "cart"));
    // The client trusts the server, so only the server's check can fail.
    client_certs.roots.extend(server_certs.roots.clone());
    let sides = handshake(
        server_config(&server_certs, &[]).unwrap(),
        client_config(&client_certs, exact(&wp)).unwrap(),
    )
    .await;
    // Both roots have the same subject, as two Istio meshes' roots often do: webpki finds the
    // "issuer" by name and then the signature fails.
    assert_client_refused(sides, "invalid peer certificate").await;
}

#[tokio::test]
async fn client_of_another_trust_domain_is_refused_unless_listed() {
    let ca = DevCa::generate(TD).unwrap();
    let wp = id("istio-system", "waypoint");
    let server_certs = workload(&ca, &wp);
    let foreign = SpiffeId::new("other.example", "shop", "cart").unwrap();
    let client_certs = workload(&ca, &foreign);
    let client = client_config(&client_certs, exact(&wp)).unwrap();

    let sides = handshake(server_config(&server_certs, &[]).unwrap(), client.clone()).await;
    assert_client_refused(sides, "spiffe://other.example/ns/shop/sa/cart").await;

    let listed = [TD.to_owned(), "other.example".to_owned()];
    let (server, client) = handshake(server_config(&server_certs, &listed).unwrap(), client).await;
    let (server, _client) = (server.unwrap(), client.unwrap());
    assert_eq!(peer_identity(server.get_ref().1), Some(foreign));
}

#[tokio::test]
async fn client_certificate_without_single_spiffe_id_is_refused() {
    let ca = DevCa::generate(TD).unwrap();
    let wp = id("istio-system", "waypoint");
    let server_certs = workload(&ca, &wp);
    let server = server_config(&server_certs, &[]).unwrap();

    let no_san = ca.issue_with_sans(&[], HOUR).unwrap();
    let client = raw_client(Some(&no_san), &server_certs.roots, exact(&wp), b"h2");
    assert_client_refused(handshake(server.clone(), client).await, "no SPIFFE URI SAN").await;

    let http_only = ca
        .issue_with_sans(&["https://cart.shop".to_owned()], HOUR)
        .unwrap();
    let client = raw_client(Some(&http_only), &server_certs.roots, exact(&wp), b"h2");
    assert_client_refused(handshake(server.clone(), client).await, "no SPIFFE URI SAN").await;

    let two = ca
        .issue_with_sans(&[id("a", "a").to_string(), id("b", "b").to_string()], HOUR)
        .unwrap();
    let client = raw_client(Some(&two), &server_certs.roots, exact(&wp), b"h2");
    assert_client_refused(handshake(server, client).await, "2 SPIFFE URI SANs").await;
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = DevCa::generate(TD).unwrap();
    let wp = id("istio-system", "waypoint");
    let server_certs = workload(&ca, &wp);
    let client = raw_client(None, &server_certs.roots, exact(&wp), b"h2");
    let sides = handshake(server_config(&server_certs, &[]).unwrap(), client).await;
    assert_client_refused(sides, "peer sent no certificates").await;
}

#[tokio::test]
async fn client_refuses_server_with_unexpected_identity_naming_both() {
    let ca = DevCa::generate(TD).unwrap();
    let (wp, app) = (id("istio-system", "waypoint"), id("shop", "cart"));
    let server_certs = workload(&ca, &wp);
    let client_certs = workload(&ca, &app);
    let wanted = id("shop", "payments");
    let (server, client) = handshake(
        server_config(&server_certs, &[]).unwrap(),
        client_config(&client_certs, exact(&wanted)).unwrap(),
    )
    .await;
    let err = client.expect_err("client must refuse the server");
    let msg = err.to_string();
    assert!(msg.contains(wp.as_str()), "{msg}");
    assert!(msg.contains(wanted.as_str()), "{msg}");
    assert!(server.is_err(), "the server sees the client's alert");
}

#[tokio::test]
async fn client_refuses_server_from_unknown_ca() {
    let (ca, other_ca) = (DevCa::generate(TD).unwrap(), DevCa::generate(TD).unwrap());
    let wp = id("istio-system", "waypoint");
    let server_certs = workload(&other_ca, &wp);
    let client_certs = workload(&ca, &id("shop", "cart"));
    let (_server, client) = handshake(
        server_config(&server_certs, &[]).unwrap(),
        client_config(&client_certs, exact(&wp)).unwrap(),
    )
    .await;
    let err = client.err().unwrap();
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn namespace_expectation_accepts_any_account_of_the_namespace() {
    let ca = DevCa::generate(TD).unwrap();
    let server_id = id("shop", "whatever-sa");
    let server_certs = workload(&ca, &server_id);
    let client_certs = workload(&ca, &id("istio-system", "waypoint"));
    let server = server_config(&server_certs, &[]).unwrap();
    let ns = |namespace: &str| {
        vec![ExpectedIdentity::Namespace {
            trust_domain: TD.to_owned(),
            namespace: namespace.to_owned(),
        }]
    };

    let (server_side, client) = handshake(
        server.clone(),
        client_config(&client_certs, ns("shop")).unwrap(),
    )
    .await;
    let (_s, client) = (server_side.unwrap(), client.unwrap());
    assert_eq!(peer_identity(client.get_ref().1), Some(server_id));

    let (_s, client) = handshake(server, client_config(&client_certs, ns("bank")).unwrap()).await;
    let err = client.err().unwrap();
    assert!(
        err.to_string()
            .contains("spiffe://cluster.local/ns/bank/sa/*"),
        "{err}"
    );
}

#[test]
fn spiffe_identities_lists_only_spiffe_uris() {
    let ca = DevCa::generate(TD).unwrap();
    let issued = ca
        .issue_with_sans(
            &[
                "https://example.com/x".to_owned(),
                id("a", "b").to_string(),
                id("c", "d").to_string(),
            ],
            HOUR,
        )
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(issued.chain_pem.as_bytes()).unwrap();
    assert_eq!(
        spiffe_identities(&leaf).unwrap(),
        vec![id("a", "b"), id("c", "d")]
    );
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
}

#[test]
fn load_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate(TD).unwrap();
    let paths = ca
        .write_workload_dir(dir.path(), &id("ns", "sa"), HOUR)
        .unwrap();
    std::fs::remove_file(&paths.roots).unwrap();
    let err = WorkloadCerts::load(&paths).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("root-cert.pem"), "{err}");
}

#[test]
fn load_refuses_key_of_another_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate(TD).unwrap();
    let paths = ca
        .write_workload_dir(dir.path(), &id("ns", "sa"), HOUR)
        .unwrap();
    let other = ca.issue(&id("ns", "sa"), HOUR).unwrap();
    write(&paths.key, &other.key_pem);
    let err = WorkloadCerts::load(&paths).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("key.pem") && msg.contains("cert-chain.pem"),
        "{msg}"
    );
}

#[test]
fn load_refuses_expired_and_future_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate(TD).unwrap();
    let paths = ca
        .write_workload_dir(dir.path(), &id("ns", "sa"), HOUR)
        .unwrap();
    let now = SystemTime::now();
    let uris = [id("ns", "sa").to_string()];

    let expired = ca.issue_custom(&uris, now - 2 * HOUR, now - HOUR).unwrap();
    write(&paths.cert_chain, &expired.chain_pem);
    write(&paths.key, &expired.key_pem);
    let err = WorkloadCerts::load(&paths).unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("expired on"), "{err}");
    assert!(err.to_string().contains("cert-chain.pem"), "{err}");

    let future = ca.issue_custom(&uris, now + HOUR, now + 2 * HOUR).unwrap();
    write(&paths.cert_chain, &future.chain_pem);
    write(&paths.key, &future.key_pem);
    let err = WorkloadCerts::load(&paths).unwrap_err();
    assert!(matches!(err, TlsError::NotYetValid { .. }), "{err}");
}

#[test]
fn load_refuses_two_spiffe_ids_and_none() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate(TD).unwrap();
    let paths = ca
        .write_workload_dir(dir.path(), &id("ns", "sa"), HOUR)
        .unwrap();
    let two = ca
        .issue_with_sans(&[id("a", "a").to_string(), id("b", "b").to_string()], HOUR)
        .unwrap();
    write(&paths.cert_chain, &two.chain_pem);
    write(&paths.key, &two.key_pem);
    let err = WorkloadCerts::load(&paths).unwrap_err();
    assert!(matches!(err, TlsError::MultipleSpiffeIds { .. }), "{err}");
    assert!(
        err.to_string().contains("spiffe://cluster.local/ns/b/sa/b"),
        "{err}"
    );

    let none = ca.issue_with_sans(&[], HOUR).unwrap();
    write(&paths.cert_chain, &none.chain_pem);
    write(&paths.key, &none.key_pem);
    let err = WorkloadCerts::load(&paths).unwrap_err();
    assert!(matches!(err, TlsError::NoSpiffeId { .. }), "{err}");
}

/// A client of `ca` that expects exactly `server`.
fn client_for(ca: &DevCa, server: &SpiffeId) -> Arc<ClientConfig> {
    client_config(&workload(ca, &id("shop", "cart")), exact(server)).unwrap()
}

#[tokio::test]
async fn store_rotation_serves_new_pair_and_keeps_old_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate(TD).unwrap();
    let (x, y) = (id("istio-system", "wp-x"), id("istio-system", "wp-y"));
    let paths = ca.write_workload_dir(dir.path(), &x, HOUR).unwrap();
    let store = CertStore::load(paths.clone(), vec![]).unwrap();
    assert_eq!(store.identity(), x);
    assert!(
        !store.reload().unwrap(),
        "unchanged files are not a rotation"
    );

    let (s, c) = handshake(store.server_config(), client_for(&ca, &x)).await;
    let (mut old_server, mut old_client) = (s.unwrap(), c.unwrap());
    assert_eq!(peer_identity(old_client.get_ref().1), Some(x.clone()));

    ca.write_workload_dir(dir.path(), &y, HOUR).unwrap();
    assert!(store.reload().unwrap());
    assert_eq!(store.identity(), y);
    assert_eq!(store.current().identity, y);
    let (s, c) = handshake(store.server_config(), client_for(&ca, &y)).await;
    let (_s, c) = (s.unwrap(), c.unwrap());
    assert_eq!(peer_identity(c.get_ref().1), Some(y.clone()));
    // A client still expecting X no longer gets it.
    let (_s, c) = handshake(store.server_config(), client_for(&ca, &x)).await;
    assert!(c.is_err());
    // The connection made before the rotation is untouched.
    exchange(&mut old_server, &mut old_client).await;

    write(&paths.key, "-----BEGIN PRIVATE KEY-----\ngarbage\n");
    let err = store.reload().unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
    assert_eq!(store.current().identity, y);
    let (s, c) = handshake(store.server_config(), client_for(&ca, &y)).await;
    assert!(s.is_ok() && c.is_ok(), "the previous pair stays in service");
}

#[tokio::test]
async fn store_watch_picks_up_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate(TD).unwrap();
    let (x, z) = (id("istio-system", "wp-x"), id("istio-system", "wp-z"));
    let paths = ca.write_workload_dir(dir.path(), &x, HOUR).unwrap();
    let store = CertStore::load(paths, vec![]).unwrap();
    let (trigger, shutdown) = shutdown::channel();
    let task = tokio::spawn(
        store
            .clone()
            .watch(Duration::from_millis(20), shutdown.clone()),
    );
    drop(shutdown);

    // A broken rotation is refused without disturbing the watcher.
    write(&dir.path().join("cert-chain.pem"), "not PEM at all");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.identity(), x);

    ca.write_workload_dir(dir.path(), &z, HOUR).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.identity() != z {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the watcher must load the new pair");
    let (s, c) = handshake(store.server_config(), client_for(&ca, &z)).await;
    assert!(s.is_ok() && c.is_ok());

    assert!(trigger.shutdown(Duration::from_secs(5)).await);
    task.await.unwrap();
}

#[tokio::test]
async fn dev_ca_round_trips_through_cacerts_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("mesh.example").unwrap();
    ca.write_ca(dir.path()).unwrap();
    let cert = std::fs::read_to_string(dir.path().join("ca-cert.pem")).unwrap();
    let key = std::fs::read_to_string(dir.path().join("ca-key.pem")).unwrap();
    let reloaded = DevCa::from_pem(&cert, &key).unwrap();
    assert_eq!(reloaded.trust_domain(), "mesh.example");
    assert_eq!(reloaded.root_pem(), ca.root_pem());

    // Certificates issued by the reloaded CA verify against the original root, and the other
    // way round: a real handshake checks both chains.
    let wp = SpiffeId::new("mesh.example", "istio-system", "waypoint").unwrap();
    let server_certs = workload(&reloaded, &wp);
    let client_certs = workload(&ca, &SpiffeId::new("mesh.example", "shop", "cart").unwrap());
    let (s, c) = handshake(
        server_config(&server_certs, &[]).unwrap(),
        client_config(&client_certs, exact(&wp)).unwrap(),
    )
    .await;
    let (s, c) = (s.unwrap(), c.unwrap());
    assert_eq!(peer_identity(c.get_ref().1), Some(wp));
    assert_eq!(peer_identity(s.get_ref().1).unwrap().namespace(), "shop");
}

#[test]
fn workload_dir_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate(TD).unwrap();
    let wp = id("istio-system", "waypoint");
    let paths = ca.write_workload_dir(dir.path(), &wp, HOUR).unwrap();
    assert_eq!(paths, CertPaths::in_dir(dir.path()));
    let certs = WorkloadCerts::load(&paths).unwrap();
    assert_eq!(certs.identity, wp);
    assert_eq!(certs.chain.len(), 1);
    assert_eq!(certs.roots.len(), 1);
}
