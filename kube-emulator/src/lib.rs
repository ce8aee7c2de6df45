//! An in-process stand-in for the Kubernetes API server, for waypoint's tests.
//!
//! No real API server can run where waypoint is built and tested, yet the Kubernetes config
//! source, the status writer and the conformance harness must be driven through the real
//! protocol, by the real binary. This crate serves that protocol over loopback:
//!
//! - generic storage under `/api/v1/...` and `/apis/{group}/{version}/...`, keyed by group and
//!   plural (objects stay JSON; any plural is served, a small table maps kinds to plurals);
//! - one global `resourceVersion`, `uid`, `creationTimestamp`, `generation` (bumped when
//!   anything outside `metadata`/`status` changes, never by status writes);
//! - LIST with `limit`/`continue` (every page shows the same version, as etcd does), WATCH
//!   with replay from a `resourceVersion`, bookmarks, `timeoutSeconds`, and 410 Expired after
//!   [`Emulator::compact`] (as an `ERROR` event or as HTTP 410, see [`ExpiredWatch`]);
//! - GET, POST (409 AlreadyExists), PUT (409 Conflict on a stale `resourceVersion`; status
//!   kept), PUT `.../status` (only `status` taken), PATCH `application/merge-patch+json` on
//!   both, PATCH `application/apply-patch+yaml` (server-side apply, approximated without field
//!   ownership: see the `apply` module), DELETE (a DELETED event with the last state, and the
//!   objects it owns deleted with it: garbage collection, approximated synchronously);
//!   failures as `Status` objects;
//! - a Service created without a `clusterIP` gets one (`10.96.x.y`), kept through later
//!   writes that leave it out, as the API server allocates and keeps it;
//! - an optional bearer token, optional HTTPS with a generated CA, and a kubeconfig for it;
//! - fault injection: [`Emulator::compact`], [`Emulator::break_watches`],
//!   [`Emulator::set_unavailable`], [`Emulator::unserve`]; and a request log
//!   ([`Emulator::requests`]).
//!
//! It does not do admission, CRD schema validation, field ownership (`managedFields`),
//! strategic merge or JSON patch, label or field selectors, `generateName`, finalizers, or
//! background garbage collection. Nothing runs Pods: tests write their status, as a kubelet
//! would.
//! It depends on no waypoint crate on purpose: it plays the other side of the wire.
//!
//! ```no_run
//! # async fn demo() -> Result<(), waypoint_kube_emulator::EmulatorError> {
//! use waypoint_kube_emulator::{Emulator, EmulatorOptions};
//!
//! let emulator = Emulator::start(EmulatorOptions {
//!     tls: true,
//!     token: Some("test-token".into()),
//!     ..EmulatorOptions::default()
//! })
//! .await?;
//! emulator.apply_yaml(
//!     "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n---\n\
//!      apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: apps}\n\
//!      spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n",
//! )?;
//! emulator.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! // ... run `waypoint run --kube` with KUBECONFIG=/tmp/kubeconfig, then:
//! let gateway = emulator.get("gateway.networking.k8s.io/v1", "Gateway", "apps", "waypoint");
//! assert!(emulator.requests().iter().all(|r| !r.is_write()));
//! # let _ = gateway;
//! # Ok(())
//! # }
//! ```

mod apply;
mod body;
mod change;
mod kinds;
mod kubeconfig;
mod meta;
mod options;
mod paging;
mod route;
mod server;
mod shared;
mod status;
mod store;
mod tls;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use kinds::ResourceKind;
pub use options::{EmulatorOptions, ExpiredWatch};
pub use shared::RecordedRequest;

use kinds::split_api_version;
use server::present;
use shared::Shared;
use status::ApiError;
use store::Resource;

