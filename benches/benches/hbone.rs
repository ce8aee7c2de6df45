//! HBONE through the waypoint, next to the same work without it, printed as ratios:
//!
//! - **tunnel + request**: a client ztunnel opens a new CONNECT stream (on its pooled HBONE
//!   connection) and sends one GET for 1 KiB, (a) to the waypoint, which routes it and
//!   re-tunnels it to the destination ztunnel, (b) straight to the destination ztunnel.
//!   Median and p99 of the round trip.
//! - **bulk**: one long response body (256 MiB) read through (a) the waypoint's HBONE in and
//!   out, (b) a direct mutual-TLS connection to the backend on loopback.
//!
//! `cargo bench -p waypoint-benches --bench hbone` runs the full sizes; without `--bench`
//! (as `cargo test --benches` runs it) it runs a few small iterations as a smoke test.
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use waypoint_benches::loadbench::upstream::Repeat;
use waypoint_core::conn::ConnInfo;
use waypoint_core::identity::SpiffeId;
use waypoint_core::runtime::{CertSettings, CertSource, HboneInbound, Waypoint, WaypointOptions};
use waypoint_core::shutdown;
use waypoint_core::tls::{self, CertStore, DevCa, ExpectedIdentity};
use waypoint_core::transport::BoxedIo;
use waypoint_core::transport::TransportMetrics;
use waypoint_core::transport::hbone::{HboneListener, HboneOptions};
use waypoint_core::upstream::{HboneClientOptions, HbonePool, TunnelSource, UpstreamMode};
use waypoint_filters::Builtins;

const CHUNK: usize = 64 * 1024;

/// Serves HTTP on `io`: `/bytes/N` answers N bytes.
async fn serve_http(io: BoxedIo) {
    let service =
        hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let n = req
                .uri()
                .path()
                .strip_prefix("/bytes/")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Ok::<_, Infallible>(http::Response::new(Repeat::new(
                n,
                Bytes::from(vec![b'x'; CHUNK]),
            )))
        });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// One GET on `io`; returns the body length.
async fn get(io: BoxedIo, path: &str) -> usize {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "echo")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len();
        }
    }
    n
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    client: Arc<HbonePool>,
    waypoint_hbone: SocketAddr,
    destination_hbone: SocketAddr,
    backend: SocketAddr,
    tls_backend: SocketAddr,
    client_tls: tokio_rustls::TlsConnector,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("cluster.local").unwrap();
    let hour = Duration::from_secs(3600);
    let write = |name: &str, who: &str| {
        ca.write_workload_dir(&dir.path().join(name), &id(who), hour)
            .unwrap()
    };
    let waypoint_certs = write("waypoint", "spiffe://cluster.local/ns/default/sa/waypoint");
    let client_certs = write("client", "spiffe://cluster.local/ns/shop/sa/cart");
    let backend_certs = write("backend", "spiffe://cluster.local/ns/default/sa/echo");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_http(Box::new(stream)));
        }
    });

    // The destination ztunnel: HBONE in, plain TCP to the backend.
    let backend_store = CertStore::load(backend_certs, vec![]).unwrap();
    let destination = HboneListener::bind(
        ([127, 0, 0, 1], 0).into(),
        backend_store.clone(),
        HboneOptions::default(),
        Arc::new(TransportMetrics::new()),
    )
    .await
    .unwrap();
    let destination_hbone = destination.local_addr();
    let (trigger, stop) = shutdown::channel();
    std::mem::forget(trigger); // runs for the life of the process
    tokio::spawn(destination.serve(
        |mut io, conn: ConnInfo| async move {
            let Some(target) = conn.destination else {
                return;
            };
            let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut io, &mut upstream).await;
        },
        stop,
    ));

    // A backend behind mutual TLS: the direct baseline.
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_backend = tls_listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(backend_store.server_config());
    tokio::spawn(async move {
        loop {
            let (stream, _) = tls_listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve_http(Box::new(tls)).await;
                }
            });
        }
    });

    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default, labels: {{istio.io/dataplane-mode: ambient}}}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{{name: http, port: 80}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n",
            backend.port()
        ),
    )
    .unwrap();
    let mut options = WaypointOptions::new(&config);
    options.sandwich.clear();
    options.admin = None;
    options.certs = Some(CertSettings {
        source: CertSource::Files(waypoint_certs),
        trust_domains: vec![],
        reload_interval: hour,
    });
    options.hbone = Some(HboneInbound {
        addr: ([127, 0, 0, 1], 0).into(),
        options: HboneOptions::default(),
    });
    options.upstream.mode = UpstreamMode::Auto;
    options.upstream.hbone.port = destination_hbone.port();
    let running = Waypoint::builder(options)
        .install(Builtins::default())
        .start()
        .await
        .unwrap();
    let waypoint_hbone = running.hbone_addr().unwrap();
    std::mem::forget(running); // runs for the life of the process

    let client_store = CertStore::load(client_certs, vec![]).unwrap();
    let client_tls = tokio_rustls::TlsConnector::from(
        tls::client_config(
            &client_store.current(),
            vec![ExpectedIdentity::Exact(id(
                "spiffe://cluster.local/ns/default/sa/echo",
            ))],
        )
        .unwrap(),
    );
    Setup {
        client: HbonePool::new(client_store, HboneClientOptions::default()),
        waypoint_hbone,
        destination_hbone,
        backend,
        tls_backend,
        client_tls,
        _dir: dir,
    }
}

