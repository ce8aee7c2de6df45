//! Protocol selection: what the waypoint does with the connections to one Service port, decided
//! the way Istio decides it (`pkg/config/kube` `ConvertProtocol`, `pkg/config/protocol`):
//!
//! 1. the port's `appProtocol` when it is set (even to a value Istio does not know), else the
//!    port name; of either, the part before the first `-` (`grpc-api`, `redis-main`), except
//!    that a `grpc-web` prefix means gRPC-Web;
//! 3. else, on a port Istio knows as server-first (25, 53, 3306, 27017), TCP;
//! 4. else nothing was said: the first bytes of each connection decide (*detection*): an
//!    HTTP/1.x request line or the HTTP/2 preface is HTTP, anything else, or silence until the
//!    detection timeout (a server-first protocol such as MySQL sends nothing first), is TCP.
//!
//! | named | the waypoint |
//! |---|---|
//! | `http`, `http_proxy`, `grpc-web`, appProtocol `kubernetes.io/ws` | HTTP/1.1 (to the backend too) |
//! | `http2`, `grpc`, appProtocol `kubernetes.io/h2c` | HTTP, h2c to the backend |
//! | `tls`, `https`, appProtocol `kubernetes.io/wss` | TLS passthrough: bytes, with the ClientHello's SNI |
//! | `tcp`, `mongo`, `mysql`, `redis` | TCP: bytes |
//! | anything else, or nothing | detection |
//!
//! Names are compared ignoring ASCII case, as Istio does. `udp` ports never reach a waypoint
//! (Services' UDP ports are not captured), and the config keeps only TCP ports.

use std::fmt;

use serde::Serialize;

use super::AppProtocol;

/// What the waypoint does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// HTTP: requests through the filter chain.
    Http,
    /// Opaque bytes: authorized once (L4), then spliced to an endpoint.
    Tcp,
    /// TLS the client originates, passed through unterminated; the ClientHello's SNI may
    /// select a TLSRoute.
    Tls,
    /// Nothing named a protocol: the connection's first bytes decide between HTTP and TCP.
    Detect,
}

impl PortProtocol {
    /// The lowercase name used in `/config_dump`, `waypoint check` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Http => "http",
            PortProtocol::Tcp => "tcp",
            PortProtocol::Tls => "tls",
            PortProtocol::Detect => "detect",
        }
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which field decided a port's protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase", tag = "by", content = "value")]
pub enum SelectedBy {
    /// The Service port's (or its EndpointSlice port's) `appProtocol`.
    AppProtocol(String),
    /// The Service port's name.
    PortName(String),
    /// A Gateway listener's `protocol`.
    Listener(String),
    /// Nothing named a protocol and the port is one Istio treats as TCP (25, 53, 3306, 27017).
    WellKnownPort(u16),
    /// Nothing named a protocol.
    Unspecified,
}

impl fmt::Display for SelectedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectedBy::AppProtocol(v) => write!(f, "appProtocol {v:?}"),
            SelectedBy::PortName(v) => write!(f, "port name {v:?}"),
            SelectedBy::Listener(v) => write!(f, "listener protocol {v:?}"),
            SelectedBy::WellKnownPort(p) => write!(f, "well-known port {p}"),
            SelectedBy::Unspecified => f.write_str("no appProtocol or known port name"),
        }
    }
}

/// A port's protocol and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ProtocolSelection {
    /// What the waypoint does with connections to the port.
    pub kind: PortProtocol,
    /// How HTTP requests are sent on to the endpoints (for `Http` and a detected HTTP).
    #[serde(skip)]
    pub upstream: AppProtocol,
    /// Which field decided.
    #[serde(flatten)]
    pub selected_by: SelectedBy,
}

impl ProtocolSelection {
    /// HTTP/1.1 both ways, as if a port said `http`: for backends built outside a Service.
    pub fn http(upstream: AppProtocol) -> Self {
        ProtocolSelection {
            kind: PortProtocol::Http,
            upstream,
            selected_by: SelectedBy::Unspecified,
        }
    }

    /// Nothing named the protocol: detection, HTTP/1.1 to the endpoint when HTTP is detected.
    pub fn detected() -> Self {
        ProtocolSelection {
            kind: PortProtocol::Detect,
            upstream: AppProtocol::Http1,
            selected_by: SelectedBy::Unspecified,
        }
    }

