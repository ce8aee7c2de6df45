//! Attaching compiled routes to their parents at build time: Services (GAMMA) by ClusterIP,
//! Gateways by listener (sectionName, port, allowedRoutes, hostname intersection). Every parent
//! we implement gets its `Accepted`/`ResolvedRefs` conditions, and every Gateway its status.
//!
//! A Gateway is `Accepted` while at least one listener is (reason `ListenersNotValid` when
//! some are not), and is refused with `InvalidParameters` when it names a `parametersRef`, which
//! the waypoint never reads; its listeners are served regardless (see [`gateway_conditions`]).
//!
//! A listener takes the route kinds its protocol carries ([`Listener::servable_route_kinds`]:
//! HTTP/HTTPS take HTTPRoute and GRPCRoute, TCP takes TCPRoute, TLS Passthrough takes
//! TLSRoute); a route of another kind is `NotAllowedByListeners` there. Every route a listener
//! accepts counts in its `attachedRoutes`, even where an older TCPRoute on the same listener
//! takes all the traffic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use waypoint_core::config::resources::{
    FromNamespaces, Gateway, LabelSelector, Listener, Object, ParentReference, TlsMode,
};
use waypoint_core::config::{Condition, Config, ListenerRefProblem, ResourceRef};
use waypoint_core::filter::BuildContext;
use waypoint_core::route_status::{GatewayStatus, ListenerStatus, ParentRefKey, RouteParentStatus};

use super::compile::{Ranked, report};
use super::gateway::{GatewayPort, HostPattern, HostRoutes, ListenerRoutes};
use super::grpc::GrpcMatch;
use super::index::HttpRoutes;
use super::l4::L4Match;
use super::matcher::RequestMatch;
use super::{RouteEntry, RouteSet, RouteTable, Rule};
use waypoint_core::config::resources::{GATEWAY_API_GROUP, ISTIO_NETWORKING_GROUP};

/// One compiled match of one rule, with what precedence ties are broken on.
#[derive(Clone)]
pub(super) struct Ordered<M> {
    pub(super) matcher: M,
    pub(super) rule: Arc<Rule>,
    pub(super) created: Option<String>,
    pub(super) route: ResourceRef,
    pub(super) match_index: usize,
}

/// The matches of one route, of its kind.
pub(super) enum Entries {
    Http(Vec<Ordered<RequestMatch>>),
    Grpc(Vec<Ordered<GrpcMatch>>),
    /// The rule of a TCPRoute.
    Tcp(Vec<Ordered<L4Match>>),
    /// The rule of a TLSRoute, its hostnames on the match.
    Tls(Vec<Ordered<L4Match>>),
}

impl Entries {
    /// Whether these are the rules of a TCPRoute or TLSRoute.
    fn is_l4(&self) -> bool {
        matches!(self, Entries::Tcp(_) | Entries::Tls(_))
    }
}

/// What attaching needs to know of a route, whatever its kind.
pub(super) struct RouteView<'a> {
    /// `HTTPRoute`, `GRPCRoute`, `TCPRoute` or `TLSRoute`.
    pub(super) kind: &'static str,
    pub(super) route: ResourceRef,
    pub(super) parents: &'a [ParentReference],
    pub(super) hostnames: &'a [String],
    /// The route's `ResolvedRefs` condition (the same for every parent).
    pub(super) resolved: Condition,
    /// The route's `metadata.generation`.
    pub(super) generation: Option<i64>,
    pub(super) entries: Entries,
}

#[derive(Default)]
struct PendingSet {
    http: Vec<Ordered<RequestMatch>>,
    grpc: Vec<Ordered<GrpcMatch>>,
    tcp: Vec<Ordered<L4Match>>,
    tls: Vec<Ordered<L4Match>>,
}

impl PendingSet {
    fn extend(&mut self, entries: &Entries) {
        match entries {
            Entries::Http(e) => self.http.extend(e.iter().cloned()),
            Entries::Grpc(e) => self.grpc.extend(e.iter().cloned()),
            Entries::Tcp(e) => self.tcp.extend(e.iter().cloned()),
            Entries::Tls(e) => self.tls.extend(e.iter().cloned()),
        }
    }

