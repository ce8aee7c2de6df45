//! Binding decisions, case by case as istiod makes them.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use super::*;
use crate::config::build::{EndpointStatsCache, MeshOptions};
use crate::config::load::parse_manifests_with;

/// One case of the table: the Gateway `mesh/wp` of class `wpc`, and the decision about one
/// object among `objects`.
struct Case {
    name: &'static str,
    /// Labels/annotations of the Gateway and of the GatewayClass, as YAML flow-map entries.
    gateway_meta: &'static str,
    class_meta: &'static str,
    /// The Gateway's listeners, as a YAML flow sequence.
    listeners: &'static str,
    /// Namespaces and the object under test, as YAML documents.
    objects: String,
    /// The object decided on, and the expected reason (`None`: no decision at all).
    object: (&'static str, &'static str, &'static str),
    reason: Option<&'static str>,
}

impl Case {
    /// The Service `<ns>/s` among `objects`, with an HBONE listener and no metadata.
    fn service(
        name: &'static str,
        objects: String,
        ns: &'static str,
        reason: Option<&'static str>,
    ) -> Case {
        Case {
            name,
            gateway_meta: "",
            class_meta: "",
            listeners: HBONE,
            objects,
            object: ("Service", ns, "s"),
            reason,
        }
    }

    /// The Pod `mesh/p`, labelled to use `wp`.
    fn pod(name: &'static str, reason: Option<&'static str>) -> Case {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: mesh, labels: {istio.io/use-waypoint: wp}}\nspec: {serviceAccountName: p}\nstatus: {podIP: 10.1.0.5}\n---\n";
        Case {
            object: ("Pod", "mesh", "p"),
            ..Case::service(name, pod.into(), "mesh", reason)
        }
    }

    fn gateway(self, gateway_meta: &'static str) -> Case {
        Case {
            gateway_meta,
            ..self
        }
    }

    fn class(self, class_meta: &'static str) -> Case {
        Case { class_meta, ..self }
    }

    fn listeners(self, listeners: &'static str) -> Case {
        Case { listeners, ..self }
    }
}

const HBONE: &str = "[{name: mesh, port: 15008, protocol: HBONE}]";
const HBONE_ALL: &str =
    "[{name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {namespaces: {from: All}}}]";
