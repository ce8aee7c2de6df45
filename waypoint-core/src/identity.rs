//! SPIFFE workload identities as Istio issues them.
//!
//! Istio (and so ztunnel) uses exactly one identity form:
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. Anything else that claims to
//! be an identity is rejected rather than half-trusted.

use std::fmt;
use std::str::FromStr;

/// A validated Istio SPIFFE identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
///
/// ```
/// use waypoint_core::identity::SpiffeId;
/// let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/sleep".parse().unwrap();
/// assert_eq!(id.trust_domain(), "cluster.local");
/// assert_eq!(id.namespace(), "default");
/// assert_eq!(id.service_account(), "sleep");
/// assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    uri: String,
    // Byte offsets into `uri`, so the parts are borrowed without extra allocations.
    td_end: usize,
    ns: (usize, usize),
    sa_start: usize,
}

/// Why a string is not an Istio SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("identity {0:?} does not start with spiffe://")]
    Scheme(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error(
        "identity {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape(String),
    /// The trust domain, namespace or service account has characters SPIFFE does not allow.
    #[error("identity {0:?} has an invalid {1}")]
    Invalid(String, &'static str),
}

const MAX_LEN: usize = 2048;

fn valid_trust_domain(td: &str) -> bool {
    // SPIFFE: lowercase letters, digits, dots, dashes and underscores.
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn valid_segment(seg: &str) -> bool {
    // SPIFFE path segments: letters, digits, dots, dashes, underscores; never `.` or `..`.
    !seg.is_empty()
        && seg != "."
        && seg != ".."
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl SpiffeId {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.uri["spiffe://".len()..self.td_end]
    }

    /// The Kubernetes namespace of the workload.
    pub fn namespace(&self) -> &str {
        &self.uri[self.ns.0..self.ns.1]
    }

    /// The Kubernetes service account of the workload.
    pub fn service_account(&self) -> &str {
        &self.uri[self.sa_start..]
    }

    /// The full URI, e.g. `spiffe://cluster.local/ns/default/sa/sleep`.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The principal as AuthorizationPolicy writes it: the URI without `spiffe://`.
    pub fn principal(&self) -> &str {
        &self.uri["spiffe://".len()..]
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = || s.chars().take(200).collect::<String>();
        if s.len() > MAX_LEN {
            return Err(SpiffeIdError::Shape(shown()));
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(shown()))?;
        let mut parts = rest.split('/');
        let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SpiffeIdError::Shape(shown()));
        };
        if !valid_trust_domain(td) {
            return Err(SpiffeIdError::Invalid(shown(), "trust domain"));
        }
        if !valid_segment(ns) {
            return Err(SpiffeIdError::Invalid(shown(), "namespace"));
        }
        if !valid_segment(sa) {
            return Err(SpiffeIdError::Invalid(shown(), "service account"));
        }
        let td_end = "spiffe://".len() + td.len();
        let ns_start = td_end + "/ns/".len();
        let ns_end = ns_start + ns.len();
        Ok(SpiffeId {
            uri: s.to_owned(),
            td_end,
            ns: (ns_start, ns_end),
            sa_start: ns_end + "/sa/".len(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_identity() {
        let id: SpiffeId = "spiffe://td.example-1/ns/ns_1/sa/sa.2".parse().unwrap();
        assert_eq!(id.trust_domain(), "td.example-1");
        assert_eq!(id.namespace(), "ns_1");
        assert_eq!(id.service_account(), "sa.2");
        assert_eq!(id.principal(), "td.example-1/ns/ns_1/sa/sa.2");
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "",
            "spiffe://",
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a b/sa/b",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/b\0",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad:?} must be rejected");
        }
    }
}
