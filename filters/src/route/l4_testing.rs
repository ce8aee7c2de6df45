//! Test harness for TCPRoute and TLSRoute: a route table built from manifests, connections run
//! through its connection phase, the status reported; and the upstream conformance cases'
//! manifests loaded as the suite applies them (from `WAYPOINT_CONFORMANCE_DIR`, else the shared
//! copy of the release at `../shared/conformance/gateway-api-v1.6.1`).
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use waypoint_core::config::PortProtocol;
use waypoint_core::config::resources::{Gateway, Listener};
use waypoint_core::filter::testing::{TestChain, conn};
use waypoint_core::filter::{ConnectionContext, ConnectionDecision};

use super::RouteFactory;

/// A route table built from manifests, and connections run through it.
pub(super) struct L4 {
    pub(super) harness: TestChain,
}

impl L4 {
    pub(super) fn new(manifests: &str) -> Self {
        let harness = TestChain::new(
            manifests,
            |filters: &mut waypoint_core::filter::FilterSet| {
                filters.factory(RouteFactory);
            },
        )
        .expect("manifests parse");
        L4 { harness }
    }

    /// Runs the connection phase for a connection to `dest` carried as `protocol`, with `sni`.
    pub(super) async fn connect(
        &self,
        dest: &str,
        protocol: PortProtocol,
        sni: Option<&str>,
    ) -> (ConnectionDecision, ConnectionContext) {
        let config = self.harness.config().clone();
        let mut ctx = ConnectionContext::new(Arc::new(conn(dest)), config, protocol)
            .with_sni(sni.map(str::to_owned));
        let decision = self.harness.chain().run_connection(&mut ctx).await;
        (decision, ctx)
    }

    /// `namespace/name` of the upstream Service, or `closed <flags>` when the connection was
    /// closed. A TLS connection when `sni` is given, else TCP.
    pub(super) async fn backend(&self, dest: &str, sni: Option<&str>) -> String {
        let protocol = if sni.is_some() {
            PortProtocol::Tls
        } else {
            PortProtocol::Tcp
        };
        let (decision, ctx) = self.connect(dest, protocol, sni).await;
        let flags: Vec<&str> = ctx.response_flags.iter().map(|f| f.as_str()).collect();
        match decision {
            ConnectionDecision::Continue => {
                let upstream = ctx.upstream.expect("an upstream when not closed");
                let service = &upstream.backend.service;
                format!("{}/{}", service.namespace, service.name)
            }
            ConnectionDecision::Close(why) => {
                assert!(why.starts_with("waypoint: "), "{why}");
                format!("closed {}", flags.join(","))
            }
        }
    }

    /// How `n` connections to `dest` were spread over backends.
    pub(super) async fn spread(&self, dest: &str, n: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            *counts.entry(self.backend(dest, None).await).or_insert(0) += 1;
        }
        counts
    }

    /// `Accepted=<status>/<reason> ResolvedRefs=...` of `route` for its parent named `parent`.
    pub(super) fn parent(&self, route: &str, parent: &str) -> String {
        let out = self.harness.output();
        let p = out
            .route_parents
            .iter()
            .find(|p| p.route.name == route && p.parent.name == parent)
            .unwrap_or_else(|| {
                panic!("no status of {route} for {parent}: {:?}", out.route_parents)
            });
        p.conditions
            .iter()
            .map(|c| format!("{}={}/{}", c.kind, c.status, c.reason))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `attachedRoutes` and the conditions (`Type=status/Reason`) of a Gateway's listener.
    pub(super) fn listener(&self, gateway: &str, listener: &str) -> (u32, String) {
        let out = self.harness.output();
        let g = out
            .gateways
            .iter()
            .find(|g| g.gateway.name == gateway)
            .unwrap_or_else(|| panic!("no status of Gateway {gateway}"));
        let l = g.listeners.iter().find(|l| l.name == listener).unwrap();
        let conditions = l
            .conditions
            .iter()
            .map(|c| format!("{}={}/{}", c.kind, c.status, c.reason))
            .collect::<Vec<_>>()
            .join(" ");
        (l.attached_routes, conditions)
    }
}

pub(super) fn conformance_dir() -> Option<PathBuf> {
    let root = std::env::var_os("WAYPOINT_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/gateway-api-v1.6.1")
        });
    let dir = root.join("conformance");
    if dir.is_dir() {
        return Some(dir);
    }
    // In CI the manifests must be there: a silent skip would hide a broken setup.
    assert!(
        std::env::var_os("CI").is_none(),
        "no conformance manifests at {} (set WAYPOINT_CONFORMANCE_DIR)",
        dir.display()
    );
    println!("skipping: no conformance manifests at {}", dir.display());
    None
}

/// The base manifests and the case's `tests/<file>`, each Gateway given the address `10.9.0.N`
/// (Nth Gateway) so its listeners are served, plus `extra` documents.
pub(super) fn case(file: &str, extra: &str) -> Option<L4> {
    let dir = conformance_dir()?;
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let base = read(dir.join("base/manifests.yaml"));
    let test = read(dir.join("tests").join(file));
    let mut gateways = 0;
    let docs: Vec<String> = format!("{base}\n---\n{test}\n---\n{extra}")
        .replace("{GATEWAY_CLASS_NAME}", "waypoint")
        .split("\n---")
        .map(|doc| {
            // The API server stamps every object; the oldest route wins ties.
            let doc = if doc.contains("Route\nmetadata:\n") && !doc.contains("creationTimestamp") {
                doc.replacen(
                    "\nmetadata:\n",
                    "\nmetadata:\n  creationTimestamp: \"2026-01-01T00:00:00Z\"\n",
                    1,
                )
            } else {
                doc.to_owned()
            };
            if doc.contains("\nkind: Gateway\n") && !doc.contains("\nstatus:") {
                gateways += 1;
                format!(
                    "{doc}\nstatus:\n  addresses: [{{type: IPAddress, value: 10.9.0.{gateways}}}]\n"
                )
            } else {
                doc
            }
        })
        .collect();
    Some(L4::new(&docs.join("\n---")))
}

/// The address the Gateway `name` was given by [`case`], with `port`.
pub(super) fn address(l4: &L4, name: &str, port: u16) -> String {
    let gw: &Gateway = l4
        .harness
        .config()
        .resources
        .gateways
        .iter()
        .find(|g| g.metadata.name == name)
        .unwrap_or_else(|| panic!("no Gateway {name}"));
    format!("{}:{port}", gw.ip_addresses()[0])
}

pub(super) fn listener_spec<'a>(l4: &'a L4, gateway: &str, listener: &str) -> &'a Listener {
    l4.harness
        .config()
        .resources
        .gateways
        .iter()
        .find(|g| g.metadata.name == gateway)
        .and_then(|g| g.spec.listeners.iter().find(|l| l.name == listener))
        .unwrap_or_else(|| panic!("no listener {gateway}/{listener}"))
}

pub(super) const INFRA: &str = "gateway-conformance-infra";