impl Setup {
    async fn via_waypoint(&self, path: &str) -> usize {
        let source = TunnelSource {
            address: Some("10.244.1.5:40000".parse().unwrap()),
            ..Default::default()
        };
        let expected = [ExpectedIdentity::Exact(id(
            "spiffe://cluster.local/ns/default/sa/waypoint",
        ))];
        let tunnel = self
            .client
            .connect_via(
                self.waypoint_hbone,
                "10.96.0.10:80".parse().unwrap(),
                &expected,
                &source,
            )
            .await
            .unwrap();
        get(Box::new(tunnel), path).await
    }

    async fn via_destination(&self, path: &str) -> usize {
        let source = TunnelSource {
            address: Some("10.244.1.5:40000".parse().unwrap()),
            ..Default::default()
        };
        let expected = [ExpectedIdentity::Exact(id(
            "spiffe://cluster.local/ns/default/sa/echo",
        ))];
        let tunnel = self
            .client
            .connect_via(self.destination_hbone, self.backend, &expected, &source)
            .await
            .unwrap();
        get(Box::new(tunnel), path).await
    }

    async fn direct_tls(&self, path: &str) -> usize {
        let tcp = tokio::net::TcpStream::connect(self.tls_backend)
            .await
            .unwrap();
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::IpAddress(self.tls_backend.ip().into());
        let tls = self.client_tls.connect(name, tcp).await.unwrap();
        get(Box::new(tls), path).await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (iterations, bulk) = if full {
        (2000, 256 << 20)
    } else {
        (20, 1 << 20)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let s = setup().await;
        // Warm the pools and the code paths.
        for _ in 0..20 {
            s.via_waypoint("/bytes/1024").await;
            s.via_destination("/bytes/1024").await;
        }

        let mut rows = Vec::new();
        for (name, waypoint) in [("through waypoint", true), ("direct to destination", false)] {
            let mut times = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let started = Instant::now();
                let n = if waypoint {
                    s.via_waypoint("/bytes/1024").await
                } else {
                    s.via_destination("/bytes/1024").await
                };
                assert_eq!(n, 1024);
                times.push(started.elapsed());
            }
            times.sort();
            rows.push((name, percentile(&times, 0.5), percentile(&times, 0.99)));
        }
        println!("tunnel + 1 KiB request ({iterations} each)");
        for (name, p50, p99) in &rows {
            println!(
                "  {name:<24} p50 {:>8.1} µs   p99 {:>8.1} µs",
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6
            );
        }
        println!(
            "  ratio waypoint/direct:   p50 {:.2}x   p99 {:.2}x",
            rows[0].1.as_secs_f64() / rows[1].1.as_secs_f64(),
            rows[0].2.as_secs_f64() / rows[1].2.as_secs_f64()
        );

        let path = format!("/bytes/{bulk}");
        let mut rates = Vec::new();
        for name in ["through waypoint (HBONE in+out)", "direct mutual TLS"] {
            let started = Instant::now();
            let n = if rates.is_empty() {
                s.via_waypoint(&path).await
            } else {
                s.direct_tls(&path).await
            };
            assert_eq!(n, bulk);
            let rate = n as f64 / started.elapsed().as_secs_f64() / (1 << 20) as f64;
            rates.push((name, rate));
        }
        println!("bulk: one {} MiB response", bulk >> 20);
        for (name, rate) in &rates {
            println!("  {name:<32} {rate:>8.0} MiB/s");
        }
        println!(
            "  ratio waypoint/direct TLS:        {:.2}x",
            rates[0].1 / rates[1].1
        );
    });
}