    /// Adds the rules of a TLSRoute (or TCPRoute) attached to a listener, their hostnames
    /// narrowed to `hosts`, the route's intersected with the listener's.
    fn extend_l4(&mut self, entries: &Entries, hosts: &[HostPattern]) {
        let narrowed = |e: &Vec<Ordered<L4Match>>| {
            e.iter()
                .map(|o| Ordered {
                    matcher: L4Match {
                        hosts: hosts.to_vec(),
                    },
                    ..o.clone()
                })
                .collect::<Vec<_>>()
        };
        match entries {
            Entries::Tcp(e) => self.tcp.extend(narrowed(e)),
            Entries::Tls(e) => self.tls.extend(narrowed(e)),
            Entries::Http(_) | Entries::Grpc(_) => self.extend(entries),
        }
    }

    fn into_set(self) -> RouteSet {
        RouteSet {
            http: HttpRoutes::new(sorted(self.http)),
            grpc: sorted(self.grpc),
            tcp: sorted(self.tcp),
            tls: sorted(self.tls),
        }
    }
}

/// Gateway API precedence: the match itself, then the oldest route, then `namespace/name`,
/// then rule order, then match order.
fn sorted<M: Ranked>(mut list: Vec<Ordered<M>>) -> Vec<RouteEntry<M>> {
    list.sort_by(|a, b| {
        a.matcher
            .rank_cmp(&b.matcher)
            .then_with(|| match (&a.created, &b.created) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| {
                (&a.route.namespace, &a.route.name).cmp(&(&b.route.namespace, &b.route.name))
            })
            .then_with(|| a.rule.route.rule.cmp(&b.rule.route.rule))
            .then_with(|| a.match_index.cmp(&b.match_index))
    });
    list.into_iter()
        .map(|o| RouteEntry {
            matched: o.matcher.matched(),
            matcher: o.matcher,
            rule: o.rule,
        })
        .collect()
}

fn cond(kind: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        kind: kind.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

/// The `ResolvedRefs` condition of a route whose backend problems are `failures` (reason,
/// message), the first one deciding.
pub(super) fn resolved_refs<'r>(
    mut failures: impl Iterator<Item = (&'r str, &'r str)>,
) -> Condition {
    match failures.next() {
        Some((reason, message)) => cond("ResolvedRefs", false, reason, message),
        None => cond(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "all backendRefs resolved",
        ),
    }
}

/// Listener protocols routes attach to (HTTPS listeners terminate TLS in the serving layer,
/// then route like HTTP; TCP and TLS Passthrough listeners route connections).
fn routable(l: &Listener) -> bool {
    !l.servable_route_kinds().is_empty()
}

