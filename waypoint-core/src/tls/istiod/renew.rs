//! Keeping the certificate from istiod fresh.
//!
//! | event | what happens |
//! |---|---|
//! | half of the remaining lifetime has passed | a new key and certificate are asked for |
//! | the root file no longer matches the trust bundle in service | the same, at once |
//! | a call fails | logged; retried after 1 s, doubling up to 30 s; the current pair serves on |
//! | a new pair arrives | [`CertStore::rotate`]: new handshakes use it, served connections keep theirs |
//!
//! "Half of the remaining lifetime" is measured from when the certificate is received, not from
//! its notBefore: a CA that backdates (istiod and our development CA do, for clock skew) would
//! otherwise have us renew early, and a clock behind the CA's late.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{IstiodCa, IstiodError};
use crate::shutdown::Shutdown;
use crate::tls::{CertStore, WorkloadCerts};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(30);

/// Asks `ca` until it answers. Each failure is logged and retried with backoff; a permanent
/// one (a wrong identity or address) is returned when `give_up_on_permanent`. Dropping the
/// future stops asking.
pub(crate) async fn fetch_until_issued(
    ca: &IstiodCa,
    give_up_on_permanent: bool,
) -> Result<WorkloadCerts, IstiodError> {
    let mut retry = FIRST_RETRY;
    loop {
        let error = match ca.fetch().await {
            Ok(certs) => return Ok(certs),
            Err(error) => error,
        };
        if give_up_on_permanent && error.is_permanent() {
            return Err(error);
        }
        tracing::warn!(%error, retry_in = ?retry, identity = %ca.identity, "no certificate from the CA");
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LONGEST_RETRY);
    }
}

/// Renews `store`'s pair from `ca` until `shutdown`: at half of the remaining lifetime, or as
/// soon as the root file (checked every `root_poll`) differs from the trust bundle in service.
pub(crate) async fn keep_renewed(
    ca: IstiodCa,
    store: Arc<CertStore>,
    root_poll: Duration,
    shutdown: Shutdown,
) {
    loop {
        let renew_in = renew_in(store.current().not_after, SystemTime::now());
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(renew_in) => {}
            _ = root_rotated(&ca, &store, root_poll) => {
                tracing::info!(root = %ca.root_path.display(), "the mesh root changed: renewing the workload certificate");
            }
        }
        let fetched = tokio::select! {
            _ = shutdown.wait() => return,
            fetched = fetch_until_issued(&ca, false) => fetched,
        };
        let rotated = fetched.map_err(|e| e.to_string()).and_then(|certs| {
            let expires_in = remaining(certs.not_after, SystemTime::now());
            store
                .rotate(certs)
                .map(|()| expires_in)
                .map_err(|e| e.to_string())
        });
        match rotated {
            Ok(expires_in) => tracing::info!(
                identity = %store.identity(),
                expires_in_s = expires_in.as_secs(),
                "workload certificate renewed from the CA"
            ),
            // rustls refused a pair that passed our checks: ask again later, not at once.
            Err(error) => {
                tracing::error!(%error, "renewed workload certificate rejected");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(LONGEST_RETRY) => {}
                }
            }
        }
    }
}

/// Half of what remains of a certificate's validity at `now` (zero once expired).
fn renew_in(not_after: SystemTime, now: SystemTime) -> Duration {
    remaining(not_after, now) / 2
}

fn remaining(not_after: SystemTime, now: SystemTime) -> Duration {
    not_after.duration_since(now).unwrap_or_default()
}

/// Returns when the root file holds other certificates than the trust bundle in service. An
/// unreadable or malformed file is no change: the renewal that follows would fail on it.
async fn root_rotated(ca: &IstiodCa, store: &CertStore, poll: Duration) {
    loop {
        tokio::time::sleep(poll).await;
        let Ok(pem) = tokio::fs::read(&ca.root_path).await else {
            continue;
        };
        let Ok(roots) = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() else {
            continue;
        };
        if !roots.is_empty() && roots != store.current().roots {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_half_of_the_remaining_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(renew_in(now + day, now), day / 2);
        assert_eq!(renew_in(now - day, now), Duration::ZERO);
    }
}
