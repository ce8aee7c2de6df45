//! Where inbound bindings listen, and the one accept loop they all run.
//!
//! A binding (the sandwich listener over TCP or a Unix socket, the HBONE listener) is a bound
//! socket that `Accept`s, plus what it does with each accepted socket: read a PROXY header,
//! or handshake TLS and HTTP/2 and open one inbound connection per `CONNECT`. Either way it
//! ends by handing `(BoxedIo, ConnInfo)` to the connection handler, the
//! [`Pipeline`](crate::pipeline::Pipeline).
//!
//! The loop around the socket is the same for every binding, so it is written once
//! (`accept_loop`): stop accepting when the shutdown stops (not while it drains: a client
//! that has not noticed the drain yet is still served), admit each socket through the
//! listener's [`ListenerGate`] (connection limits, memory watermark) before a byte is read,
//! serve it in a task of its own that holds a [`Shutdown`] clone so a drain waits for it, and
//! after a failed accept (EMFILE and the like) pause briefly rather than spin while connections
//! drain.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::overload::ListenerGate;
use crate::shutdown::Shutdown;

/// Pause after a failed accept, so a full file table does not spin the loop while connections
/// drain.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Where a listener binds: `tcp:127.0.0.1:15088` (or bare `127.0.0.1:15088`, `[::1]:15088`),
/// or a Unix socket `unix:/path` (or a bare absolute `/path`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
}

