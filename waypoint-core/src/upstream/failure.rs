//! How forwarding fails, in words and statuses: the local reply (and response flag) for each
//! failure the module documentation's table lists, the description of a transport error, and
//! what becomes of the response of a try that will be retried.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::limits::Limit;
use super::pool::Return;
use crate::body::{Body, BoxError, local_reply};
use crate::config::ServiceBackend;
use crate::filter::RequestContext;
use crate::flags::ResponseFlag;

/// 502 for a backend that switched protocols unasked; never a tunnel.
pub(super) fn unexpected_switch(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
    address: SocketAddr,
    reason: &str,
) -> Response<Body> {
    ctx.response_flags.push(ResponseFlag::UpstreamProtocolError);
    tracing::warn!(
        endpoint = %address,
        service = %service_name(backend),
        %reason,
        "upstream switched protocols without an allowed upgrade; closing it"
    );
    local_reply(
        StatusCode::BAD_GATEWAY,
        format!("upstream {address} switched protocols unasked: {reason}"),
    )
}

/// 503 `UH` for a backend without a ready endpoint.
pub(super) fn no_healthy_upstream(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
) -> Response<Body> {
    ctx.response_flags.push(ResponseFlag::NoHealthyUpstream);
    tracing::warn!(service = %service_name(backend), "no healthy upstream");
    local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no healthy upstream for Service {}", service_name(backend)),
    )
}

/// 503 `UF` for a backend whose DestinationRule asked for TLS but was refused: sending in
/// plain text what the operator meant to encrypt would fail open.
pub(super) fn tls_rule_refused(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
    rule: &crate::config::ResourceRef,
) -> Response<Body> {
    ctx.response_flags
        .push(ResponseFlag::UpstreamConnectionFailure);
    tracing::warn!(service = %service_name(backend), %rule,
        "not forwarding: the DestinationRule with this port's tls settings was refused");
    local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{rule} sets tls for {} but was refused (see waypoint check); not sending in plain text",
            service_name(backend)
        ),
    )
}

/// 503 `UO` for a request a circuit breaker of its backend refused (see `limits`).
pub(super) fn overflow(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
    limit: Limit,
) -> Response<Body> {
    ctx.response_flags.push(ResponseFlag::UpstreamOverflow);
    tracing::debug!(
        service = %service_name(backend),
        limit = limit.field(),
        "upstream overflow"
    );
    local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "upstream overflow: {} of Service {} reached",
            limit.field(),
            service_name(backend)
        ),
    )
}

/// 400 `DPE` for a request body that failed while being kept for retries or mirrors.
pub(super) fn body_unreadable(ctx: &mut RequestContext, error: &BoxError) -> Response<Body> {
    ctx.response_flags
        .push(ResponseFlag::DownstreamProtocolError);
    local_reply(
        StatusCode::BAD_REQUEST,
        format!("request body could not be read: {error}"),
    )
}

/// 504 `UT` for a request body kept for retries or mirrors that did not arrive within the
/// request timeout (`limit`).
pub(super) fn body_too_slow(ctx: &mut RequestContext, limit: Duration) -> Response<Body> {
    ctx.response_flags
        .push(ResponseFlag::UpstreamRequestTimeout);
    local_reply(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "request body not received within the {}ms request timeout",
            limit.as_millis()
        ),
    )
}

/// 504 `UT` for a try (or the whole request) out of time; `URX` too after retries.
pub(super) fn timed_out(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
    address: SocketAddr,
    limit: Duration,
    retried: bool,
) -> Response<Body> {
    flag_failure(ctx, ResponseFlag::UpstreamRequestTimeout, retried);
    tracing::warn!(
        endpoint = %address,
        service = %service_name(backend),
        timeout_ms = limit.as_millis() as u64,
        "upstream request timeout"
    );
    local_reply(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "upstream request timeout after {}ms to {address}",
            limit.as_millis()
        ),
    )
}

/// 503 `UF` for an exchange that failed before response headers; `URX` too after retries.
pub(super) fn connect_failed(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
    address: SocketAddr,
    reason: &str,
    retried: bool,
) -> Response<Body> {
    flag_failure(ctx, ResponseFlag::UpstreamConnectionFailure, retried);
    tracing::warn!(
        endpoint = %address,
        service = %service_name(backend),
        %reason,
        "upstream connect error"
    );
    local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("upstream connect error to {address}: {reason}"),
    )
}

/// Flags a failed request with `flag`, and with `URX` when it was tried more than once.
fn flag_failure(ctx: &mut RequestContext, flag: ResponseFlag, retried: bool) {
    ctx.response_flags.push(flag);
    if retried {
        ctx.response_flags
            .push(ResponseFlag::UpstreamRetryLimitExceeded);
    }
}

/// Drops the response of a try that will be retried. A small body is read to its end in the
/// background first, so its HTTP/1.1 connection goes back to the pool instead of closing.
pub(super) fn discard(resp: Response<Incoming>, conn: Option<Return>) {
    const SMALL: u64 = 64 * 1024;
    let body = resp.into_body();
    if body.size_hint().upper().is_some_and(|n| n <= SMALL) {
        tokio::spawn(async move {
            let read = tokio::time::timeout(Duration::from_secs(1), body.collect()).await;
            if let (Ok(Ok(_)), Some(conn)) = (read, conn) {
                conn.give_back();
            }
        });
    }
}

/// A reason why an exchange failed before response headers, in words for a local reply.
pub(crate) fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut innermost = err.to_string();
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(reason) = io_reason(io.kind())
        {
            return reason.to_owned();
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return "connection closed before response headers".to_owned();
            }
            if h.is_timeout() {
                return "timeout".to_owned();
            }
        }
        innermost = e.to_string();
        cur = e.source();
    }
    innermost
}

fn io_reason(kind: io::ErrorKind) -> Option<&'static str> {
    Some(match kind {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::TimedOut => "connect timeout",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::BrokenPipe => "connection closed (broken pipe)",
        io::ErrorKind::NotConnected => "not connected",
        io::ErrorKind::AddrNotAvailable => "address not available",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::UnexpectedEof => "connection closed before response headers",
        _ => return None,
    })
}

/// `Service ns/name:port`, as messages name a backend.
pub(super) fn service_name(backend: &ServiceBackend) -> String {
    format!(
        "{}/{}:{}",
        backend.service.namespace, backend.service.name, backend.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::config::{AppProtocol, ProtocolSelection, ResourceRef};

    #[test]
    fn describe_walks_the_source_chain() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(describe(&refused), "connection refused");
        // What HttpConnector reports when its connect timeout fires.
        let timed_out = Outer(io::Error::new(
            io::ErrorKind::TimedOut,
            "deadline has elapsed",
        ));
        assert_eq!(describe(&timed_out), "connect timeout");
        let other = Outer(io::Error::other("tls says no"));
        assert_eq!(describe(&other), "tls says no");
    }

    #[test]
    fn a_backend_is_named_by_namespace_name_and_port() {
        let backend = ServiceBackend {
            policy: Default::default(),
            service: ResourceRef::new("Service", "ns", "svc"),
            port: 80,
            cluster_ips: vec![],
            protocol: ProtocolSelection::http(AppProtocol::Http1),
            endpoints: vec![],
        };
        assert_eq!(service_name(&Arc::new(backend)), "ns/svc:80");
    }
}
