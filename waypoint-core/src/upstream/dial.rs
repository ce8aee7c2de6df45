//! Where the bytes of an upstream HTTP connection go: plain TCP to the endpoint, an HBONE tunnel
//! to the endpoint's ztunnel, or the co-located ztunnel's Unix socket behind a PROXY v2 header.
//! Each produces a [`BoxedIo`] that the HTTP pools speak HTTP/1.1 or h2c over.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

use super::failure::describe;
use super::hbone::HbonePool;
use super::limits::{ConnSettings, Keepalive};
use crate::conn::ConnInfo;
use crate::tls::{CertStore, ExpectedIdentity};
use crate::wire::BoxedIo;
use crate::wire::baggage;
use crate::wire::hbone::is_valid_traceparent;
use crate::wire::proxy_protocol::{TLV_PEER_IDENTITY, encode_v2};

/// On whose behalf the waypoint opens a tunnel: what the HBONE CONNECT headers (or the PROXY
/// header toward a co-located ztunnel) say about the original client.
///
/// Tunnels carry their source in their headers, so HTTP connections over tunnels are pooled per
/// source as well as per endpoint: a pooled connection never speaks for another client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunnelSource {
    /// The original client's address (`forwarded: for=`, PROXY source), when known.
    pub address: Option<SocketAddr>,
    /// The original client's workload metadata as W3C baggage, when known.
    pub baggage: Option<String>,
    /// The W3C `traceparent` the client's own tunnel carried, if any. A fresh one is made for
    /// each tunnel when absent.
    pub traceparent: Option<String>,
}

impl TunnelSource {
    /// What `conn` tells about the client: its address, its workload metadata and trace context.
    pub(crate) fn from_conn(conn: &ConnInfo) -> Self {
        TunnelSource {
            address: conn.source,
            baggage: baggage::encode(&conn.source_workload),
            traceparent: conn
                .traceparent
                .as_deref()
                .filter(|t| is_valid_traceparent(t))
                .map(str::to_owned),
        }
    }

    /// The `forwarded` header value: `for="<ip:port>"` (IPv6 in brackets), as ztunnel sends it.
    pub fn forwarded(&self) -> Option<String> {
        self.address.map(|a| format!("for=\"{a}\""))
    }

    /// The `traceparent` to send: the client's, or a fresh sampled-off one.
    pub(crate) fn traceparent_or_fresh(&self) -> String {
        self.traceparent.clone().unwrap_or_else(fresh_traceparent)
    }
}

/// A new trace context, not sampled, as ztunnel makes one for each tunnel it opens.
fn fresh_traceparent() -> String {
    // Zero ids are invalid in W3C trace context: draw from 1.. instead.
    let trace = fastrand::u128(1..);
    let span = fastrand::u64(1..);
    format!("00-{trace:032x}-{span:016x}-00")
}

/// How one pooled HTTP connection reaches its endpoint. The HTTP pools key their connections by
/// it, so connections of different transports (or, over tunnels, different sources) are never
/// mixed up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum DialPath {
    /// Plain TCP to the endpoint.
    Plain(SocketAddr),
    /// An HBONE tunnel to the endpoint through its node's ztunnel on `<ip>:15008`.
    Hbone {
        endpoint: SocketAddr,
        identity: ExpectedIdentity,
        source: TunnelSource,
    },
    /// The co-located ztunnel's Unix socket, with a PROXY v2 header naming the endpoint.
    Ztunnel {
        endpoint: SocketAddr,
        source: TunnelSource,
    },
}

impl DialPath {
    /// The endpoint (pod ip:port) the connection is for, whatever carries it.
    pub(crate) fn endpoint(&self) -> SocketAddr {
        match self {
            DialPath::Plain(a) => *a,
            DialPath::Hbone { endpoint, .. } | DialPath::Ztunnel { endpoint, .. } => *endpoint,
        }
    }
}

/// Opens the byte stream for a [`DialPath`].
pub(crate) struct Dialer {
    pub(crate) connect_timeout: Duration,
    pub(crate) hbone: Option<Arc<HbonePool>>,
    pub(crate) ztunnel: Option<PathBuf>,
    pub(crate) certs: Option<Arc<CertStore>>,
    pub(crate) own_ip: Option<IpAddr>,
}

impl Dialer {
    /// A connected stream for `to`, within the connect timeout (the backend's, from
    /// `settings`, else the waypoint's). The error is a reason in words, for a local reply.
    pub(crate) async fn dial(
        &self,
        to: &DialPath,
        settings: &ConnSettings,
    ) -> Result<BoxedIo, String> {
        let limit = settings.connect_timeout.unwrap_or(self.connect_timeout);
        match tokio::time::timeout(limit, self.dial_inner(to, settings)).await {
            Ok(result) => result,
            Err(_) => Err(format!("connect timeout after {}ms", limit.as_millis())),
        }
    }

