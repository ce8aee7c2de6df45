//! Client tests: kubeconfig forms, error mapping, and the client against a scripted HTTPS
//! server (token sent, list items typed, a watch stream cut at odd places, error statuses).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::config::{Auth, ClientConfig, ConfigError, TokenFile};
use super::*;
use crate::api::kinds::{HTTP_ROUTE, SERVICE};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn kubeconfig(cluster: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: other\n  context: {{cluster: nope, user: nope}}\n- name: c\n  context: {{cluster: k, user: u, namespace: ns}}\nclusters:\n- name: k\n  cluster:\n{cluster}\nusers:\n- name: u\n  user:\n{user}\n"
    )
}

#[test]
fn a_kubeconfig_with_inline_ca_and_token_uses_the_current_context() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["k".to_owned()]).unwrap();
    let text = kubeconfig(
        &format!(
            "    server: https://10.1.2.3:6443/\n    certificate-authority-data: {}",
            b64(ca.cert.pem().as_bytes())
        ),
        "    token: abc.def\n",
    );
    let config = ClientConfig::from_kubeconfig(&write(dir.path(), "config", &text)).unwrap();
    assert_eq!(config.server.to_string(), "https://10.1.2.3:6443/");
    assert_eq!(config.ca_pem.as_deref(), Some(ca.cert.pem().as_bytes()));
    assert!(matches!(&config.auth, Auth::Token(t) if t == "abc.def"));
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("abc.def") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(config.client_identity.is_none());
    KubeClient::new(config).unwrap();
}

#[test]
fn a_kubeconfig_reads_files_relative_to_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["k".to_owned()]).unwrap();
    let client = rcgen::generate_simple_self_signed(vec!["me".to_owned()]).unwrap();
    write(dir.path(), "ca.crt", &ca.cert.pem());
    write(dir.path(), "me.crt", &client.cert.pem());
    write(dir.path(), "me.key", &client.signing_key.serialize_pem());
    write(dir.path(), "token", "from-file\n");
    let text = kubeconfig(
        "    server: https://api.example:443\n    certificate-authority: ca.crt",
        "    tokenFile: token\n    client-certificate: me.crt\n    client-key: me.key\n",
    );
    let config = ClientConfig::from_kubeconfig(&write(dir.path(), "config", &text)).unwrap();
    assert_eq!(config.ca_pem.as_deref(), Some(ca.cert.pem().as_bytes()));
    let Auth::TokenFile(file) = &config.auth else {
        panic!("{:?}", config.auth)
    };
    assert_eq!(file.token().unwrap(), "from-file");
    let shown = format!(
        "{:?}",
        KubeClient::new(ClientConfig::from_kubeconfig(&dir.path().join("config")).unwrap())
            .unwrap()
    );
    assert!(
        !shown.contains("from-file") && !shown.contains("PRIVATE KEY"),
        "{shown}"
    );
    let (cert, key) = config.client_identity.as_ref().unwrap();
    assert_eq!(cert, client.cert.pem().as_bytes());
    assert_eq!(key, client.signing_key.serialize_pem().as_bytes());
    KubeClient::new(config).unwrap();
}

#[test]
fn inline_client_certificate_data_and_insecure_skip_verify_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let client = rcgen::generate_simple_self_signed(vec!["me".to_owned()]).unwrap();
    let text = kubeconfig(
        "    server: https://api.example\n    insecure-skip-tls-verify: true",
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(client.cert.pem().as_bytes()),
            b64(client.signing_key.serialize_pem().as_bytes())
        ),
    );
    let config = ClientConfig::from_kubeconfig(&write(dir.path(), "config", &text)).unwrap();
    assert!(config.insecure_skip_tls_verify);
    assert!(config.ca_pem.is_none());
    assert!(matches!(config.auth, Auth::None));
    assert!(config.client_identity.is_some());
    KubeClient::new(config).unwrap();
}

#[test]
fn credential_plugins_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (user, field) in [
        (
            "    exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}\n",
            "exec",
        ),
        ("    auth-provider: {name: gcp}\n", "auth-provider"),
    ] {
        let text = kubeconfig(
            "    server: https://api.example\n    insecure-skip-tls-verify: true",
            user,
        );
        let err = ClientConfig::from_kubeconfig(&write(dir.path(), "config", &text)).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnsupportedPlugin { user, field: f } if user == "u" && *f == field),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("uses `{field}`")),
            "{err}"
        );
    }
}

