//! HTTPS listeners: TLS Secrets read and validated, certificates chosen by SNI, and a real
//! waypoint terminating TLS on sandwich connections to a Gateway address (loopback).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waypoint_core::body::local_reply;
use waypoint_core::config::parse_manifests;
use waypoint_core::filter::{
    BuildContext, Decision, Filter, FilterFactory, Request, RequestContext,
};
use waypoint_core::runtime::{RunningWaypoint, Waypoint, WaypointOptions};
use waypoint_core::transport::listener::ListenAddr;
use waypoint_core::wire::proxy_protocol::encode_v2;

struct Pem {
    cert: String,
    key: String,
}

fn self_signed(names: &[&str]) -> Pem {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    Pem {
        cert: c.cert.pem(),
        key: c.signing_key.serialize_pem(),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A `kubernetes.io/tls` Secret in `infra` with base64 `data`.
fn secret(name: &str, pem: &Pem) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: infra}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(&pem.cert),
        b64(&pem.key)
    )
}

/// The one condition of `Secret infra/<name>`: `Accepted=<status>: <message>`.
fn secret_status(manifests: &str, name: &str) -> String {
    let config = parse_manifests(manifests, "t.yaml").unwrap();
    let s = config
        .statuses
        .iter()
        .find(|s| s.resource.kind == "Secret" && s.resource.name == name)
        .unwrap();
    let c = &s.conditions[0];
    format!("{}={}: {}", c.kind, c.status, c.message)
}

#[test]
fn tls_secrets_are_validated_with_the_field_named() {
    let a = self_signed(&["a.org"]);
    let b = self_signed(&["b.org"]);
    let good = secret("good", &a);
    assert_eq!(
        secret_status(&good, "good"),
        "Accepted=true: Secret infra/good is valid"
    );

    // stringData holds plain PEM and wins over data.
    let string_data = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: infra}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: '!!!'}}\nstringData:\n  tls.crt: {:?}\n  tls.key: {:?}\n",
        a.cert, a.key
    );
    assert!(secret_status(&string_data, "s").starts_with("Accepted=true"));

    let tls = |data: String| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bad, namespace: infra}}\ntype: kubernetes.io/tls\ndata: {{{data}}}\n"
        )
    };
    let cases = [
        (
            tls(format!("tls.crt: {}", b64(&a.cert))),
            "data[tls.key]: required in a kubernetes.io/tls Secret",
        ),
        (
            tls(format!("tls.crt: 'not base64!', tls.key: {}", b64(&a.key))),
            "data[tls.crt]: not base64",
        ),
        (
            tls(format!(
                "tls.crt: {}, tls.key: {}",
                b64("hello"),
                b64(&a.key)
            )),
            "data[tls.crt]: no CERTIFICATE in the PEM",
        ),
        (
            tls(format!(
                "tls.crt: {}, tls.key: {}",
                b64(&a.cert),
                b64(&b.key)
            )),
            "data[tls.key]: the key does not belong to the data[tls.crt] certificate",
        ),
    ];
    for (manifest, want) in cases {
        let got = secret_status(&manifest, "bad");
        assert!(
            got.starts_with("Accepted=false: Secret infra/bad: ") && got.contains(want),
            "{got}"
        );
    }
    // Other Secret types are not certificates, and not checked as such.
    let opaque =
        "apiVersion: v1\nkind: Secret\nmetadata: {name: o, namespace: infra}\ndata: {x: '%%'}\n";
    assert!(secret_status(opaque, "o").starts_with("Accepted=true"));
    // The values never show in Debug output.
    let config = parse_manifests(&good, "t.yaml").unwrap();
    let debug = format!("{:?}", config.resources.secrets[0]);
    assert!(
        debug.contains("tls.key") && !debug.contains(&b64(&a.key)[..20]),
        "{debug}"
    );
}

/// Answers every request with what the connection's TLS was: `sni=<..> alpn=<..>`.
struct TlsEcho;

#[async_trait::async_trait]
impl Filter for TlsEcho {
    fn name(&self) -> &str {
        "tls-echo"
    }
    async fn on_request(&self, _req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let what = match &ctx.conn.tls {
            None => "plain".to_owned(),
            Some(t) => format!(
                "sni={} alpn={}",
                t.sni.as_deref().unwrap_or("-"),
                String::from_utf8_lossy(t.alpn.as_deref().unwrap_or(b"-"))
            ),
        };
        Decision::Respond(local_reply(StatusCode::OK, what))
    }
}

impl FilterFactory for TlsEcho {
    fn name(&self) -> &str {
        "tls-echo"
    }
    fn build(&self, _cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(TlsEcho)
    }
}

const GATEWAY: &str = "10.0.0.9";

struct Running {
    _dir: tempfile::TempDir,
    waypoint: RunningWaypoint,
    sandwich: std::net::SocketAddr,
    default_cert: Pem,
    named_cert: Pem,
}

