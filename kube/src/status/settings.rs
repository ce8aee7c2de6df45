//! The status writer's settings, and how a process finds its own: the controller name and
//! Lease name come from flags, who we are from the pod's environment (`POD_NAME` and
//! `POD_NAMESPACE`, which a Deployment sets with the downward API).

use std::time::Duration;

use super::controller::ControllerName;
use super::desired::Scope;
use super::lease::{LeaseSettings, default_lease_name, holder_identity, lease_namespace};

/// Everything the status writer needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSettings {
    /// Whose status we write.
    pub scope: Scope,
    /// The Lease that decides which replica writes.
    pub lease: LeaseSettings,
    /// First retry delay after a failed pass.
    pub backoff_initial: Duration,
    /// The longest retry delay.
    pub backoff_max: Duration,
}

impl StatusSettings {
    /// Settings with a 500 ms first retry, doubling up to 30 s.
    pub fn new(scope: Scope, lease: LeaseSettings) -> Self {
        StatusSettings {
            scope,
            lease,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }

    /// The settings of this process: `controller` and `gateway` as given; the Lease named
    /// `lease_name` (default [`default_lease_name`]) in `POD_NAMESPACE` (else the Gateway's
    /// namespace, else `default`), held as `POD_NAME` (else the hostname and a random suffix).
    pub fn for_process(
        controller: ControllerName,
        gateway: Option<(String, String)>,
        lease_name: Option<String>,
    ) -> Self {
        let env = |name: &str| std::env::var(name).ok();
        let hostname =
            env("HOSTNAME").or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok());
        let lease = LeaseSettings::new(
            lease_name.unwrap_or_else(|| default_lease_name(gateway.as_ref())),
            lease_namespace(env("POD_NAMESPACE"), gateway.as_ref()),
            holder_identity(env("POD_NAME"), hostname),
        );
        StatusSettings::new(
            Scope {
                controller,
                gateway,
            },
            lease,
        )
    }
}
