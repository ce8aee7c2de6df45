//! The HBONE server: terminates mutual TLS and HTTP/2 on `:15008` and turns each `CONNECT`
//! stream into one inbound connection, a byte stream plus its [`ConnInfo`], for the same
//! handler the sandwich listener feeds.
//!
//! A connection lives through three stages, read top to bottom below: the TLS handshake
//! (which proves the peer's SPIFFE identity), the HTTP/2 handshake, then the stream loop that
//! accepts `CONNECT`s, keeps the connection alive with PINGs and closes it when idle or
//! shutting down.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Ping, PingPong, RecvStream};
use http::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::vet_connect;
use crate::conn::ConnInfo;
use crate::identity::SpiffeId;
use crate::overload::ListenerGate;
use crate::shutdown::Shutdown;
use crate::tls::{self, CertStore};
use crate::transport::TransportMetrics;
use crate::transport::listener::{Listening, accept_loop};
use crate::wire::BoxedIo;
use crate::wire::hbone::{H2Stream, MAX_FRAME_SIZE, MAX_WINDOW_SIZE, MIN_FRAME_SIZE};

/// HTTP/2 and timing settings of the HBONE server. The defaults are ztunnel's (`docs/wire.md`),
/// so a waypoint behaves like the ztunnel a client would otherwise reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HboneOptions {
    /// Longest the TLS and HTTP/2 handshakes may take together (default 10 s).
    pub handshake_timeout: Duration,
    /// Most CONNECT streams a client may have open on one connection (default 200).
    pub max_concurrent_streams: u32,
    /// Initial flow-control window of each stream, in bytes (default 4 MiB).
    pub stream_window: u32,
    /// Flow-control window of the whole connection, in bytes (default 16 MiB).
    pub connection_window: u32,
    /// Largest DATA frame the client may send (default 1 MiB; clamped to 16 KiB..16 MiB).
    pub max_frame_size: u32,
    /// Largest request header block accepted (default 64 KiB).
    pub max_header_list_size: u32,
    /// How often to PING the client (default 10 s; zero disables keepalive).
    pub keepalive_interval: Duration,
    /// How long to wait for the PONG before closing the connection (default 20 s).
    pub keepalive_timeout: Duration,
    /// A connection with no open stream for this long is closed with GOAWAY (default 5 min;
    /// zero disables).
    pub idle_timeout: Duration,
}

impl Default for HboneOptions {
    fn default() -> Self {
        HboneOptions {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_streams: 200,
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
            max_header_list_size: 64 * 1024,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

impl HboneOptions {
    fn h2_builder(&self) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.max_concurrent_streams(self.max_concurrent_streams)
            .initial_window_size(self.stream_window.min(MAX_WINDOW_SIZE))
            .initial_connection_window_size(self.connection_window.min(MAX_WINDOW_SIZE))
            .max_frame_size(self.max_frame_size.clamp(MIN_FRAME_SIZE, MAX_FRAME_SIZE))
            .max_header_list_size(self.max_header_list_size);
        b
    }
}

/// Why an HBONE connection or stream was refused, the `reason` label of
/// `waypoint_hbone_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HboneRejection {
    /// The TLS and HTTP/2 handshakes did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// The peer closed the connection before the handshake finished (health probes do this).
    Closed,
    /// The client presented no certificate.
    NoClientCert,
    /// The client certificate was refused: unknown issuer, expired, wrong trust domain, no
    /// SPIFFE identity.
    BadCertificate,
    /// Any other TLS failure (protocol version, cipher, alert from the client).
    Tls,
    /// The handshake did not negotiate ALPN `h2`.
    Alpn,
    /// The HTTP/2 preface or settings exchange failed.
    H2Handshake,
    /// A stream's method was not `CONNECT` (answered 405).
    NotConnect,
    /// A CONNECT's `:authority` was not an `ip:port` (answered 400).
    BadAuthority,
}

impl HboneRejection {
    /// Every rejection, so counters can start at zero for each.
    pub const ALL: [HboneRejection; 9] = [
        HboneRejection::HandshakeTimeout,
        HboneRejection::Closed,
        HboneRejection::NoClientCert,
        HboneRejection::BadCertificate,
        HboneRejection::Tls,
        HboneRejection::Alpn,
        HboneRejection::H2Handshake,
        HboneRejection::NotConnect,
        HboneRejection::BadAuthority,
    ];

    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            HboneRejection::HandshakeTimeout => "handshake_timeout",
            HboneRejection::Closed => "closed",
            HboneRejection::NoClientCert => "no_client_cert",
            HboneRejection::BadCertificate => "bad_certificate",
            HboneRejection::Tls => "tls",
            HboneRejection::Alpn => "alpn",
            HboneRejection::H2Handshake => "h2_handshake",
            HboneRejection::NotConnect => "not_connect",
            HboneRejection::BadAuthority => "bad_authority",
        }
    }

    /// Sorts a failed TLS accept by its cause.
    fn from_tls(error: &io::Error) -> Self {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::NoCertificatesPresented) => HboneRejection::NoClientCert,
            Some(rustls::Error::InvalidCertificate(_)) => HboneRejection::BadCertificate,
            Some(_) => HboneRejection::Tls,
            None if matches!(
                error.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
            {
                HboneRejection::Closed
            }
            None => HboneRejection::Tls,
        }
    }
}

