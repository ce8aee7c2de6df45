//! The sandwich listener: accepts connections from the co-located ztunnel over TCP
//! (`127.0.0.1:15088`, what a stock ztunnel dials) or a Unix socket (our extension), reads each
//! one's PROXY header and hands the stream and its [`ConnInfo`] to a handler. The accept loop
//! itself is the one every binding shares ([`super::listener`]); what is the sandwich's own is
//! here: Unix socket files (stale ones replaced, ours removed on drop), the peer check, and the
//! PROXY header of each connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::BoxedIo;
use super::listener::{Accept, ListenAddr, Listening, accept_loop};
use super::metrics::TransportMetrics;
use super::peer::PeerCheck;
use super::proxy_header::{ProxyConfig, conn_info, read_header};
use super::rewind::Rewind;
use crate::conn::{Binding, ConnInfo};
use crate::overload::{ListenerGate, Overload, OverloadOptions};
use crate::shutdown::Shutdown;
use crate::wire::proxy_protocol::ProxyError;

/// How long a connect() probing an existing socket file may take before we call it live.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Listener settings beyond the PROXY header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerOptions {
    /// File mode set on a Unix socket after bind (default `0o660`: the owner and its group,
    /// which is how ztunnel would be let in).
    pub unix_mode: u32,
    /// At most this many connections at once on each listener (HBONE: its TCP connections and
    /// CONNECT streams together); further ones are closed at once, counted in
    /// `waypoint_connections_refused_total{reason="listener_limit"}`. Default none.
    pub max_connections: Option<usize>,
    /// Unix sockets only: accept only processes running as this user (`SO_PEERCRED`), say
    /// ztunnel's. Others are closed before a byte is read (see `PeerCheck`).
    pub unix_peer_uid: Option<u32>,
    /// Unix sockets only: accept only processes running with this primary group.
    pub unix_peer_gid: Option<u32>,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            unix_mode: 0o660,
            max_connections: None,
            unix_peer_uid: None,
            unix_peer_gid: None,
        }
    }
}

/// A bound sandwich listener. [`SandwichListener::serve`] runs its accept loop.
#[derive(Debug)]
pub struct SandwichListener {
    socket: Socket,
    local: ListenAddr,
    cfg: Arc<ProxyConfig>,
    gate: ListenerGate,
    metrics: Arc<TransportMetrics>,
    peers: PeerCheck,
    max_connections: Option<usize>,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    // The file guard is dropped with the listener, which removes the socket file.
    Unix(UnixListener, #[allow(dead_code)] SocketFile),
}

enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Accept for Socket {
    type Conn = Accepted;

    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Socket::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Socket::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}

/// Removes our socket file on drop, unless another process has replaced it since.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(md) = std::fs::symlink_metadata(&self.path)
            && md.dev() == self.dev
            && md.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl SandwichListener {
    /// Binds `addr`.
    ///
    /// For a Unix socket: a stale socket file (nobody accepts on it) is replaced; a live one is
    /// an `AddrInUse` error; any other file at the path is an error and is left alone. The file
    /// mode is then set to `opts.unix_mode`, whatever the umask.
    pub async fn bind(
        addr: &ListenAddr,
        cfg: ProxyConfig,
        opts: ListenerOptions,
        metrics: Arc<TransportMetrics>,
    ) -> io::Result<Self> {
        let (socket, local) = match addr {
            ListenAddr::Tcp(addr) => {
                let listener = TcpListener::bind(addr).await?;
                let local = ListenAddr::Tcp(listener.local_addr()?);
                (Socket::Tcp(listener), local)
            }
            ListenAddr::Unix(path) => {
                clear_stale_socket(path).await?;
                let listener = UnixListener::bind(path)?;
                let md = std::fs::symlink_metadata(path)?;
                let file = SocketFile {
                    path: path.clone(),
                    dev: md.dev(),
                    ino: md.ino(),
                };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.unix_mode))?;
                (Socket::Unix(listener, file), ListenAddr::Unix(path.clone()))
            }
        };
        let peers = PeerCheck {
            uid: opts.unix_peer_uid,
            gid: opts.unix_peer_gid,
        };
        tracing::info!(listener = %local, required = cfg.required, peer_uid = ?peers.uid,
            peer_gid = ?peers.gid, "sandwich listener bound");
        // A listener of its own counts only against its own limit; a waypoint's listeners
        // share one total through `with_overload`.
        let gate = Overload::new(OverloadOptions {
            max_connections: None,
            ..OverloadOptions::default()
        })
        .gate(local.to_string(), opts.max_connections);
        Ok(SandwichListener {
            socket,
            local,
            cfg: Arc::new(cfg),
            gate,
            metrics,
            peers,
            max_connections: opts.max_connections,
        })
    }

    /// Counts this listener's connections in `overload` (the process-wide connection limit,
    /// the memory watermark and their metrics), keeping its own per-listener limit.
    pub fn with_overload(mut self, overload: &Arc<Overload>) -> Self {
        self.gate = overload.gate(self.local.to_string(), self.max_connections);
        self
    }

    /// The bound address (for TCP port 0, the port the system chose).
    pub fn local_addr(&self) -> ListenAddr {
        self.local.clone()
    }

    /// Accepts connections until `shutdown` fires. Each connection runs in its own task, which
    /// holds a clone of `shutdown` until `handler` returns, so a drain waits for it.
    ///
    /// A connection over a connection limit (or while memory is over the watermark) is closed
    /// at once, before its PROXY header is read; a connection whose PROXY header is refused is
    /// logged, counted and closed; the loop goes on. A failed accept is logged and retried
    /// after 50 ms. A Unix socket file is removed on return.
    pub async fn serve<H, F>(self, handler: H, shutdown: Shutdown)
    where
        H: Fn(BoxedIo, ConnInfo) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let ctx = Arc::new(ConnCtx {
            handler,
            cfg: self.cfg.clone(),
            metrics: self.metrics.clone(),
            listener: self.local.to_string(),
            peers: self.peers,
        });
        let at = Listening {
            binding: "sandwich",
            listener: &ctx.listener,
        };
        accept_loop(
            &self.socket,
            at,
            Some(&self.gate),
            shutdown,
            |conn, accepted_at, task_shutdown| {
                let ctx = ctx.clone();
                async move {
                    ctx.serve_conn(conn, accepted_at).await;
                    drop(task_shutdown);
                }
            },
        )
        .await;
    }
}