#[test]
fn broken_kubeconfigs_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "current-context: x\n".to_owned(),
            "`contexts` has no entry `x`",
        ),
        ("clusters: []\n".to_owned(), "no `current-context`"),
        (
            kubeconfig("    server: ftp://x", "    token: t\n"),
            "expected https://host[:port]",
        ),
        (
            kubeconfig(
                "    server: https://x\n    certificate-authority-data: '%%%'",
                "    token: t\n",
            ),
            "certificate-authority-data",
        ),
        (
            kubeconfig(
                "    server: https://x\n    insecure-skip-tls-verify: true",
                "    client-key-data: eA==\n",
            ),
            "client-certificate and client-key go together",
        ),
        ("clusters: [".to_owned(), "config"),
    ];
    for (text, expected) in cases {
        let err = ClientConfig::from_kubeconfig(&write(dir.path(), "config", &text)).unwrap_err();
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }
    let err = ClientConfig::from_kubeconfig(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn https_without_a_certificate_authority_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = kubeconfig("    server: https://x", "    token: t\n");
    let config = ClientConfig::from_kubeconfig(&write(dir.path(), "config", &text)).unwrap();
    let err = KubeClient::new(config).unwrap_err();
    assert!(
        err.to_string().contains("no certificate authority"),
        "{err}"
    );
}

#[test]
fn in_cluster_config_reads_the_service_account_mount() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["k".to_owned()]).unwrap();
    write(dir.path(), "ca.crt", &ca.cert.pem());
    write(dir.path(), "token", "sa-token");
    let config = ClientConfig::in_cluster_at("fd00::1", "443", dir.path()).unwrap();
    assert_eq!(config.server.to_string(), "https://[fd00::1]:443/");
    assert!(matches!(&config.auth, Auth::TokenFile(f) if f.token().unwrap() == "sa-token"));
    std::fs::remove_file(dir.path().join("token")).unwrap();
    let err = ClientConfig::in_cluster_at("10.96.0.1", "443", dir.path()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn a_token_file_is_read_again_after_the_refresh_interval_and_kept_if_it_vanishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "token", "one");
    let cached = TokenFile::with_refresh(path.clone(), Duration::from_secs(3600));
    let fresh = TokenFile::with_refresh(path.clone(), Duration::ZERO);
    assert_eq!(
        (cached.token().unwrap(), fresh.token().unwrap()),
        ("one".into(), "one".into())
    );
    std::fs::write(&path, "two").unwrap();
    assert_eq!(cached.token().unwrap(), "one");
    assert_eq!(fresh.token().unwrap(), "two");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(fresh.token().unwrap(), "two", "the last token is kept");
}

#[test]
fn status_objects_map_to_typed_errors() {
    let status = |code: u16, reason: &str| json!({"kind": "Status", "code": code, "reason": reason, "message": "m"});
    assert!(
        matches!(status_error(404, Some(&status(404, "NotFound")), ""), KubeError::NotFound(m) if m == "m")
    );
    assert!(matches!(
        status_error(409, Some(&status(409, "Conflict")), ""),
        KubeError::Conflict(_)
    ));
    assert!(matches!(
        status_error(410, Some(&status(410, "Expired")), ""),
        KubeError::Gone(_)
    ));
    assert!(matches!(
        status_error(403, Some(&status(403, "Forbidden")), ""),
        KubeError::Api { code: 403, reason, message } if reason == "Forbidden" && message == "m"
    ));
    assert!(matches!(
        answer(StatusCode::BAD_GATEWAY, b"upstream down"),
        Err(KubeError::Api { code: 502, message, .. }) if message == "upstream down"
    ));
    assert!(matches!(
        answer(StatusCode::OK, b"<html>"),
        Err(KubeError::Decode(_))
    ));
}

#[test]
fn query_values_are_percent_encoded() {
    assert_eq!(
        with_query(
            "/api/v1/pods".into(),
            &[("limit", "500"), ("continue", "eyJ2Ijo+/=")]
        ),
        "/api/v1/pods?limit=500&continue=eyJ2Ijo%2B%2F%3D"
    );
}

/// A one-connection-at-a-time HTTPS server answering from `respond(request head)` with a
/// status line and a body sent in the given pieces (chunked encoding, one chunk per piece).
async fn serve_tls(
    respond: impl Fn(&str) -> (u16, Vec<Vec<u8>>) + Send + Sync + 'static,
) -> (u16, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, respond) = (acceptor.clone(), respond.clone());
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8(head).unwrap();
                    let (code, pieces) = respond(&head);
                    let mut out = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                    )
                    .into_bytes();
                    tls.write_all(&out).await.unwrap();
                    for piece in pieces {
                        out = format!("{:x}\r\n", piece.len()).into_bytes();
                        out.extend_from_slice(&piece);
                        out.extend_from_slice(b"\r\n");
                        tls.write_all(&out).await.unwrap();
                        tls.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    tls.write_all(b"0\r\n\r\n").await.unwrap();
                }
            });
        }
    });
    (port, cert.cert.pem())
}