/// Why a test-side call failed.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The kind table does not know this `apiVersion`/`kind` (see
    /// [`Emulator::register_kind`]).
    #[error("unknown kind {kind} in {api_version}: register it with Emulator::register_kind")]
    UnknownKind {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// The object lacks what the emulator needs (`apiVersion`, `kind`, `metadata.name`).
    #[error("invalid object: {0}")]
    Invalid(String),
    /// The store refused the write, as the API server would answer it.
    #[error("{code} {reason}: {message}")]
    Api {
        /// HTTP status code.
        code: u16,
        /// `Status.reason`.
        reason: String,
        /// `Status.message`.
        message: String,
    },
    /// The YAML text could not be read.
    #[error("YAML: {0}")]
    Yaml(String),
    /// Binding the port or writing the kubeconfig failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Generating the certificates failed.
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<ApiError> for EmulatorError {
    fn from(e: ApiError) -> Self {
        EmulatorError::Api {
            code: e.code,
            reason: e.reason.to_owned(),
            message: e.message,
        }
    }
}

/// A running emulated API server on `127.0.0.1`; it stops (and drops every connection) when
/// dropped.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    server: JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(options: EmulatorOptions) -> Result<Emulator, EmulatorError> {
        let tls = if options.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options));
        let (ca_pem, acceptor) = match tls {
            Some(t) => (Some(t.ca_pem), Some(t.acceptor)),
            None => (None, None),
        };
        let server = tokio::spawn(server::serve(listener, acceptor, shared.clone()));
        Ok(Emulator {
            shared,
            addr,
            ca_pem,
            server,
        })
    }

    /// `http://127.0.0.1:<port>` or `https://...` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signed the server certificate, with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The kubeconfig text: this server, its CA when TLS, its token when set, as the current
    /// context.
    pub fn kubeconfig(&self) -> String {
        kubeconfig::render(
            &self.url(),
            self.ca_pem(),
            self.shared.options.token.as_deref(),
        )
    }

    /// Writes [`Emulator::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), EmulatorError> {
        std::fs::write(path, self.kubeconfig())?;
        Ok(())
    }

    /// Teaches the emulator a kind beyond the built-in table (for [`Emulator::apply`] and for
    /// the scope of its URLs).
    pub fn register_kind(&self, kind: ResourceKind) {
        self.shared.kinds().register(kind);
    }

    fn resource(&self, api_version: &str, kind: &str) -> Result<Resource, EmulatorError> {
        let (group, _) = split_api_version(api_version);
        let kinds = self.shared.kinds();
        let known = kinds
            .by_kind(group, kind)
            .ok_or_else(|| EmulatorError::UnknownKind {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            })?;
        Ok(Resource {
            group: known.group.clone(),
            plural: known.plural.clone(),
            kind: Some(known.kind.clone()),
            namespaced: known.namespaced,
        })
    }

    /// Creates `object` or replaces the stored one of the same kind, namespace (default
    /// `default`) and name, as `kubectl apply` would for a test's purposes: unconditionally,
    /// keeping `uid` and `creationTimestamp`, bumping `generation` when the spec changes. A
    /// `status` in the object is stored too (tests play the kubelet and other controllers);
    /// without one the stored status stays.
    pub fn apply(&self, object: Value) -> Result<Value, EmulatorError> {
        let field = |name: &str| -> Result<String, EmulatorError> {
            object[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| EmulatorError::Invalid(format!("the object has no {name}")))
        };
        let (api_version, kind) = (field("apiVersion")?, field("kind")?);
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| EmulatorError::Invalid(format!("a {kind} without metadata.name")))?
            .to_owned();
        let resource = self.resource(&api_version, &kind)?;
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let mut object = object;
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let ns = Some(namespace.as_str());
        let mut store = self.shared.store();
        let written = if store.get(&resource, ns, &name).is_some() {
            store.replace(&resource, ns, &name, object, true)?
        } else {
            store.create(&resource, ns, object, true)?
        };
        Ok(present(written, &api_version, true))
    }

    /// Applies every document of a multi-document YAML text, in order; empty documents are
    /// skipped. Stops at the first failure (earlier documents stay applied).
    pub fn apply_yaml(&self, text: &str) -> Result<Vec<Value>, EmulatorError> {
        let mut options = serde_saphyr::Options::default();
        // YAML 1.2 booleans: `name: no` stays a string, as the API server reads JSON.
        options.strict_booleans = true;
        let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
            .map_err(|e| EmulatorError::Yaml(e.to_string()))?;
        documents
            .into_iter()
            .filter(|d| !d.is_null())
            .map(|d| self.apply(d))
            .collect()
    }

    /// Deletes an object (`namespace` is ignored for cluster-scoped kinds); its watchers get
    /// DELETED. `Ok(None)` when it did not exist.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, EmulatorError> {
        let resource = self.resource(api_version, kind)?;
        let deleted = self.shared.store().delete(&resource, Some(namespace), name);
        Ok(deleted.ok().map(|o| present(o, api_version, true)))
    }

    /// One object as served at `api_version` (`namespace` is ignored for cluster-scoped
    /// kinds).
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = self.resource(api_version, kind).ok()?;
        let object = self
            .shared
            .store()
            .get(&resource, Some(namespace), name)
            .cloned();
        object.map(|o| present(o, api_version, true))
    }

    /// Merges `patch` (RFC 7386) into the status of an object, as a controller's
    /// `PATCH .../status` would: atomically, keeping spec, generation and every status field
    /// the patch does not name. `Ok(None)` when the object does not exist.
    pub fn patch_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Option<Value>, EmulatorError> {
        let resource = self.resource(api_version, kind)?;
        let mut store = self.shared.store();
        let Some(stored) = store.get(&resource, Some(namespace), name) else {
            return Ok(None);
        };
        let mut body = stored.clone();
        meta::merge_patch(&mut body["status"], patch);
        let written = store.replace_status(&resource, Some(namespace), name, body)?;
        Ok(Some(present(written, api_version, true)))
    }

    /// Every object of a kind, in every namespace.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Ok(resource) = self.resource(api_version, kind) else {
            return Vec::new();
        };
        let page = self.shared.store().list(&resource, None, None, None);
        page.map(|p| p.items)
            .unwrap_or_default()
            .into_iter()
            .map(|o| present(o, api_version, true))
            .collect()
    }

    /// Every object of every kind, each with the `apiVersion` it was written with (grouped by
    /// API group and plural, then by namespace and name).
    pub fn objects(&self) -> Vec<Value> {
        self.shared.store().all()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> String {
        self.shared.store().resource_version().to_string()
    }

    /// Forgets the change history: a watch from any earlier version gets 410 Expired, and so
    /// does a continue token handed out before.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Closes every open watch connection abruptly (the response stops mid-stream, as when
    /// the connection is lost).
    pub fn break_watches(&self) {
        self.shared.store().break_watches();
    }

    /// How many watches are open now (a client's watch counts from its first byte).
    pub fn open_watches(&self) -> usize {
        self.shared.store().open_watches()
    }

    /// While `true`, every request is answered 503 and open watches are broken (the server
    /// went away); `false` serves again.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.set_unavailable(unavailable);
        if unavailable {
            self.break_watches();
        }
    }

    /// Stops serving `group`/`version` (404 for every URL under it), as a cluster without
    /// that CRD version does. `group` is `""` for the core group.
    pub fn unserve(&self, group: &str, version: &str) {
        self.shared.store().set_served(group, version, false);
    }

    /// Serves `group`/`version` again after [`Emulator::unserve`].
    pub fn serve(&self, group: &str, version: &str) {
        self.shared.store().set_served(group, version, true);
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }
}
