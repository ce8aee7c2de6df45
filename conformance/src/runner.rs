//! Running cases: apply each case's manifests on top of the base ones, check the status the
//! waypoint reports, send the requests and judge the answers as upstream does (three
//! consecutive passes, weight tolerances, mirror detection in the backends' request logs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::case::{Case, ConnectionCase, RequestCase, StatusCheck};
use crate::client::{self, Route};
use crate::cluster::{
    Cluster, ClusterState, GATEWAY_CLASS, merge_patch, object_ref, parse_yaml, without,
};
use crate::features;
use crate::judge::judge;
use crate::pods::Pods;
use crate::process::{Launch, Waypoint};
use crate::status;
use crate::tls::Certificates;
use crate::upstream;

mod route;
use route::{gateway_route, route_for};

/// What became of one case.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every expectation held.
    Passed,
    /// Some did not; each line says which and why.
    Failed(Vec<String>),
    /// Not run, and why: counted as skipped, so its level cannot report success.
    Skipped(String),
    /// Not run because it needs a feature waypoint does not declare, and which: upstream
    /// counts such a test in no level.
    NotSupported(String),
}

/// One case's result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The upstream ShortName.
    pub name: String,
    /// Its features.
    pub features: Vec<String>,
    /// Whether upstream marks it provisional.
    pub provisional: bool,
    /// The outcome.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// Harness settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The upstream `conformance/` directory (holding `base/`, `mesh/`, `tests/`), or its parent.
    pub manifests: PathBuf,
    /// The case files.
    pub cases: PathBuf,
    /// The `waypoint` binary.
    pub waypoint: PathBuf,
    /// Where config and logs go.
    pub work_dir: PathBuf,
    /// Run only cases whose name contains one of these (all when empty).
    pub only: Vec<String>,
    /// How long a request may take to pass three times in a row.
    pub consistency_timeout: Duration,
    /// Where the waypoint reads the cluster from, and where its status is read.
    pub source: SourceMode,
}

/// How the cluster reaches the waypoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceMode {
    /// As in a cluster: an emulated API server that `waypoint run --kube` lists and watches,
    /// and whose objects carry the status the waypoint writes.
    #[default]
    Kube,
    /// A manifest file `waypoint run --config` reads; status from its `/config_dump`.
    Files,
}

/// The cluster as the waypoint sees it: manifest files or an API server.
enum Source {
    Files,
    Api(ApiServer),
}

/// How long the base Gateways and our GatewayClass may take to be ready before any case.
const SUITE_READY_PATIENCE: Duration = Duration::from_secs(30);

/// How long status may take to show what a case expects once the waypoint took the change
/// (status is written after the snapshot, by its own task, as in a cluster).
const STATUS_PATIENCE: Duration = Duration::from_secs(10);

/// Consecutive passes upstream requires before it believes a result.
const REQUIRED_PASSES: usize = 3;
/// Requests per traffic-split or mirror-percentage check, and the allowed deviation.
const SPLIT_REQUESTS: usize = 500;
const SPLIT_TOLERANCE: f64 = 0.05;
/// How many rounds a mirror check may take before it fails.
const MIRROR_TRIES: usize = 5;
/// How many times a split check may be run before it fails (upstream's MaxTestRetries).
const SPLIT_TRIES: usize = 10;
/// Requests in flight at once during a split check, as upstream sends them.
const SPLIT_CONCURRENCY: usize = 10;
/// The header that marks one request so the backends' logs can find its mirrored copies.
const PROBE_HEADER: &str = "x-conformance-probe";

/// The manifests directory that holds `base/manifests.yaml`, given it or its parent.
pub fn conformance_root(dir: &Path) -> Option<PathBuf> {
    [dir.to_owned(), dir.join("conformance")]
        .into_iter()
        .find(|d| d.join("base/manifests.yaml").is_file())
}

