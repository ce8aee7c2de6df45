//! Test cases as data: one YAML file per upstream conformance test, holding the manifests it
//! applies, the status it expects and the requests it sends with the responses it expects.
//!
//! The field names follow the upstream Go types (`ExpectedResponse`, `Request`, `Response`,
//! `MirroredBackend`) so a case reads like the test it re-expresses. A new upstream test needs
//! a new file in `conformance/cases/`, not code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod connection;
pub use connection::{ClientTls, ConnectionCase, ConnectionExpect};

/// One upstream conformance test.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    /// The upstream `ShortName` (e.g. `HTTPRouteSimpleSameNamespace`).
    pub name: String,
    /// The upstream Go file this case re-expresses, relative to the repository root.
    pub source: String,
    /// What the test checks, in one sentence.
    #[serde(default)]
    pub description: String,
    /// The upstream `Features` of the test: it runs only when all are supported.
    pub features: Vec<String>,
    /// Whether upstream marks the test provisional.
    #[serde(default)]
    pub provisional: bool,
    /// Manifests to apply, relative to the upstream `conformance/` directory.
    pub manifests: Vec<String>,
    /// Why the test cannot run in this harness, when it cannot; it is then reported skipped.
    #[serde(default)]
    pub skip: Option<String>,
    /// Why the test cannot be judged from `/config_dump` (`--source files`), when it cannot;
    /// it still runs through the API server, where upstream reads status.
    #[serde(default)]
    pub skip_from_files: Option<String>,
    /// Mesh tests send from the mesh client pod and resolve the Host like cluster DNS.
    #[serde(default)]
    pub mesh: bool,
    /// The Gateway (`namespace/name`) that requests go to, unless a request names another.
    #[serde(default)]
    pub gateway: Option<String>,
    /// EndpointSlices the test fills by hand: slice `namespace/name` → the Deployment
    /// (`namespace/name`) whose pod addresses it gets (IPv4 slices; IPv6 ones stay empty, the
    /// harness's pods have no IPv6 address).
    #[serde(default)]
    pub endpoints_from: BTreeMap<String, String>,
    /// The Secret (`namespace/name`) whose certificate `https` requests trust, as upstream's
    /// client trusts the Secret's `tls.crt` and nothing else.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Status the waypoint must report once the manifests are applied.
    #[serde(default)]
    pub status: Vec<StatusCheck>,
    /// Requests and the responses they must get.
    #[serde(default)]
    pub requests: Vec<RequestCase>,
    /// TCP connections (TLS from the client where a case says so), made after the requests.
    #[serde(default)]
    pub connections: Vec<ConnectionCase>,
    /// Changes made after the requests, each followed by the status it must lead to.
    #[serde(default)]
    pub then: Vec<Step>,
}

/// A change to the applied objects, the status expected after it and the connections made
/// then. In a step, creation comes first, then deletion, then patches.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Seconds to wait first: upstream waits a second before creating an object that must be
    /// younger than the others (creation timestamps have one-second resolution).
    #[serde(default)]
    pub wait_seconds: u64,
    /// Objects created, as a test creates them in code.
    #[serde(default)]
    pub create: Vec<serde_json::Value>,
    /// Objects (`Kind namespace/name`) deleted.
    #[serde(default)]
    pub delete: Vec<String>,
    /// JSON merge patches (RFC 7386) applied to objects, as `kubectl patch --type merge`.
    #[serde(default)]
    pub patch: Vec<Patch>,
    /// Status the waypoint must report afterwards.
    #[serde(default)]
    pub status: Vec<StatusCheck>,
    /// Connections made once the status holds.
    #[serde(default)]
    pub connections: Vec<ConnectionCase>,
}

/// A merge patch of one object.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patch {
    /// `Kind namespace/name`.
    pub object: String,
    /// The patch (arrays are replaced whole).
    pub merge: serde_json::Value,
}