/// Accumulates attachments, then builds the table and the Gateway statuses.
pub(super) struct Builder<'a> {
    config: &'a Config,
    namespaces: HashMap<&'a str, &'a BTreeMap<String, String>>,
    services: HashMap<(SocketAddr, Option<String>), PendingSet>,
    listeners: HashMap<(usize, usize), HashMap<HostPattern, PendingSet>>,
    attached: HashMap<(usize, usize), HashSet<ResourceRef>>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(config: &'a Config) -> Self {
        let namespaces = config
            .resources
            .others
            .iter()
            .filter(|o| o.group().is_empty() && o.kind == "Namespace")
            .map(|o| (o.metadata.name.as_str(), &o.metadata.labels))
            .collect();
        Builder {
            config,
            namespaces,
            services: HashMap::new(),
            listeners: HashMap::new(),
            attached: HashMap::new(),
        }
    }

    /// Attaches `view` to each of its parents, reporting each parent's conditions.
    pub(super) fn attach(&mut self, cx: &mut BuildContext<'_>, view: &RouteView<'_>) {
        for (p, parent) in view.parents.iter().enumerate() {
            let is_service =
                parent.kind == "Service" && (parent.group.is_empty() || parent.group == "core");
            if is_service {
                self.attach_service(cx, view, p, parent, "Service");
            } else if parent.group == ISTIO_NETWORKING_GROUP && parent.kind == "ServiceEntry" {
                // istiod attaches a route to a ServiceEntry exactly as to a Service: by the
                // entry's addresses and ports.
                self.attach_service(cx, view, p, parent, "ServiceEntry");
            } else if parent.group == GATEWAY_API_GROUP && parent.kind == "Gateway" {
                self.attach_gateway(cx, view, p, parent);
            } else {
                report(
                    cx,
                    &view.route,
                    "Accepted",
                    "InvalidKind",
                    format!(
                        "spec.parentRefs[{p}]: parent kind {}/{} is not supported",
                        parent.group, parent.kind
                    ),
                );
            }
        }
    }

    fn parent_status(
        cx: &mut BuildContext<'_>,
        view: &RouteView<'_>,
        key: ParentRefKey,
        accepted: Condition,
    ) {
        cx.report_parent(RouteParentStatus {
            route: view.route.clone(),
            parent: key,
            conditions: vec![accepted, view.resolved.clone()],
            observed_generation: view.generation,
        });
    }

    fn attach_service(
        &mut self,
        cx: &mut BuildContext<'_>,
        view: &RouteView<'_>,
        p: usize,
        parent: &ParentReference,
        kind: &str,
    ) {
        let route_ns = view.route.namespace.as_str();
        let service_ns = parent.namespace.as_deref().unwrap_or(route_ns);
        let group = if kind == "ServiceEntry" {
            ISTIO_NETWORKING_GROUP
        } else {
            ""
        };
        let key = ParentRefKey {
            group: group.into(),
            kind: kind.into(),
            namespace: service_ns.into(),
            name: parent.name.clone(),
            section_name: parent.section_name.clone(),
            port: parent.port,
        };
        let addresses: Vec<_> = self
            .config
            .backends()
            .filter(|b| {
                b.service.kind == kind
                    && b.service.namespace == service_ns
                    && b.service.name == parent.name
            })
            .filter(|b| parent.port.is_none_or(|port| port == b.port))
            .flat_map(|b| {
                b.cluster_ips
                    .iter()
                    .map(move |ip| SocketAddr::new(*ip, b.port))
            })
            .collect();
        if addresses.is_empty() {
            let what = match parent.port {
                Some(port) => format!("{kind} {service_ns}/{} port {port}", parent.name),
                None if kind == "ServiceEntry" => {
                    format!("{kind} {service_ns}/{} with an address", parent.name)
                }
                None => format!("{kind} {service_ns}/{} with a cluster IP", parent.name),
            };
            let message = format!("spec.parentRefs[{p}]: no {what}");
            Self::parent_status(
                cx,
                view,
                key,
                cond("Accepted", false, "NoMatchingParent", message),
            );
            return;
        }
        let consumer = (service_ns != route_ns).then(|| route_ns.to_owned());
        for address in addresses {
            self.services
                .entry((address, consumer.clone()))
                .or_default()
                .extend(&view.entries);
        }
        Self::parent_status(
            cx,
            view,
            key,
            cond("Accepted", true, "Accepted", "attached"),
        );
    }

    fn attach_gateway(
        &mut self,
        cx: &mut BuildContext<'_>,
        view: &RouteView<'_>,
        p: usize,
        parent: &ParentReference,
    ) {
        let route_ns = view.route.namespace.as_str();
        let gw_ns = parent.namespace.as_deref().unwrap_or(route_ns);
        let gateways = &self.config.resources.gateways;
        let Some(gi) = gateways
            .iter()
            .position(|g| g.metadata.namespace() == gw_ns && g.metadata.name == parent.name)
        else {
            // Not a Gateway of this config: another implementation's, so no status from us.
            return;
        };
        let gw: &Gateway = &gateways[gi];
        let key = ParentRefKey {
            group: GATEWAY_API_GROUP.into(),
            kind: "Gateway".into(),
            namespace: gw_ns.into(),
            name: parent.name.clone(),
            section_name: parent.section_name.clone(),
            port: parent.port,
        };
        let at = format!("spec.parentRefs[{p}]");
        let listeners = &gw.spec.listeners;
        let selected: Vec<usize> = (0..listeners.len())
            .filter(|&i| {
                parent
                    .section_name
                    .as_ref()
                    .is_none_or(|s| *s == listeners[i].name)
            })
            .filter(|&i| parent.port.is_none_or(|port| port == listeners[i].port))
            .collect();
        let fail =
            |reason: &str, why: String| cond("Accepted", false, reason, format!("{at}: {why}"));
        if selected.is_empty() {
            let why = format!("{} has no listener{}", gw.resource_ref(), wanted(parent));
            Self::parent_status(cx, view, key, fail("NoMatchingParent", why));
            return;
        }
        let allowed: Vec<usize> = selected
            .into_iter()
            .filter(|&i| self.allows(&listeners[i], gw_ns, view.kind, route_ns))
            .collect();
        if allowed.is_empty() {
            let why = format!(
                "no listener of {}{} allows {} from namespace {route_ns}",
                gw.resource_ref(),
                wanted(parent),
                view.kind
            );
            Self::parent_status(cx, view, key, fail("NotAllowedByListeners", why));
            return;
        }
        let route_hosts: Vec<HostPattern> = if view.hostnames.is_empty() {
            vec![HostPattern::Any]
        } else {
            view.hostnames
                .iter()
                .map(|h| HostPattern::parse(Some(h)))
                .collect()
        };
        let mut accepted = false;
        for li in allowed {
            let listener_host = listener_hostname(&listeners[li]);
            let mut effective: Vec<HostPattern> = route_hosts
                .iter()
                .filter_map(|h| h.intersect(&listener_host))
                .collect();
            effective.dedup();
            if effective.is_empty() {
                continue;
            }
            accepted = true;
            self.attached
                .entry((gi, li))
                .or_default()
                .insert(view.route.clone());
            let hosts = self.listeners.entry((gi, li)).or_default();
            if view.entries.is_l4() {
                // Connections are routed by SNI within the listener (l4.rs), so its TCPRoutes
                // and TLSRoutes share one set, each with its effective hostnames.
                hosts
                    .entry(HostPattern::Any)
                    .or_default()
                    .extend_l4(&view.entries, &effective);
                continue;
            }
            for host in effective {
                hosts.entry(host).or_default().extend(&view.entries);
            }
        }
        if accepted {
            Self::parent_status(
                cx,
                view,
                key,
                cond("Accepted", true, "Accepted", "attached"),
            );
        } else {
            let why = format!(
                "no hostname of the route intersects a listener hostname of {}{}",
                gw.resource_ref(),
                wanted(parent)
            );
            Self::parent_status(cx, view, key, fail("NoMatchingListenerHostname", why));
        }
    }

    /// Whether `listener` of a Gateway in `gw_ns` takes routes of `kind` from `route_ns`.
    fn allows(&self, listener: &Listener, gw_ns: &str, kind: &str, route_ns: &str) -> bool {
        let allowed = &listener.allowed_routes;
        listener.supported_route_kinds().contains(&kind)
            && match allowed.namespaces.from {
                FromNamespaces::Same => gw_ns == route_ns,
                FromNamespaces::All => true,
                FromNamespaces::Selector => allowed
                    .namespaces
                    .selector
                    .as_ref()
                    .is_some_and(|s| self.selects(s, route_ns)),
            }
    }

    /// Whether `selector` matches namespace `ns`'s labels (from its `Namespace` manifest, plus
    /// the `kubernetes.io/metadata.name` label Kubernetes always sets).
    fn selects(&self, selector: &LabelSelector, ns: &str) -> bool {
        selector.selects_namespace(ns, self.namespaces.get(ns).copied())
    }

    /// The route table, with each Gateway's status reported.
    pub(super) fn finish(mut self, cx: &mut BuildContext<'_>) -> RouteTable {
        let mut table = RouteTable::default();
        for ((address, consumer), pending) in self.services.drain() {
            let routes = table.by_destination.entry(address).or_default();
            match consumer {
                Some(ns) => {
                    routes.consumers.insert(ns, pending.into_set());
                }
                None => routes.producer = pending.into_set(),
            }
        }
        for (gi, gw) in self.config.resources.gateways.iter().enumerate() {
            let addresses = gw.ip_addresses();
            let mut listeners = Vec::new();
            for (li, l) in gw.spec.listeners.iter().enumerate() {
                let attached = self.attached.get(&(gi, li)).map_or(0, HashSet::len);
                let tls_problem = self
                    .config
                    .listener_tls_problem(&gw.resource_ref(), &l.name);
                listeners.push(listener_status(
                    l,
                    attached,
                    !addresses.is_empty(),
                    tls_problem,
                ));
                if !routable(l) || addresses.is_empty() {
                    continue;
                }
                let mut hosts = HostRoutes::default();
                for (host, pending) in self.listeners.remove(&(gi, li)).unwrap_or_default() {
                    hosts.insert(host, pending.into_set());
                }
                let served = Arc::new(ListenerRoutes {
                    label: format!("{} listener {}", gw.resource_ref(), l.name),
                    hostname: listener_hostname(l),
                    hosts,
                });
                for ip in &addresses {
                    let port: &mut GatewayPort = table
                        .gateways
                        .entry(SocketAddr::new(*ip, l.port))
                        .or_default();
                    port.listeners.push(served.clone());
                }
            }
            cx.report_gateway(GatewayStatus {
                gateway: gw.resource_ref(),
                addresses: addresses.iter().map(ToString::to_string).collect(),
                conditions: gateway_conditions(
                    gw,
                    &listeners,
                    !addresses.is_empty(),
                    self.config
                        .binding()
                        .malformed_inbound_binding(&gw.resource_ref()),
                ),
                listeners,
                observed_generation: gw.metadata.generation,
            });
        }
        for port in table.gateways.values_mut() {
            // Stable: among equally specific listeners the first Gateway in the config wins.
            port.listeners.sort_by_key(|l| l.hostname.specificity());
        }
        table
    }
}

