//! The bearer token is enforced, and HTTPS works for a client that trusts exactly the CA the
//! written kubeconfig carries (and fails for one that trusts another CA).

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::{Call, End, Watch, connect_h2, get, json, read_json, send_h2, send_tls};
use http::Method;
use serde_json::{Value, json as object};
use waypoint_kube_emulator::{Emulator, EmulatorOptions};

const PODS: &str = "/api/v1/pods";

#[tokio::test]
async fn a_bearer_token_is_required_when_set() {
    let emu = Emulator::start(EmulatorOptions {
        token: Some("s3cret".into()),
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let (code, status) = get(&emu, PODS).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (code, _) = json(&emu, Call::new(Method::GET, PODS).token("wrong")).await;
    assert_eq!(code, 401);
    let (code, list) = json(&emu, Call::new(Method::GET, PODS).token("s3cret")).await;
    assert_eq!((code, list["kind"].as_str()), (200, Some("PodList")));
    assert_eq!(
        emu.requests()
            .iter()
            .filter(|r| r.status_code == 401)
            .count(),
        2
    );
}

#[tokio::test]
async fn tls_works_with_the_ca_of_the_written_kubeconfig() {
    let emu = Emulator::start(EmulatorOptions {
        tls: true,
        token: Some("t0ken".into()),
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&path).unwrap();
    let config: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();

    let context = config["current-context"].as_str().unwrap();
    assert_eq!(config["contexts"][0]["name"], context);
    let cluster = &config["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], emu.url());
    assert!(emu.url().starts_with("https://127.0.0.1:"));
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    let ca = String::from_utf8(ca).unwrap();
    assert_eq!(Some(ca.as_str()), emu.ca_pem());
    let token = config["users"][0]["user"]["token"].as_str().unwrap();

    let response = send_tls(&emu, &ca, Call::new(Method::GET, PODS).token(token))
        .await
        .unwrap();
    let (code, list) = read_json(response).await;
    assert_eq!((code, list["kind"].as_str()), (200, Some("PodList")));

    // A client trusting another CA refuses the server.
    let other = Emulator::start(EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let refused = send_tls(&emu, other.ca_pem().unwrap(), Call::new(Method::GET, PODS)).await;
    assert!(
        refused.is_err(),
        "handshake with an untrusted server must fail"
    );
}

#[tokio::test]
async fn over_http2_lists_and_watches_work_and_a_broken_watch_is_reset() {
    let emu = Emulator::start(EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let ca = emu.ca_pem().unwrap().to_owned();
    let mut h2 = connect_h2(&emu, &ca).await;
    let url = format!("{}{PODS}", emu.url());
    let (code, list) = read_json(send_h2(&mut h2, &Call::new(Method::GET, &url)).await).await;
    assert_eq!((code, list["kind"].as_str()), (200, Some("PodList")));

    let from = list["metadata"]["resourceVersion"].as_str().unwrap();
    let url = format!("{url}?watch=true&resourceVersion={from}");
    let mut watch = Watch::of(send_h2(&mut h2, &Call::new(Method::GET, &url)).await);
    emu.apply(
        object!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "status": {"podIP": "10.1.0.7"}}),
    )
    .unwrap();
    let added = watch.next().await.unwrap();
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"]["status"]["podIP"], "10.1.0.7");
    emu.break_watches();
    assert_eq!(watch.next().await, Err(End::Broken));
}
