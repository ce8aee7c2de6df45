//! Helpers shared by the upstream integration tests. Each test binary uses a subset of them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use waypoint_core::body::{Body, empty};
use waypoint_core::config::{
    AppProtocol, Endpoint, EndpointStats, ProtocolSelection, ResourceRef, ServiceBackend,
};

/// Service `default/<name>` port 80 at 10.96.0.10, speaking `protocol`, with these ready
/// endpoints.
pub(crate) fn service_backend(
    name: &str,
    protocol: AppProtocol,
    addrs: &[SocketAddr],
) -> Arc<ServiceBackend> {
    Arc::new(ServiceBackend {
        policy: Default::default(),
        service: ResourceRef::new("Service", "default", name),
        port: 80,
        cluster_ips: vec![[10, 96, 0, 10].into()],
        protocol: ProtocolSelection::http(protocol),
        endpoints: addrs
            .iter()
            .map(|&address| Endpoint {
                address,
                stats: Arc::new(EndpointStats::default()),
                transport: Default::default(),
            })
            .collect(),
    })
}

/// Serves one accepted backend connection with `svc`, as h2c when `h2`, else HTTP/1.1 (with
/// upgrades), on a task of its own.
pub(crate) fn serve_backend_connection<S>(stream: TcpStream, svc: S, h2: bool)
where
    S: Service<Request<Incoming>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(stream);
    tokio::spawn(async move {
        if h2 {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .with_upgrades()
                .await;
        }
    });
}

/// `GET path` for `echo.test`, without a body.
pub(crate) fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "echo.test")
        .body(empty())
        .unwrap()
}

/// The whole response body, as UTF-8.
pub(crate) async fn text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}
