//! Protocol upgrades and tunnels on the HTTP listeners: which ones the waypoint carries.
//!
//! A protocol switch turns a request into a raw byte tunnel, and nothing in a tunnel is seen by
//! the filter chain again. Every later "request" on it bypasses authentication, authorization
//! and routing. The known case is *h2c smuggling*: an HTTP/1.1 request with `Upgrade: h2c` that
//! a backend accepts gives the client a raw HTTP/2 connection to that backend through the proxy.
//! So the waypoint carries a switch only when all of these hold:
//!
//! 1. the request is HTTP/1.1 with `Connection: upgrade` and every protocol its `Upgrade`
//!    header names is on the allow-list ([`AllowedUpgrades`], `--allowed-upgrades`, default
//!    `websocket` only, as Istio configures its waypoints' `upgrade_configs`);
//! 2. the request went through the whole filter chain and was forwarded (so an
//!    AuthorizationPolicy denial is a 403, never a tunnel);
//! 3. the backend answered `101 Switching Protocols` with an `Upgrade` naming one of the
//!    protocols the request asked for (RFC 9110 §7.8 forbids anything else).
//!
//! What happens otherwise, and why:
//!
//! | request | answer | why |
//! |---|---|---|
//! | `Upgrade: h2c` (alone, with `HTTP2-Settings`) | upgrade headers **stripped**, served as a plain HTTP/1.1 request | RFC 9110 §7.8 lets a server ignore `Upgrade`; clients such as `curl --http2` send h2c on every plain `http://` request and must keep working; Envoy does the same. h2c can never be allowed. |
//! | `Upgrade` with any other protocol not on the list | **403**, connection closed | as Envoy answers an upgrade with no `upgrade_configs` entry; closing means bytes a client sent after the head are never parsed as a request |
//! | `CONNECT` (HTTP/1.1 or h2c) | **403**, HTTP/1.1 connection closed, before the filter chain and any backend | Envoy answers 403 to a CONNECT its listener has no `upgrade_configs` entry for, which is the case on Istio waypoints' inner HTTP listeners (CONNECT is only terminated on the HBONE port, by the transport). Not configurable: a tunnel to an arbitrary authority is exactly what per-request policy cannot see into. |
//! | HTTP/2 extended CONNECT (RFC 8441, `:protocol`) | stream reset with `PROTOCOL_ERROR` by the HTTP/2 layer | the server never advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL`, so a `:protocol` request is malformed (RFC 8441 §3, RFC 9113 §8.1.1); Istio's waypoint does not set `allow_connect` on its inner listener either. It never reaches the waypoint's request path and so is not counted here. |
//! | backend answers 101 to anything else | **502** (flag `UPE`), backend connection closed, no tunnel | a backend switching protocols unasked is a backend error |
//!
//! `HTTP2-Settings` is hop-by-hop and never forwarded. A filter that adds upgrade headers the
//! list does not allow has them stripped before forwarding.
//!
//! Every decision is counted in `waypoint_upgrades_total{protocol,decision}`, decisions
//! `allowed`, `stripped`, `refused` and `backend_error`. The `protocol` label is the lowercased
//! protocol name when it is on the list or one of `websocket`, `h2c`, `connect`, else `other`
//! (client-chosen labels would let a client grow the metric without bound). Refusals and strips
//! also log a line naming the peer and the reason.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::AsyncWriteExt;

use crate::body::{Body, local_reply};
use crate::conn::ConnInfo;
use crate::upstream::{HTTP2_SETTINGS, header_tokens, is_upgrade};

/// Protocols whose upgrade the waypoint carries when nothing else is configured.
pub(crate) const DEFAULT_ALLOWED_UPGRADES: &[&str] = &["websocket"];

/// A protocol list that cannot be allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeConfigError {
    /// `h2c` was asked for.
    #[error(
        "the h2c upgrade can never be allowed: it would hand clients a raw HTTP/2 connection to the backend that the filter chain never sees (h2c smuggling); h2c upgrade requests are stripped and served as HTTP/1.1"
    )]
    H2c,
    /// Not an HTTP token.
    #[error(
        "{0:?} is not an upgrade protocol name (an HTTP token such as `websocket`, without a version)"
    )]
    InvalidProtocol(String),
}

