//! The status Lease against a scripted API server, on tokio's paused clock: one winner, no
//! takeover while the holder renews, takeover after expiry, release on shutdown, and a holder
//! that cannot renew stepping down before anyone may take over.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{FakeApi, Verb};
use serde_json::json;
use waypoint_core::shutdown::{self, ShutdownTrigger};
use waypoint_kube::KubeError;
use waypoint_kube::api::kinds::LEASE;
use waypoint_kube::status::{
    Elector, Leadership, LeaseSettings, StatusMetrics, default_lease_name, holder_identity,
    lease_namespace,
};

struct Candidate {
    leadership: Leadership,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

fn candidate(api: &Arc<FakeApi>, identity: &str) -> Candidate {
    let settings = LeaseSettings::new("waypoint-status".into(), "infra".into(), identity.into());
    let (elector, leadership) = Elector::new(api.clone(), settings, StatusMetrics::default());
    let (trigger, shutdown) = shutdown::channel();
    let task = tokio::spawn(elector.run(shutdown));
    Candidate {
        leadership,
        trigger,
        task,
    }
}

fn holder(api: &FakeApi) -> serde_json::Value {
    api.object(&LEASE, Some("infra"), "waypoint-status")
        .map(|l| l["spec"]["holderIdentity"].clone())
        .unwrap_or_default()
}

async fn sleep(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await
}

#[tokio::test(start_paused = true)]
async fn of_two_candidates_exactly_one_holds_the_lease_and_keeps_it() {
    let api = FakeApi::new();
    let a = candidate(&api, "a");
    let b = candidate(&api, "b");
    for _ in 0..12 {
        sleep(5).await;
        assert!(
            a.leadership.holds() != b.leadership.holds(),
            "exactly one holds"
        );
    }
    let winner = if a.leadership.holds() { "a" } else { "b" };
    assert_eq!(holder(&api), winner);
    let lease = api
        .object(&LEASE, Some("infra"), "waypoint-status")
        .expect("lease");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(lease["spec"]["leaseTransitions"], 0, "never changed hands");
    assert_eq!(
        api.calls_of(Verb::Create, &LEASE).len(),
        2,
        "both tried to create it, one won"
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_holder_stops_renewing_the_other_takes_over_after_expiry() {
    let api = FakeApi::new();
    let a = candidate(&api, "a");
    sleep(1).await;
    assert!(a.leadership.holds());
    let b = candidate(&api, "b");
    sleep(20).await;
    assert!(!b.leadership.holds());
    // The holder dies without releasing.
    a.task.abort();
    let died = tokio::time::Instant::now();
    while !b.leadership.holds() {
        sleep(1).await;
        assert!(died.elapsed() < Duration::from_secs(30), "no takeover");
    }
    assert!(
        died.elapsed() >= Duration::from_secs(10),
        "took over after {:?}",
        died.elapsed()
    );
    let lease = api
        .object(&LEASE, Some("infra"), "waypoint-status")
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    drop(a.trigger);
}

#[tokio::test(start_paused = true)]
async fn a_lease_released_on_shutdown_goes_to_exactly_one_candidate_without_waiting() {
    let api = FakeApi::new();
    let a = candidate(&api, "a");
    sleep(1).await;
    // Two candidates on the same schedule: both read the released Lease before either writes.
    let b = candidate(&api, "b");
    let c = candidate(&api, "c");
    sleep(1).await;
    assert!(a.trigger.shutdown(Duration::from_secs(5)).await);
    a.task.await.expect("ends");
    assert!(!a.leadership.holds());
    assert_eq!(holder(&api), serde_json::Value::Null);
    sleep(6).await;
    assert!(
        b.leadership.holds() != c.leadership.holds(),
        "taken by exactly one, within one retry period"
    );
    let lease = api
        .object(&LEASE, Some("infra"), "waypoint-status")
        .expect("lease");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    let takeovers = api
        .calls_of(Verb::Replace, &LEASE)
        .iter()
        .filter(|c| {
            c.body
                .as_ref()
                .is_some_and(|b| b["spec"]["leaseTransitions"] == 1)
        })
        .count();
    assert_eq!(
        takeovers, 2,
        "both tried; the conditional replace let one through"
    );
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_cannot_renew_stops_holding_before_others_may_take_over() {
    let api = FakeApi::new();
    let a = candidate(&api, "a");
    sleep(1).await;
    assert!(a.leadership.holds());
    for _ in 0..10 {
        api.fail(
            Verb::Get,
            &LEASE,
            KubeError::Transport("connection refused".into()),
        );
    }
    let cut = tokio::time::Instant::now();
    while a.leadership.holds() {
        sleep(1).await;
    }
    // It renewed last just before the cut; others wait 15 s from the last change they saw.
    assert!(
        cut.elapsed() <= Duration::from_secs(10),
        "held {:?} without renewing",
        cut.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_held_by_another_replica_that_renews_is_never_taken() {
    let api = FakeApi::new();
    api.put(
        &LEASE,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "waypoint-status", "namespace": "infra"},
               "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 15}}),
    );
    let b = candidate(&api, "b");
    for round in 0..10 {
        // The other replica renews (a new resourceVersion) every 5 s.
        let mut lease = api
            .object(&LEASE, Some("infra"), "waypoint-status")
            .expect("lease");
        lease["spec"]["renewTime"] = json!(format!("round {round}"));
        api.put(&LEASE, lease);
        sleep(5).await;
        assert!(!b.leadership.holds());
    }
    assert_eq!(holder(&api), "elsewhere");
}

#[test]
fn identity_name_and_namespace_follow_the_pod_then_the_gateway() {
    assert_eq!(
        holder_identity(Some("wp-7d9".into()), Some("node".into())),
        "wp-7d9"
    );
    let a = holder_identity(None, Some("node\n".into()));
    let b = holder_identity(None, Some("node".into()));
    assert!(
        a.starts_with("node-") && a.len() == "node-".len() + 6,
        "{a}"
    );
    assert_ne!(a, b, "two processes on one host differ");
    assert!(holder_identity(None, None).starts_with("waypoint-"));
    let gateway = ("infra".to_owned(), "wp".to_owned());
    assert_eq!(default_lease_name(Some(&gateway)), "waypoint-status-wp");
    assert_eq!(default_lease_name(None), "waypoint-status");
    assert_eq!(lease_namespace(Some("pods".into()), Some(&gateway)), "pods");
    assert_eq!(lease_namespace(None, Some(&gateway)), "infra");
    assert_eq!(lease_namespace(Some(String::new()), None), "default");
}
