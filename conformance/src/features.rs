//! The features waypoint declares, and the upstream conformance profiles they are reported in
//! (v1.6.1 `conformance/utils/suite/profiles.go`, `pkg/features`).
//!
//! Every feature of the profiles is declared supported except those in [`UNSUPPORTED`], each
//! listed with why; a test that needs an unsupported feature is skipped and says which.

/// Features of the profiles waypoint does not implement, each with why. Every other feature
/// of the profiles below is declared supported.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "GatewayStaticAddresses",
        "requested spec.addresses are served but never reported unusable",
    ),
    (
        "GatewayInfrastructurePropagation",
        "waypoint provisions no infrastructure from a Gateway",
    ),
    (
        "GatewayAddressEmpty",
        "a Gateway's address comes from its Service or spec; none is allocated",
    ),
    (
        "GatewayBackendClientCertificate",
        "no TLS origination to backends (plain TCP or HBONE only)",
    ),
    (
        "GatewayFrontendClientCertificateValidation",
        "HTTPS listeners validate no client certificates",
    ),
    (
        "GatewayFrontendClientCertificateValidationInsecureFallback",
        "HTTPS listeners validate no client certificates",
    ),
    ("ListenerSet", "ListenerSet is not implemented"),
    (
        "TLSRouteModeTerminate",
        "TLS listeners pass TLS through to the backend; they terminate none for TLSRoutes",
    ),
    (
        "TLSRouteModeMixed",
        "TLS listeners pass TLS through to the backend; they terminate none for TLSRoutes",
    ),
    (
        "BackendTLSPolicy",
        "no TLS origination to backends (plain TCP or HBONE only)",
    ),
    (
        "BackendTLSPolicySANValidation",
        "no TLS origination to backends (plain TCP or HBONE only)",
    ),
];

/// Features waypoint implements that no profile lists.
const OUTSIDE_PROFILES: &[&str] = &["GRPCRouteNamedRouteRule"];

/// True when `feature` is a feature name waypoint reports on: declared supported, or listed in
/// [`UNSUPPORTED`] with why. A case naming any other feature is refused when it is read, so a
/// misspelt name fails the run instead of quietly skipping the case.
pub fn known(feature: &str) -> bool {
    supported(feature) || UNSUPPORTED.iter().any(|(f, _)| *f == feature)
}

/// Why waypoint does not support `feature`, if it does not.
pub fn unsupported_reason(feature: &str) -> Option<&'static str> {
    if supported(feature) {
        return None;
    }
    Some(UNSUPPORTED.iter().find(|(f, _)| *f == feature).map_or(
        "not a feature of the profiles waypoint reports",
        |(_, why)| *why,
    ))
}

/// True when waypoint declares `feature`: a feature of a profile (or one of
/// `OUTSIDE_PROFILES`) not listed in [`UNSUPPORTED`]. Anything else, `UDPRoute` say, is not.
pub fn supported(feature: &str) -> bool {
    if UNSUPPORTED.iter().any(|(f, _)| *f == feature) {
        return false;
    }
    OUTSIDE_PROFILES.contains(&feature)
        || PROFILES
            .iter()
            .any(|p| p.core.contains(&feature) || p.extended_features().any(|f| f == feature))
}

/// An upstream conformance profile.
#[derive(Debug)]
pub struct Profile {
    /// `GATEWAY-HTTP`, ...
    pub name: &'static str,
    /// Its core features.
    pub core: &'static [&'static str],
    /// Its extended features, in groups as upstream composes them.
    pub extended: &'static [&'static [&'static str]],
}

const GATEWAY_EXTENDED: &[&str] = &[
    "GatewayPort8080",
    "GatewayStaticAddresses",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructurePropagation",
    "GatewayAddressEmpty",
    "GatewayBackendClientCertificate",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "ListenerSet",
];

const HTTP_EXTENDED: &[&str] = &[
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteMethodMatching",
    "HTTPRouteResponseHeaderModification",
    "HTTPRoutePortRedirect",
    "HTTPRouteSchemeRedirect",
    "HTTPRoutePathRedirect",
    "HTTPRouteHostRewrite",
    "HTTPRoutePathRewrite",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteBackendTimeout",
    "HTTPRouteParentRefPort",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteCORS",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteRetry",
    "HTTPRouteRetryBackendTimeout",
    "HTTPRouteRetryConnectionError",
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
];