/// The protocols a client may switch an HTTP/1.1 connection to through the waypoint, lowercased.
/// Never contains `h2c`. The default allows `websocket` only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedUpgrades(Vec<String>);

impl AllowedUpgrades {
    /// Validates `protocols` (compared case-insensitively, duplicates dropped). An empty list
    /// allows no upgrade at all.
    pub fn new<I, S>(protocols: I) -> Result<Self, UpgradeConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<String> = Vec::new();
        for p in protocols {
            let p = p.as_ref().trim().to_ascii_lowercase();
            if p == "h2c" {
                return Err(UpgradeConfigError::H2c);
            }
            if p.is_empty() || !p.bytes().all(is_tchar) {
                return Err(UpgradeConfigError::InvalidProtocol(p));
            }
            if !list.contains(&p) {
                list.push(p);
            }
        }
        Ok(AllowedUpgrades(list))
    }

    /// The allowed protocols, lowercased.
    pub fn protocols(&self) -> &[String] {
        &self.0
    }

    /// True when an `Upgrade` token (`name` or `name/version`, any case) names an allowed
    /// protocol.
    pub fn allows(&self, token: &str) -> bool {
        let name = protocol_name(token);
        self.0.iter().any(|p| p.eq_ignore_ascii_case(name))
    }
}

impl Default for AllowedUpgrades {
    fn default() -> Self {
        AllowedUpgrades(
            DEFAULT_ALLOWED_UPGRADES
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        )
    }
}

/// Parses a comma-separated list; `none` or an empty string allows nothing.
impl FromStr for AllowedUpgrades {
    type Err = UpgradeConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() || s.trim().eq_ignore_ascii_case("none") {
            return Ok(AllowedUpgrades(Vec::new()));
        }
        AllowedUpgrades::new(s.split(','))
    }
}

impl fmt::Display for AllowedUpgrades {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("none"),
            false => f.write_str(&self.0.join(",")),
        }
    }
}

/// RFC 9110 §5.6.2 `tchar`, minus `/` which separates a version.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `websocket/13` → `websocket`.
fn protocol_name(token: &str) -> &str {
    token.split('/').next().unwrap_or(token).trim()
}

fn is_h2c(token: &str) -> bool {
    protocol_name(token).eq_ignore_ascii_case("h2c")
}

/// What became of an upgrade or tunnel request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpgradeDecision {
    /// Passed on to the filter chain and, if it continues, to the backend.
    Allowed,
    /// Upgrade headers removed; served as a plain request.
    Stripped,
    /// Answered 403 without reaching a backend.
    Refused,
    /// The backend switched protocols without an allowed request for it: 502, no tunnel.
    BackendError,
}

impl UpgradeDecision {
    /// The `decision` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            UpgradeDecision::Allowed => "allowed",
            UpgradeDecision::Stripped => "stripped",
            UpgradeDecision::Refused => "refused",
            UpgradeDecision::BackendError => "backend_error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpgradeLabels {
    protocol: Cow<'static, str>,
    decision: &'static str,
}

/// The upgrade policy of the HTTP listeners and its counters (see the module documentation).
/// Clones share the counters.
#[derive(Clone, Debug)]
pub(crate) struct UpgradePolicy {
    allowed: AllowedUpgrades,
    counts: Family<UpgradeLabels, Counter>,
}

/// WebSocket only.
impl Default for UpgradePolicy {
    fn default() -> Self {
        UpgradePolicy::new(AllowedUpgrades::default())
    }
}

/// An upgrade [`UpgradePolicy::admit`] let through (the upstream checks the backend's 101
/// against the request's `Upgrade` header itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Granted {
    /// The metric label of the first protocol asked for.
    pub(crate) label: Cow<'static, str>,
}