/// One expectation on the status the waypoint reports: of a route (for one parent or all),
/// of a Gateway and its listeners, or of a GatewayClass.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusCheck {
    /// A route, `Kind namespace/name` (`HTTPRoute gateway-conformance-infra/example`).
    #[serde(default)]
    pub route: Option<String>,
    /// With `route`: the parent, `Kind namespace/name` (`Gateway ns/name`, `Service ns/name`).
    #[serde(default)]
    pub parent: Option<String>,
    /// Conditions the object must carry: with `route`, those of the `parent` entry; with
    /// `gateway` or `gatewayClass`, the object's own (`status.conditions`).
    #[serde(default)]
    pub conditions: Vec<ConditionCheck>,
    /// Every condition carries this `observedGeneration` (the object's `metadata.generation`:
    /// the harness's API server starts it at 1 and adds 1 per spec change): with `route`, the
    /// conditions of every parent; with `gateway`, the Gateway's and its listeners'; with
    /// `gatewayClass`, the class's.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// With `route`: upstream's `…MustHaveNoAcceptedParents`: no parent status at all, or
    /// exactly one whose `Accepted` is `False`.
    #[serde(default)]
    pub no_accepted_parents: bool,
    /// With `route`: the exact set of parents (`Kind namespace/name`) in its status.
    #[serde(default)]
    pub parents: Option<Vec<String>>,
    /// A Gateway, `namespace/name`.
    #[serde(default)]
    pub gateway: Option<String>,
    /// With `gateway`: one listener by name; without it, every listener is summed.
    #[serde(default)]
    pub listener: Option<String>,
    /// With `gateway`: the number of attached routes.
    #[serde(default)]
    pub attached_routes: Option<u64>,
    /// With `gateway`: upstream's `GatewayMustHaveZeroRoutes`: no listener status, or exactly
    /// one listener with no attached routes.
    #[serde(default)]
    pub zero_routes: bool,
    /// With `gateway`: every listener's status, as upstream's `GatewayStatusMustHaveListeners`
    /// judges it (the same number of listeners, each named one present).
    #[serde(default)]
    pub listeners: Option<Vec<ListenerCheck>>,
    /// A GatewayClass by name (cluster-scoped); only one whose `spec.controllerName` is ours.
    #[serde(default)]
    pub gateway_class: Option<String>,
}

impl StatusCheck {
    /// What this check is about, as a case names it.
    pub fn subject(&self) -> String {
        match (&self.route, &self.gateway, &self.gateway_class) {
            (Some(r), _, _) => r.clone(),
            (_, Some(g), _) => format!("Gateway {g}"),
            (_, _, Some(c)) => format!("GatewayClass {c}"),
            _ => "nothing".into(),
        }
    }
}

/// One listener's expected status.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerCheck {
    /// The listener's name.
    pub name: String,
    /// Route kinds (group `gateway.networking.k8s.io`) that must be among its supported
    /// kinds; none means the listener must report none.
    #[serde(default)]
    pub supported_kinds: Vec<String>,
    /// Conditions it must carry.
    #[serde(default)]
    pub conditions: Vec<ConditionCheck>,
    /// Its attached routes.
    pub attached_routes: u64,
}

/// A condition a status must carry. Its reason is always judged, as upstream judges it: the
/// one given, else (for a `True` condition of the standard types) the type's own name, which
/// upstream's helpers require (`Accepted`/`Accepted`, `ResolvedRefs`/`ResolvedRefs`); only
/// `anyReason` lets any pass, where an upstream check passes an empty reason.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionCheck {
    /// `Accepted`, `ResolvedRefs`, ...: one of [`CONDITION_TYPES`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it holds.
    pub status: bool,
    /// The reason; required for a `False` condition.
    #[serde(default)]
    pub reason: Option<String>,
    /// Any reason passes (upstream's empty `Reason`).
    #[serde(default)]
    pub any_reason: bool,
}

/// The condition types of Gateway API status a case may expect: GatewayClass, Gateway,
/// listener and route conditions (apis/v1). Another name is a typo that could never match.
pub const CONDITION_TYPES: &[&str] = &[
    "Accepted",
    "ResolvedRefs",
    "Programmed",
    "PartiallyInvalid",
    "Conflicted",
    "OverlappingTLSConfig",
    "SupportedVersion",
    "InsecureFrontendValidationMode",
];

impl ConditionCheck {
    /// The reason the condition must carry, `None` when any will do.
    pub fn expected_reason(&self) -> Option<&str> {
        if self.any_reason {
            return None;
        }
        if let Some(reason) = &self.reason {
            return Some(reason);
        }
        let standard = ["Accepted", "ResolvedRefs", "Programmed"];
        (self.status && standard.contains(&self.kind.as_str())).then_some(self.kind.as_str())
    }

    fn check(&self) -> Result<(), String> {
        if !CONDITION_TYPES.contains(&self.kind.as_str()) {
            return Err(format!(
                "condition type {:?} is not a Gateway API one",
                self.kind
            ));
        }
        if self.any_reason && self.reason.is_some() {
            return Err(format!("{}: both reason and anyReason", self.kind));
        }
        if self.expected_reason().is_none() && !self.any_reason {
            return Err(format!(
                "{} {}: name the reason upstream requires (or anyReason where it takes any)",
                self.kind, self.status
            ));
        }
        Ok(())
    }
}

