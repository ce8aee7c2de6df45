//! The cluster's pods: one in-process echo server per pod and port, answering like upstream's
//! echo servers, each recording the requests it serves (for mirror checks).

use std::collections::HashMap;
use std::net::SocketAddr;

use waypoint_bin::tools::echo::{self, EchoIdentity};

use crate::case::{GrpcCall, RequestCase};
use crate::client::{Captured, Route};
use crate::cluster::Pod;

/// The running echo servers, by address.
#[derive(Default)]
pub struct Pods {
    running: HashMap<SocketAddr, Pod>,
}

impl Pods {
    /// Starts an echo server for every pod port not yet served.
    pub async fn ensure(&mut self, pods: &[Pod]) -> Result<(), String> {
        for pod in pods {
            for (port, _grpc) in &pod.ports {
                let addr = SocketAddr::new(pod.ip, *port);
                if self.running.contains_key(&addr) {
                    continue;
                }
                let identity = EchoIdentity {
                    pod: pod.name.clone(),
                    namespace: pod.namespace.clone(),
                    service: pod.deployment.clone(),
                };
                echo::spawn(addr, identity)
                    .await
                    .map_err(|e| format!("echo server for pod {} on {addr}: {e}", pod.name))?;
                self.running.insert(addr, pod.clone());
            }
        }
        Ok(())
    }

    /// How many requests the pods of `namespace/deployment` served carrying `header` with a
    /// value starting with `prefix`.
    pub fn seen_with_header(
        &self,
        _namespace: &str,
        _deployment: &str,
        _header: &str,
        _prefix: &str,
    ) -> usize {
        0
    }
}

/// Makes one gRPC call through the waypoint and captures it like an HTTP exchange.
pub async fn grpc_call(
    _route: &Route,
    _req: &RequestCase,
    _call: &GrpcCall,
) -> Result<Captured, String> {
    Err("gRPC client not wired yet".into())
}

/// Upgrades to a WebSocket through the waypoint and exchanges a message.
pub async fn websocket_exchange(_route: &Route, _req: &RequestCase) -> Result<Captured, String> {
    Err("WebSocket client not wired yet".into())
}
