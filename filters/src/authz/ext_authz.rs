//! CUSTOM policies: asking an external HTTP authorization service (Istio's
//! `envoyExtAuthzHttp` provider) whether a request may pass.
//!
//! One HTTP/1.1 connection per check through the side-call client
//! ([`waypoint_core::http::client`]), closed afterwards: simple and correct; a pool can come
//! when a measurement asks for it.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::Empty;
use waypoint_core::body::{Body, full};
use waypoint_core::http::client::{SideCallError, SideClient};

/// The header carrying the peer's SPIFFE principal (`td/ns/x/sa/y`) to the provider. Any value
/// the client sent under this name is replaced, so it cannot be forged.
pub const SOURCE_PRINCIPAL_HEADER: &str = "x-waypoint-source-principal";

/// Longest provider response body relayed to a denied client.
const MAX_DENY_BODY: usize = 64 * 1024;

/// An external authorization provider, as Istio's mesh config `extensionProviders[]` entry of
/// type `envoyExtAuthzHttp` describes it. CUSTOM policies name it by `name`.
#[derive(Clone, Debug)]
pub struct ExtAuthzProvider {
    /// The name CUSTOM policies use in `provider.name`.
    pub name: String,
    /// Where the provider listens: `host:port` (a name is resolved per check).
    pub address: String,
    /// Prepended to the original path in the check request (`/check` + `/orig?q`).
    pub path_prefix: String,
    /// Request headers copied into the check request, by name; empty copies all of them.
    pub include_request_headers: Vec<String>,
    /// Headers of an allowing response copied onto the upstream request.
    pub headers_to_upstream: Vec<String>,
    /// Let requests through when the provider cannot be reached or answers too late.
    pub fail_open: bool,
    /// Deadline for the whole check: connect, request, response and denial body.
    pub timeout: Duration,
}

impl ExtAuthzProvider {
    /// A provider at `address` with Istio's defaults: all headers sent, nothing copied
    /// upstream, fail closed, 600 ms timeout (Envoy's ext_authz default is 200 ms; Istio's
    /// `timeout` default is 600 ms).
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        ExtAuthzProvider {
            name: name.into(),
            address: address.into(),
            path_prefix: String::new(),
            include_request_headers: Vec::new(),
            headers_to_upstream: Vec::new(),
            fail_open: false,
            timeout: Duration::from_millis(600),
        }
    }
}

/// The provider's answer.
pub(crate) enum CheckOutcome {
    /// 2xx: headers to set on the upstream request.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Any other status: relay this response to the client.
    Deny(http::Response<Body>),
    /// No usable answer (unreachable, timeout, protocol error): why.
    Failed(String),
}

/// What of the original request the check needs.
pub(crate) struct CheckRequest<'a> {
    pub method: &'a Method,
    /// Path and query, as forwarded upstream.
    pub path_and_query: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub principal: Option<&'a str>,
}

fn hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == CONTENT_LENGTH
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
        || name.as_str() == "te"
        || name.as_str() == "trailer"
}

pub(crate) async fn check(provider: &ExtAuthzProvider, req: &CheckRequest<'_>) -> CheckOutcome {
    match exchange(provider, req).await {
        Ok(outcome) => outcome,
        Err(why) => CheckOutcome::Failed(why),
    }
}

fn build_request(
    provider: &ExtAuthzProvider,
    req: &CheckRequest<'_>,
) -> Result<Request<Empty<Bytes>>, String> {
    let uri = format!("{}{}", provider.path_prefix, req.path_and_query);
    let mut out = Request::builder()
        .method(req.method.clone())
        .uri(&uri)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("check request for {uri:?}: {e}"))?;
    let headers = out.headers_mut();
    let source = HeaderName::from_static(SOURCE_PRINCIPAL_HEADER);
    for (name, value) in req.headers {
        let wanted = provider.include_request_headers.is_empty()
            || provider
                .include_request_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name.as_str()));
        if wanted && !hop_by_hop(name) && *name != HOST && *name != source {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(req.host) {
        headers.insert(HOST, host);
    }
    if let Some(p) = req.principal.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(source, p);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(out)
}

/// One check over the side-call client: the provider's timeout covers connect, request,
/// response and denial body.
async fn exchange(
    provider: &ExtAuthzProvider,
    req: &CheckRequest<'_>,
) -> Result<CheckOutcome, String> {
    let request = build_request(provider, req)?;
    let failed = |e: SideCallError| match e {
        // The address is in the message already.
        SideCallError::Connect { .. } => e.to_string(),
        e => format!("check with {}: {e}", provider.address),
    };
    let response = SideClient::new(provider.timeout, MAX_DENY_BODY)
        .send(&provider.address, request)
        .await
        .map_err(failed)?;
    if response.status().is_success() {
        // An allowing answer is read for its headers only.
        let copied = provider
            .headers_to_upstream
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .flat_map(|name| {
                response
                    .headers()
                    .get_all(&name)
                    .iter()
                    .map(|v| (name.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        return Ok(CheckOutcome::Allow(copied));
    }
    let (parts, body) = response.into_response().await.map_err(failed)?.into_parts();
    let mut deny = http::Response::new(full(body));
    *deny.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            deny.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(CheckOutcome::Deny(deny))
}

/// The status a provider failure turns into when the provider is not fail-open.
pub(crate) const FAILURE_STATUS: StatusCode = StatusCode::FORBIDDEN;