impl UpgradePolicy {
    /// A policy allowing `allowed`, its counters starting at zero for the decisions a
    /// dashboard looks for first.
    pub(crate) fn new(allowed: AllowedUpgrades) -> Self {
        let policy = UpgradePolicy {
            allowed,
            counts: Family::default(),
        };
        let mut series: Vec<(Cow<'static, str>, UpgradeDecision)> = policy
            .allowed
            .protocols()
            .iter()
            .map(|p| (Cow::Owned(p.clone()), UpgradeDecision::Allowed))
            .collect();
        series.push((Cow::Borrowed("h2c"), UpgradeDecision::Stripped));
        series.push((Cow::Borrowed("connect"), UpgradeDecision::Refused));
        for (protocol, decision) in series {
            drop(policy.counts.get_or_create(&UpgradeLabels {
                protocol,
                decision: decision.label(),
            }));
        }
        policy
    }

    /// Registers `waypoint_upgrades_total{protocol,decision}` into `registry`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "waypoint_upgrades",
            "HTTP upgrade and CONNECT requests, by protocol and what the waypoint did with them",
            self.counts.clone(),
        );
    }

    /// How many requests for `protocol` (a label value) got `decision` so far.
    #[cfg(test)]
    pub(crate) fn count(&self, protocol: &str, decision: UpgradeDecision) -> u64 {
        let labels = UpgradeLabels {
            protocol: Cow::Owned(protocol.to_owned()),
            decision: decision.label(),
        };
        self.counts.get(&labels).map_or(0, |c| c.get())
    }

    fn inc(&self, protocol: Cow<'static, str>, decision: UpgradeDecision) {
        self.counts
            .get_or_create(&UpgradeLabels {
                protocol,
                decision: decision.label(),
            })
            .inc();
    }

    /// A bounded metric label for a client-chosen protocol token.
    fn label(&self, token: &str) -> Cow<'static, str> {
        let name = protocol_name(token).to_ascii_lowercase();
        match name.as_str() {
            "websocket" => Cow::Borrowed("websocket"),
            "h2c" => Cow::Borrowed("h2c"),
            "connect" => Cow::Borrowed("connect"),
            _ if self.allowed.allows(&name) => Cow::Owned(name),
            _ => Cow::Borrowed("other"),
        }
    }

    /// Decides on a request before the filter chain sees it. `Err` is why it is answered 403
    /// instead of being served; `Ok(Some)` an allowed upgrade; `Ok(None)` a request that asks for
    /// none (any `Upgrade: h2c` has been removed).
    pub(crate) fn admit(
        &self,
        req: &mut Request<Body>,
        conn: &ConnInfo,
    ) -> Result<Option<Granted>, Refused> {
        if req.method() == Method::CONNECT {
            // RFC 8441 extended CONNECT only gets here if the HTTP/2 server advertised it.
            let protocol = req
                .extensions()
                .get::<hyper::ext::Protocol>()
                .map_or(Cow::Borrowed("connect"), |p| self.label(p.as_str()));
            self.inc(protocol.clone(), UpgradeDecision::Refused);
            let authority = req.uri().authority().map(|a| a.to_string());
            tracing::warn!(source = ?conn.source, destination = ?conn.destination, %protocol,
                authority = ?authority, "refusing CONNECT: tunnels are not allowed on HTTP listeners");
            return Err(Refused::new(req.version(), Refusal::Connect));
        }
        if req.version() > Version::HTTP_11 || !is_upgrade(req.headers()) {
            return Ok(None);
        }
        let tokens: Vec<String> = header_tokens(req.headers(), &header::UPGRADE).collect();
        let wanted: Vec<&String> = tokens.iter().filter(|t| !is_h2c(t)).collect();
        if wanted.is_empty() {
            strip(req);
            self.inc(Cow::Borrowed("h2c"), UpgradeDecision::Stripped);
            tracing::info!(source = ?conn.source, destination = ?conn.destination,
                "stripped an h2c upgrade: served as HTTP/1.1 (h2c is never carried)");
            return Ok(None);
        }
        if let Some(denied) = wanted.iter().find(|t| !self.allowed.allows(t)) {
            self.inc(self.label(denied), UpgradeDecision::Refused);
            tracing::warn!(source = ?conn.source, destination = ?conn.destination,
                protocol = %denied, allowed = %self.allowed,
                "refusing an upgrade to a protocol that is not allowed");
            return Err(Refused::new(
                req.version(),
                Refusal::Protocol((*denied).clone()),
            ));
        }
        if wanted.len() != tokens.len() {
            // `Upgrade: h2c, websocket`: the h2c offer goes, the rest stays.
            let rest = wanted
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&rest) {
                req.headers_mut().insert(header::UPGRADE, value);
            }
        }
        req.headers_mut().remove(HTTP2_SETTINGS);
        let label = self.label(wanted[0]);
        self.inc(label.clone(), UpgradeDecision::Allowed);
        Ok(Some(Granted { label }))
    }

    /// After the filter chain: an upgrade a filter added (or widened) that this policy does not
    /// allow is stripped, so only [`UpgradePolicy::admit`]ted upgrades reach a backend.
    pub(crate) fn recheck(&self, req: &mut Request<Body>, conn: &ConnInfo) {
        if req.version() > Version::HTTP_11 || !is_upgrade(req.headers()) {
            return;
        }
        let denied = header_tokens(req.headers(), &header::UPGRADE)
            .find(|t| is_h2c(t) || !self.allowed.allows(t));
        if let Some(denied) = denied {
            strip(req);
            self.inc(self.label(&denied), UpgradeDecision::Stripped);
            tracing::warn!(source = ?conn.source, destination = ?conn.destination,
                protocol = %denied, "stripped an upgrade a filter asked for: not allowed");
        }
    }

    /// Counts a backend that switched protocols without an allowed request for it.
    pub(crate) fn backend_error(&self, granted: Option<&Granted>) {
        let label = granted.map_or(Cow::Borrowed("none"), |g| g.label.clone());
        self.inc(label, UpgradeDecision::BackendError);
    }
}

