//! Counters of the inbound transport, registered into a caller-owned Prometheus registry (there
//! is no global one, so an embedding vendor can merge ours into theirs).

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::hbone::HboneRejection;
use super::peer::PeerRejection;
use crate::wire::proxy_protocol::ProxyError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BindingLabels {
    binding: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Cow<'static, str>,
}

/// Adds one to the `reason` series of `family`.
fn inc_reason(family: &Family<ReasonLabels, Counter>, reason: &'static str) {
    family
        .get_or_create(&ReasonLabels {
            reason: Cow::Borrowed(reason),
        })
        .inc();
}

/// The count of the `reason` series of `family` (0 when it was never created).
fn reason_count(family: &Family<ReasonLabels, Counter>, reason: &str) -> u64 {
    let labels = ReasonLabels {
        reason: Cow::Owned(reason.to_owned()),
    };
    family.get(&labels).map_or(0, |c| c.get())
}

/// Connection counters of the inbound listeners, shared by every listener of a process.
///
/// Exposed as `waypoint_connections_accepted_total{binding}` (connections handed to the HTTP
/// layer, by binding: `sandwich`, `plain`, `hbone`) and `waypoint_proxy_header_rejected_total{reason}`
/// (connections closed for a bad or missing PROXY header, by [`ProxyError::reason`]) and
/// `waypoint_hbone_rejected_total{reason}` (HBONE handshakes and streams refused, by
/// [`HboneRejection::reason`]) and `waypoint_unix_peer_rejected_total{reason}` (Unix socket
/// connections closed because the connecting process is not the one allowed, by
/// `PeerRejection::reason`).
#[derive(Clone, Debug, Default)]
pub struct TransportMetrics {
    accepted: Family<BindingLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    hbone_rejected: Family<ReasonLabels, Counter>,
    peer_rejected: Family<ReasonLabels, Counter>,
}

impl TransportMetrics {
    /// New counters; every rejection reason starts at zero, so rate queries see it from the
    /// start rather than from its first occurrence.
    pub fn new() -> Self {
        let metrics = TransportMetrics::default();
        let zero = |family: &Family<ReasonLabels, Counter>, reason: &'static str| {
            // Creating the series is the point; the returned read guard is not needed.
            drop(family.get_or_create(&ReasonLabels {
                reason: Cow::Borrowed(reason),
            }));
        };
        for reason in ProxyError::REASONS {
            zero(&metrics.rejected, reason);
        }
        for rejection in HboneRejection::ALL {
            zero(&metrics.hbone_rejected, rejection.reason());
        }
        for reason in PeerRejection::REASONS {
            zero(&metrics.peer_rejected, reason);
        }
        metrics
    }

    /// Registers the counters into `registry` (the counters stay shared with `self`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "waypoint_connections_accepted",
            "Inbound connections handed to the HTTP layer, by binding",
            self.accepted.clone(),
        );
        registry.register(
            "waypoint_proxy_header_rejected",
            "Inbound connections closed for a bad or missing PROXY header, by reason",
            self.rejected.clone(),
        );
        registry.register(
            "waypoint_hbone_rejected",
            "HBONE connections and CONNECT streams refused, by reason",
            self.hbone_rejected.clone(),
        );
        registry.register(
            "waypoint_unix_peer_rejected",
            "Unix socket connections closed because the connecting process's uid/gid is not allowed, by reason",
            self.peer_rejected.clone(),
        );
    }

    /// Counts one Unix socket peer refused for `rejection`.
    pub(crate) fn inc_peer_rejected(&self, rejection: PeerRejection) {
        inc_reason(&self.peer_rejected, rejection.reason());
    }

    /// Unix socket peers refused so far for `reason` (a [`PeerRejection::reason`]).
    #[cfg(test)]
    pub(crate) fn peer_rejected(&self, reason: &str) -> u64 {
        reason_count(&self.peer_rejected, reason)
    }

    /// Counts one connection accepted on `binding` (`sandwich`, `plain`).
    pub(crate) fn inc_accepted(&self, binding: &'static str) {
        self.accepted
            .get_or_create(&BindingLabels {
                binding: Cow::Borrowed(binding),
            })
            .inc();
    }

    /// Counts one connection rejected for `error`.
    pub(crate) fn inc_rejected(&self, error: &ProxyError) {
        inc_reason(&self.rejected, error.reason());
    }

    /// Counts one HBONE handshake or stream refused for `rejection`.
    pub(crate) fn inc_hbone_rejected(&self, rejection: HboneRejection) {
        inc_reason(&self.hbone_rejected, rejection.reason());
    }

    /// HBONE handshakes and streams refused so far for `reason` (a [`HboneRejection::reason`]).
    pub fn hbone_rejected(&self, reason: &str) -> u64 {
        reason_count(&self.hbone_rejected, reason)
    }

    /// Connections accepted so far on `binding`.
    pub fn accepted(&self, binding: &str) -> u64 {
        let labels = BindingLabels {
            binding: Cow::Owned(binding.to_owned()),
        };
        self.accepted.get(&labels).map_or(0, |c| c.get())
    }

    /// Connections rejected so far for `reason` (a [`ProxyError::reason`] label).
    pub fn rejected(&self, reason: &str) -> u64 {
        reason_count(&self.rejected, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_exposes() {
        let metrics = TransportMetrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.inc_accepted("sandwich");
        metrics.inc_accepted("sandwich");
        metrics.inc_rejected(&ProxyError::NotProxy);
        assert_eq!(metrics.accepted("sandwich"), 2);
        assert_eq!(metrics.accepted("plain"), 0);
        assert_eq!(metrics.rejected("not_proxy"), 1);
        assert_eq!(metrics.rejected("timeout"), 0);

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("waypoint_connections_accepted_total{binding=\"sandwich\"} 2"));
        assert!(text.contains("waypoint_proxy_header_rejected_total{reason=\"not_proxy\"} 1"));
        // Pre-created at zero so dashboards see every reason before it first happens.
        assert!(text.contains("waypoint_proxy_header_rejected_total{reason=\"oversized\"} 0"));
        metrics.inc_hbone_rejected(HboneRejection::NoClientCert);
        assert_eq!(metrics.hbone_rejected("no_client_cert"), 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("waypoint_hbone_rejected_total{reason=\"no_client_cert\"} 1"));
        assert!(text.contains("waypoint_hbone_rejected_total{reason=\"bad_certificate\"} 0"));
        metrics.inc_peer_rejected(PeerRejection::Unknown);
        assert_eq!(metrics.peer_rejected("no_credentials"), 1);
        assert_eq!(metrics.peer_rejected("uid_mismatch"), 0);
    }
}
