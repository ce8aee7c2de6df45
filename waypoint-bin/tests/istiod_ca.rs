//! The workload certificate from istiod's CA, against the in-process fake CA
//! (`waypoint_core::tls::testing`): what is sent, what is refused, and rotation in a running
//! waypoint (served connections keep their pair, new handshakes get the new one).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use waypoint_core::identity::SpiffeId;
use waypoint_core::runtime::{CertSettings, CertSource, HboneInbound, Waypoint, WaypointOptions};
use waypoint_core::tls::{CertStore, DevCa, ExpectedIdentity, IstiodError};
use waypoint_core::transport::hbone::HboneOptions;
use waypoint_core::upstream::{HboneClientOptions, HbonePool, TunnelSource};
use waypoint_filters::Builtins;

use common::ca::{CaFixture, TOKEN};

const HOUR: Duration = Duration::from_secs(3600);

fn waypoint_id() -> SpiffeId {
    "spiffe://cluster.local/ns/infra/sa/waypoint"
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_ca_is_sent_the_bearer_token_cluster_id_validity_and_a_csr_for_our_identity() {
    let ca = CaFixture::start().await;
    let certs = ca.istiod_ca(&waypoint_id(), HOUR).fetch().await.unwrap();
    assert_eq!(certs.identity, waypoint_id());
    // Leaf only: the root the CA sent last is the trust bundle (the root file), not presented.
    assert_eq!(certs.chain.len(), 1);
    assert_eq!(certs.roots.len(), 1);
    let lifetime = certs
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        lifetime > HOUR - Duration::from_secs(60) && lifetime <= HOUR,
        "{lifetime:?}"
    );
    let request = &ca.fake.requests()[0];
    assert_eq!(
        request.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(request.cluster_id.as_deref(), Some("east"));
    assert_eq!(
        request.csr_identity.as_deref(),
        Some(waypoint_id().as_str())
    );
    assert_eq!(request.validity_secs, 3600);
}

#[tokio::test]
async fn the_token_file_is_read_again_at_every_request() {
    let ca = CaFixture::start().await;
    let client = ca.istiod_ca(&waypoint_id(), HOUR);
    client.fetch().await.unwrap();
    std::fs::write(&ca.token_path, "rotated-by-kubelet").unwrap();
    client.fetch().await.unwrap();
    let sent: Vec<_> = ca
        .fake
        .requests()
        .into_iter()
        .map(|r| r.authorization.unwrap())
        .collect();
    assert_eq!(
        sent,
        [
            format!("Bearer {TOKEN}"),
            "Bearer rotated-by-kubelet".to_owned()
        ]
    );
}

#[tokio::test]
async fn a_certificate_for_another_identity_is_refused_naming_both() {
    let ca = CaFixture::start().await;
    let other: SpiffeId = "spiffe://cluster.local/ns/default/sa/default"
        .parse()
        .unwrap();
    ca.fake.issue_as(Some(other.clone()));
    let error = ca
        .istiod_ca(&waypoint_id(), HOUR)
        .fetch()
        .await
        .unwrap_err();
    assert!(
        matches!(error, IstiodError::IdentityMismatch { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(other.as_str()) && message.contains(waypoint_id().as_str()),
        "{message}"
    );
}

#[tokio::test]
async fn a_grpc_error_from_the_ca_is_reported_with_its_code_and_message() {
    let ca = CaFixture::start().await;
    ca.fake
        .fail_next(16, "authentication failure: token audience is not istio-ca");
    let error = ca
        .istiod_ca(&waypoint_id(), HOUR)
        .fetch()
        .await
        .unwrap_err();
    assert!(
        matches!(error, IstiodError::Status { code: 16, .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("UNAUTHENTICATED")
            && message.contains("authentication failure: token audience is not istio-ca"),
        "{message}"
    );
}

#[tokio::test]
async fn a_ca_the_root_file_does_not_vouch_for_is_refused_until_the_root_file_does() {
    let ca = CaFixture::start().await;
    let stranger = DevCa::generate("cluster.local").unwrap();
    std::fs::write(&ca.root_path, stranger.root_pem()).unwrap();
    let client = ca.istiod_ca(&waypoint_id(), HOUR);
    let error = client.fetch().await.unwrap_err();
    assert!(error.to_string().contains("TLS handshake"), "{error}");
    assert!(ca.fake.requests().is_empty());
    // The root file is read at every request: the right root makes the next one succeed.
    std::fs::write(&ca.root_path, ca.fake.root_pem()).unwrap();
    client.fetch().await.unwrap();
}

#[tokio::test]
async fn missing_and_empty_files_are_errors_naming_the_file() {
    let ca = CaFixture::start().await;
    let mut client = ca.istiod_ca(&waypoint_id(), HOUR);
    std::fs::write(&ca.token_path, "\n").unwrap();
    let error = client.fetch().await.unwrap_err().to_string();
    assert!(
        error.contains("empty") && error.contains("istio-token"),
        "{error}"
    );
    client.root_path = "/nonexistent/root-cert.pem".into();
    std::fs::write(&ca.token_path, TOKEN).unwrap();
    let error = client.fetch().await.unwrap_err().to_string();
    assert!(error.contains("/nonexistent/root-cert.pem"), "{error}");
}

/// A waypoint serving HBONE with its certificate from the fake CA, routing `10.96.0.10:80` to
/// an echo backend.
async fn waypoint_with_ca_certificate(
    ca: &CaFixture,
    validity: Duration,
) -> (waypoint_core::runtime::RunningWaypoint, tempfile::TempDir) {
    let echo = common::echo_in_process("echo-1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, common::service("echo", "10.96.0.10", echo.port())).unwrap();
    let mut options = WaypointOptions::new(&config);
    options.sandwich.clear();
    options.admin = None;
    options.certs = Some(CertSettings {
        source: CertSource::Istiod(ca.istiod_ca(&waypoint_id(), validity)),
        trust_domains: vec![],
        reload_interval: Duration::from_millis(100),
    });
    options.hbone = Some(HboneInbound {
        addr: ([127, 0, 0, 1], 0).into(),
        options: HboneOptions::default(),
    });
    let running = Waypoint::builder(options)
        .install(Builtins::default())
        .start()
        .await
        .unwrap();
    (running, dir)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_before_expiry_and_served_connections_survive_it() {
    let ca = CaFixture::start().await;
    let (waypoint, _dir) = waypoint_with_ca_certificate(&ca, Duration::from_secs(4)).await;
    let store = waypoint.certs().unwrap().clone();
    let first = store.current();
    let hbone = waypoint.hbone_addr().unwrap();
    assert_eq!(
        ca.presented_leaf(hbone, &waypoint_id()).await,
        first.chain[0]
    );

    // A client connection served with the first certificate.
    let client = HbonePool::new(
        CertStore::from_certs(ca.client.clone(), vec![]).unwrap(),
        HboneClientOptions::default(),
    );
    let tunnel = client
        .connect_via(
            hbone,
            "10.96.0.10:80".parse().unwrap(),
            &[ExpectedIdentity::Exact(waypoint_id())],
            &TunnelSource::default(),
        )
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
        .await
        .unwrap();
    tokio::spawn(connection);
    let get = || {
        http::Request::get("/")
            .header("host", "echo.default.svc.cluster.local")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(sender.send_request(get()).await.unwrap().status(), 200);

    // Renewed at half-life (about 2 s), before the first certificate expires.
    wait_for("the renewal", || store.current().chain[0] != first.chain[0]).await;
    assert!(
        std::time::SystemTime::now() < first.not_after,
        "renewed only after expiry"
    );
    let renewed = store.current();
    assert!(ca.fake.requests().len() >= 2);
    assert_eq!(renewed.identity, waypoint_id());

    // Past the first certificate's expiry, the connection made with it still serves.
    wait_for("the first certificate to expire", || {
        std::time::SystemTime::now() > first.not_after
    })
    .await;
    assert_eq!(sender.send_request(get()).await.unwrap().status(), 200);
    // A new handshake gets the certificate in service now (renewed again, maybe, by then).
    let presented = ca.presented_leaf(hbone, &waypoint_id()).await;
    assert_ne!(presented, first.chain[0]);
    assert_eq!(presented, store.current().chain[0]);
    waypoint.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_rotated_root_file_renews_the_certificate_at_once_with_the_new_trust_bundle() {
    let ca = CaFixture::start().await;
    let (waypoint, _dir) = waypoint_with_ca_certificate(&ca, HOUR).await;
    let store = waypoint.certs().unwrap().clone();
    assert_eq!(store.current().roots.len(), 1);
    // A root rotation in progress: the mesh trusts the old root and a new one.
    let next_root = DevCa::generate("cluster.local").unwrap().root_pem();
    std::fs::write(&ca.root_path, format!("{}{next_root}", ca.fake.root_pem())).unwrap();
    wait_for("the renewal after the root change", || {
        store.current().roots.len() == 2
    })
    .await;
    assert_eq!(ca.fake.requests().len(), 2);
    waypoint.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failed_renewal_keeps_the_current_pair_and_is_retried() {
    let ca = CaFixture::start().await;
    let (waypoint, _dir) = waypoint_with_ca_certificate(&ca, Duration::from_secs(6)).await;
    let store = waypoint.certs().unwrap().clone();
    let first = store.current();
    ca.fake.fail_next(14, "istiod is restarting");
    // The renewal at half-life (about 3 s) fails...
    wait_for("the failed renewal", || ca.fake.requests().len() == 2).await;
    assert_eq!(store.current().chain[0], first.chain[0]);
    let hbone = waypoint.hbone_addr().unwrap();
    assert_eq!(
        ca.presented_leaf(hbone, &waypoint_id()).await,
        first.chain[0]
    );
    // ...and is retried a second later, before the pair in service expires.
    wait_for("the retried renewal", || {
        store.current().chain[0] != first.chain[0]
    })
    .await;
    assert!(
        std::time::SystemTime::now() < first.not_after,
        "renewed only after expiry"
    );
    assert_eq!(ca.fake.requests().len(), 3);
    waypoint.shutdown(Duration::from_secs(1)).await;
}
