//! Binding decisions, case by case as istiod makes them.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use super::*;
use crate::config::build::{EndpointStatsCache, MeshOptions};
use crate::config::load::parse_manifests_with;

/// One case: (what it shows, extra manifests, gateway/class metadata, object, reason).
struct Case {
    name: &'static str,
    /// Labels/annotations of the Gateway `mesh/wp` and GatewayClass `wpc`, as YAML flow maps.
    gateway_meta: &'static str,
    class_meta: &'static str,
    /// The listeners of the Gateway, as YAML.
    listeners: &'static str,
    /// Namespaces and the object under test, as YAML documents.
    objects: &'static str,
    /// The object decided on, and the expected reason (`None`: no decision at all).
    object: (&'static str, &'static str, &'static str),
    reason: Option<&'static str>,
}

const HBONE: &str = "[{name: mesh, port: 15008, protocol: HBONE}]";
const HBONE_ALL: &str =
    "[{name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {namespaces: {from: All}}}]";
const HBONE_SELECTOR: &str = "[{name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}}]";

fn svc(ns: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\nspec:\n  clusterIP: 10.96.0.9\n  ports: [{{port: 80}}]\n---\n"
    )
}

fn manifests(case: &Case) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: wpc, {}}}\nspec: {{controllerName: example.com/waypoint}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: wp, namespace: mesh, {}}}\nspec:\n  gatewayClassName: wpc\n  listeners: {}\n---\n{}",
        case.class_meta, case.gateway_meta, case.listeners, case.objects
    )
}

fn build(text: &str) -> Config {
    let cache = EndpointStatsCache::with_mesh(MeshOptions {
        gateway: Some(("mesh".into(), "wp".into())),
        ..Default::default()
    });
    parse_manifests_with(text, "test.yaml", &cache).unwrap()
}

fn decision_of<'c>(
    config: &'c Config,
    (kind, ns, name): (&str, &str, &str),
) -> Option<&'c BindingDecision> {
    let want = ResourceRef::new(kind, ns, name);
    config
        .binding()
        .decisions()
        .iter()
        .find(|d| d.object == want)
}

