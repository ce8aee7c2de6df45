//! The upstream's figures as Prometheus reads them: pool sizes, mirrored copies and retries,
//! gathered at scrape time from the [`Upstream`] rather than counted twice.

use std::sync::Arc;

use super::Upstream;
use super::limits::Limit;

/// Connections held by the upstream pools at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PoolSizes {
    /// Idle HTTP/1.1 connections ready for reuse.
    pub http1_idle: usize,
    /// Open HTTP/2 (h2c) connections.
    pub http2: usize,
    /// Open HBONE (mTLS HTTP/2) connections carrying tunnels.
    pub hbone: usize,
}

/// Exposes [`Upstream::pool_sizes`] as `waypoint_upstream_pool_connections{kind}`,
/// [`Upstream::stats`] as `waypoint_upstream_mirror_requests_total{result}` (`sent`, `failed`,
/// `dropped`, `skipped`), `waypoint_upstream_retries_total`, the circuit breakers'
/// refusals as `waypoint_upstream_overflow_total{namespace,service,port,limit}` (`limit`:
/// `pending`, `requests`, `connections`, `retries`; only for backends that were routed to),
/// and outlier detection ([`Upstream::outlier_views`]) as
/// `waypoint_upstream_outlier_ejections_total{namespace, service, port, reason}` and
/// `waypoint_upstream_outlier_ejected{namespace, service, port}` (endpoints out now), read at
/// scrape time.
#[derive(Debug)]
pub(crate) struct PoolCollector(pub Arc<Upstream>);

impl prometheus_client::collector::Collector for PoolCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let sizes = self.0.pool_sizes();
        let mut family = encoder.encode_descriptor(
            "waypoint_upstream_pool_connections",
            "Connections held by the upstream pools",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (kind, n) in [
            ("http1_idle", sizes.http1_idle),
            ("http2", sizes.http2),
            ("hbone", sizes.hbone),
        ] {
            let gauge = prometheus_client::metrics::gauge::ConstGauge::new(
                i64::try_from(n).unwrap_or(i64::MAX),
            );
            gauge.encode(family.encode_family(&[("kind", kind)])?)?;
        }

        let stats = self.0.stats();
        let counter = prometheus_client::metrics::counter::ConstCounter::new;
        let mut family = encoder.encode_descriptor(
            "waypoint_upstream_mirror_requests",
            "Mirrored request copies, by what became of them",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (result, n) in [
            ("sent", stats.mirrors_sent),
            ("failed", stats.mirrors_failed),
            ("dropped", stats.mirrors_dropped),
            ("skipped", stats.mirrors_skipped),
        ] {
            counter(n).encode(family.encode_family(&[("result", result)])?)?;
        }
        counter(stats.retries).encode(encoder.encode_descriptor(
            "waypoint_upstream_retries",
            "Retries sent to backends",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?)?;

        let mut family = encoder.encode_descriptor(
            "waypoint_upstream_overflow",
            "Requests, retries and connections refused by a backend's circuit breakers (DestinationRule connectionPool), answered 503 UO",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for ((service, port), breaker) in self.0.breakers.all() {
            let port = port.to_string();
            for limit in Limit::ALL {
                let labels = [
                    ("namespace", service.namespace.as_str()),
                    ("service", service.name.as_str()),
                    ("port", port.as_str()),
                    ("limit", limit.as_str()),
                ];
                counter(breaker.overflows(limit)).encode(family.encode_family(&labels)?)?;
            }
        }
        encode_outliers(&self.0, &mut encoder)
    }
}

/// The outlier detection families of [`PoolCollector`].
fn encode_outliers(
    upstream: &Upstream,
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::MetricType;
    let views = upstream.outlier_views();
    let mut family = encoder.encode_descriptor(
        "waypoint_upstream_outlier_ejections",
        "Endpoints ejected by outlier detection, by backend and detector",
        None,
        MetricType::Counter,
    )?;
    for view in &views {
        let port = view.port.to_string();
        for (reason, n) in &view.ejections_total {
            let labels = [
                ("namespace", view.service.namespace.as_str()),
                ("service", view.service.name.as_str()),
                ("port", port.as_str()),
                ("reason", reason.as_str()),
            ];
            let counter = prometheus_client::metrics::counter::ConstCounter::new(*n);
            counter.encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "waypoint_upstream_outlier_ejected",
        "Endpoints out of load balancing now, ejected by outlier detection",
        None,
        MetricType::Gauge,
    )?;
    for view in &views {
        let port = view.port.to_string();
        let labels = [
            ("namespace", view.service.namespace.as_str()),
            ("service", view.service.name.as_str()),
            ("port", port.as_str()),
        ];
        let n = i64::try_from(view.ejected.len()).unwrap_or(i64::MAX);
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(n);
        gauge.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::upstream::UpstreamConfig;

    #[test]
    fn collector_exposes_pools_mirrors_retries_and_overflows() {
        let up = Arc::new(Upstream::new(UpstreamConfig::default()));
        up.counters
            .mirrors_dropped
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        up.counters
            .retries
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let backend = crate::config::ServiceBackend {
            service: crate::config::ResourceRef::new("Service", "ns", "svc"),
            port: 80,
            cluster_ips: vec![],
            protocol: crate::config::ProtocolSelection::http(crate::config::AppProtocol::Http1),
            endpoints: vec![],
            policy: Default::default(),
        };
        up.breakers.of(&backend).overflowed(Limit::Pending);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(PoolCollector(up)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "waypoint_upstream_pool_connections{kind=\"http1_idle\"} 0",
            "waypoint_upstream_mirror_requests_total{result=\"dropped\"} 3",
            "waypoint_upstream_mirror_requests_total{result=\"sent\"} 0",
            "waypoint_upstream_retries_total 2",
            "waypoint_upstream_overflow_total{namespace=\"ns\",service=\"svc\",port=\"80\",limit=\"pending\"} 1",
            "waypoint_upstream_overflow_total{namespace=\"ns\",service=\"svc\",port=\"80\",limit=\"retries\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn collector_exposes_outlier_ejections_per_backend() {
        use super::super::outlier::{OutlierSettings, TryOutcome};
        use crate::config::{
            AppProtocol, Endpoint, ProtocolSelection, ResourceRef, ServiceBackend,
        };
        let up = Arc::new(Upstream::new(UpstreamConfig::default()));
        let address: std::net::SocketAddr = ([10, 0, 0, 1], 8080).into();
        let backend = ServiceBackend {
            service: ResourceRef::new("Service", "shop", "cart"),
            port: 80,
            cluster_ips: vec![],
            protocol: ProtocolSelection::http(AppProtocol::Http1),
            endpoints: vec![Endpoint {
                address,
                stats: Default::default(),
                transport: Default::default(),
            }],
            policy: Default::default(),
        };
        let settings = OutlierSettings {
            consecutive_5xx: 1,
            max_ejection_percent: 100,
            ..OutlierSettings::default()
        };
        let now = std::time::Instant::now();
        let failed = TryOutcome::Status(503);
        assert!(
            up.outliers
                .report(&backend, Some(&settings), address, failed, now)
                .is_some()
        );
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(PoolCollector(up)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let labels = "namespace=\"shop\",service=\"cart\",port=\"80\"";
        for line in [
            format!(
                "waypoint_upstream_outlier_ejections_total{{{labels},reason=\"consecutive_5xx\"}} 1"
            ),
            format!(
                "waypoint_upstream_outlier_ejections_total{{{labels},reason=\"consecutive_gateway_failure\"}} 0"
            ),
            format!("waypoint_upstream_outlier_ejected{{{labels}}} 1"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
