//! A harness for testing filters in memory (feature `test-helpers`): a chain built from
//! manifests, requests sent with a chosen connection, and the decision read back.
//!
//! The same harness serves the built-in filters' tests, vendors' tests and `examples/`: it runs
//! exactly the chain a waypoint would build for those manifests (through [`Install`], the one
//! registration entry point), with no socket, no upstream and no clock of its own.
//!
//! - [`TestChain::new`] parses the manifests ([`service`] writes the usual Service) and builds the chain; [`TestChain::reports`] holds
//!   what the factories reported.
//! - [`TestChain::send`] runs the request phase for a request on a [`ConnInfo`] ([`conn`] makes
//!   one) and returns an [`Exchange`]: answered (the local reply) or forwarded (to which
//!   [`UpstreamTarget`], by which route, with which flags).
//! - [`Exchange::respond`] plays the upstream: it runs the response phase on a canned response,
//!   and [`Exchange::finish`] runs the end-of-request phase. Bodies pass through the observers
//!   filters attached when you read them ([`Exchange::forwarded_body`], [`text`]).
//!
//! ```
//! # tokio_test_block_on(async {
//! use waypoint_core::filter::testing::{TestChain, conn};
//! use waypoint_core::filter::{Decision, FilterSet, request_fn};
//!
//! let chain = TestChain::new("", |filters: &mut FilterSet| {
//!     filters.filter(request_fn("deny-all", |_req, _ctx| {
//!         Decision::Respond(waypoint_core::body::local_reply(http::StatusCode::FORBIDDEN, "no"))
//!     }));
//! })
//! .expect("manifests parse");
//! let exchange = chain.send(conn("10.96.0.10:80"), http::Request::get("/").body(Default::default()).unwrap()).await;
//! assert_eq!(exchange.status(), Some(http::StatusCode::FORBIDDEN));
//! # });
//! # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};
use crate::config::{Config, LoadError, parse_manifests};
use crate::conn::{Binding, ConnInfo};
use crate::flags::ResponseFlag;

use super::{
    BuildOutput, BuildReport, Decision, FilterChain, FilterSet, Finished, Install, Request,
    RequestContext, Response, RouteMatch, UpstreamTarget,
};

/// A connection to `destination` (`"10.96.0.10:80"`) with no peer identity, as a plain
/// listener named `test` would accept it. Set `peer_identity` (or use [`conn_as`]) for a
/// caller.
///
/// # Panics
/// When `destination` is not an `ip:port`: it is a test's own literal.
pub fn conn(destination: &str) -> ConnInfo {
    let mut conn = ConnInfo::new(Binding::Plain {
        listener: "test".into(),
    });
    conn.destination = Some(
        destination
            .parse::<SocketAddr>()
            .expect("a test destination is ip:port"),
    );
    conn
}

/// [`conn`] from the SPIFFE identity `identity` (`spiffe://cluster.local/ns/default/sa/sleep`).
///
/// # Panics
/// When `destination` or `identity` does not parse: they are a test's own literals.
pub fn conn_as(destination: &str, identity: &str) -> ConnInfo {
    let mut conn = conn(destination);
    conn.peer_identity = Some(identity.parse().expect("a test identity is a SPIFFE id"));
    conn
}

/// The manifest of a Service `name` in namespace `default` at `cluster_ip`, with one HTTP
/// port: the usual first document of a test's manifests.
pub fn service(name: &str, cluster_ip: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {cluster_ip}\n  ports: [{{name: http, port: {port}}}]\n"
    )
}

/// Reads a body whole.
pub async fn collect(body: Body) -> Result<Bytes, BoxError> {
    Ok(body.collect().await?.to_bytes())
}

/// Reads a response's body whole as text (lossy UTF-8); a failed body reads as its error.
pub async fn text(resp: Response) -> String {
    match collect(resp.into_body()).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("<body failed: {error}>"),
    }
}

/// The chain a waypoint would build for some manifests and filters.
#[derive(Debug)]
pub struct TestChain {
    config: Arc<Config>,
    chain: FilterChain,
    output: BuildOutput,
}

impl TestChain {
    /// Parses `manifests` (multi-document YAML, as `kubectl apply` takes) and builds the chain
    /// of `filters` for them.
    pub fn new(manifests: &str, filters: impl Install) -> Result<Self, LoadError> {
        Ok(Self::from_config(
            parse_manifests(manifests, "test.yaml")?,
            filters,
        ))
    }