#[test]
fn decisions_mirror_istiod_case_by_case() {
    let ns_a = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {team: a}}\n---\n";
    let ns_b = "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\n";
    let ns_mesh_label = "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: {istio.io/use-waypoint: wp}}\n---\n";
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let pod = |labels: &str| {
        leak(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: mesh, labels: {labels}}}\nspec: {{serviceAccountName: p}}\nstatus: {{podIP: 10.1.0.5}}\n---\n"
        ))
    };
    let cases = vec![
        Case {
            name: "the object's own label binds",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE,
            objects: leak(svc("mesh", "s", "{istio.io/use-waypoint: wp}")),
            object: ("Service", "mesh", "s"),
            reason: Some("Bound"),
        },
        Case {
            name: "the namespace's label binds",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE,
            objects: leak(format!("{ns_mesh_label}{}", svc("mesh", "s", "{}"))),
            object: ("Service", "mesh", "s"),
            reason: Some("Bound"),
        },
        Case {
            name: "the object's label wins over the namespace's",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE,
            objects: leak(format!(
                "{ns_mesh_label}{}",
                svc("mesh", "s", "{istio.io/use-waypoint: other}")
            )),
            object: ("Service", "mesh", "s"),
            reason: Some("OtherWaypoint"),
        },
        Case {
            name: "none on the object opts out of the namespace's waypoint",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE,
            objects: leak(format!(
                "{ns_mesh_label}{}",
                svc("mesh", "s", "{istio.io/use-waypoint: none}")
            )),
            object: ("Service", "mesh", "s"),
            reason: Some("OptedOut"),
        },
        Case {
            name: "no label anywhere: no decision",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE,
            objects: leak(svc("mesh", "s", "{}")),
            object: ("Service", "mesh", "s"),
            reason: None,
        },
        Case {
            name: "cross-namespace is denied by default (from: Same)",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE,
            objects: leak(svc(
                "b",
                "s",
                "{istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: mesh}",
            )),
            object: ("Service", "b", "s"),
            reason: Some("AttachmentDenied"),
        },
        Case {
            name: "without use-waypoint-namespace the Gateway is looked for in the object's namespace",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE_ALL,
            objects: leak(svc("b", "s", "{istio.io/use-waypoint: wp}")),
            object: ("Service", "b", "s"),
            reason: Some("OtherWaypoint"),
        },
        Case {
            name: "cross-namespace is allowed with from: All",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE_ALL,
            objects: leak(svc(
                "b",
                "s",
                "{istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: mesh}",
            )),
            object: ("Service", "b", "s"),
            reason: Some("Bound"),
        },
        Case {
            name: "a Selector admits a namespace whose labels match",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE_SELECTOR,
            objects: leak(format!(
                "{ns_a}{}",
                svc(
                    "a",
                    "s",
                    "{istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: mesh}"
                )
            )),
            object: ("Service", "a", "s"),
            reason: Some("Bound"),
        },
        Case {
            name: "a Selector refuses a namespace whose labels do not match",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE_SELECTOR,
            objects: leak(format!(
                "{ns_b}{}",
                svc(
                    "b",
                    "s",
                    "{istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: mesh}"
                )
            )),
            object: ("Service", "b", "s"),
            reason: Some("AttachmentDenied"),
        },
        Case {
            name: "a service waypoint does not take a Pod that names it",
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE,
            objects: pod("{istio.io/use-waypoint: wp}"),
            object: ("Pod", "mesh", "p"),
            reason: Some("UnsupportedTrafficType"),
        },
        Case {
            name: "a workload waypoint (Gateway label) takes the Pod",
            gateway_meta: "labels: {istio.io/waypoint-for: workload}",
            class_meta: "",
            listeners: HBONE,
            objects: pod("{istio.io/use-waypoint: wp}"),
            object: ("Pod", "mesh", "p"),
            reason: Some("Bound"),
        },
        Case {
            name: "a workload waypoint does not take a Service",
            gateway_meta: "labels: {istio.io/waypoint-for: workload}",
            class_meta: "",
            listeners: HBONE,
            objects: leak(svc("mesh", "s", "{istio.io/use-waypoint: wp}")),
            object: ("Service", "mesh", "s"),
            reason: Some("UnsupportedTrafficType"),
        },
        Case {
            name: "the GatewayClass label applies when the Gateway has none",
            gateway_meta: "",
            class_meta: "labels: {istio.io/waypoint-for: all}",
            listeners: HBONE,
            objects: pod("{istio.io/use-waypoint: wp}"),
            object: ("Pod", "mesh", "p"),
            reason: Some("Bound"),
        },
        Case {
            name: "the Gateway label wins over the GatewayClass label",
            gateway_meta: "labels: {istio.io/waypoint-for: service}",
            class_meta: "labels: {istio.io/waypoint-for: all}",
            listeners: HBONE,
            objects: pod("{istio.io/use-waypoint: wp}"),
            object: ("Pod", "mesh", "p"),
            reason: Some("UnsupportedTrafficType"),
        },
        Case {
            name: "waypoint-for none takes nothing",
            gateway_meta: "labels: {istio.io/waypoint-for: none}",
            class_meta: "",
            listeners: HBONE,
            objects: leak(svc("mesh", "s", "{istio.io/use-waypoint: wp}")),
            object: ("Service", "mesh", "s"),
            reason: Some("UnsupportedTrafficType"),
        },
        Case {
            name: "the inbound binding's listener decides attachment, not the HBONE one",
            gateway_meta: "annotations: {ambient.istio.io/waypoint-inbound-binding: PROXY/15088}",
            class_meta: "",
            listeners: "[{name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {namespaces: {from: All}}}, {name: proxy, port: 15088, protocol: istio.io/PROXY}]",
            objects: leak(svc(
                "b",
                "s",
                "{istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: mesh}",
            )),
            object: ("Service", "b", "s"),
            reason: Some("AttachmentDenied"),
        },
        Case {
            name: "the GatewayClass's inbound binding applies too",
            gateway_meta: "",
            class_meta: "annotations: {ambient.istio.io/waypoint-inbound-binding: PROXY/15088}",
            listeners: "[{name: mesh, port: 15008, protocol: HBONE}, {name: proxy, port: 15088, protocol: istio.io/PROXY, allowedRoutes: {namespaces: {from: All}}}]",
            objects: leak(svc(
                "b",
                "s",
                "{istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: mesh}",
            )),
            object: ("Service", "b", "s"),
            reason: Some("Bound"),
        },
    ];
    for case in &cases {
        let config = build(&manifests(case));
        let got = decision_of(&config, case.object).map(|d| d.reason);
        assert_eq!(got, case.reason, "{}: {:?}", case.name, config.binding());
        if let Some(d) = decision_of(&config, case.object) {
            let (_, ns, name) = case.object;
            let served = config.binding().service_bound(ns, name);
            if case.object.0 == "Service" {
                assert_eq!(served, d.bound, "{}", case.name);
            }
        }
    }
}