/// Removes `Upgrade`, `HTTP2-Settings` and their mention in `Connection`, keeping any other
/// `Connection` token (the hop-by-hop removal deals with those later).
fn strip(req: &mut Request<Body>) {
    let headers = req.headers_mut();
    let keep: Vec<String> = header_tokens(headers, &header::CONNECTION)
        .filter(|t| t != "upgrade" && t != HTTP2_SETTINGS.as_str())
        .collect();
    headers.remove(header::UPGRADE);
    headers.remove(HTTP2_SETTINGS);
    headers.remove(header::CONNECTION);
    if !keep.is_empty()
        && let Ok(value) = HeaderValue::from_str(&keep.join(", "))
    {
        headers.insert(header::CONNECTION, value);
    }
}

/// Why a request is refused before the filter chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// A `CONNECT` (plain or extended).
    #[error("CONNECT is not allowed on this listener")]
    Connect,
    /// An upgrade to a protocol not on the list.
    #[error("upgrade to {0:?} is not allowed")]
    Protocol(String),
}

/// A refusal and the HTTP version of the request it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    version: Version,
    why: Refusal,
}

impl Refused {
    fn new(version: Version, why: Refusal) -> Self {
        Refused { version, why }
    }

    /// 403 with the reason; on HTTP/1.x the connection closes after it, so nothing the client
    /// sent after the head (tunnel bytes, a smuggled request) is ever read as a request.
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut resp = local_reply(StatusCode::FORBIDDEN, self.why.to_string());
        if self.version <= Version::HTTP_11 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Makes sure the refusal of a `CONNECT` or upgrade request reaches the client before its
/// connection ends.
///
/// hyper does not shut such a connection down itself once the answer is written: it hands the
/// byte stream to whoever claims the request's upgrade, and drops it when nobody does. Dropped,
/// a TCP socket still delivers what was written, but an HBONE stream is reset, and a reset
/// discards the answer still queued in HTTP/2. So the upgrade is claimed here and the stream
/// shut down in order (END_STREAM, or FIN), after the answer. When no switch happens (HTTP/2,
/// or the connection stays open), the claim just resolves to an error and the task ends.
pub(crate) fn close_after_answer(req: &mut Request<Body>) {
    if req
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return;
    }
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on.await {
            let mut io = TokioIo::new(upgraded);
            let _ = io.shutdown().await;
        }
    });
}

/// True when a 101's `Upgrade` names only protocols the request offered (by name, any case).
pub(crate) fn switch_was_offered(
    offered: &[String],
    response: &http::HeaderMap,
) -> Result<(), String> {
    let chosen: Vec<String> = header_tokens(response, &header::UPGRADE).collect();
    if chosen.is_empty() {
        return Err("101 without an Upgrade header".to_owned());
    }
    let offered_name = |t: &String| {
        offered
            .iter()
            .any(|o| protocol_name(o).eq_ignore_ascii_case(protocol_name(t)))
    };
    match chosen.iter().find(|t| !offered_name(t)) {
        Some(t) => Err(format!("101 to {t:?}, which the request did not offer")),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