/// Decides what to do with an existing file at a Unix socket path before binding it.
async fn clear_stale_socket(path: &Path) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    let in_use = || {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a live listener", path.display()),
        )
    };
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        // A refused connect means nobody listens: the file was left by a process that died.
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => {
                    tracing::info!(path = %path.display(), "removed stale socket file");
                    Ok(())
                }
            }
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // A full backlog (EAGAIN) or a slow accept still means someone is there.
        Ok(Ok(_)) | Err(_) => Err(in_use()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => Err(in_use()),
        Ok(Err(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot tell whether {} is in use: {e}", path.display()),
        )),
    }
}

/// What every connection task of one listener shares.
struct ConnCtx<H> {
    handler: H,
    cfg: Arc<ProxyConfig>,
    metrics: Arc<TransportMetrics>,
    listener: String,
    peers: PeerCheck,
}

impl<H, F> ConnCtx<H>
where
    H: Fn(BoxedIo, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    async fn serve_conn(&self, conn: Accepted, accepted_at: Instant) {
        match conn {
            Accepted::Tcp(stream, peer) => {
                // Request/response traffic: never hold a small write back waiting for an ACK.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                }
                let local = stream.local_addr().ok();
                self.serve_stream(stream, Some(peer), local, peer.to_string(), accepted_at)
                    .await;
            }
            Accepted::Unix(stream) => {
                let cred = stream.peer_cred().ok();
                let pid = cred.and_then(|c| c.pid());
                // Before reading anything: a refused peer never gets a byte parsed.
                if let Err(rejection) = self.peers.check(cred.map(|c| (c.uid(), c.gid()))) {
                    self.metrics.inc_peer_rejected(rejection);
                    tracing::warn!(listener = %self.listener, pid, uid = cred.map(|c| c.uid()),
                        gid = cred.map(|c| c.gid()), reason = rejection.reason(), %rejection,
                        "closing Unix socket connection: peer not allowed");
                    return;
                }
                let label = match pid {
                    Some(pid) => format!("unix pid {pid}"),
                    None => "unix peer".to_owned(),
                };
                self.serve_stream(stream, None, None, label, accepted_at)
                    .await;
            }
        }
    }

    async fn serve_stream<S>(
        &self,
        mut stream: S,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        peer_label: String,
        accepted_at: Instant,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let decided = match read_header(&mut stream, &self.cfg).await {
            Ok((Some(header), rest)) => {
                let binding = Binding::Sandwich {
                    listener: self.listener.clone(),
                };
                conn_info(&header, binding, &self.cfg).map(|mut info| {
                    // LOCAL, v1 UNKNOWN and v2 UNSPEC name no client: the spec says to use
                    // the socket's own endpoints then.
                    if info.source.is_none() {
                        info.source = peer;
                    }
                    ("sandwich", info, rest)
                })
            }
            Ok((None, rest)) => {
                let mut info = ConnInfo::new(Binding::Plain {
                    listener: self.listener.clone(),
                });
                info.source = peer;
                // Without a header the client dialled this socket: its own address is the
                // original destination (a Service whose ClusterIP is this address routes it).
                info.destination = local;
                Ok(("plain", info, rest))
            }
            Err(e) => Err(e),
        };
        match decided {
            Ok((binding, mut info, rest)) => {
                info.accepted_at = accepted_at;
                self.metrics.inc_accepted(binding);
                tracing::debug!(
                    peer = %peer_label,
                    listener = %self.listener,
                    source = ?info.source,
                    destination = ?info.destination,
                    identity = ?info.peer_identity.as_ref().map(|id| id.as_str()),
                    "connection accepted"
                );
                (self.handler)(Box::new(Rewind::new(rest, stream)), info).await;
            }
            Err(error) => {
                self.metrics.inc_rejected(&error);
                // Health probes connect and close without a byte: counted, but not worth a
                // warning each time.
                if matches!(error, ProxyError::Empty) {
                    tracing::debug!(peer = %peer_label, listener = %self.listener, reason = error.reason(), "connection closed before a PROXY header");
                } else {
                    tracing::warn!(peer = %peer_label, listener = %self.listener, reason = error.reason(), %error, "closing connection: bad PROXY header");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options() {
        let opts = ListenerOptions::default();
        assert_eq!(opts.unix_mode, 0o660);
        assert_eq!(opts.max_connections, None);
        assert_eq!((opts.unix_peer_uid, opts.unix_peer_gid), (None, None));
    }
}