/// A bound HBONE listener. [`HboneListener::serve`] runs its accept loop.
#[derive(Debug)]
pub struct HboneListener {
    listener: TcpListener,
    local: SocketAddr,
    certs: Arc<CertStore>,
    opts: HboneOptions,
    metrics: Arc<TransportMetrics>,
    gate: Option<ListenerGate>,
}

impl HboneListener {
    /// Binds `addr` (`0.0.0.0:15008` in a pod). Certificates are read from `certs` at each
    /// handshake, so a rotation inside the store applies to the next connection.
    pub async fn bind(
        addr: SocketAddr,
        certs: Arc<CertStore>,
        opts: HboneOptions,
        metrics: Arc<TransportMetrics>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tracing::info!(listener = %local, "HBONE listener bound");
        Ok(HboneListener {
            listener,
            local,
            certs,
            opts,
            metrics,
            gate: None,
        })
    }

    /// Admits connections through `gate`: each TCP connection and each CONNECT stream takes a
    /// connection slot of this listener. A TCP connection over the limit is closed before the
    /// TLS handshake; a stream over it is answered 503. Without a gate nothing is limited.
    pub fn with_gate(mut self, gate: ListenerGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The bound address (for port 0, the port the system chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accepts connections until `shutdown` fires, then returns; connections already open
    /// get a GOAWAY and finish their streams.
    ///
    /// Each accepted CONNECT stream is answered 200 and handed to `handler` as a
    /// [`BoxedIo`] ([`H2Stream`]) and a [`ConnInfo`] with
    /// `binding: Hbone`, the client's proven identity,
    /// the authority as destination, the `forwarded: for=` address as source (the TCP peer
    /// when absent), `baggage` as source workload and a well-formed `traceparent`. Every
    /// connection and stream task holds a clone of `shutdown`, so a drain waits for them.
    pub async fn serve<H, F>(self, handler: H, shutdown: Shutdown)
    where
        H: Fn(BoxedIo, ConnInfo) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let ctx = Arc::new(ConnCtx {
            handler,
            certs: self.certs,
            h2: self.opts.h2_builder(),
            opts: self.opts,
            metrics: self.metrics,
            gate: self.gate,
        });
        let listener = self.local.to_string();
        let at = Listening {
            binding: "HBONE",
            listener: &listener,
        };
        let gate = ctx.gate.clone();
        accept_loop(
            &self.listener,
            at,
            gate.as_ref(),
            shutdown,
            |(tcp, peer), _accepted_at, shutdown| ctx.clone().serve_conn(tcp, peer, shutdown),
        )
        .await;
    }
}

/// What every connection task of one listener shares.
struct ConnCtx<H> {
    handler: H,
    certs: Arc<CertStore>,
    h2: h2::server::Builder,
    opts: HboneOptions,
    metrics: Arc<TransportMetrics>,
    gate: Option<ListenerGate>,
}

/// What is known about an established HBONE connection, copied into each stream's `ConnInfo`.
struct Peer {
    addr: SocketAddr,
    identity: SpiffeId,
}

type Conn = h2::server::Connection<tokio_rustls::server::TlsStream<TcpStream>, Bytes>;

impl<H, F> ConnCtx<H>
where
    H: Fn(BoxedIo, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    async fn serve_conn(self: Arc<Self>, tcp: TcpStream, addr: SocketAddr, shutdown: Shutdown) {
        // Tunnelled request/response traffic: never hold a small write back waiting for an ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(peer = %addr, %error, "cannot set TCP_NODELAY");
        }
        let established =
            match tokio::time::timeout(self.opts.handshake_timeout, self.handshake(tcp)).await {
                Ok(result) => result,
                Err(_) => Err((
                    HboneRejection::HandshakeTimeout,
                    format!("no handshake within {:?}", self.opts.handshake_timeout),
                )),
            };
        match established {
            Ok((conn, identity)) => {
                tracing::debug!(peer = %addr, identity = %identity, "HBONE connection established");
                self.run(conn, Peer { addr, identity }, shutdown).await;
            }
            Err((rejection, detail)) => {
                self.metrics.inc_hbone_rejected(rejection);
                if rejection == HboneRejection::Closed {
                    tracing::debug!(peer = %addr, reason = rejection.reason(), "HBONE connection closed during handshake");
                } else {
                    tracing::warn!(peer = %addr, reason = rejection.reason(), error = %detail, "HBONE handshake failed; closing connection");
                }
            }
        }
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<(Conn, SpiffeId), (HboneRejection, String)> {
        // Read per connection: a rotated certificate serves the very next handshake.
        let acceptor = TlsAcceptor::from(self.certs.server_config());
        let tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| (HboneRejection::from_tls(&e), e.to_string()))?;
        let (_, session) = tls.get_ref();
        if !tls::negotiated_h2(session) {
            return Err((
                HboneRejection::Alpn,
                "client did not negotiate ALPN h2".to_owned(),
            ));
        }
        // The verifier already refused any chain without exactly one SPIFFE identity; a
        // missing one here would be a verifier bug, and is refused rather than served.
        let identity = tls::peer_identity(session).ok_or_else(|| {
            (
                HboneRejection::BadCertificate,
                "client certificate has no SPIFFE identity".to_owned(),
            )
        })?;
        let conn = self
            .h2
            .handshake(tls)
            .await
            .map_err(|e| (HboneRejection::H2Handshake, e.to_string()))?;
        Ok((conn, identity))
    }