/// One request and what must come of it (upstream `ExpectedResponse`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestCase {
    /// The upstream `TestCaseName`, when it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// Where the request goes: `namespace/name` of a Gateway, optionally `:port` (default the
    /// case's gateway, port 80). Mesh cases resolve the Host instead.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Objects (`Kind namespace/name`) deleted before this request is sent; they stay deleted
    /// for the rest of the case.
    #[serde(default)]
    pub delete: Vec<String>,
    /// Mesh cases: the namespace of the client pod that sends (default
    /// `gateway-conformance-mesh`); its identity is that namespace's `default` account.
    #[serde(default)]
    pub client: Option<String>,
    /// The request to send.
    pub request: Request,
    /// What the backend must receive; defaults to `request`.
    #[serde(default)]
    pub expected_request: Option<ExpectedRequest>,
    /// Headers the echo backend is asked to set on its response (`X-Echo-Set-Header`).
    #[serde(default)]
    pub backend_set_response_headers: BTreeMap<String, String>,
    /// The response to expect.
    #[serde(default)]
    pub response: Response,
    /// For redirects: where the Location must point.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// The backend (pod name prefix) that must serve the request.
    #[serde(default)]
    pub backend: Option<String>,
    /// The namespace the serving backend must be in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Backends that must receive a mirrored copy.
    #[serde(default)]
    pub mirrored_to: Vec<MirroredBackend>,
    /// A traffic split to check: backend name → expected share (0.0 to 1.0).
    #[serde(default)]
    pub weights: Option<BTreeMap<String, f64>>,
    /// After the request passes, send it this many more times; every one must pass.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Send as a gRPC call instead of an HTTP request.
    #[serde(default)]
    pub grpc: Option<GrpcCall>,
}

/// A request (upstream `http.Request`). Several header values are comma-separated. `{UUID}`
/// in the path, header values or the expected path stands for a fresh value per attempt.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// Host header; upstream's default for Gateway tests is the Gateway address. In mesh cases
    /// it names where the request goes: a Service DNS name, or `{POD_IP:namespace/deployment}`
    /// for the first pod of a Deployment. Both go through the waypoint, as ztunnel sends them
    /// to the mesh's waypoint (it takes `all` traffic): a pod-addressed request with the pod IP
    /// and port as destination, which the waypoint must forward to that pod without the
    /// Service's routes; the harness checks that the waypoint counted it as that pod's.
    #[serde(default)]
    pub host: Option<String>,
    /// Method, default GET.
    #[serde(default)]
    pub method: Option<String>,
    /// Path with query.
    #[serde(default = "slash")]
    pub path: String,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
    /// `HTTP/1.1` (default) or `HTTP/2` (h2c with prior knowledge).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Upgrade to a WebSocket and exchange one message.
    #[serde(default)]
    pub websocket: bool,
    /// `http` (default) or `https`: TLS to the listener, trusting the case's certificate.
    #[serde(default)]
    pub scheme: Option<String>,
    /// With `https`: the TLS server name to send; default the host without its port.
    #[serde(default)]
    pub sni: Option<String>,
}

impl Request {
    /// True when the request goes over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    }
}

/// The placeholder for a value unique to each attempt.
pub const UUID_PLACEHOLDER: &str = "{UUID}";

impl RequestCase {
    /// This case with `{UUID}` replaced by `unique` everywhere it may stand.
    pub fn with_unique(&self, unique: &str) -> RequestCase {
        let mut case = self.clone();
        let sub = |s: &mut String| {
            if s.contains(UUID_PLACEHOLDER) {
                *s = s.replace(UUID_PLACEHOLDER, unique);
            }
        };
        sub(&mut case.request.path);
        case.request.headers.values_mut().for_each(sub);
        if let Some(expected) = &mut case.expected_request {
            expected.path.as_mut().map(sub);
        }
        case
    }
}

fn slash() -> String {
    "/".into()
}

/// What must reach the backend (upstream `ExpectedRequest`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpectedRequest {
    /// The Host the backend must see.
    #[serde(default)]
    pub host: Option<String>,
    /// The method the backend must see.
    #[serde(default)]
    pub method: Option<String>,
    /// The path with query the backend must see; `""` means the request must not reach a
    /// backend at all (the waypoint answers it, as for a CORS preflight).
    #[serde(default)]
    pub path: Option<String>,
    /// Headers the backend must see (several values comma-joined).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers the backend must not see.
    #[serde(default)]
    pub absent_headers: Vec<String>,
    /// A request header the backend must see exactly once, naming the backend that served it
    /// (a prefix of the pod name): a backendRef-level filter set it.
    #[serde(default)]
    pub backend_header: Option<String>,
}

