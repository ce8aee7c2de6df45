//! Connection checks against echo pods reached directly (no waypoint in between), so what is
//! judged is the check itself.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use waypoint_bin::tools::echo::tcp::TcpEcho;
use waypoint_bin::tools::echo::{EchoIdentity, EchoOptions, EchoServer, spawn_with};
use waypoint_bin::tools::send::ProxyClaims;

use super::*;
use crate::tls::{CHECKS_CA, server_config};

const PASSTHROUGH: &str = "gateway-conformance-infra/tls-passthrough-checks-certificate";

async fn tcp_pod(pod: &str, tls: Option<&Certificates>) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let identity = EchoIdentity {
        pod: pod.into(),
        namespace: "gateway-conformance-infra".into(),
        service: String::new(),
    };
    let mut options = EchoOptions::default().with_tcp(TcpEcho::default());
    if let Some(certs) = tls {
        let config = server_config(
            certs.secret_data(PASSTHROUGH, "tls.crt").unwrap(),
            certs.secret_data(PASSTHROUGH, "tls.key").unwrap(),
            &[],
        )
        .unwrap();
        options = options.with_tls(config);
    }
    spawn_with(listener, identity, options).unwrap()
}

fn direct(addr: SocketAddr) -> Route {
    Route {
        waypoint: addr,
        claims: ProxyClaims {
            source: "127.0.0.1:1".parse().unwrap(),
            destination: addr,
            identity: None,
            baggage: None,
        },
        default_host: String::new(),
        direct: true,
        pod: None,
        certificate: None,
    }
}

fn echo_case(backend: &str) -> ConnectionCase {
    ConnectionCase {
        gateway: Some("ns/gw:1".into()),
        backend: Some(backend.into()),
        namespace: Some("gateway-conformance-infra".into()),
        ..ConnectionCase::default()
    }
}

const PATIENCE: Duration = Duration::from_secs(2);

#[tokio::test]
async fn an_echo_check_passes_on_the_right_pod_and_fails_at_once_on_another() {
    let certs = Certificates::generate().unwrap();
    let pod = tcp_pod("tcp-backend-0", None).await;
    let route = direct(pod.addr());
    run_connection(&echo_case("tcp-backend"), &route, &certs, PATIENCE)
        .await
        .unwrap();
    let started = Instant::now();
    let err = run_connection(
        &echo_case("tcp-backend-v2"),
        &route,
        &certs,
        Duration::from_secs(30),
    )
    .await
    .unwrap_err();
    assert!(err.contains("expected tcp-backend-v2-*"), "{err}");
    // A wrong answer is final: no waiting out the patience.
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut claims_tls = echo_case("tcp-backend");
    claims_tls.backend_is_tls = true;
    let err = run_connection(&claims_tls, &route, &certs, PATIENCE)
        .await
        .unwrap_err();
    assert!(err.contains("IS_TLS answered \"false\\n\""), "{err}");
}

#[tokio::test]
async fn a_tls_echo_check_trusts_the_ca_and_sees_the_server_name_at_the_backend() {
    let certs = Certificates::generate().unwrap();
    let pod = tcp_pod("tcp-backend-1", Some(&certs)).await;
    let route = direct(pod.addr());
    let mut case = echo_case("tcp-backend");
    case.tls = Some(ClientTls {
        server_name: "abc.example.com".into(),
        ca_config_map: Some(CHECKS_CA.into()),
        certificate: None,
    });
    case.backend_is_tls = true;
    case.server_name = Some("abc.example.com".into());
    run_connection(&case, &route, &certs, PATIENCE)
        .await
        .unwrap();
    // The certificate does not name other.example.com: every handshake fails, retried until
    // the patience runs out.
    case.tls.as_mut().unwrap().server_name = "other.example.com".into();
    let err = run_connection(&case, &route, &certs, PATIENCE)
        .await
        .unwrap_err();
    assert!(
        err.contains("TLS handshake (SNI other.example.com)"),
        "{err}"
    );
    // Samples are single plain exchanges: a TLS port answers none of them.
    let mut samples = echo_case("tcp-backend");
    samples.samples = Some(3);
    let plain = tcp_pod("tcp-backend-2", None).await;
    run_connection(&samples, &direct(plain.addr()), &certs, PATIENCE)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_listener_that_closes_during_the_handshake_rejects_and_a_backend_does_not() {
    let certs = Certificates::generate().unwrap();
    let closing = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closing.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = closing.accept().await {
            // Read the ClientHello, then close without answering, as a listener without a
            // matching route does.
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf).await;
        }
    });
    let probe = ConnectionCase {
        gateway: Some("ns/gw:1".into()),
        tls: Some(ClientTls {
            server_name: "non.matching.com".into(),
            ..ClientTls::default()
        }),
        expect: ConnectionExpect::Rejected,
        ..ConnectionCase::default()
    };
    run_connection(&probe, &direct(addr), &certs, PATIENCE)
        .await
        .unwrap();
    let backend = tcp_pod("tcp-backend-0", Some(&certs)).await;
    let err = run_connection(&probe, &direct(backend.addr()), &certs, PATIENCE)
        .await
        .unwrap_err();
    assert!(err.contains("was not rejected"), "{err}");
}

#[test]
fn a_split_is_judged_by_share_with_weight_zero_getting_none() {
    let weights = BTreeMap::from([
        ("tcp-backend-v1".to_owned(), 0.7),
        ("tcp-backend-v2".to_owned(), 0.3),
        ("tcp-backend-v3".to_owned(), 0.0),
    ]);
    let pods = |v1: usize, v2: usize, v3: usize| -> Vec<String> {
        std::iter::repeat_n("tcp-backend-v1-0".to_owned(), v1)
            .chain(std::iter::repeat_n("tcp-backend-v2-1".to_owned(), v2))
            .chain(std::iter::repeat_n("tcp-backend-v3-0".to_owned(), v3))
            .collect()
    };
    assert!(judge_split(&pods(340, 160, 0), &weights).is_ok());
    assert!(judge_split(&pods(300, 200, 0), &weights).is_err());
    let err = judge_split(&pods(349, 150, 1), &weights).unwrap_err();
    assert!(err.contains("tcp-backend-v3"), "{err}");
    let mut stray = pods(350, 149, 0);
    stray.push("other-0".into());
    assert!(
        judge_split(&stray, &weights)
            .unwrap_err()
            .contains("other-0")
    );
}
