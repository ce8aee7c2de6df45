//! The upstream every row talks to: an HTTP/1.1 + h2c server answering every request with a
//! 1 KiB body (or, for a path ending in `/bytes/<n>`, with n bytes: the HBONE bulk transfer),
//! a TCP echo (for the `tcp` scenario), and (for the HBONE scenario) a stand-in for the destination ztunnel that
//! terminates HBONE and copies each tunnel to it. It runs as a separate process
//! (`loadbench upstream ...`) so it can be pinned with the load generator and kept off the
//! proxy's core.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use waypoint_core::conn::ConnInfo;
use waypoint_core::shutdown;
use waypoint_core::tls::{CertPaths, CertStore};
use waypoint_core::transport::TransportMetrics;
use waypoint_core::transport::hbone::{HboneListener, HboneOptions};

/// Size of every answer body.
pub const BODY_BYTES: usize = 1024;

/// The frame size of a bulk answer: large enough that frame handling is not what a bulk
/// transfer measures.
const BULK_CHUNK: usize = 64 * 1024;

/// The length a bulk request asks for: the number after the path's last `/bytes/`, which
/// follows the route prefix (`/r00000/bytes/1048576`) so both proxies route it as any other
/// request.
pub fn bulk_len(path: &str) -> Option<u64> {
    path.rsplit_once("/bytes/")?.1.parse().ok()
}

/// The path of a bulk request for `bytes` bytes under the route prefix of `path` (its first
/// segment).
pub fn bulk_path(path: &str, bytes: u64) -> String {
    let prefix = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    format!("/{prefix}/bytes/{bytes}")
}

/// A body of `remaining` bytes in frames of `chunk` (the bulk answers: [`BULK_CHUNK`]), each a
/// view of that one shared buffer (the upstream copies nothing per frame; what is measured is
/// the proxy's work).
pub struct Repeat {
    remaining: u64,
    chunk: Bytes,
}

impl Repeat {
    /// `remaining` bytes, sent as views of `chunk`.
    pub fn new(remaining: u64, chunk: Bytes) -> Repeat {
        Repeat { remaining, chunk }
    }
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= len as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..len)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Serves 1 KiB answers (bulk ones for `/bytes/<n>` paths) on `listener` forever.
pub async fn serve_http(listener: TcpListener) {
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    let chunk = Bytes::from(vec![b'x'; BULK_CHUNK]);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, chunk) = (body.clone(), chunk.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let answer = match bulk_len(req.uri().path()) {
                    None => Either::Left(Full::new(body.clone())),
                    Some(remaining) => Either::Right(Repeat {
                        remaining,
                        chunk: chunk.clone(),
                    }),
                };
                async move {
                    let mut resp = http::Response::new(answer);
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/octet-stream"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Terminates HBONE on `addr` with the certificates in `certs` and copies every tunnel to
/// `upstream`, whatever authority it names (the stand-in owns one workload).
pub async fn serve_hbone_destination(
    addr: SocketAddr,
    certs: PathBuf,
    upstream: SocketAddr,
) -> Result<SocketAddr, String> {
    let store = CertStore::load(CertPaths::in_dir(&certs), Vec::new())
        .map_err(|e| format!("{}: {e}", certs.display()))?;
    let listener = HboneListener::bind(
        addr,
        store,
        HboneOptions::default(),
        Arc::new(TransportMetrics::new()),
    )
    .await
    .map_err(|e| format!("HBONE bind {addr}: {e}"))?;
    let local = listener.local_addr();
    let (trigger, stop) = shutdown::channel();
    // The stand-in lives as long as its process.
    std::mem::forget(trigger);
    tokio::spawn(listener.serve(
        move |mut io, _conn: ConnInfo| async move {
            let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            let _ = up.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut io, &mut up).await;
        },
        stop,
    ));
    Ok(local)
}

/// `loadbench upstream --listen ADDR [--hbone ADDR --certs DIR]`: prints `http ADDR`,
/// `tcp-echo ADDR` (the `tcp` scenario's echo backend, on a port of its own) and, with
/// `--hbone`, `hbone ADDR` on stdout once listening, then serves until killed.
pub fn main(args: &[String]) -> Result<(), String> {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut hbone: Option<SocketAddr> = None;
    let mut certs: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--hbone" => hbone = Some(value()?.parse().map_err(|e| format!("--hbone: {e}"))?),
            "--certs" => certs = Some(value()?.into()),
            other => return Err(format!("unknown upstream argument {other}")),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("bind {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("http {local}");
        let echo = TcpListener::bind(SocketAddr::new(listen.ip(), 0))
            .await
            .map_err(|e| format!("bind the TCP echo on {}: {e}", listen.ip()))?;
        println!("tcp-echo {}", echo.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(super::tcp::echo::serve(echo));
        if let Some(addr) = hbone {
            let dir = certs.ok_or("--hbone needs --certs")?;
            let bound = serve_hbone_destination(addr, dir, local).await?;
            println!("hbone {bound}");
        }
        println!("ready");
        serve_http(listener).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_paths_keep_the_route_prefix_and_name_their_length() {
        assert_eq!(bulk_path("/r00000/items", 1 << 20), "/r00000/bytes/1048576");
        assert_eq!(bulk_len("/r00000/bytes/1048576"), Some(1 << 20));
        assert_eq!(bulk_len(&bulk_path("/r00009/items", 7)), Some(7));
        // Ordinary requests get the 1 KiB answer.
        for path in ["/r00000/items", "/bytes/", "/r00000/bytes/x", "/"] {
            assert_eq!(bulk_len(path), None, "{path}");
        }
    }
}
