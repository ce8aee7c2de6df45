//! The request path: one config snapshot per request, the filter chain, then the upstream.
//!
//! A [`Snapshot`] pairs a validated [`Config`] with the filter chain built from it. The
//! [`SnapshotStore`] swaps snapshots atomically on reload; a request loads the current one once
//! and is served with it start to finish, so a reload never changes a request in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hyper::body::Incoming;

use crate::body::{self, Body, local_reply};
use crate::completion::Completion;
use crate::config::binding::Destination;
use crate::config::{Condition, Config, ResourceStatus};
use crate::conn::ConnInfo;
use crate::filter::{
    BuildContext, BuildOutput, BuildReport, Decision, ExtensionRegistry, FilterChain,
    FilterFactory, RequestContext,
};
use crate::flags::ResponseFlag;
use crate::http::UpgradePolicy;
use crate::http::upgrade::{Granted, close_after_answer};
use crate::overload::Overload;
use crate::overload::RequestGuard;
use crate::route_status::{GatewayStatus, RouteParentStatus};
use crate::telemetry::RequestRecord;
use crate::telemetry::Telemetry;
use crate::upstream::{Upstream, UpstreamLease};
use http::StatusCode;

/// A config and the filter chain compiled from it. Immutable.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Arc<Config>,
    /// The filter chain built from it.
    pub chain: FilterChain,
    /// Problems the filter factories found with resources.
    pub reports: Vec<BuildReport>,
    /// The conditions of each route for each of its parents.
    pub route_parents: Vec<RouteParentStatus>,
    /// The status of each Gateway the routing serves, with its listeners.
    pub gateways: Vec<GatewayStatus>,
    /// Increases by one with every snapshot applied (the first real config is 1).
    pub version: u64,
    /// When it was applied.
    pub applied_at: SystemTime,
}

impl Snapshot {
    /// Every resource's status: the loader's verdict with the filter factories' reports merged
    /// in (a report replaces a condition of the same type). A false per-parent condition of a
    /// route counts as a report too, so the route shows as not OK.
    pub fn statuses(&self) -> Vec<ResourceStatus> {
        let mut statuses = self.config.statuses.clone();
        let parent_reports = self.route_parents.iter().flat_map(|p| {
            p.conditions
                .iter()
                .filter(|c| !c.status)
                .map(|c| BuildReport {
                    resource: p.route.clone(),
                    condition: c.kind.clone(),
                    reason: c.reason.clone(),
                    message: format!("parent {}: {}", p.parent, c.message),
                })
        });
        let reports: Vec<BuildReport> =
            self.reports.iter().cloned().chain(parent_reports).collect();
        for report in &reports {
            let condition = Condition {
                kind: report.condition.clone(),
                status: false,
                reason: report.reason.clone(),
                message: report.message.clone(),
            };
            match statuses.iter_mut().find(|s| s.resource == report.resource) {
                Some(status) => match status
                    .conditions
                    .iter_mut()
                    .find(|c| c.kind == condition.kind)
                {
                    // The first report of a type is kept: it is usually the most specific.
                    Some(existing) if !existing.status => {}
                    Some(existing) => *existing = condition,
                    None => status.conditions.push(condition),
                },
                None => statuses.push(ResourceStatus {
                    resource: report.resource.clone(),
                    source: String::new(),
                    conditions: vec![condition],
                }),
            }
        }
        statuses
    }
}

/// Holds the current snapshot and builds new ones from configs.
///
/// Besides the [`ArcSwap`] the request path loads from, every applied snapshot is also sent on
/// a `watch` channel for background consumers (the Kubernetes status writer): they see the
/// latest snapshot without polling, and a slow consumer never holds up `apply` or a request,
/// since a `watch` keeps only the newest value.
pub struct SnapshotStore {
    current: ArcSwap<Snapshot>,
    applied: tokio::sync::watch::Sender<Arc<Snapshot>>,
    factories: Vec<Arc<dyn FilterFactory>>,
    extensions: ExtensionRegistry,
    version: AtomicU64,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl SnapshotStore {
    /// A store whose chains are built by `factories`, in order, resolving `ExtensionRef`s with
    /// `extensions`. It starts with an empty config (version 0) until [`SnapshotStore::apply`].
    pub fn new(factories: Vec<Arc<dyn FilterFactory>>, extensions: ExtensionRegistry) -> Self {
        let empty = Arc::new(build(
            Arc::new(Config::default()),
            &factories,
            &extensions,
            0,
        ));
        let (applied, _) = tokio::sync::watch::channel(empty.clone());
        SnapshotStore {
            current: ArcSwap::new(empty),
            applied,
            factories,
            extensions,
            version: AtomicU64::new(0),
        }
    }

    /// Builds the chain for `config` and makes it current. Requests already in flight finish
    /// with the snapshot they started with.
    pub fn apply(&self, config: Config) -> Arc<Snapshot> {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot = Arc::new(build(
            Arc::new(config),
            &self.factories,
            &self.extensions,
            version,
        ));
        self.current.store(snapshot.clone());
        // Stored even when nobody subscribes. Two concurrent applies may finish out of order:
        // subscribers only ever move forward.
        self.applied.send_if_modified(|latest| {
            let newer = latest.version < snapshot.version;
            if newer {
                *latest = snapshot.clone();
            }
            newer
        });
        snapshot
    }

    /// A receiver that sees every snapshot applied from now on (its current value is the
    /// snapshot current at the time of the call). A watch keeps only the newest value: a
    /// consumer that falls behind skips to the latest snapshot, which is what a status writer
    /// wants.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.applied.subscribe()
    }