/// A Gateway's own `Accepted` and `Programmed`, from its spec and its listeners' status.
///
/// - `Accepted` is False with `InvalidParameters` when `spec.infrastructure.parametersRef` is
///   set: the waypoint takes no parameters object of any kind, so whatever it names is one we
///   cannot use. The listeners are served all the same (the Gateway API lets an implementation
///   keep serving): parameters we never read cannot change what we serve, so refusing traffic
///   would turn a reference we ignore into an outage. `Programmed` says that truthfully. (The
///   controller, which would provision from parameters, refuses to provision such a Gateway.)
/// - Else `Accepted` is False with `Invalid` when it is this waypoint's Gateway (`--gateway`)
///   and its inbound-binding annotation is malformed: it keeps serving as istiod reads such a
///   value (see `config::binding`), and the status is where the operator learns of it.
/// - Otherwise `Accepted` is True with `Accepted` when every listener is accepted, True with
///   `ListenersNotValid` when some are, and False with `ListenersNotValid` when none is: a
///   Gateway with no usable listener effectively has none, and is then not programmed either.
fn gateway_conditions(
    gw: &Gateway,
    listeners: &[ListenerStatus],
    has_address: bool,
    malformed_inbound_binding: Option<&str>,
) -> Vec<Condition> {
    let refused: Vec<&str> = listeners
        .iter()
        .filter(|l| {
            !l.conditions
                .iter()
                .any(|c| c.kind == "Accepted" && c.status)
        })
        .map(|l| l.name.as_str())
        .collect();
    let none_accepted = refused.len() == listeners.len();
    let parameters = gw
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref());
    let accepted = if let Some(p) = parameters {
        let group = if p.group.is_empty() { "core" } else { &p.group };
        let why = format!(
            "spec.infrastructure.parametersRef ({group} {} {}): waypoint takes no parameters object; the listeners are served as if it were absent",
            p.kind, p.name
        );
        cond("Accepted", false, "InvalidParameters", why)
    } else if let Some(why) = malformed_inbound_binding {
        cond("Accepted", false, "Invalid", why)
    } else if none_accepted {
        cond(
            "Accepted",
            false,
            "ListenersNotValid",
            "no listener is accepted",
        )
    } else if !refused.is_empty() {
        let why = format!("listeners not accepted: {}", refused.join(", "));
        cond("Accepted", true, "ListenersNotValid", why)
    } else {
        cond("Accepted", true, "Accepted", "accepted")
    };
    let programmed = if !has_address {
        cond(
            "Programmed",
            false,
            "AddressNotAssigned",
            "no IPAddress in spec.addresses or status.addresses: the Gateway is not served",
        )
    } else if none_accepted {
        cond(
            "Programmed",
            false,
            "Invalid",
            "no listener is accepted: nothing is served",
        )
    } else {
        cond("Programmed", true, "Programmed", "served")
    };
    vec![accepted, programmed]
}