const HBONE_SELECTOR: &str = "[{name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}}]";
const FOR_WORKLOAD: &str = "labels: {istio.io/waypoint-for: workload}";
const PROXY_BINDING: &str = "annotations: {ambient.istio.io/waypoint-inbound-binding: PROXY/15088}";
const NS_A: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {team: a}}\n---\n";
const NS_B: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\n";
const NS_MESH: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: {istio.io/use-waypoint: wp}}\n---\n";

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
    let own = || svc("mesh", "s", "{istio.io/use-waypoint: wp}");
    let labelled = |labels| format!("{NS_MESH}{}", svc("mesh", "s", labels));
    let cross = |ns| {
        let labels = "{istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: mesh}";
        svc(ns, "s", labels)
    };
    let both = "[{name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {namespaces: {from: All}}}, {name: proxy, port: 15088, protocol: istio.io/PROXY}]";
    let proxy_all = "[{name: mesh, port: 15008, protocol: HBONE}, {name: proxy, port: 15088, protocol: istio.io/PROXY, allowedRoutes: {namespaces: {from: All}}}]";
    let cases = [
        Case::service("the object's own label binds", own(), "mesh", Some("Bound")),
        Case::service(
            "the namespace's label binds",
            labelled("{}"),
            "mesh",
            Some("Bound"),
        ),
        Case::service(
            "the object's label wins over the namespace's",
            labelled("{istio.io/use-waypoint: other}"),
            "mesh",
            Some("OtherWaypoint"),
        ),
        Case::service(
            "none on the object opts out of the namespace's waypoint",
            labelled("{istio.io/use-waypoint: none}"),
            "mesh",
            Some("OptedOut"),
        ),
        Case::service(
            "no label anywhere: no decision",
            svc("mesh", "s", "{}"),
            "mesh",
            None,
        ),
        Case::service(
            "cross-namespace is denied by default",
            cross("b"),
            "b",
            Some("AttachmentDenied"),
        ),
        Case::service(
            "without use-waypoint-namespace the Gateway is the object's namespace's",
            svc("b", "s", "{istio.io/use-waypoint: wp}"),
            "b",
            Some("OtherWaypoint"),
        )
        .listeners(HBONE_ALL),
        Case::service(
            "cross-namespace with from: All",
            cross("b"),
            "b",
            Some("Bound"),
        )
        .listeners(HBONE_ALL),
        Case::service(
            "a matching Selector",
            format!("{NS_A}{}", cross("a")),
            "a",
            Some("Bound"),
        )
        .listeners(HBONE_SELECTOR),
        Case::service(
            "a Selector that does not match",
            format!("{NS_B}{}", cross("b")),
            "b",
            Some("AttachmentDenied"),
        )
        .listeners(HBONE_SELECTOR),
        Case::pod(
            "a service waypoint takes no Pod",
            Some("UnsupportedTrafficType"),
        ),
        Case::pod(
            "a workload waypoint (Gateway label) takes the Pod",
            Some("Bound"),
        )
        .gateway(FOR_WORKLOAD),
        Case::service(
            "a workload waypoint takes no Service",
            own(),
            "mesh",
            Some("UnsupportedTrafficType"),
        )
        .gateway(FOR_WORKLOAD),
        Case::pod(
            "the GatewayClass label applies when the Gateway has none",
            Some("Bound"),
        )
        .class("labels: {istio.io/waypoint-for: all}"),
        Case::pod(
            "the Gateway label wins over the GatewayClass's",
            Some("UnsupportedTrafficType"),
        )
        .gateway("labels: {istio.io/waypoint-for: service}")
        .class("labels: {istio.io/waypoint-for: all}"),
        Case::service(
            "waypoint-for none takes nothing",
            own(),
            "mesh",
            Some("UnsupportedTrafficType"),
        )
        .gateway("labels: {istio.io/waypoint-for: none}"),
        Case::service(
            "the inbound binding's listener decides attachment, not the HBONE one",
            cross("b"),
            "b",
            Some("AttachmentDenied"),
        )
        .gateway(PROXY_BINDING)
        .listeners(both),
        Case::service(
            "the GatewayClass's inbound binding applies too",
            cross("b"),
            "b",
            Some("Bound"),
        )
        .class(PROXY_BINDING)
        .listeners(proxy_all),
    ];
    for case in &cases {
        let config = build(&manifests(case));
        let decision = decision_of(&config, case.object);
        let got = decision.map(|d| d.reason);
        assert_eq!(got, case.reason, "{}: {:?}", case.name, config.binding());
        if let (Some(d), ("Service", ns, name)) = (decision, case.object) {
            assert_eq!(
                config.binding().service_bound(ns, name),
                d.bound,
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn a_bound_pod_is_found_by_each_of_its_ips_and_gets_its_own_backend() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: mesh, labels: {istio.io/waypoint-for: all}}\nspec:\n  gatewayClassName: wpc\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: mesh, labels: {istio.io/use-waypoint: wp, app: p}}\nspec: {serviceAccountName: p-sa}\nstatus: {podIP: 10.1.0.5, podIPs: [{ip: 10.1.0.5}, {ip: 'fd00::5'}]}\n";
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
    // In the mesh (its namespace is ambient): HBONE, proving the pod's own service account.
    let identity = crate::identity::SpiffeId::new("cluster.local", "mesh", "p-sa").unwrap();
    let hbone = EndpointTransport::Hbone {
        identity: crate::tls::ExpectedIdentity::Exact(identity),
    };
    assert_eq!(backend.endpoints[0].transport, hbone);
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
        svc("mesh", "other", "{istio.io/use-waypoint: elsewhere}")
            .replace("10.96.0.9", "10.96.0.2"),
    );
    let config = build(&text);
    let at = |s: &str| config.destination(Some(s.parse().unwrap()));
    assert!(matches!(at("10.96.0.1:80"), Destination::Service(_)));
    let Destination::Unbound(why) = at("10.96.0.2:80") else {
        panic!("served");
    };
    assert_eq!(why.reason(), "service_not_bound");
    assert!(
        why.to_string().contains("names waypoint mesh/elsewhere"),
        "{why}"
    );
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
    assert!(
        config
            .binding()
            .workload_at("10.1.0.5".parse().unwrap())
            .is_none()
    );
}

