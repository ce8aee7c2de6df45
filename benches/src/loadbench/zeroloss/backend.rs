//! A backend that can die: it answers every request after a fixed delay (`/delay/<ms>`
//! overrides it per request), counts what it served, and when killed drops its listener and
//! every open connection at once, as a process that exits would. The zero-loss scenarios run
//! it in process, so killing it needs no signal and its counters are at hand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A running backend; dropping it (or [`Backend::kill`]) kills it.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Listens on `addr` (port 0: any) and answers `200 <name>` after `delay`.
    pub async fn start(addr: SocketAddr, name: &str, delay: Duration) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let body = Bytes::from(format!("{name}\n"));
        let task = tokio::spawn(serve(listener, body, delay, served.clone()));
        Ok(Backend { addr, served, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Closes the listener and every connection now, mid-request or not.
    pub fn kill(self) {}
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, body: Bytes, delay: Duration, served: Arc<AtomicU64>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, served) = (body.clone(), served.clone());
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let (body, served) = (body.clone(), served.clone());
                let wait = requested_delay(req.uri().path()).unwrap_or(delay);
                async move {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, Infallible>(http::Response::new(Full::new(body)))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
}

/// `/delay/<ms>` anywhere in the path: that many milliseconds.
fn requested_delay(path: &str) -> Option<Duration> {
    let rest = &path[path.find("/delay/")? + "/delay/".len()..];
    let ms: u64 = rest.split('/').next()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_in_the_path_overrides_the_default() {
        assert_eq!(
            requested_delay("/delay/1500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            requested_delay("/x/delay/20/y"),
            Some(Duration::from_millis(20))
        );
        assert_eq!(requested_delay("/delay/abc"), None);
        assert_eq!(requested_delay("/items"), None);
    }
}
