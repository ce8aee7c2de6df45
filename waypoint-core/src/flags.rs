//! Envoy-style response flags: the short codes that say why a request ended the way it did,
//! recorded in [`RequestContext::response_flags`](crate::filter::RequestContext) and reported
//! in the `response_flags` label of `istio_requests_total` and in the access log, so Istio's
//! dashboards read them as they read Envoy's.

use std::fmt;

/// Why a request ended the way it did, in Envoy's vocabulary. Filters push them; telemetry
/// reports them joined by `,` (`-` when there is none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseFlag {
    /// `NR`: no route served the request (or its destination is not bound to this waypoint).
    NoRoute,
    /// `UH`: the chosen backend had no ready endpoint.
    NoHealthyUpstream,
    /// `UF`: the connection to the endpoint failed, or broke before response headers.
    UpstreamConnectionFailure,
    /// `UT`: no response headers within the timeout.
    UpstreamRequestTimeout,
    /// `URX`: retries were exhausted.
    UpstreamRetryLimitExceeded,
    /// `UO`: a circuit breaker of the backend (DestinationRule `connectionPool`) refused the
    /// request: too many pending requests, requests or connections.
    UpstreamOverflow,
    /// `UPE`: the backend broke the protocol (a 101 nobody asked for).
    UpstreamProtocolError,
    /// `UR`: the upstream response body failed after its headers were sent.
    UpstreamRemoteReset,
    /// `DPE`: the request body failed while it was being read.
    DownstreamProtocolError,
    /// `DC`: the client went away before the response ended.
    DownstreamConnectionTermination,
    /// `OM`: the in-flight request limit refused the request (Envoy's overload manager).
    OverloadManager,
    /// `UAEX`: the external authorization service denied the request or could not be asked.
    UnauthorizedExternalService,
    /// `NC`: the route's chosen backend cannot be used (Envoy's "no cluster found").
    NoClusterFound,
    /// `RBAC`: an authorization policy denied the connection (Envoy's network RBAC filter).
    RbacAccessDenied,
    /// A vendor's own code, reported as given.
    Other(&'static str),
}

impl ResponseFlag {
    /// The code Envoy and Istio report (`NR`, `UF`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamProtocolError => "UPE",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::OverloadManager => "OM",
            ResponseFlag::UnauthorizedExternalService => "UAEX",
            ResponseFlag::RbacAccessDenied => "RBAC",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::Other(code) => code,
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_envoy_codes() {
        assert_eq!(ResponseFlag::UpstreamRetryLimitExceeded.to_string(), "URX");
        assert_eq!(ResponseFlag::Other("XX").as_str(), "XX");
    }
}
