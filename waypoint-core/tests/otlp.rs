//! OTLP span export end to end: a request goes through `Telemetry::begin`/`finish`, and a
//! collector listening on loopback receives the waypoint's span as OTLP/HTTP JSON.

// Tests may unwrap (house rule); the lint only spares #[test] functions, not their helpers.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use waypoint_core::body;
use waypoint_core::config::Config;
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::filter::RequestContext;
use waypoint_core::telemetry::otlp::OtlpOptions;
use waypoint_core::telemetry::{Telemetry, TelemetryOptions};

/// What the collector received: request path, content type, body.
type Received = (String, String, Bytes);

/// A collector that records every request and answers 200 `{}`.
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let ct = req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        tx.send((path, ct, body)).unwrap();
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("{}"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn telemetry(registry: &mut Registry, endpoint: String) -> std::io::Result<Telemetry> {
    Telemetry::new(
        registry,
        TelemetryOptions {
            otlp: Some(OtlpOptions {
                endpoint,
                sample: 1.0,
            }),
            ..TelemetryOptions::default()
        },
    )
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    let attrs = span["attributes"].as_array().unwrap();
    let kv = attrs
        .iter()
        .find(|kv| kv["key"] == key)
        .unwrap_or_else(|| panic!("no attribute {key} in {span}"));
    &kv["value"]
}

#[tokio::test]
async fn a_request_span_reaches_the_collector() {
    let (addr, mut received) = collector().await;
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, format!("http://{addr}")).unwrap();

    let mut conn = ConnInfo::new(Binding::Hbone);
    conn.peer_identity = Some("spiffe://cluster.local/ns/shop/sa/client".parse().unwrap());
    let conn = Arc::new(conn);
    let mut req = http::Request::builder()
        .method("POST")
        .uri("http://echo.shop:80/items/7?debug=1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(body::full("payload"))
        .unwrap();
    let record = tel.begin(&mut req, &conn);
    let trace = *record.trace();
    let ctx = RequestContext::new(conn, Arc::new(Config::default()));
    let resp = tel.finish(
        record,
        &ctx,
        body::local_reply(http::StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
    );
    resp.into_body().collect().await.unwrap();

    let (path, content_type, body) = tokio::time::timeout(Duration::from_secs(3), received.recv())
        .await
        .expect("no export within 3 s")
        .unwrap();
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/json");
    let json: Value = serde_json::from_slice(&body).unwrap();
    let resource = &json["resourceSpans"][0];
    assert_eq!(
        resource["resource"]["attributes"][0],
        serde_json::json!({"key": "service.name", "value": {"stringValue": "waypoint"}})
    );
    let spans = resource["scopeSpans"][0]["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span["traceId"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(span["parentSpanId"], "b7ad6b7169203331");
    // The waypoint's own span: the id the upstream was told is its parent.
    assert_eq!(span["spanId"], format!("{:016x}", trace.span_id));
    assert_ne!(span["spanId"], "b7ad6b7169203331");
    assert_eq!(span["kind"], 2);
    assert_eq!(span["name"], "POST");
    let start: u64 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u64 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && end >= start);
    assert_eq!(
        attribute(span, "http.request.method")["stringValue"],
        "POST"
    );
    assert_eq!(attribute(span, "url.path")["stringValue"], "/items/7");
    assert_eq!(
        attribute(span, "http.response.status_code")["intValue"],
        "503"
    );
    assert_eq!(
        attribute(span, "server.address")["stringValue"],
        "echo.shop:80"
    );
    assert_eq!(
        attribute(span, "peer.principal")["stringValue"],
        "spiffe://cluster.local/ns/shop/sa/client"
    );
    assert_eq!(span["status"]["code"], 2);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("waypoint_otlp_spans_dropped_total 0"),
        "{text}"
    );
    assert!(
        text.contains("waypoint_otlp_export_failures_total 0"),
        "{text}"
    );
}

#[tokio::test]
async fn an_https_collector_is_verified_against_the_web_pki_roots() {
    // A TLS collector whose certificate comes from a private CA: the Web-PKI does not know it,
    // so the export fails (counted) instead of sending spans to an unverified server.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (handshakes, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = handshakes.send(acceptor.accept(tcp).await.is_ok());
        }
    });

    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, format!("https://localhost:{}", addr.port())).unwrap();
    let conn = Arc::new(ConnInfo::new(Binding::Hbone));
    let mut req = http::Request::new(body::empty());
    let record = tel.begin(&mut req, &conn);
    let ctx = RequestContext::new(conn, Arc::new(Config::default()));
    let resp = tel.finish(record, &ctx, body::local_reply(http::StatusCode::OK, "ok"));
    resp.into_body().collect().await.unwrap();

    // The exporter did speak TLS to it, and the handshake failed.
    let handshake = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
    assert_eq!(handshake.unwrap(), Some(false));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if text.contains("waypoint_otlp_export_failures_total 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unreachable_collector_counts_a_failure_and_the_request_is_unaffected() {
    // A port that was just free: connecting is refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, format!("http://{addr}")).unwrap();
    let conn = Arc::new(ConnInfo::new(Binding::Hbone));
    let mut req = http::Request::new(body::empty());
    let record = tel.begin(&mut req, &conn);
    let ctx = RequestContext::new(conn, Arc::new(Config::default()));
    let resp = tel.finish(record, &ctx, body::local_reply(http::StatusCode::OK, "ok"));
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes.as_ref(), b"ok\n");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if text.contains("waypoint_otlp_export_failures_total 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_otlp_options_nothing_is_registered() {
    let mut registry = Registry::default();
    Telemetry::new(&mut registry, TelemetryOptions::default()).unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(!text.contains("waypoint_otlp"), "{text}");
}