    /// Accepts streams until the connection ends: closed by the client, broken, idle for too
    /// long, silent to PINGs, or drained after a shutdown.
    async fn run(&self, mut conn: Conn, peer: Peer, shutdown: Shutdown) {
        let keepalive = keepalive(
            conn.ping_pong(),
            self.opts.keepalive_interval,
            self.opts.keepalive_timeout,
        );
        tokio::pin!(keepalive);
        let streams = Arc::new(OpenStreams::default());
        let idle_enabled = !self.opts.idle_timeout.is_zero();
        let idle = tokio::time::sleep(self.opts.idle_timeout);
        tokio::pin!(idle);
        let mut draining = false;
        loop {
            tokio::select! {
                next = conn.accept() => match next {
                    Some(Ok((req, respond))) => self.open_stream(req, respond, &peer, &streams, &shutdown),
                    Some(Err(error)) => {
                        tracing::debug!(peer = %peer.addr, %error, "HBONE connection ended with an error");
                        break;
                    }
                    None => break,
                },
                // GOAWAY as soon as the drain starts: the client ztunnel opens its next
                // tunnels elsewhere while the ones open here finish.
                _ = shutdown.wait_draining(), if !draining => {
                    tracing::debug!(peer = %peer.addr, "draining: GOAWAY sent, open streams may finish");
                    conn.graceful_shutdown();
                    draining = true;
                }
                () = &mut keepalive => {
                    tracing::warn!(peer = %peer.addr, identity = %peer.identity, timeout = ?self.opts.keepalive_timeout, "no PONG from HBONE client; closing connection");
                    break;
                }
                () = &mut idle, if idle_enabled && !draining && streams.count() == 0 => {
                    tracing::debug!(peer = %peer.addr, "HBONE connection idle; GOAWAY sent");
                    conn.graceful_shutdown();
                    draining = true;
                }
                () = streams.all_closed.notified() => {
                    if streams.count() == 0 {
                        idle.as_mut().reset(tokio::time::Instant::now() + self.opts.idle_timeout);
                    }
                }
            }
        }
        tracing::debug!(peer = %peer.addr, "HBONE connection closed");
    }