    async fn dial_inner(&self, to: &DialPath, settings: &ConnSettings) -> Result<BoxedIo, String> {
        match to {
            DialPath::Plain(endpoint) => {
                let stream = TcpStream::connect(endpoint)
                    .await
                    .map_err(|e| describe(&e))?;
                // Best effort: a socket that refuses TCP_NODELAY still works, only slower.
                let _ = stream.set_nodelay(true);
                if let Some(keepalive) = &settings.keepalive
                    && let Err(e) = set_keepalive(&stream, keepalive)
                {
                    // The connection works without; say why the setting did not take.
                    tracing::debug!(%endpoint, error = %e, "TCP keepalive not set");
                }
                Ok(Box::new(stream))
            }
            DialPath::Hbone {
                endpoint,
                identity,
                source,
            } => {
                let Some(pool) = &self.hbone else {
                    return Err("HBONE is not configured (no workload certificate)".to_owned());
                };
                let stream = pool
                    .connect(*endpoint, std::slice::from_ref(identity), source)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Box::new(stream))
            }
            DialPath::Ztunnel { endpoint, source } => {
                let Some(path) = &self.ztunnel else {
                    return Err("no ztunnel socket is configured".to_owned());
                };
                let mut stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("ztunnel socket {}: {}", path.display(), describe(&e)))?;
                let header = self.proxy_header(*endpoint, source);
                stream
                    .write_all(&header)
                    .await
                    .map_err(|e| format!("ztunnel socket {}: {}", path.display(), describe(&e)))?;
                Ok(Box::new(stream))
            }
        }
    }

    /// The PROXY v2 header for the co-located ztunnel: source = the original client (or the
    /// waypoint itself, port 0, when unknown), destination = the endpoint, TLV `0xD0` = the
    /// waypoint's own identity when it has a certificate.
    pub(crate) fn proxy_header(&self, endpoint: SocketAddr, source: &TunnelSource) -> Vec<u8> {
        let from = source.address.unwrap_or_else(|| {
            let ip = self.own_ip.unwrap_or(match endpoint {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
            SocketAddr::new(ip, 0)
        });
        let identity = self.certs.as_ref().map(|c| c.identity().to_string());
        let tlvs: Vec<(u8, &[u8])> = identity
            .as_deref()
            .map(|id| (TLV_PEER_IDENTITY, id.as_bytes()))
            .into_iter()
            .collect();
        encode_v2(from, endpoint, &tlvs)
    }
}

/// Turns on `SO_KEEPALIVE` with the parts of `keepalive` that are set; the others keep the
/// system's defaults (as Envoy leaves them). Only plain TCP dials: an HBONE connection is
/// shared by many backends and kept alive by HTTP/2 PINGs, and the ztunnel socket is local.
fn set_keepalive(stream: &TcpStream, keepalive: &Keepalive) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(time) = keepalive.time {
        ka = ka.with_time(time);
    }
    if let Some(interval) = keepalive.interval {
        ka = ka.with_interval(interval);
    }
    if let Some(probes) = keepalive.probes {
        ka = ka.with_retries(probes);
    }
    sock.set_tcp_keepalive(&ka)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::conn::Binding;

    #[tokio::test]
    async fn keepalive_settings_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = DialPath::Plain(listener.local_addr().unwrap());
        let dialer = Dialer {
            connect_timeout: Duration::from_secs(5),
            hbone: None,
            ztunnel: None,
            certs: None,
            own_ip: None,
        };
        let settings = ConnSettings {
            keepalive: Some(Keepalive {
                time: Some(Duration::from_secs(7)),
                interval: Some(Duration::from_secs(3)),
                probes: Some(4),
            }),
            ..Default::default()
        };
        let io = dialer.dial_inner(&to, &settings).await.unwrap();
        drop(io);
        // The stream is boxed; dial a second one directly to read the options back.
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let sock = socket2::SockRef::from(&stream);
        assert!(!sock.keepalive().unwrap());
        set_keepalive(&stream, settings.keepalive.as_ref().unwrap()).unwrap();
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
    }

    #[tokio::test]
    async fn the_backend_connect_timeout_overrides_the_waypoints() {
        // A listener whose accept queue is full: the kernel drops further SYNs, so a dial
        // hangs until a timeout ends it, as toward a blackholed address.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        loop {
            assert!(fillers.len() < 64, "the accept queue never filled");
            let connect = TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_millis(300), connect).await {
                Ok(Ok(s)) => fillers.push(s),
                _ => break,
            }
        }
        let dialer = Dialer {
            connect_timeout: Duration::from_secs(60),
            hbone: None,
            ztunnel: None,
            certs: None,
            own_ip: None,
        };
        let settings = ConnSettings {
            connect_timeout: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        let err = dialer.dial(&DialPath::Plain(addr), &settings).await.err();
        assert_eq!(err.as_deref(), Some("connect timeout after 50ms"));
    }

    #[test]
    fn source_from_conn_and_traceparent() {
        let mut conn = ConnInfo::new(Binding::Hbone);
        conn.source = Some("[fd00::7]:41000".parse().unwrap());
        conn.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let s = TunnelSource::from_conn(&conn);
        assert_eq!(s.forwarded().unwrap(), "for=\"[fd00::7]:41000\"");
        assert_eq!(
            s.traceparent_or_fresh(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(s.baggage, None);

        // A malformed client traceparent is not passed on; a fresh one replaces it.
        conn.traceparent = Some("00-zz-1-01".into());
        conn.source = None;
        let s = TunnelSource::from_conn(&conn);
        assert_eq!(s.traceparent, None);
        assert_eq!(s.forwarded(), None);
        let fresh = s.traceparent_or_fresh();
        assert!(is_valid_traceparent(&fresh), "{fresh}");
        assert!(fresh.starts_with("00-") && fresh.ends_with("-00"));
        assert_ne!(fresh, s.traceparent_or_fresh());
    }

    #[test]
    fn proxy_header_names_source_endpoint() {
        let dialer = Dialer {
            connect_timeout: Duration::from_secs(1),
            hbone: None,
            ztunnel: None,
            certs: None,
            own_ip: None,
        };
        let endpoint: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let source = TunnelSource {
            address: Some("10.9.9.9:5555".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            dialer.proxy_header(endpoint, &source),
            encode_v2("10.9.9.9:5555".parse().unwrap(), endpoint, &[])
        );
        // Unknown source: the waypoint itself, port 0.
        assert_eq!(
            dialer.proxy_header(endpoint, &TunnelSource::default()),
            encode_v2("0.0.0.0:0".parse().unwrap(), endpoint, &[])
        );
    }
}