/// A waypoint serving Gateway `tls` at 10.0.0.9: HTTPS on 443 with a catch-all listener
/// (certificate `default`), `second.org` and `*.wildcard.org` (certificate `named`), and plain
/// HTTP on 80.
async fn start() -> Running {
    let default_cert = self_signed(&["example.org"]);
    let named_cert = self_signed(&["second.org", "*.wildcard.org"]);
    let listener = |name: &str, host: &str, cert: &str| {
        format!(
            "  - {{name: {name}, port: 443, protocol: HTTPS{host}, tls: {{certificateRefs: [{{name: {cert}}}]}}}}\n"
        )
    };
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: tls, namespace: infra}}\nspec:\n  gatewayClassName: waypoint\n  listeners:\n{}{}{}  - {{name: http, port: 80, protocol: HTTP}}\nstatus:\n  addresses: [{{value: \"{GATEWAY}\"}}]\n",
        listener("https", "", "default"),
        listener("exact", ", hostname: second.org", "named"),
        listener("wild", ", hostname: \"*.wildcard.org\"", "named"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let manifests = [
        gateway,
        secret("default", &default_cert),
        secret("named", &named_cert),
    ];
    std::fs::write(&config, manifests.join("---\n")).unwrap();
    let mut options = WaypointOptions::new(&config);
    options.sandwich = vec![ListenAddr::Tcp(([127, 0, 0, 1], 0).into())];
    options.admin = None;
    let waypoint = Waypoint::builder(options)
        .factory(Arc::new(TlsEcho))
        .start()
        .await
        .unwrap();
    let ListenAddr::Tcp(sandwich) = waypoint.sandwich_addrs()[0].clone() else {
        panic!("a TCP listener")
    };
    Running {
        _dir: dir,
        waypoint,
        sandwich,
        default_cert,
        named_cert,
    }
}

impl Running {
    /// A sandwich connection to the Gateway's `port`, its PROXY header written.
    async fn connect(&self, port: u16) -> TcpStream {
        let mut tcp = TcpStream::connect(self.sandwich).await.unwrap();
        let dest = format!("{GATEWAY}:{port}").parse().unwrap();
        let header = encode_v2("127.0.0.1:40000".parse().unwrap(), dest, &[]);
        tcp.write_all(&header).await.unwrap();
        tcp
    }

    /// One HTTPS GET with `sni` and `alpn`, trusting both certificates; returns the
    /// certificate the server presented and the body.
    async fn get(&self, sni: &str, alpn: &[u8]) -> Result<(String, String), String> {
        let mut roots = rustls::RootCertStore::empty();
        for pem in [&self.default_cert, &self.named_cert] {
            use rustls::pki_types::pem::PemObject;
            roots
                .add(CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap())
                .unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = self.connect(443).await;
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let which = if presented.as_ref() == der(&self.default_cert).as_ref() {
            "default"
        } else {
            "named"
        };
        let req = http::Request::get(format!("https://{sni}/"))
            .header("host", sni)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = if alpn == b"h2" {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok((
            which.to_owned(),
            String::from_utf8_lossy(&body).trim_end().to_owned(),
        ))
    }
}

fn der(pem: &Pem) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap()
}

#[tokio::test]
async fn https_listeners_terminate_tls_and_choose_certificates_by_sni() {
    let w = start().await;
    let cases = [
        (
            "example.org",
            &b"http/1.1"[..],
            "default",
            "sni=example.org alpn=http/1.1",
        ),
        ("second.org", b"h2", "named", "sni=second.org alpn=h2"),
        (
            "a.wildcard.org",
            b"http/1.1",
            "named",
            "sni=a.wildcard.org alpn=http/1.1",
        ),
    ];
    for (sni, alpn, cert, body) in cases {
        let got = w.get(sni, alpn).await.unwrap();
        assert_eq!(got, (cert.to_owned(), body.to_owned()), "SNI {sni}");
    }
    // An SNI no listener names gets the catch-all listener's certificate, which does not
    // cover it: the client refuses, as it should.
    let err = w.get("unknown.org", b"h2").await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");

    // The plain listener on port 80 stays plain HTTP.
    let mut tcp = w.connect(80).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.trim_end().ends_with("plain"),
        "{out}"
    );
    w.waypoint.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failed_handshake_closes_that_connection_only() {
    let w = start().await;
    // Plain HTTP where TLS is expected: the waypoint gives up on this connection.
    let mut tcp = w.connect(443).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: example.org\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection must be closed, not left hanging"
    );
    assert!(
        !buf.starts_with(b"HTTP/"),
        "no plain HTTP answer on a TLS listener"
    );
    // A client that hangs up mid-handshake does not hurt either.
    drop(w.connect(443).await);
    let got = w.get("example.org", b"http/1.1").await.unwrap();
    assert_eq!(got.1, "sni=example.org alpn=http/1.1");
    w.waypoint.shutdown(Duration::from_secs(1)).await;
}