    /// The selection for Service port `port` named `port_name` with `app_protocol` (the
    /// Service port's, else its EndpointSlice port's).
    pub fn for_service_port(port: u16, app_protocol: Option<&str>, port_name: &str) -> Self {
        // As Istio: a set appProtocol replaces the name entirely, even when it names nothing
        // known; the Kubernetes-defined values are only meaningful there.
        let (name, selected_by) = match app_protocol {
            Some(v) => (v, SelectedBy::AppProtocol(v.to_owned())),
            None => (port_name, SelectedBy::PortName(port_name.to_owned())),
        };
        let kubernetes = match (app_protocol, name) {
            (Some(_), "kubernetes.io/h2c") => Some((PortProtocol::Http, AppProtocol::H2c)),
            (Some(_), "kubernetes.io/ws") => Some((PortProtocol::Http, AppProtocol::Http1)),
            (Some(_), "kubernetes.io/wss") => Some((PortProtocol::Tls, AppProtocol::Http1)),
            _ => None,
        };
        let grpc_web = name
            .get(..GRPC_WEB.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(GRPC_WEB));
        let prefix = name.split('-').next().unwrap_or_default();
        let known = kubernetes
            .or(grpc_web.then_some((PortProtocol::Http, AppProtocol::Http1)))
            .or_else(|| named(prefix));
        match known {
            Some((protocol, upstream)) => ProtocolSelection {
                kind: protocol,
                upstream,
                selected_by,
            },
            // Server-first protocols on their well-known ports would stall detection.
            None if WELL_KNOWN_TCP_PORTS.contains(&port) => ProtocolSelection {
                kind: PortProtocol::Tcp,
                upstream: AppProtocol::Http1,
                selected_by: SelectedBy::WellKnownPort(port),
            },
            None => ProtocolSelection::detected(),
        }
    }
}

const GRPC_WEB: &str = "grpc-web";

/// Ports Istio treats as TCP when nothing names their protocol: SMTP, DNS, MySQL, MongoDB.
const WELL_KNOWN_TCP_PORTS: [u16; 4] = [25, 53, 3306, 27017];

/// The protocol one name (a port name's prefix, or an appProtocol) stands for, if Istio knows
/// it (`protocol.Parse`).
fn named(value: &str) -> Option<(PortProtocol, AppProtocol)> {
    let is = |name: &str| value.eq_ignore_ascii_case(name);
    let http = |upstream| Some((PortProtocol::Http, upstream));
    if is("http") || is("http_proxy") {
        http(AppProtocol::Http1)
    } else if is("http2") || is("grpc") {
        http(AppProtocol::H2c)
    } else if is("tls") || is("https") {
        Some((PortProtocol::Tls, AppProtocol::Http1))
    } else if is("tcp") || is("mongo") || is("mysql") || is("redis") {
        Some((PortProtocol::Tcp, AppProtocol::Http1))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(port: u16, app: Option<&str>, name: &str) -> (PortProtocol, AppProtocol) {
        let s = ProtocolSelection::for_service_port(port, app, name);
        (s.kind, s.upstream)
    }

    #[test]
    fn app_protocol_replaces_the_port_name() {
        let s = ProtocolSelection::for_service_port(80, Some("redis"), "http-web");
        assert_eq!(
            (s.kind, s.upstream),
            (PortProtocol::Tcp, AppProtocol::Http1)
        );
        assert_eq!(s.selected_by, SelectedBy::AppProtocol("redis".into()));
        let h2c = select(80, Some("kubernetes.io/h2c"), "tcp");
        assert_eq!(h2c, (PortProtocol::Http, AppProtocol::H2c));
        // An appProtocol Istio does not know is not rescued by a telling port name.
        let s = ProtocolSelection::for_service_port(80, Some("example.com/x"), "mysql");
        assert_eq!(
            (s.kind, s.selected_by),
            (PortProtocol::Detect, SelectedBy::Unspecified)
        );
    }

    #[test]
    fn names_select_by_their_prefix_ignoring_case() {
        let (http, h2c, tls, tcp, detect) = (
            (PortProtocol::Http, AppProtocol::Http1),
            (PortProtocol::Http, AppProtocol::H2c),
            (PortProtocol::Tls, AppProtocol::Http1),
            (PortProtocol::Tcp, AppProtocol::Http1),
            (PortProtocol::Detect, AppProtocol::Http1),
        );
        let table = [
            ("http", http),
            ("HTTP-admin", http),
            ("http_proxy", http),
            ("http2", h2c),
            ("grpc-api", h2c),
            ("grpc-web", http),
            ("GRPC-Web-ui", http),
            ("https", tls),
            ("tls-passthrough", tls),
            ("tcp", tcp),
            ("mongo-0", tcp),
            ("mysql", tcp),
            ("redis", tcp),
            ("web", detect),
            ("", detect),
            ("httpx", detect),
            ("kubernetes.io/h2c", detect),
        ];
        for (name, expected) in table {
            assert_eq!(select(8080, None, name), expected, "port name {name:?}");
        }
        assert_eq!(select(8080, Some("kubernetes.io/wss"), ""), tls);
        assert_eq!(select(8080, Some("kubernetes.io/ws"), ""), http);
        assert_eq!(select(8080, Some("GRPC"), ""), h2c);
    }

    #[test]
    fn unnamed_well_known_server_first_ports_are_tcp() {
        for port in [25, 53, 3306, 27017] {
            let s = ProtocolSelection::for_service_port(port, None, "db");
            assert_eq!(s.kind, PortProtocol::Tcp, "port {port}");
            assert_eq!(s.selected_by, SelectedBy::WellKnownPort(port));
        }
        assert_eq!(select(3306, None, "http").0, PortProtocol::Http);
    }
}