fn client_for(port: u16, ca: &str) -> KubeClient {
    KubeClient::new(ClientConfig {
        server: format!("https://127.0.0.1:{port}").parse().unwrap(),
        ca_pem: Some(ca.as_bytes().to_vec()),
        insecure_skip_tls_verify: false,
        client_identity: None,
        auth: Auth::Token("secret-token".into()),
    })
    .unwrap()
}

#[tokio::test]
async fn the_client_lists_watches_and_maps_errors_over_tls_with_a_token() {
    let watch_body = concat!(
        r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","resourceVersion":"11"}}}"#,
        "\n",
        r#"{"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"12"}}}"#,
        "\n",
        r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}"#,
        "\n"
    )
    .as_bytes();
    let (port, ca) = serve_tls(move |head| {
        assert!(head.contains("authorization: Bearer secret-token\r\n"), "{head}");
        let path = head.split(' ').nth(1).unwrap();
        if path.starts_with("/api/v1/services?watch=1&resourceVersion=10&allowWatchBookmarks=true&timeoutSeconds=") {
            // Cut at odd places: mid-line and mid-token.
            let cuts = [0, 7, 50, 51, 130, 200, watch_body.len()];
            return (200, cuts.windows(2).map(|w| watch_body[w[0]..w[1]].to_vec()).collect());
        }
        let body = match path {
            "/api/v1/services?limit=500" => json!({"kind": "ServiceList", "metadata": {"resourceVersion": "10", "continue": "x+1"},
                "items": [{"metadata": {"name": "a", "namespace": "d"}}]}),
            "/api/v1/services?limit=500&continue=x%2B1" => json!({"kind": "ServiceList", "metadata": {"resourceVersion": "10"}, "items": []}),
            "/apis/gateway.networking.k8s.io/v1/namespaces/d/httproutes/r" => {
                return (404, vec![br#"{"kind":"Status","code":404,"reason":"NotFound","message":"httproutes \"r\" not found"}"#.to_vec()]);
            }
            "/apis/gateway.networking.k8s.io/v1/namespaces/d/httproutes/r/status" => {
                return (409, vec![br#"{"kind":"Status","code":409,"reason":"Conflict","message":"the object has been modified"}"#.to_vec()]);
            }
            other => panic!("unexpected {other}"),
        };
        (200, vec![body.to_string().into_bytes()])
    })
    .await;
    let client = client_for(port, &ca);

    let page = client.list(&SERVICE, None, None).await.unwrap();
    assert_eq!(page.resource_version, "10");
    assert_eq!(page.continue_token.as_deref(), Some("x+1"));
    assert_eq!(page.items[0]["kind"], "Service");
    assert_eq!(page.items[0]["apiVersion"], "v1");
    let last = client.list(&SERVICE, None, Some("x+1")).await.unwrap();
    assert!(last.items.is_empty() && last.continue_token.is_none());

    let mut events = client.watch(&SERVICE, None, "10").await.unwrap();
    let first = events.recv().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(o) if o["metadata"]["name"] == "a"));
    assert_eq!(
        events.recv().await.unwrap().unwrap(),
        WatchEvent::Bookmark("12".into())
    );
    assert!(matches!(events.recv().await.unwrap(), Err(KubeError::Gone(m)) if m == "too old"));
    assert!(events.recv().await.is_none(), "an error is the last item");

    assert_eq!(client.get(&HTTP_ROUTE, Some("d"), "r").await.unwrap(), None);
    let err = client
        .replace_status(
            &HTTP_ROUTE,
            Some("d"),
            "r",
            &json!({"metadata": {"name": "r"}}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::Conflict(m) if m.contains("modified")));
}

#[tokio::test]
async fn a_server_with_an_unknown_certificate_is_refused() {
    let (port, _) = serve_tls(|_| (200, vec![b"{}".to_vec()])).await;
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let client = client_for(port, &other.cert.pem());
    let err = client.list(&SERVICE, None, None).await.unwrap_err();
    assert!(
        matches!(&err, KubeError::Transport(m) if m.contains("TLS")),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = KubeClient::new(ClientConfig {
        server: format!("http://127.0.0.1:{port}").parse().unwrap(),
        ca_pem: None,
        insecure_skip_tls_verify: false,
        client_identity: None,
        auth: Auth::None,
    })
    .unwrap();
    let err = client.watch(&SERVICE, None, "1").await.unwrap_err();
    assert!(matches!(err, KubeError::Transport(_)), "{err}");
}
