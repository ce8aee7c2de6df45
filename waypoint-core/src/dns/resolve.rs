//! The resolving loop: every name the config wants is looked up through `hickory-resolver`
//! (async, on the tokio runtime; the blocking libc resolver would hold a worker thread per
//! lookup) and looked up again when its answer's TTL runs out.
//!
//! - Names are queried as absolute (`api.example.com.`): a ServiceEntry host is a full name,
//!   and the search domains of a pod's `resolv.conf` (`ndots:5`) would first send it through
//!   every cluster suffix.
//! - The next lookup is due at the answer's expiry (hickory gives the smallest TTL of the
//!   records), at least [`MIN_REFRESH`] later so a zero TTL cannot spin, at most
//!   [`MAX_REFRESH`] so a long TTL still notices a change within minutes.
//! - A failed lookup (timeout, SERVFAIL, NXDOMAIN, no records) keeps the last addresses and is
//!   retried after [`RETRY`]: an egress backend should outlive a resolver outage, as Envoy's
//!   strict DNS clusters do.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio::time::Instant;

use super::DnsCache;
use crate::shutdown::Shutdown;

/// The soonest a name is looked up again after an answer.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The latest a name is looked up again after an answer, whatever its TTL.
const MAX_REFRESH: Duration = Duration::from_secs(300);
/// How long after a failed lookup it is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// How often the loop looks for names a new config wants.
const IDLE: Duration = Duration::from_millis(500);

/// Why no resolver could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution: {0}")]
pub struct DnsError(String);

/// A resolver asking `server` (UDP, then TCP for truncated answers) or, with `None`, the name
/// servers of the system configuration (`/etc/resolv.conf`).
pub fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, DnsError> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match server {
        Some(addr) => {
            let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
            let config = ResolverConfig::from_parts(None, Vec::new(), servers);
            TokioResolver::builder_with_config(config, provider)
        }
        None => TokioResolver::builder(provider).map_err(|e| DnsError(e.to_string()))?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Our own refresh is the cache: hickory's would answer a due refresh from memory.
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(2);
    Ok(builder.build())
}

/// Looks up, until `shutdown`, every name `cache` wants, recording the answers (see the
/// module documentation).
pub async fn keep_resolved(cache: Arc<DnsCache>, resolver: TokioResolver, shutdown: Shutdown) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    loop {
        let now = Instant::now();
        let wanted = cache.wanted();
        due.retain(|name, _| wanted.contains(name));
        for name in wanted {
            let next = due.get(&name).copied().unwrap_or(now);
            if next > now {
                continue;
            }
            let absolute = format!("{name}.");
            let next = match resolver.lookup_ip(absolute.as_str()).await {
                Ok(answer) => {
                    let addresses: Vec<IpAddr> = answer.iter().collect();
                    if cache.record(&name, addresses.clone()) {
                        tracing::info!(%name, ?addresses, "DNS answer changed");
                    }
                    let ttl = answer
                        .valid_until()
                        .saturating_duration_since(Instant::now().into_std());
                    Instant::now() + ttl.clamp(MIN_REFRESH, MAX_REFRESH)
                }
                Err(e) => {
                    tracing::warn!(%name, error = %e, "DNS lookup failed; keeping the last addresses");
                    Instant::now() + RETRY
                }
            };
            due.insert(name, next);
        }
        let wake = due
            .values()
            .min()
            .copied()
            .unwrap_or(now + IDLE)
            .min(Instant::now() + IDLE);
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
