//! Which protocol a connection gets, from its original destination: the one question the
//! connection path asks before it reads a byte.
//!
//! | destination | protocol |
//! |---|---|
//! | a served Service's VIP and port | the Service port's [`ProtocolSelection`] |
//! | a bound Pod's IP | the protocol of a Service port that selects the pod on that port, else detection |
//! | a listener of this waypoint's Gateway | by its `protocol`: `HTTP`/`HTTPS` HTTP, `TCP` TCP, `TLS` passthrough TLS; a `TLS` listener that terminates is TCP and refused by the stream path (not supported) |
//! | nothing served, binding enforced | detection: an HTTP client then gets the usual `404` `NR`, anything else is closed |
//! | nothing served, binding not enforced | HTTP, as before detection existed: without `--gateway` the file-mode harness routes by `Host`, and there is nowhere to send bytes |

use std::net::SocketAddr;

use super::Destination;
use crate::config::resources::{Listener, TlsMode};
use crate::config::{AppProtocol, Config, PortProtocol, ProtocolSelection, SelectedBy};

impl Config {
    /// The protocol of a connection whose original destination is `destination` (see the
    /// module documentation).
    pub fn protocol(&self, destination: Option<SocketAddr>) -> ProtocolSelection {
        match (self.destination(destination), destination) {
            (Destination::Service(backend), _) => backend.protocol.clone(),
            (Destination::Workload(workload), Some(d)) => workload.backend(d).protocol.clone(),
            (Destination::Gateway, Some(d)) => match self.gateway_listener_at(d) {
                Some(listener) => listener_protocol(listener),
                None => ProtocolSelection::http(AppProtocol::Http1),
            },
            _ if self.binding().enforced() => ProtocolSelection::detected(),
            _ => ProtocolSelection::http(AppProtocol::Http1),
        }
    }

    /// The listener of this waypoint's Gateway (of any Gateway when binding is not enforced)
    /// at `address`: the Gateway's address and the listener's port.
    pub fn gateway_listener_at(&self, address: SocketAddr) -> Option<&Listener> {
        let own = self.binding().gateway();
        self.resources
            .gateways
            .iter()
            .filter(|g| {
                own.is_none_or(|o| {
                    g.metadata.namespace() == o.namespace && g.metadata.name == o.name
                })
            })
            .filter(|g| g.ip_addresses().contains(&address.ip()))
            .flat_map(|g| &g.spec.listeners)
            .find(|l| l.port == address.port())
    }
}

/// A Gateway listener's protocol. `HBONE`, `istio.io/PROXY` and other protocols carry HTTP
/// here, as they did before protocols were selected.
fn listener_protocol(listener: &Listener) -> ProtocolSelection {
    let kind = match listener.protocol.as_str() {
        "TCP" => PortProtocol::Tcp,
        "TLS" => match listener.tls.as_ref().map(|t| &t.mode) {
            Some(TlsMode::Passthrough) => PortProtocol::Tls,
            // Terminating TLS for bytes is not supported: the stream path closes these.
            _ => PortProtocol::Tcp,
        },
        _ => PortProtocol::Http,
    };
    ProtocolSelection {
        kind,
        upstream: AppProtocol::Http1,
        selected_by: SelectedBy::Listener(listener.protocol.clone()),
    }
}

/// Whether `listener` is a `TLS` listener that would terminate TLS (not supported for bytes).
pub fn terminates_tls_for_bytes(listener: &Listener) -> bool {
    listener.protocol == "TLS"
        && !matches!(
            listener.tls.as_ref().map(|t| &t.mode),
            Some(TlsMode::Passthrough)
        )
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