/// A listen address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid listen address {input:?}: {reason} (expected tcp:IP:PORT, IP:PORT, [IPv6]:PORT, unix:/path or /path)"
)]
pub struct ListenAddrError {
    input: String,
    reason: &'static str,
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ListenAddrError {
            input: s.to_owned(),
            reason,
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err("empty socket path"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(s)));
        }
        let addr = s.strip_prefix("tcp:").unwrap_or(s);
        addr.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| err("not a socket address"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "tcp:{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound socket that accepts connections.
pub(crate) trait Accept: Send + Sync {
    /// An accepted socket, with whatever the accept call told about its peer.
    type Conn: Send + 'static;

    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Accept for TcpListener {
    type Conn = (TcpStream, SocketAddr);

    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send {
        TcpListener::accept(self)
    }
}

/// What the accept loop says about the listener it runs for, in logs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Listening<'a> {
    /// The binding: `sandwich` or `HBONE`.
    pub(crate) binding: &'static str,
    /// The listener, as displayed (`tcp:127.0.0.1:15088`, `unix:/path`).
    pub(crate) listener: &'a str,
}

/// Accepts from `socket` until `shutdown` stops, admitting each connection through `gate`
/// (without one, nothing is limited) and running `serve(conn, accepted_at, shutdown)` in a task
/// of its own. A refused connection is dropped, which closes it; the gate counted and logged
/// it. The task keeps the connection's gate permit until `serve` returns.
pub(crate) async fn accept_loop<A, S, F>(
    socket: &A,
    at: Listening<'_>,
    gate: Option<&ListenerGate>,
    shutdown: Shutdown,
    serve: S,
) where
    A: Accept,
    S: Fn(A::Conn, Instant, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let Listening { binding, listener } = at;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok(conn) => {
                let accepted_at = Instant::now();
                let Ok(permit) = gate.map(ListenerGate::admit).transpose() else {
                    continue;
                };
                // Boxed: a future awaited from a variable keeps two slots of its size in the
                // task, the variable's and the await's, for the connection's whole life.
                let serving = Box::pin(serve(conn, accepted_at, shutdown.clone()));
                tokio::spawn(async move {
                    serving.await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(binding, listener, %error, "accept failed; retrying");
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    tracing::info!(binding, listener, "{binding} listener stopped accepting");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::overload::{Overload, OverloadOptions};
    use tokio::sync::{Mutex, mpsc, oneshot};

    /// A socket whose accepts are scripted: each item sent is the next accept's result.
    struct Scripted(Mutex<mpsc::UnboundedReceiver<io::Result<u32>>>);

    impl Accept for Scripted {
        type Conn = u32;

        async fn accept(&self) -> io::Result<u32> {
            match self.0.lock().await.recv().await {
                Some(next) => next,
                None => std::future::pending().await,
            }
        }
    }

    fn scripted() -> (mpsc::UnboundedSender<io::Result<u32>>, Scripted) {
        let (send, receive) = mpsc::unbounded_channel();
        (send, Scripted(Mutex::new(receive)))
    }

    const AT: Listening<'static> = Listening {
        binding: "test",
        listener: "tcp:127.0.0.1:0",
    };

    #[tokio::test]
    async fn a_failed_accept_is_retried_and_the_next_connection_is_served() {
        let (accepts, socket) = scripted();
        let (trigger, shutdown) = crate::shutdown::channel();
        let (served, mut seen) = mpsc::unbounded_channel();
        let running = tokio::spawn(async move {
            accept_loop(&socket, AT, None, shutdown, move |conn, _, _| {
                let served = served.clone();
                async move {
                    let _ = served.send(conn);
                }
            })
            .await
        });
        accepts.send(Err(io::Error::other("EMFILE"))).unwrap();
        accepts.send(Ok(7)).unwrap();
        assert_eq!(seen.recv().await, Some(7));
        // The loop ends with the shutdown, and nothing it spawned is left running.
        assert!(trigger.shutdown(Duration::from_secs(5)).await);
        running.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_over_the_gate_is_closed_unserved_and_a_freed_slot_admits_the_next() {
        let overload = Overload::new(OverloadOptions::default());
        let gate = overload.gate("tcp:127.0.0.1:0", Some(1));
        let (accepts, socket) = scripted();
        let (_trigger, shutdown) = crate::shutdown::channel();
        let (served, mut seen) = mpsc::unbounded_channel();
        let (release, released) = oneshot::channel::<()>();
        let released = std::sync::Arc::new(Mutex::new(Some(released)));
        let loop_gate = gate.clone();
        tokio::spawn(async move {
            accept_loop(
                &socket,
                AT,
                Some(&loop_gate),
                shutdown,
                move |conn, _, _| {
                    let (served, released) = (served.clone(), released.clone());
                    async move {
                        let _ = served.send(conn);
                        // The first connection stays open until released.
                        if let Some(released) = released.lock().await.take() {
                            let _ = released.await;
                        }
                    }
                },
            )
            .await
        });
        accepts.send(Ok(1)).unwrap();
        assert_eq!(seen.recv().await, Some(1));
        assert_eq!(gate.open(), 1);
        accepts.send(Ok(2)).unwrap();
        let refused = || {
            overload
                .metrics()
                .connections_refused("tcp:127.0.0.1:0", "listener_limit")
        };
        while refused() == 0 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        while gate.open() > 0 {
            tokio::task::yield_now().await;
        }
        accepts.send(Ok(3)).unwrap();
        // 2 came while 1 held the only slot: it was never served.
        assert_eq!(seen.recv().await, Some(3));
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn listen_addr_parses_and_displays() {
        let cases = [
            ("tcp:127.0.0.1:15088", "tcp:127.0.0.1:15088"),
            ("127.0.0.1:15088", "tcp:127.0.0.1:15088"),
            ("[::1]:15088", "tcp:[::1]:15088"),
            ("tcp:[::1]:0", "tcp:[::1]:0"),
            ("unix:/run/waypoint.sock", "unix:/run/waypoint.sock"),
            ("/run/waypoint.sock", "unix:/run/waypoint.sock"),
            ("unix:relative.sock", "unix:relative.sock"),
        ];
        for (input, shown) in cases {
            let addr: ListenAddr = input.parse().unwrap();
            assert_eq!(addr.to_string(), shown, "{input}");
            assert_eq!(
                shown.parse::<ListenAddr>().unwrap(),
                addr,
                "{shown} round trip"
            );
        }
        assert_eq!(
            "unix:/a".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix(PathBuf::from("/a"))
        );
    }

    #[test]
    fn listen_addr_rejects_garbage() {
        for input in [
            "",
            "unix:",
            "tcp:",
            "localhost:15088",
            "127.0.0.1",
            "tcp:/x",
            "::1:80",
        ] {
            let err = input.parse::<ListenAddr>().unwrap_err();
            assert!(
                err.to_string().contains("invalid listen address"),
                "{input}: {err}"
            );
        }
    }
}