/// The hosts a listener takes. A TCP listener matches no hostname (the spec has its
/// `hostname` ignored), so it takes every connection at its port.
fn listener_hostname(l: &Listener) -> HostPattern {
    if l.protocol == "TCP" {
        return HostPattern::Any;
    }
    HostPattern::parse(l.hostname.as_deref())
}

/// ` named X`, ` with port P` or both, for messages.
fn wanted(parent: &ParentReference) -> String {
    let mut out = String::new();
    if let Some(s) = &parent.section_name {
        out.push_str(&format!(" named {s}"));
    }
    if let Some(p) = parent.port {
        out.push_str(&format!(" with port {p}"));
    }
    out
}

fn listener_status(
    l: &Listener,
    attached: usize,
    has_address: bool,
    tls_problem: Option<&ListenerRefProblem>,
) -> ListenerStatus {
    let known = matches!(
        l.protocol.as_str(),
        "HTTP" | "HTTPS" | "HBONE" | "istio.io/PROXY" | "TCP" | "TLS"
    );
    // TLS listeners only pass TLS through (the TLSRoute feature's core); terminating is the
    // extended TLSRouteModeTerminate, which we do not claim.
    let terminating_tls = l.protocol == "TLS" && l.tls_mode() == TlsMode::Terminate;
    let supported = known && !terminating_tls;
    let bad_kinds: Vec<&str> = l
        .invalid_route_kinds()
        .into_iter()
        .map(|k| k.kind.as_str())
        .collect();
    let accepted = if terminating_tls {
        let why = "tls.mode Terminate is not supported on TLS listeners: use Passthrough (or an HTTPS listener)";
        cond("Accepted", false, "UnsupportedValue", why)
    } else if supported {
        cond("Accepted", true, "Accepted", "accepted")
    } else {
        let why = format!("protocol {} is not supported", l.protocol);
        cond("Accepted", false, "UnsupportedProtocol", why)
    };
    let resolved = if !bad_kinds.is_empty() {
        let why = format!(
            "allowedRoutes.kinds: {} not supported",
            bad_kinds.join(", ")
        );
        cond("ResolvedRefs", false, "InvalidRouteKinds", why)
    } else if let Some(p) = tls_problem {
        cond("ResolvedRefs", false, &p.reason, p.message.clone())
    } else {
        cond("ResolvedRefs", true, "ResolvedRefs", "resolved")
    };
    let programmed = match (supported, has_address) {
        (false, _) => cond(
            "Programmed",
            false,
            "Invalid",
            "the listener is not accepted",
        ),
        (true, _) if tls_problem.is_some() => cond(
            "Programmed",
            false,
            "Invalid",
            "the listener has no usable certificate",
        ),
        (true, false) => cond("Programmed", false, "Pending", "the Gateway has no address"),
        (true, true) => cond("Programmed", true, "Programmed", "served"),
    };
    ListenerStatus {
        name: l.name.clone(),
        port: l.port,
        attached_routes: u32::try_from(attached).unwrap_or(u32::MAX),
        supported_kinds: l.supported_route_kinds(),
        conditions: vec![accepted, resolved, programmed],
    }
}