fn read_manifests(root: &Path, rel: &str) -> Result<Vec<Value>, String> {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs every selected case against one waypoint process.
pub async fn run(opts: &Options) -> Result<Vec<CaseResult>, String> {
    let root = conformance_root(&opts.manifests).ok_or_else(|| {
        format!(
            "no Gateway API conformance manifests at {} (expected base/manifests.yaml)",
            opts.manifests.display()
        )
    })?;
    let cases = Case::load_dir(&opts.cases).map_err(|e| e.to_string())?;
    let mut base = read_manifests(&root, "base/manifests.yaml")?;
    // The implementation provides the class upstream's manifests name.
    base.push(ApiServer::gateway_class());
    base.extend(read_manifests(&root, "mesh/manifests.yaml")?);
    base.push(crate::cluster::mesh_waypoint());
    // Upstream's suite creates its certificate Secrets in code, after the base manifests.
    let certs = Certificates::generate()?;
    base.extend(certs.secrets());

    let config_dir = opts.work_dir.join("config");
    std::fs::create_dir_all(&config_dir).map_err(|e| format!("{}: {e}", config_dir.display()))?;
    let mut state = ClusterState::default();
    let mut pods = Pods::default();
    let cluster = Cluster::apply(base.clone(), &mut state);
    pods.ensure(&cluster.pods, &certs).await?;
    let log = opts.work_dir.join("waypoint.log");
    let (mut source, launch) = match opts.source {
        SourceMode::Files => {
            std::fs::write(config_dir.join("cluster.json"), cluster.config_json())
                .map_err(|e| format!("writing config: {e}"))?;
            (Source::Files, Launch::Files(config_dir))
        }
        SourceMode::Kube => {
            let kubeconfig = opts.work_dir.join("kubeconfig");
            let mut api = ApiServer::start(&kubeconfig).await?;
            api.sync(&cluster)?;
            (Source::Api(api), Launch::Kube(kubeconfig))
        }
    };
    let mut waypoint = Waypoint::start(&opts.waypoint, &launch, &log)
        .await
        .map_err(|e| e.to_string())?;

    let base_gateways: Vec<String> = cluster
        .gateways
        .keys()
        .map(|(ns, name)| format!("{ns}/{name}"))
        .collect();
    suite_ready(&source, &waypoint, &base_gateways).await?;

    let mut results = Vec::new();
    let cases_run: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    for case in cases {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        let started = Instant::now();
        let outcome = match not_run(&case, opts.source) {
            Some(outcome) => outcome,
            None => {
                let mut objects = base.clone();
                let mut failures = Vec::new();
                for m in &case.manifests {
                    match read_manifests(&root, m) {
                        Ok(docs) => objects.extend(docs),
                        Err(e) => failures.push(e),
                    }
                }
                if failures.is_empty() {
                    let mut run = CaseRun {
                        case: &case,
                        objects,
                        deleted: Vec::new(),
                        state: &mut state,
                        certs: &certs,
                        pods: &mut pods,
                        waypoint: &mut waypoint,
                        source: &mut source,
                        dump: Value::Null,
                    };
                    run.run(opts).await
                } else {
                    Outcome::Failed(failures)
                }
            }
        };
        tracing::info!(case = %case.name, outcome = ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "case");
        results.push(CaseResult {
            name: case.name.clone(),
            features: case.features.clone(),
            provisional: case.provisional,
            outcome,
            elapsed: started.elapsed(),
        });
    }
    waypoint.stop().await;
    results.extend(without_cases(&cases_run, &opts.only));
    Ok(results)
}

/// Waits, as upstream's suite setup waits, until our GatewayClass is accepted and every
/// Gateway of the base manifests is accepted and programmed; an error says which is not.
async fn suite_ready(
    source: &Source,
    waypoint: &Waypoint,
    gateways: &[String],
) -> Result<(), String> {
    let deadline = Instant::now() + SUITE_READY_PATIENCE;
    loop {
        let view = match source {
            Source::Files => waypoint.config_dump().await.map_err(|e| e.to_string())?,
            Source::Api(api) => api.status(),
        };
        match status::suite_ready(&view, GATEWAY_CLASS, gateways) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("the base manifests never became ready: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The upstream tests that have no case file (those `only` selects), as upstream would count
/// them: not supported when they need an undeclared feature, else skipped.
fn without_cases(cases: &[String], only: &[String]) -> Vec<CaseResult> {
    upstream::TESTS
        .iter()
        .filter(|t| !cases.iter().any(|c| c == t.name))
        .filter(|t| only.is_empty() || only.iter().any(|o| t.name.contains(o.as_str())))
        .map(|t| {
            let features: Vec<String> = t.features.iter().map(|f| f.to_string()).collect();
            let outcome = unsupported(&features).unwrap_or_else(|| {
                Outcome::Skipped("no case file: this upstream test is not run".into())
            });
            CaseResult {
                name: t.name.to_owned(),
                features,
                provisional: t.provisional,
                outcome,
                elapsed: Duration::ZERO,
            }
        })
        .collect()
}

/// Why `case` is not run, if it is not.
fn not_run(case: &Case, source: SourceMode) -> Option<Outcome> {
    if let Some(why) = &case.skip {
        return Some(Outcome::Skipped(why.clone()));
    }
    if let Some(outcome) = unsupported(&case.features) {
        return Some(outcome);
    }
    if source == SourceMode::Files
        && let Some(why) = &case.skip_from_files
    {
        return Some(Outcome::Skipped(format!(
            "not judged from /config_dump: {why}"
        )));
    }
    None
}

/// `NotSupported` naming each feature of `features` waypoint does not declare, if any.
fn unsupported(features: &[String]) -> Option<Outcome> {
    let missing: Vec<String> = features
        .iter()
        .filter_map(|f| features::unsupported_reason(f).map(|why| format!("{f} ({why})")))
        .collect();
    (!missing.is_empty())
        .then(|| Outcome::NotSupported(format!("unsupported feature(s): {}", missing.join(", "))))
}

/// One case in progress: its objects, and what it deleted so far.
struct CaseRun<'a> {
    case: &'a Case,
    objects: Vec<Value>,
    deleted: Vec<String>,
    state: &'a mut ClusterState,
    certs: &'a Certificates,
    pods: &'a mut Pods,
    waypoint: &'a mut Waypoint,
    source: &'a mut Source,
    /// Files mode: the `/config_dump` of the last snapshot applied.
    dump: Value,
}

impl CaseRun<'_> {
    /// Applies the case's objects (less those deleted) and waits for the waypoint to take
    /// them; returns the cluster.
    async fn apply(&mut self) -> Result<Cluster, String> {
        let objects = without(&self.objects, &self.deleted);
        let mut cluster = Cluster::apply(objects, self.state);
        cluster.fill_endpoints(&self.case.endpoints_from);
        self.pods.ensure(&cluster.pods, self.certs).await?;
        match self.source {
            Source::Files => {
                self.dump = self
                    .waypoint
                    .apply(&cluster.config_json())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Source::Api(api) => {
                if api.sync(&cluster)? {
                    self.waypoint
                        .await_snapshot()
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(cluster)
    }

    /// Judges `checks` (and that each Gateway in `ready` is ready) against the status: the
    /// snapshot's in files mode; the API server's in Kubernetes mode, where the waypoint
    /// writes it shortly after the snapshot, so it is read again until it holds or
    /// [`STATUS_PATIENCE`] has passed, as upstream's suite polls a cluster.
    async fn status_failures(&self, checks: &[StatusCheck], ready: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + STATUS_PATIENCE;
        loop {
            let view = match &*self.source {
                Source::Files => self.dump.clone(),
                Source::Api(api) => api.status(),
            };
            let failures: Vec<String> = checks
                .iter()
                .filter_map(|s| status::check(&view, s).err())
                .chain(
                    ready
                        .iter()
                        .filter_map(|g| status::gateway_ready(&view, g).err()),
                )
                .collect();
            if failures.is_empty()
                || matches!(*self.source, Source::Files)
                || Instant::now() > deadline
            {
                return failures;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs TCP connection checks; returns their failures, labelled with `prefix`.
    async fn connections(
        &self,
        conns: &[ConnectionCase],
        cluster: &Cluster,
        prefix: &str,
        failed_before: &[String],
        opts: &Options,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        for (i, conn) in conns.iter().enumerate() {
            let label = conn
                .name
                .clone()
                .unwrap_or_else(|| format!("{prefix}connections[{i}]"));
            // As for requests: once the case failed, later checks only add diagnostics.
            let patience = if failed_before.is_empty() && failures.is_empty() {
                opts.consistency_timeout
            } else {
                Duration::from_secs(1)
            };
            let target = conn.gateway.as_deref().or(self.case.gateway.as_deref());
            let result = match target.map(|t| gateway_route(t, cluster, self.waypoint)) {
                Some(Ok(route)) => {
                    crate::stream::run_connection(conn, &route, self.certs, patience).await
                }
                Some(Err(e)) => Err(e),
                None => Err("no gateway to connect to".into()),
            };
            if let Err(e) = result {
                failures.push(format!("{label}: {e}"));
            }
        }
        failures
    }

    async fn run(&mut self, opts: &Options) -> Outcome {
        let case = self.case;
        let mut cluster = match self.apply().await {
            Ok(applied) => applied,
            Err(e) => return Outcome::Failed(vec![e]),
        };
        // Every Gateway the requests go to must be ready first, as upstream waits for it.
        let mut targets: Vec<&str> = case
            .requests
            .iter()
            .filter_map(|r| r.gateway.as_deref().or(case.gateway.as_deref()))
            .chain(
                case.connections
                    .iter()
                    .filter_map(|c| c.gateway.as_deref().or(case.gateway.as_deref())),
            )
            .map(|g| g.rsplit_once(':').map_or(g, |(gw, _)| gw))
            .collect();
        targets.sort_unstable();
        targets.dedup();
        if case.mesh {
            targets.clear();
        }
        let mut failures: Vec<String> = self
            .status_failures(&case.status, &targets)
            .await
            .into_iter()
            .map(|e| format!("status: {e}"))
            .collect();
        for (i, req) in case.requests.iter().enumerate() {
            let label = req.name.clone().unwrap_or_else(|| format!("requests[{i}]"));
            if !req.delete.is_empty() {
                self.deleted.extend(req.delete.iter().cloned());
                match self.apply().await {
                    Ok(applied) => cluster = applied,
                    Err(e) => {
                        failures.push(format!("{label}: deleting {:?}: {e}", req.delete));
                        break;
                    }
                }
            }
            // Once a case has failed, later requests only add diagnostics: wait less for them.
            let patience = if failures.is_empty() {
                opts.consistency_timeout
            } else {
                Duration::from_secs(1)
            };
            if let Err(e) = run_request(
                case,
                req,
                &cluster,
                self.certs,
                self.pods,
                self.waypoint,
                patience,
            )
            .await
            {
                failures.push(format!(
                    "{label} ({} {}): {e}",
                    req.request.method.as_deref().unwrap_or("GET"),
                    req.request.path
                ));
            }
        }
        failures.extend(
            self.connections(&case.connections, &cluster, "", &failures, opts)
                .await,
        );
        for (i, step) in case.then.iter().enumerate() {
            if step.wait_seconds > 0 {
                tokio::time::sleep(Duration::from_secs(step.wait_seconds)).await;
            }
            self.objects.extend(step.create.iter().cloned());
            self.deleted.extend(step.delete.iter().cloned());
            for patch in &step.patch {
                match self
                    .objects
                    .iter_mut()
                    .find(|o| object_ref(o) == patch.object)
                {
                    Some(o) => merge_patch(o, &patch.merge),
                    None => {
                        failures.push(format!("then[{i}]: no object {} to patch", patch.object))
                    }
                }
            }
            match self.apply().await {
                Ok(applied) => {
                    cluster = applied;
                    failures.extend(
                        self.status_failures(&step.status, &[])
                            .await
                            .into_iter()
                            .map(|e| format!("then[{i}] status: {e}")),
                    );
                    let label = format!("then[{i}] ");
                    failures.extend(
                        self.connections(&step.connections, &cluster, &label, &failures, opts)
                            .await,
                    );
                }
                Err(e) => failures.push(format!("then[{i}]: {e}")),
            }
        }
        if failures.is_empty() {
            Outcome::Passed
        } else {
            Outcome::Failed(failures)
        }
    }
}

/// A value unique to one attempt (for `{UUID}` in cases).
fn unique() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Sends one request (HTTP, gRPC or WebSocket) and judges it; returns the pod that served it,
/// when a backend did.
async fn attempt(
    route: &Route,
    req: &RequestCase,
    sent_host: &str,
    extra: &[(String, String)],
) -> Result<Option<String>, String> {
    if let Some(call) = &req.grpc {
        return crate::pods::grpc_attempt(route, req, call).await;
    }
    if req.request.websocket {
        return crate::pods::websocket_attempt(route, req).await;
    }
    let mut extra = extra.to_vec();
    if !req.backend_set_response_headers.is_empty() {
        let set: Vec<String> = req
            .backend_set_response_headers
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        extra.push(("X-Echo-Set-Header".into(), set.join(",")));
    }
    let got = client::send(route, &req.request, &extra).await?;
    judge(req, sent_host, &got)?;
    Ok(got
        .echo
        .as_ref()
        .and_then(|e| e["pod"].as_str().map(str::to_owned)))
}

async fn run_request(
    case: &Case,
    req: &RequestCase,
    cluster: &Cluster,
    certs: &Certificates,
    pods: &Pods,
    waypoint: &Waypoint,
    patience: Duration,
) -> Result<(), String> {
    let mut route = route_for(case, req, cluster, waypoint)?;
    if let Some(secret) = &case.certificate {
        let cert = certs
            .certificate(secret)
            .ok_or_else(|| format!("the harness made no certificate Secret {secret}"))?;
        route.certificate = Some(cert.to_owned());
    }
    // A pod-address placeholder in the host is sent as the address it stands for.
    let resolved;
    let req = if route.pod.is_some() {
        resolved = RequestCase {
            request: crate::case::Request {
                host: Some(route.default_host.clone()),
                ..req.request.clone()
            },
            ..req.clone()
        };
        &resolved
    } else {
        req
    };
    let sent_host = req
        .request
        .host
        .clone()
        .unwrap_or_else(|| route.default_host.clone());
    let pod_count = route::PodCount::before(&route, waypoint).await?;
    // Eventually consistent: three passes in a row, within the timeout.
    let deadline = Instant::now() + patience;
    let mut passes = 0;
    let mut last_error = String::new();
    while passes < REQUIRED_PASSES {
        match attempt(&route, &req.with_unique(&unique()), &sent_host, &[]).await {
            Ok(_) => passes += 1,
            Err(e) => {
                passes = 0;
                last_error = e;
            }
        }
        if passes < REQUIRED_PASSES && Instant::now() > deadline {
            return Err(last_error);
        }
        if passes == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let Some(count) = &pod_count {
        count.check(waypoint, REQUIRED_PASSES).await?;
    }
    for n in 0..req.repeat.unwrap_or(0) {
        attempt(&route, &req.with_unique(&unique()), &sent_host, &[])
            .await
            .map_err(|e| format!("repeat {n}: {e}"))?;
    }
    if let Some(weights) = &req.weights {
        // Upstream repeats a traffic-split check up to ten times: one within tolerance passes.
        let mut result = Ok(());
        for _ in 0..SPLIT_TRIES {
            result = check_split(&route, req, &sent_host, weights).await;
            if result.is_ok() {
                break;
            }
        }
        result?;
    }
    if !req.mirrored_to.is_empty() {
        // Upstream gives a percentage check up to five rounds of fresh requests.
        let mut result = Ok(());
        for _ in 0..MIRROR_TRIES {
            result = check_mirrors(&route, req, &sent_host, pods).await;
            if result.is_ok() {
                break;
            }
        }
        result?;
    }
    Ok(())
}

/// Sends many requests and checks each backend's share against its weight.
async fn check_split(
    route: &Route,
    req: &RequestCase,
    sent_host: &str,
    weights: &BTreeMap<String, f64>,
) -> Result<(), String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut sent = 0;
    for batch in 0..SPLIT_REQUESTS / SPLIT_CONCURRENCY {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..SPLIT_CONCURRENCY {
            let (route, req, host) = (
                route.clone(),
                req.with_unique(&unique()),
                sent_host.to_owned(),
            );
            calls.spawn(async move {
                attempt(&route, &req, &host, &[])
                    .await?
                    .ok_or_else(|| "answered without a backend".to_owned())
            });
        }
        while let Some(joined) = calls.join_next().await {
            let pod = joined
                .map_err(|e| format!("traffic split: {e}"))?
                .map_err(|e| format!("traffic split, batch {batch}: {e}"))?;
            let backend = weights
                .keys()
                .find(|b| pod.starts_with(b.as_str()))
                .cloned()
                .unwrap_or(pod);
            *counts.entry(backend).or_default() += 1;
            sent += 1;
        }
    }
    let mut errors = Vec::new();
    for (backend, count) in &counts {
        if !weights.contains_key(backend) {
            errors.push(format!("{backend} got {count} requests but has no weight"));
        }
    }
    for (backend, want) in weights {
        let got = counts.get(backend).copied().unwrap_or(0) as f64 / sent as f64;
        if *want == 0.0 && got > 0.0 || (got - want).abs() > SPLIT_TOLERANCE {
            errors.push(format!(
                "{backend}: {:.1}% of traffic, expected {:.1}%",
                got * 100.0,
                want * 100.0
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("traffic split: {}", errors.join("; ")))
    }
}

/// Sends marked requests and looks for their copies in the mirror backends' request logs.
/// A copy counts when it carries the marker of a request sent here and arrives with that
/// request's expected path, so a copy of some other request, or one sent to another path,
/// is not taken for the mirrored request.
async fn check_mirrors(
    route: &Route,
    req: &RequestCase,
    sent_host: &str,
    pods: &Pods,
) -> Result<(), String> {
    let percentage = req.mirrored_to.iter().any(|m| m.percent.is_some());
    let rounds = if percentage { SPLIT_REQUESTS } else { 1 };
    let run = format!("{:016x}", fastrand::u64(..));
    let mut sent = std::collections::HashMap::new();
    for i in 0..rounds {
        let marker = format!("{run}-{i}");
        let this = req.with_unique(&unique());
        attempt(
            route,
            &this,
            sent_host,
            &[(PROBE_HEADER.to_owned(), marker.clone())],
        )
        .await
        .map_err(|e| format!("mirrored request: {e}"))?;
        sent.insert(marker, mirrored_path(&this).to_owned());
    }
    // Mirrors are fire and forget: give them a moment to land.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut errors = Vec::new();
        for m in &req.mirrored_to {
            let copies = pods.mirrored_copies(&m.namespace, &m.name, PROBE_HEADER, &sent);
            let wrong = if copies.wrong_path.is_empty() {
                String::new()
            } else {
                format!(
                    " (copies arrived with the wrong path: {})",
                    copies.wrong_path.join(", ")
                )
            };
            match m.percent {
                None if copies.matched == 0 => errors.push(format!(
                    "{}/{} saw no mirrored copy of the request at {}{wrong}",
                    m.namespace,
                    m.name,
                    sent.values().next().map_or("", String::as_str)
                )),
                Some(pct) => {
                    let got = copies.matched as f64 / rounds as f64;
                    let want = pct / 100.0;
                    // Upstream accepts three standard deviations of Binomial(rounds, want).
                    let band = 3.0 * (want * (1.0 - want) / rounds as f64).sqrt();
                    if (got - want).abs() > band {
                        errors.push(format!(
                            "{}/{} saw {:.1}% of requests mirrored with their path, expected \
                             {pct}%{wrong}",
                            m.namespace,
                            m.name,
                            got * 100.0
                        ));
                    }
                }
                None => {}
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("mirror: {}", errors.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path a request's mirrored copy must arrive with: the one the primary backend must see
/// (after filters such as URLRewrite, which apply to the copy too), else the path sent.
fn mirrored_path(req: &RequestCase) -> &str {
    req.expected_request
        .as_ref()
        .and_then(|e| e.path.as_deref())
        .filter(|p| !p.is_empty())
        .unwrap_or(&req.request.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_skipped_from_files_runs_through_the_api_server() {
        let case = Case::parse(
            "name: TLSRouteSimpleSameNamespace\nsource: s.go\nfeatures: [Gateway, TLSRoute]\nmanifests: []\nskipFromFiles: no kinds there\n",
        )
        .unwrap();
        assert_eq!(not_run(&case, SourceMode::Kube), None);
        let Some(Outcome::Skipped(why)) = not_run(&case, SourceMode::Files) else {
            panic!("not skipped from files")
        };
        assert!(why.contains("no kinds there"), "{why}");
        let unsupported = Case::parse(
            "name: TLSRouteListenerTerminateSupportedKinds\nsource: s.go\nfeatures: [Gateway, TLSRoute, TLSRouteModeTerminate]\nmanifests: []\n",
        )
        .unwrap();
        let Some(Outcome::NotSupported(why)) = not_run(&unsupported, SourceMode::Kube) else {
            panic!("not reported unsupported")
        };
        assert!(why.contains("TLSRouteModeTerminate"), "{why}");
    }

    #[test]
    fn upstream_tests_without_a_case_are_reported_skipped_or_not_supported() {
        let results = without_cases(&["HTTPRouteRetry".into()], &[]);
        assert_eq!(results.len(), upstream::TESTS.len() - 1);
        assert!(!results.iter().any(|r| r.name == "HTTPRouteRetry"));
        let outcome = |name: &str| {
            let r = results.iter().find(|r| r.name == name).expect(name);
            r.outcome.clone()
        };
        // Supported features, no case file: counted as not run.
        assert!(
            matches!(outcome("HTTPRouteSimpleSameNamespace"), Outcome::Skipped(w) if w.contains("no case file"))
        );
        // An undeclared feature: not supported, as upstream reports it.
        assert!(
            matches!(outcome("UDPRouteWeightedRouting"), Outcome::NotSupported(w) if w.contains("UDPRoute"))
        );
        // `--only` narrows them as it narrows the cases.
        let only = without_cases(&[], &["GatewayClassObserved".into()]);
        assert_eq!(only.len(), 1, "{only:?}");
    }
}