const MESH_EXTENDED: &[&str] = &[
    "MeshClusterIPMatching",
    "MeshConsumerRoute",
    "MeshHTTPRouteRewritePath",
    "MeshHTTPRouteSchemeRedirect",
    "MeshHTTPRouteRedirectPort",
    "MeshHTTPRouteRedirectPath",
    "MeshHTTPRouteBackendRequestHeaderModification",
    "MeshHTTPRouteQueryParamMatching",
    "MeshHTTPRouteNamedRouteRule",
];

/// `TLSRouteExtendedFeatures` upstream: both TLS termination modes.
const TLS_EXTENDED: &[&str] = &["TLSRouteModeTerminate", "TLSRouteModeMixed"];

/// `TCPRouteExtendedFeatures` upstream: it lists TCPRoute itself.
const TCP_EXTENDED: &[&str] = &["TCPRoute"];

/// The profiles waypoint reports.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "GATEWAY-HTTP",
        core: &["Gateway", "ReferenceGrant", "HTTPRoute"],
        extended: &[GATEWAY_EXTENDED, HTTP_EXTENDED],
    },
    Profile {
        name: "GATEWAY-TLS",
        core: &["Gateway", "ReferenceGrant", "TLSRoute"],
        extended: &[GATEWAY_EXTENDED, TLS_EXTENDED],
    },
    Profile {
        name: "GATEWAY-TCP",
        core: &["Gateway", "TCPRoute", "ReferenceGrant"],
        extended: &[GATEWAY_EXTENDED, TCP_EXTENDED],
    },
    Profile {
        name: "GATEWAY-GRPC",
        core: &["Gateway", "ReferenceGrant", "GRPCRoute"],
        extended: &[GATEWAY_EXTENDED],
    },
    Profile {
        name: "MESH-HTTP",
        core: &["Mesh", "HTTPRoute"],
        extended: &[MESH_EXTENDED],
    },
    Profile {
        name: "MESH-GRPC",
        core: &["Mesh", "GRPCRoute"],
        extended: &[MESH_EXTENDED],
    },
];

impl Profile {
    /// Every extended feature of the profile.
    pub fn extended_features(&self) -> impl Iterator<Item = &'static str> {
        self.extended.iter().flat_map(|group| group.iter().copied())
    }

    /// Whether a test with `features` counts in this profile (every feature belongs to it),
    /// and if so whether at the extended level.
    pub fn level(&self, features: &[String]) -> Option<Level> {
        let mut extended = false;
        for f in features {
            if self.core.contains(&f.as_str()) {
                continue;
            }
            if self.extended_features().any(|e| e == f) {
                extended = true;
                continue;
            }
            return None;
        }
        Some(if extended {
            Level::Extended
        } else {
            Level::Core
        })
    }
}

/// Core or extended support level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Every feature is a core feature of the profile.
    Core,
    /// Some feature is extended.
    Extended,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn declared_features() {
        assert!(supported("HTTPRouteCORS"));
        assert!(supported("MeshConsumerRoute"));
        assert!(supported("GRPCRouteNamedRouteRule"));
        assert!(!supported("ListenerSet"));
        assert!(supported("TLSRoute"));
        assert!(supported("TCPRoute"));
        assert!(!supported("TLSRouteModeTerminate"));
        assert!(!supported("TLSRouteModeMixed"));
        assert!(!supported("UDPRoute"));
    }

    #[test]
    fn profile_membership() {
        let http = &PROFILES[0];
        assert_eq!(
            http.level(&names(&["Gateway", "HTTPRoute"])),
            Some(Level::Core)
        );
        assert_eq!(
            http.level(&names(&["Gateway", "HTTPRoute", "HTTPRouteCORS"])),
            Some(Level::Extended)
        );
        assert_eq!(
            http.level(&names(&["Gateway", "HTTPRoute", "TLSRoute"])),
            None
        );
        let tls = PROFILES.iter().find(|p| p.name == "GATEWAY-TLS").unwrap();
        assert_eq!(
            tls.level(&names(&["Gateway", "TLSRoute"])),
            Some(Level::Core)
        );
        assert_eq!(
            tls.level(&names(&["Gateway", "TLSRoute", "TLSRouteModeTerminate"])),
            Some(Level::Extended)
        );
        let tcp = PROFILES.iter().find(|p| p.name == "GATEWAY-TCP").unwrap();
        assert_eq!(
            tcp.level(&names(&["Gateway", "TCPRoute", "ReferenceGrant"])),
            Some(Level::Core)
        );
        let mesh = PROFILES.iter().find(|p| p.name == "MESH-HTTP").unwrap();
        assert_eq!(mesh.level(&names(&["Gateway", "HTTPRoute"])), None);
        assert_eq!(
            mesh.level(&names(&["Mesh", "HTTPRoute"])),
            Some(Level::Core)
        );
    }
}