    /// Builds the snapshot `config` would give without making it current (`waypoint check`).
    pub fn preview(&self, config: Config) -> Snapshot {
        build(Arc::new(config), &self.factories, &self.extensions, 0)
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

fn build(
    config: Arc<Config>,
    factories: &[Arc<dyn FilterFactory>],
    extensions: &ExtensionRegistry,
    version: u64,
) -> Snapshot {
    let mut cx = BuildContext::new(&config, extensions);
    let filters = factories.iter().map(|f| f.build(&mut cx)).collect();
    let BuildOutput {
        reports,
        route_parents,
        gateways,
    } = cx.finish();
    for r in &reports {
        tracing::warn!(resource = %r.resource, condition = %r.condition, reason = %r.reason, "{}", r.message);
    }
    Snapshot {
        chain: FilterChain::new(filters),
        config,
        reports,
        route_parents,
        gateways,
        version,
        applied_at: SystemTime::now(),
    }
}

/// Serves requests: the snapshot store's chain, then the upstream, observed by telemetry.
/// Upgrades and `CONNECT` are decided by an [`UpgradePolicy`] first (see
/// [`crate::http::upgrade`]): a refused one never reaches the chain or a backend.
#[derive(Debug)]
pub struct Proxy {
    store: Arc<SnapshotStore>,
    upstream: Arc<Upstream>,
    telemetry: Telemetry,
    upgrades: UpgradePolicy,
    overload: Option<Arc<Overload>>,
}

impl Proxy {
    /// A proxy reading snapshots from `store`, forwarding with `upstream`, and recording
    /// metrics, access logs and trace context with `telemetry`. Upgrades: WebSocket only.
    pub fn new(store: Arc<SnapshotStore>, upstream: Arc<Upstream>, telemetry: Telemetry) -> Self {
        Proxy {
            store,
            upstream,
            telemetry,
            upgrades: UpgradePolicy::default(),
            overload: None,
        }
    }

    /// The same proxy deciding upgrades with `policy`.
    pub fn with_upgrade_policy(mut self, policy: UpgradePolicy) -> Self {
        self.upgrades = policy;
        self
    }

    /// Applies `overload`'s request limits: over the in-flight limit a request is answered 503
    /// `overloaded` with response flag `OM`; a body over the size limit 413.
    pub fn with_overload(mut self, overload: Arc<Overload>) -> Self {
        self.overload = Some(overload);
        self
    }

    /// The snapshot store.
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// Serves one request that arrived on `conn`.
    pub async fn handle(
        &self,
        req: hyper::Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> http::Response<Body> {
        let snapshot = self.store.load();
        let mut req = req.map(body::boxed);
        // Before the chain, so filters and the upstream see the propagated trace context.
        let record = self.telemetry.begin(&mut req, &conn);
        let mut ctx = RequestContext::new(conn, snapshot.config.clone());
        // Binding first: traffic that is not this waypoint's reaches no filter and no backend.
        if let Some(resp) = self.refuse_unbound(&mut ctx) {
            return self.finish(resp, record, ctx, snapshot, UpstreamLease::default(), None);
        }
        // Upgrades first: a refused one never takes an in-flight slot.
        let granted = match self.upgrades.admit(&mut req, &ctx.conn) {
            Ok(granted) => granted,
            Err(refused) => {
                close_after_answer(&mut req);
                let resp = refused.into_response();
                return self.finish(resp, record, ctx, snapshot, UpstreamLease::default(), None);
            }
        };
        let limits = self.overload.as_deref().map(Overload::requests);
        let guard = match limits.map(|l| l.begin()).transpose() {
            Ok(guard) => guard.flatten(),
            Err(()) => {
                ctx.response_flags.push(ResponseFlag::OverloadManager);
                let resp = local_reply(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
                return self.finish(resp, record, ctx, snapshot, UpstreamLease::default(), None);
            }
        };
        let (resp, lease) = match limits.map(|l| l.limit_body(&mut req)).transpose() {
            Err(too_large) => {
                let resp = local_reply(StatusCode::PAYLOAD_TOO_LARGE, too_large.to_string());
                (resp, UpstreamLease::default())
            }
            Ok(trip) => {
                let served = self.serve(&snapshot, req, &mut ctx, granted.as_ref()).await;
                // The upstream saw an aborted request; its answer (or our 502) is not the
                // client's: the client sent too much. (Its lease goes: the connection closes.)
                match trip.flatten() {
                    Some(trip) if trip.tripped() => {
                        let message = "request body over the size limit";
                        let resp = local_reply(StatusCode::PAYLOAD_TOO_LARGE, message);
                        (resp, UpstreamLease::default())
                    }
                    _ => served,
                }
            }
        };
        tracing::debug!(
            source = ?ctx.conn.source,
            destination = ?ctx.conn.destination,
            identity = ctx.conn.peer_identity.as_ref().map(|i| i.as_str()),
            status = resp.status().as_u16(),
            flags = ?ctx.response_flags,
            elapsed_us = ctx.started.elapsed().as_micros() as u64,
            "request"
        );
        self.finish(resp, record, ctx, snapshot, lease, guard)
    }

    /// `resp` with the request's one completion (see [`crate::completion`] for what it does
    /// and in which order): when its body ends or is dropped, the upstream lease is released,
    /// telemetry records the request, the filters' end-of-request phase runs and the
    /// in-flight slot is given back.
    fn finish(
        &self,
        resp: http::Response<Body>,
        record: RequestRecord,
        ctx: RequestContext,
        snapshot: Arc<Snapshot>,
        lease: UpstreamLease,
        slot: Option<RequestGuard>,
    ) -> http::Response<Body> {
        let completion = Completion {
            record: self.telemetry.pending(record, &ctx, &resp),
            status: resp.status(),
            lease,
            ctx,
            snapshot,
            slot,
        };
        resp.map(|body| body::watch(body, completion))
    }

    /// With binding enforced (`--gateway`), the answer to a request whose destination is not
    /// bound to this waypoint: 404 with response flag `NR` (Envoy's "no route"), naming the
    /// reason (every request of the connection gets the same answer: its destination does not
    /// change). Istio's Envoy waypoint has no filter chain
    /// for such a destination and resets the connection without a word; an HTTP answer says why
    /// while forwarding nothing, and never dials a Service VIP (which would loop back here).
    fn refuse_unbound(&self, ctx: &mut RequestContext) -> Option<http::Response<Body>> {
        if !ctx.config.binding().enforced() {
            return None;
        }
        let Destination::Unbound(why) = ctx.config.destination(ctx.conn.destination) else {
            return None;
        };
        self.telemetry.unbound_destination(why.reason());
        tracing::info!(
            source = ?ctx.conn.source,
            destination = ?ctx.conn.destination,
            reason = why.reason(),
            "refused: {why}"
        );
        ctx.response_flags.push(ResponseFlag::NoRoute);
        Some(local_reply(
            StatusCode::NOT_FOUND,
            format!("waypoint: destination not served: {why}"),
        ))
    }

    /// The chain, then the upstream when no filter answered.
    async fn serve(
        &self,
        snapshot: &Snapshot,
        mut req: http::Request<Body>,
        ctx: &mut RequestContext,
        granted: Option<&Granted>,
    ) -> (http::Response<Body>, UpstreamLease) {
        match snapshot.chain.run_request(&mut req, ctx).await {
            Decision::Respond(resp) => (resp, UpstreamLease::default()),
            Decision::Continue => {
                self.upgrades.recheck(&mut req, &ctx.conn);
                let (mut resp, lease) = self.upstream.forward_leased(req, ctx).await;
                if ctx
                    .response_flags
                    .contains(&ResponseFlag::UpstreamProtocolError)
                {
                    self.upgrades.backend_error(granted);
                }
                snapshot.chain.run_response(&mut resp, ctx).await;
                (resp, lease)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_sees_every_applied_snapshot_and_skips_to_the_newest() {
        let store = SnapshotStore::new(Vec::new(), ExtensionRegistry::default());
        let mut applied = store.subscribe();
        assert_eq!(applied.borrow_and_update().version, 0);
        store.apply(Config::default());
        applied.changed().await.expect("the store is alive");
        assert_eq!(applied.borrow_and_update().version, 1);
        store.apply(Config::default());
        store.apply(Config::default());
        applied.changed().await.expect("the store is alive");
        assert_eq!(applied.borrow_and_update().version, 3);
        assert!(!applied.has_changed().expect("the store is alive"));
        assert_eq!(store.load().version, 3);
    }
}