    /// Vets one request and, if it is a well-formed CONNECT, answers 200 and hands the tunnel
    /// to the handler in a task of its own.
    fn open_stream(
        &self,
        req: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        peer: &Peer,
        streams: &Arc<OpenStreams>,
        shutdown: &Shutdown,
    ) {
        let refuse = |respond: &mut SendResponse<Bytes>, rejection: HboneRejection, status| {
            self.metrics.inc_hbone_rejected(rejection);
            let reply = Response::builder().status(status).body(());
            if let Ok(reply) = reply
                && let Err(error) = respond.send_response(reply, true)
            {
                tracing::debug!(peer = %peer.addr, %error, "cannot answer refused HBONE stream");
            }
        };
        let info = match vet_connect(&req, peer.addr, &peer.identity) {
            Ok(info) => info,
            Err(rejection) => {
                let status = match rejection {
                    HboneRejection::NotConnect => {
                        tracing::warn!(peer = %peer.addr, identity = %peer.identity, method = %req.method(), "HBONE stream refused: method is not CONNECT");
                        StatusCode::METHOD_NOT_ALLOWED
                    }
                    _ => {
                        let authority = req.uri().authority().map(|a| a.as_str());
                        tracing::warn!(peer = %peer.addr, identity = %peer.identity, authority = ?authority, "HBONE stream refused: authority is not ip:port");
                        StatusCode::BAD_REQUEST
                    }
                };
                refuse(&mut respond, rejection, status);
                return;
            }
        };
        // A tunnel is a connection to the HTTP server: it takes a slot like any other.
        let permit = match self.gate.as_ref().map(ListenerGate::admit).transpose() {
            Ok(permit) => permit,
            Err(refusal) => {
                tracing::debug!(peer = %peer.addr, identity = %peer.identity, reason = refusal.reason(), "HBONE stream refused: overload");
                let reply = Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .body(());
                if let Ok(reply) = reply
                    && let Err(error) = respond.send_response(reply, true)
                {
                    tracing::debug!(peer = %peer.addr, %error, "cannot answer refused HBONE stream");
                }
                return;
            }
        };
        let send = match respond.send_response(Response::new(()), false) {
            Ok(send) => send,
            Err(error) => {
                tracing::debug!(peer = %peer.addr, %error, "HBONE stream gone before its 200");
                return;
            }
        };
        let io = H2Stream::new(send, req.into_body());
        tracing::debug!(
            peer = %peer.addr,
            stream = io.stream_id(),
            identity = %peer.identity,
            source = ?info.source,
            destination = ?info.destination,
            "HBONE stream accepted"
        );
        self.metrics.inc_accepted("hbone");
        let open = OpenStreams::open(streams);
        let task_shutdown = shutdown.clone();
        let serve = (self.handler)(Box::new(io), info);
        tokio::spawn(async move {
            serve.await;
            drop(permit);
            drop(open);
            drop(task_shutdown);
        });
    }
}

/// Streams whose handler is still running, so the connection knows when it went idle.
#[derive(Default)]
struct OpenStreams {
    count: AtomicUsize,
    all_closed: Notify,
}

impl OpenStreams {
    fn open(this: &Arc<Self>) -> OpenStream {
        this.count.fetch_add(1, Ordering::SeqCst);
        OpenStream(this.clone())
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Counts one open stream until dropped.
struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            // notify_one keeps the wakeup if the connection loop is not waiting right now.
            self.0.all_closed.notify_one();
        }
    }
}

/// PINGs every `interval`; resolves only when a PONG is `timeout` late, i.e. the peer is gone.
async fn keepalive(ping_pong: Option<PingPong>, interval: Duration, timeout: Duration) {
    let Some(mut ping_pong) = ping_pong.filter(|_| !interval.is_zero()) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // The connection is closing; its own error ends the accept loop.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_ztunnel_and_clamp() {
        let o = HboneOptions::default();
        assert_eq!(o.max_concurrent_streams, 200);
        assert_eq!(o.stream_window, 4 << 20);
        assert_eq!(o.connection_window, 16 << 20);
        assert_eq!(o.max_frame_size, 1 << 20);
        assert_eq!(o.max_header_list_size, 64 << 10);
        assert_eq!(o.keepalive_interval, Duration::from_secs(10));
        assert_eq!(o.keepalive_timeout, Duration::from_secs(20));
        assert_eq!(o.idle_timeout, Duration::from_secs(300));
        assert_eq!(o.handshake_timeout, Duration::from_secs(10));
        // Out-of-range values would make h2 panic; building the settings must not.
        let wild = HboneOptions {
            max_frame_size: 1,
            stream_window: u32::MAX,
            connection_window: u32::MAX,
            ..HboneOptions::default()
        };
        let _ = wild.h2_builder();
    }

    #[test]
    fn rejection_labels_are_unique() {
        let mut labels: Vec<_> = HboneRejection::ALL.iter().map(|r| r.reason()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), HboneRejection::ALL.len());
    }
}