#[test]
fn without_a_gateway_a_pod_whose_waypoint_here_takes_workloads_is_served_by_pod_ip() {
    // `mesh/wp` takes all traffic, `mesh/svc-only` only Services (both sandwiched, admitting
    // every namespace on their PROXY listener); `elsewhere` is not here.
    let gateway = |name: &str, labels: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: mesh, labels: {{{labels}}}, {PROXY_BINDING}}}\nspec:\n  gatewayClassName: wpc\n  listeners: [{{name: proxy, port: 15088, protocol: istio.io/PROXY, allowedRoutes: {{namespaces: {{from: All}}}}}}]\n---\n"
        )
    };
    let pod = |ns: &str, name: &str, ip: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nstatus: {{podIP: {ip}}}\n---\n"
        )
    };
    let text = [
        gateway("wp", "istio.io/waypoint-for: all"),
        gateway("svc-only", ""),
        // The namespace names `wp` for its pods; a pod's own label wins over it.
        NS_MESH.to_owned(),
        pod("mesh", "by-namespace", "10.1.0.1", ""),
        pod(
            "mesh",
            "service-waypoint",
            "10.1.0.2",
            "istio.io/use-waypoint: svc-only",
        ),
        pod(
            "mesh",
            "opted-out",
            "10.1.0.3",
            "istio.io/use-waypoint: none",
        ),
        pod(
            "other",
            "cross-ns",
            "10.1.0.4",
            "istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: mesh",
        ),
        pod(
            "other",
            "elsewhere",
            "10.1.0.5",
            "istio.io/use-waypoint: elsewhere",
        ),
        pod("other", "unlabelled", "10.1.0.6", ""),
    ]
    .concat();
    let config = parse_manifests_with(&text, "t.yaml", &EndpointStatsCache::new()).unwrap();
    assert!(!config.binding().enforced());
    let at = |ip: &str| config.destination(Some(SocketAddr::new(ip.parse().unwrap(), 8080)));
    for (ip, pod) in [("10.1.0.1", "by-namespace"), ("10.1.0.4", "cross-ns")] {
        let Destination::Workload(w) = at(ip) else {
            panic!("{pod} not served: {:?}", at(ip));
        };
        assert_eq!(w.pod.name, pod);
    }
    for ip in ["10.1.0.2", "10.1.0.3", "10.1.0.5", "10.1.0.6", "10.1.0.9"] {
        assert!(
            matches!(at(ip), Destination::Unbound(Unbound::Unknown(_))),
            "{ip}: {:?}",
            at(ip)
        );
    }
    // Nothing is enforced, so nothing is explained.
    assert!(config.binding().decisions().is_empty());
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
        // The Gateway status the routing factory writes reads the same fact from here.
        let wp = ResourceRef::new("Gateway", "mesh", "wp");
        let why = config.binding().malformed_inbound_binding(&wp);
        assert!(why.is_some_and(|w| w.contains(message)), "{value}: {why:?}");
        let other = ResourceRef::new("Gateway", "mesh", "other");
        assert_eq!(config.binding().malformed_inbound_binding(&other), None);
    }
}