#[test]
fn a_bound_pod_is_found_by_each_of_its_ips_and_gets_its_own_backend() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: mesh, labels: {istio.io/waypoint-for: all}}\nspec:\n  gatewayClassName: wpc\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: mesh, labels: {istio.io/use-waypoint: wp, app: p}}\nspec: {serviceAccountName: p-sa}\nstatus: {podIP: 10.1.0.5, podIPs: [{ip: 10.1.0.5}, {ip: 'fd00::5'}]}\n";
    let config = build(text);
    let dest: SocketAddr = "10.1.0.5:8080".parse().unwrap();
    let Destination::Workload(w) = config.destination(Some(dest)) else {
        panic!("not a workload: {:?}", config.destination(Some(dest)));
    };
    assert_eq!(w.pod, ResourceRef::new("Pod", "mesh", "p"));
    assert_eq!(w.service_account, "p-sa");
    assert_eq!(w.ips.len(), 2);
    assert_eq!(w.labels.get("app").map(String::as_str), Some("p"));
    let v6: IpAddr = "fd00::5".parse().unwrap();
    assert!(config.binding().workload_at(v6).is_some());
    let backend = w.backend(dest);
    let addrs: Vec<SocketAddr> = backend.endpoints.iter().map(|e| e.address).collect();
    assert_eq!(addrs, [dest]);
    assert!(backend.cluster_ips.is_empty());
    // Another IP is nothing of ours.
    let other: SocketAddr = "10.1.0.6:8080".parse().unwrap();
    assert!(matches!(
        config.destination(Some(other)),
        Destination::Unbound(Unbound::Unknown(_))
    ));
}

#[test]
fn an_unbound_service_vip_is_refused_with_its_reason_and_a_bound_one_served() {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: wp, namespace: mesh}}\nspec:\n  gatewayClassName: wpc\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n  addresses: [{{type: IPAddress, value: 10.0.0.1}}]\n---\n{}{}",
        svc("mesh", "bound", "{istio.io/use-waypoint: wp}").replace("10.96.0.9", "10.96.0.1"),
        svc("mesh", "other", "{istio.io/use-waypoint: elsewhere}").replace("10.96.0.9", "10.96.0.2"),
    );
    let config = build(&text);
    let at = |s: &str| config.destination(Some(s.parse().unwrap()));
    assert!(matches!(at("10.96.0.1:80"), Destination::Service(_)));
    let Destination::Unbound(why) = at("10.96.0.2:80") else {
        panic!("served");
    };
    assert_eq!(why.reason(), "service_not_bound");
    assert!(why.to_string().contains("names waypoint mesh/elsewhere"), "{why}");
    assert!(matches!(at("10.0.0.1:15008"), Destination::Gateway));
    assert!(matches!(
        config.destination(None),
        Destination::Unbound(Unbound::NoDestination)
    ));
}

#[test]
fn without_a_gateway_every_service_is_served_and_no_pod_is() {
    let text = format!(
        "{}apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: mesh, labels: {{istio.io/use-waypoint: wp}}}}\nstatus: {{podIP: 10.1.0.5}}\n",
        svc("mesh", "s", "{istio.io/use-waypoint: elsewhere}")
    );
    let config = parse_manifests_with(&text, "t.yaml", &EndpointStatsCache::new()).unwrap();
    assert!(!config.binding().enforced());
    assert!(config.binding().service_bound("mesh", "s"));
    assert!(matches!(
        config.destination(Some("10.96.0.9:80".parse().unwrap())),
        Destination::Service(_)
    ));
    assert!(config.binding().workload_at("10.1.0.5".parse().unwrap()).is_none());
}

#[test]
fn a_missing_gateway_binds_nothing_and_says_so() {
    let config = build(&svc("mesh", "s", "{istio.io/use-waypoint: wp}"));
    assert!(config.binding().enforced());
    assert!(!config.binding().service_bound("mesh", "s"));
    assert!(config.binding().problems()[0].contains("not in the config"));
}

#[test]
fn a_malformed_inbound_binding_is_reported_on_the_gateway_and_read_as_istiod_does() {
    let cases = [
        ("PROXY/abc", true, "not a port number"),
        ("HTTP/15088", false, "is not NONE or PROXY"),
        ("PROXY/1/2", false, "is not `<protocol>`"),
    ];
    for (value, proxy_listener, message) in cases {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: wp, namespace: mesh, annotations: {{ambient.istio.io/waypoint-inbound-binding: '{value}'}}}}\nspec:\n  gatewayClassName: wpc\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}, {{name: proxy, port: 15088, protocol: istio.io/PROXY}}]\n"
        );
        let config = build(&text);
        let want = if proxy_listener { "proxy" } else { "mesh" };
        assert_eq!(config.binding().bound_listener(), Some(want), "{value}");
        assert!(config.binding().problems()[0].contains(message), "{value}");
        let status = config
            .statuses
            .iter()
            .find(|s| s.resource == ResourceRef::new("Gateway", "mesh", "wp"))
            .unwrap();
        assert!(!status.is_ok(), "{value}");
        assert!(status.conditions[0].message.contains(message), "{value}");
    }
}