    /// Builds the chain of `filters` for an already validated `config`.
    pub fn from_config(config: Config, filters: impl Install) -> Self {
        let mut set = FilterSet::new();
        set.install(filters);
        let (chain, output) = set.build(&config);
        TestChain {
            config: Arc::new(config),
            chain,
            output,
        }
    }

    /// The validated config.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The chain built.
    pub fn chain(&self) -> &FilterChain {
        &self.chain
    }

    /// The problems the factories reported.
    pub fn reports(&self) -> &[BuildReport] {
        &self.output.reports
    }

    /// Everything the factories reported, route and Gateway status included.
    pub fn output(&self) -> &BuildOutput {
        &self.output
    }

    /// Runs the request phase for `req` arriving on `conn`.
    pub async fn send(&self, conn: ConnInfo, mut req: Request) -> Exchange {
        let mut ctx = RequestContext::new(Arc::new(conn), self.config.clone());
        let response = match self.chain.run_request(&mut req, &mut ctx).await {
            Decision::Respond(resp) => Some(resp),
            Decision::Continue => None,
        };
        Exchange {
            request: req,
            ctx,
            response,
            chain: self.chain.clone(),
        }
    }

    /// Sends `GET path` to `destination` with no identity.
    ///
    /// # Panics
    /// When `path` is not a valid URI: it is a test's own literal.
    pub async fn get(&self, destination: &str, path: &str) -> Exchange {
        let req = http::Request::get(path)
            .body(crate::body::empty())
            .expect("a test path is a valid URI");
        self.send(conn(destination), req).await
    }
}

/// One request after the request phase: what the chain decided, and the request and context
/// as it left them.
#[derive(Debug)]
pub struct Exchange {
    /// The request as the filters left it (what would be forwarded).
    pub request: Request,
    /// The request's context.
    pub ctx: RequestContext,
    /// The local reply, when a filter answered; its response phase has run.
    pub response: Option<Response>,
    chain: FilterChain,
}

impl Exchange {
    /// The status of the local reply, `None` when the request was forwarded.
    pub fn status(&self) -> Option<StatusCode> {
        self.response.as_ref().map(|r| r.status())
    }

    /// True when every filter continued (the request would go upstream).
    pub fn forwarded(&self) -> bool {
        self.response.is_none()
    }

    /// Where routing sent the request.
    pub fn upstream(&self) -> Option<&UpstreamTarget> {
        self.ctx.upstream.as_ref()
    }

    /// The chosen backend Service as `namespace/name`.
    pub fn upstream_service(&self) -> Option<String> {
        self.upstream()
            .map(|u| format!("{}/{}", u.backend.service.namespace, u.backend.service.name))
    }

    /// The route rule that matched.
    pub fn route(&self) -> Option<&RouteMatch> {
        self.ctx.route.as_ref()
    }

    /// The response flags set so far.
    pub fn flags(&self) -> &[ResponseFlag] {
        &self.ctx.response_flags
    }

    /// Takes the local reply's body as text (empty when the request was forwarded).
    pub async fn reply_text(&mut self) -> String {
        match self.response.take() {
            Some(resp) => text(resp).await,
            None => String::new(),
        }
    }

    /// Reads the forwarded request body as the upstream would, through the observers filters
    /// attached.
    pub async fn forwarded_body(&mut self) -> Result<Bytes, BoxError> {
        let body = std::mem::replace(self.request.body_mut(), crate::body::empty());
        collect(body).await
    }

    /// Plays the upstream: runs the response phase on `upstream`, as the waypoint would on the
    /// backend's answer, and returns the response the client would get (its body streams
    /// through the observers filters attached).
    pub async fn respond(&mut self, mut upstream: Response) -> Response {
        self.chain.run_response(&mut upstream, &mut self.ctx).await;
        upstream
    }

    /// Runs the end-of-request phase as if the response had ended with `status` and these body
    /// byte counts, now.
    pub fn finish(&self, status: StatusCode, request_bytes: u64, response_bytes: u64) {
        let finished = Finished::new(
            &self.ctx,
            status,
            self.ctx.started.elapsed(),
            request_bytes,
            response_bytes,
        );
        self.chain.run_finished(&finished);
    }
}