/// The response to expect (upstream `http.Response`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Response {
    /// Acceptable statuses; default `[200]`.
    #[serde(default)]
    pub status_codes: Vec<u16>,
    /// Headers the response must carry.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers the response must not carry.
    #[serde(default)]
    pub absent_headers: Vec<String>,
    /// Headers that may take any one of several values (upstream `ValidHeaderValues`).
    #[serde(default)]
    pub valid_header_values: BTreeMap<String, Vec<String>>,
    /// Compare header values with spaces removed (upstream `IgnoreWhitespace`).
    #[serde(default)]
    pub ignore_whitespace: bool,
}

/// Where a redirect must point (upstream `roundtripper.RedirectRequest`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`; default `http`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Host of the Location (default the request's host).
    #[serde(default)]
    pub host: Option<String>,
    /// Port of the Location; empty means the scheme's default (80/443 may be omitted).
    #[serde(default)]
    pub port: Option<String>,
    /// Path of the Location (default the request's path).
    #[serde(default)]
    pub path: Option<String>,
}

/// A backend that must see a mirrored copy.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirroredBackend {
    /// The backend's Service name (pod name prefix).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// For percentage mirrors: the percentage of requests it must see (0 to 100).
    #[serde(default)]
    pub percent: Option<f64>,
}

/// A gRPC call to the echo service.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcCall {
    /// `Echo`, `EchoTwo` or `EchoThree`.
    pub method: String,
    /// The service, default `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`.
    #[serde(default)]
    pub service: Option<String>,
    /// The expected gRPC status code; default 0 (OK).
    #[serde(default)]
    pub code: u32,
}

/// A case file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CaseError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

impl Case {
    /// Parses one case file's text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Case, String> {
        let case: Case = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        case.check()?;
        Ok(case)
    }

    /// Reads every `*.yaml` case in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Case>, CaseError> {
        let err = |path: &Path, message: String| CaseError {
            path: path.to_owned(),
            message,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| err(dir, e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).map_err(|e| err(path, e.to_string()))?;
                Case::parse(&text).map_err(|m| err(path, m))
            })
            .collect()
    }

    /// Consistency checks a schema cannot express.
    fn check(&self) -> Result<(), String> {
        if let Some(f) = self.features.iter().find(|f| !crate::features::known(f)) {
            return Err(format!(
                "features: {f:?} is neither a feature waypoint declares nor one it lists as unsupported (misspelt?)"
            ));
        }
        let upstream = crate::upstream::test(&self.name)
            .ok_or_else(|| format!("name: {:?} is not a test of the upstream suite", self.name))?;
        let mut named: Vec<&str> = self.features.iter().map(String::as_str).collect();
        let mut listed = upstream.features.to_vec();
        named.sort_unstable();
        listed.sort_unstable();
        if named != listed {
            return Err(format!(
                "features: {named:?}, but upstream {} lists {listed:?}",
                self.name
            ));
        }
        if self.provisional != upstream.provisional {
            return Err(format!(
                "provisional: {}, but upstream says {}",
                self.provisional, upstream.provisional
            ));
        }
        if !self.mesh && self.gateway.is_none() && !self.requests.is_empty() {
            let all_named = self.requests.iter().all(|r| r.gateway.is_some());
            if !all_named {
                return Err("requests need a gateway (case `gateway` or per request)".into());
            }
        }
        if self.certificate.is_none() && self.requests.iter().any(|r| r.request.is_https()) {
            return Err("https requests need the case's `certificate` (a Secret)".into());
        }
        let steps =
            std::iter::once(&self.connections).chain(self.then.iter().map(|s| &s.connections));
        for (i, c) in steps.flatten().enumerate() {
            c.check(self.gateway.is_some())
                .map_err(|e| format!("connections[{i}]: {e}"))?;
        }
        let checks = self
            .status
            .iter()
            .chain(self.then.iter().flat_map(|s| &s.status));
        for (i, s) in checks.enumerate() {
            let subjects = [
                s.route.is_some(),
                s.gateway.is_some(),
                s.gateway_class.is_some(),
            ];
            if subjects.iter().filter(|s| **s).count() != 1 {
                return Err(format!(
                    "status[{i}]: exactly one of route, gateway or gatewayClass"
                ));
            }
            if s.route.is_some() && !s.conditions.is_empty() && s.parent.is_none() {
                return Err(format!("status[{i}]: route conditions need a parent"));
            }
            let listener_conditions = s.listeners.iter().flatten().flat_map(|l| &l.conditions);
            for c in s.conditions.iter().chain(listener_conditions) {
                c.check().map_err(|e| format!("status[{i}]: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "case_tests.rs"]
mod tests;
