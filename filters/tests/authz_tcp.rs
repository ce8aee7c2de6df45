//! AuthorizationPolicy on TCP connections, table-driven through the filter's connection phase
//! (`on_connection`) with policies compiled from manifests: Istio's treatment of HTTP-only
//! fields on TCP filter chains (an ALLOW rule using one never matches, a DENY rule ignores
//! them and so denies more), the L4 fields that keep working, and what the filter leaves for
//! logs and metrics.

// Test helpers unwrap: a malformed fixture should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use waypoint_core::config::PortProtocol;
use waypoint_core::filter::testing::{TestChain, conn};
use waypoint_core::filter::{AuthzDecision, ConnectionContext, ConnectionDecision, FilterSet};
use waypoint_core::flags::ResponseFlag;
use waypoint_filters::authz::{AuthzAudit, AuthzDryRun, AuthzFactory, ExtAuthzProvider};

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: tcp-echo, namespace: foo}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: tcp-echo, port: 9000}, {name: tcp-other, port: 9001}, {name: tls, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: foo}
spec:
  clusterIP: 10.96.0.21
  ports: [{name: tcp, port: 9000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: foo}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;

const SLEEP: &str = "spiffe://cluster.local/ns/default/sa/sleep";
const PROD: &str = "spiffe://cluster.local/ns/prod/sa/sleep";

/// A policy in `foo` attached to Service `tcp-echo`; `body` is the rest of the spec.
fn svc(name: &str, body: &str) -> String {
    let body: String = body.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  targetRefs: [{{kind: Service, group: \"\", name: tcp-echo}}]\n{body}"
    )
}

fn allow_rule(rule: &str) -> Vec<String> {
    vec![svc("p", &format!("action: ALLOW\nrules: [{rule}]"))]
}

fn deny_rule(rule: &str) -> Vec<String> {
    vec![svc("p", &format!("action: DENY\nrules: [{rule}]"))]
}

/// A connection: identity (`None`: unauthenticated), source IP, destination, SNI.
#[derive(Clone)]
struct Conn {
    id: Option<&'static str>,
    src: &'static str,
    dst: &'static str,
    sni: Option<&'static str>,
}

fn tcp() -> Conn {
    Conn {
        id: Some(SLEEP),
        src: "10.0.0.5",
        dst: "10.96.0.20:9000",
        sni: None,
    }
}

impl Conn {
    fn id(mut self, id: &'static str) -> Self {
        self.id = Some(id);
        self
    }
    fn anon(mut self) -> Self {
        self.id = None;
        self
    }
    fn src(mut self, s: &'static str) -> Self {
        self.src = s;
        self
    }
    fn dst(mut self, d: &'static str) -> Self {
        self.dst = d;
        self
    }
    fn tls(mut self, sni: &'static str) -> Self {
        self.dst = "10.96.0.20:443";
        self.sni = Some(sni);
        self
    }
}

fn chain_with(policies: &[String], factory: AuthzFactory) -> TestChain {
    let text = format!("{BASE}\n---\n{}", policies.join("\n---\n"));
    let chain = TestChain::new(&text, |filters: &mut FilterSet| {
        filters.factory(factory);
    })
    .unwrap();
    for s in &chain.config().statuses {
        assert!(s.is_ok(), "manifest rejected: {s:?}");
    }
    chain
}

async fn connect(chain: &TestChain, c: &Conn) -> (ConnectionDecision, ConnectionContext) {
    let mut info = conn(c.dst);
    info.peer_identity = c.id.map(|i| i.parse().unwrap());
    info.source = Some(format!("{}:40000", c.src).parse().unwrap());
    let protocol = if c.sni.is_some() {
        PortProtocol::Tls
    } else {
        PortProtocol::Tcp
    };
    let mut ctx = ConnectionContext::new(Arc::new(info), chain.config().clone(), protocol)
        .with_sni(c.sni.map(str::to_owned));
    let decision = chain.chain().run_connection(&mut ctx).await;
    (decision, ctx)
}

struct Case {
    name: &'static str,
    policies: Vec<String>,
    conn: Conn,
    allowed: bool,
    /// The deciding policy and rule; `None` for a default decision.
    by: Option<(&'static str, usize)>,
}

fn allow(n: &'static str, p: Vec<String>, c: Conn, by: Option<(&'static str, usize)>) -> Case {
    Case {
        name: n,
        policies: p,
        conn: c,
        allowed: true,
        by,
    }
}

fn deny(n: &'static str, p: Vec<String>, c: Conn, by: Option<(&'static str, usize)>) -> Case {
    Case {
        name: n,
        policies: p,
        conn: c,
        allowed: false,
        by,
    }
}

const P0: Option<(&str, usize)> = Some(("p", 0));

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let gateway_deny = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: gw, namespace: foo}\nspec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n  action: DENY\n  rules: [{from: [{source: {namespaces: [prod]}}]}]\n".to_owned();
    vec![
        // The evaluation order is the requests'.
        allow("no policy: allowed", vec![], tcp(), None),
        deny("ALLOW with no rules denies every connection", vec![svc("p", "action: ALLOW")], tcp(), None),
        allow("ALLOW with an empty rule allows every connection", allow_rule("{}"), tcp(), P0),
        deny("DENY with an empty rule denies every connection", deny_rule("{}"), tcp(), P0),
        deny("DENY wins over ALLOW", vec![svc("a", "rules: [{}]"), svc("d", "action: DENY\nrules: [{}]")], tcp(), Some(("d", 0))),
        allow("a policy of another Service does not apply", allow_rule("{from: [{source: {namespaces: [prod]}}]}"), tcp().dst("10.96.0.21:9000"), None),
        deny("a Gateway policy applies to the Service's connections", vec![gateway_deny.clone()], tcp().id(PROD), Some(("gw", 0))),
        deny("a Gateway policy applies to connections to no known Service", vec![gateway_deny], tcp().id(PROD).dst("10.1.1.1:5432"), Some(("gw", 0))),
        // ALLOW: a rule with an HTTP-only field, positive or not*, never matches a connection.
        deny("ALLOW with to.operation.methods never matches", allow_rule("{from: [{source: {principals: [\"cluster.local/ns/default/sa/sleep\"]}}], to: [{operation: {methods: [GET]}}]}"), tcp(), None),
        deny("ALLOW with notMethods never matches", allow_rule("{to: [{operation: {notMethods: [DELETE]}}]}"), tcp(), None),
        deny("ALLOW with paths never matches", allow_rule("{to: [{operation: {paths: [\"/*\"]}}]}"), tcp(), None),
        deny("ALLOW with notPaths never matches", allow_rule("{to: [{operation: {notPaths: [\"/admin\"]}}]}"), tcp(), None),
        deny("ALLOW with hosts never matches", allow_rule("{to: [{operation: {hosts: [\"*\"]}}]}"), tcp(), None),
        deny("ALLOW with notHosts never matches", allow_rule("{to: [{operation: {notHosts: [\"x.example\"]}}]}"), tcp(), None),
        deny("ALLOW with requestPrincipals never matches", allow_rule("{from: [{source: {requestPrincipals: [\"*\"]}}]}"), tcp(), None),
        deny("ALLOW with notRequestPrincipals never matches", allow_rule("{from: [{source: {notRequestPrincipals: [\"*\"]}}]}"), tcp(), None),
        deny("ALLOW with a request.headers condition never matches", allow_rule("{when: [{key: \"request.headers[x-a]\", notValues: [b]}]}"), tcp(), None),
        deny("ALLOW with a request.auth.claims condition never matches", allow_rule("{when: [{key: \"request.auth.claims[iss]\", values: [a]}]}"), tcp(), None),
        deny("ALLOW: an HTTP-only field in one to entry drops the whole rule", allow_rule("{to: [{operation: {ports: [\"9000\"]}}, {operation: {methods: [GET]}}]}"), tcp(), None),
        allow("ALLOW: the next rule without HTTP fields still matches", vec![svc("p", "rules: [{to: [{operation: {methods: [GET]}}]}, {to: [{operation: {ports: [\"9000\"]}}]}]")], tcp(), Some(("p", 1))),
        // DENY: HTTP-only fields are ignored, so the rule denies more.
        deny("DENY with to.operation.methods denies every connection from its from", deny_rule("{from: [{source: {namespaces: [default]}}], to: [{operation: {methods: [GET]}}]}"), tcp(), P0),
        allow("DENY with methods spares connections outside its from", deny_rule("{from: [{source: {namespaces: [default]}}], to: [{operation: {methods: [GET]}}]}"), tcp().id(PROD), None),
        deny("DENY with paths and ports keeps the port", deny_rule("{to: [{operation: {paths: [\"/admin\"], ports: [\"9001\"]}}]}"), tcp().dst("10.96.0.20:9001"), P0),
        allow("DENY with paths and ports spares other ports", deny_rule("{to: [{operation: {paths: [\"/admin\"], ports: [\"9001\"]}}]}"), tcp(), None),
        deny("DENY with notPaths denies every connection", deny_rule("{to: [{operation: {notPaths: [\"/healthz\"]}}]}"), tcp(), P0),
        deny("DENY with notHosts denies every connection", deny_rule("{to: [{operation: {notHosts: [\"a.example\"]}}]}"), tcp(), P0),
        deny("DENY with requestPrincipals denies every connection", deny_rule("{from: [{source: {requestPrincipals: [\"issuer/alice\"]}}]}"), tcp(), P0),
        deny("DENY with a claims condition denies every connection", deny_rule("{when: [{key: \"request.auth.claims[groups]\", values: [admins]}]}"), tcp(), P0),
        deny("DENY with a header condition keeps its L4 conditions", deny_rule("{when: [{key: \"request.headers[x-a]\", values: [b]}, {key: source.ip, values: [\"10.0.0.0/24\"]}]}"), tcp(), P0),
        allow("DENY with a header condition spares sources its L4 condition excludes", deny_rule("{when: [{key: \"request.headers[x-a]\", values: [b]}, {key: source.ip, values: [\"10.0.0.0/24\"]}]}"), tcp().src("192.168.0.9"), None),
        deny("DENY with notNamespaces and methods denies other namespaces", deny_rule("{from: [{source: {notNamespaces: [prod]}}], to: [{operation: {methods: [POST]}}]}"), tcp(), P0),
        allow("DENY with notNamespaces and methods spares the listed namespace", deny_rule("{from: [{source: {notNamespaces: [prod]}}], to: [{operation: {methods: [POST]}}]}"), tcp().id(PROD), None),
        // L4 fields work as for requests.
        allow("ports", allow_rule("{to: [{operation: {ports: [\"9000\"]}}]}"), tcp(), P0),
        deny("ports, other port", allow_rule("{to: [{operation: {ports: [\"9000\"]}}]}"), tcp().dst("10.96.0.20:9001"), None),
        deny("notPorts", allow_rule("{to: [{operation: {notPorts: [\"9000\"]}}]}"), tcp(), None),
        allow("principals", allow_rule("{from: [{source: {principals: [\"cluster.local/ns/default/sa/sleep\"]}}]}"), tcp(), P0),
        deny("principals, other caller", allow_rule("{from: [{source: {principals: [\"cluster.local/ns/default/sa/sleep\"]}}]}"), tcp().id(PROD), None),
        deny("principals presence rejects unauthenticated", allow_rule("{from: [{source: {principals: [\"*\"]}}]}"), tcp().anon(), None),
        deny("notPrincipals", allow_rule("{from: [{source: {notPrincipals: [\"*/sa/sleep\"]}}]}"), tcp(), None),
        allow("notPrincipals hold for unauthenticated", allow_rule("{from: [{source: {notPrincipals: [\"*/sa/sleep\"]}}]}"), tcp().anon(), P0),
        allow("namespaces", allow_rule("{from: [{source: {namespaces: [default]}}]}"), tcp(), P0),
        deny("notNamespaces", allow_rule("{from: [{source: {notNamespaces: [default]}}]}"), tcp(), None),
        allow("serviceAccounts", allow_rule("{from: [{source: {serviceAccounts: [default/sleep]}}]}"), tcp(), P0),
        allow("ipBlocks", allow_rule("{from: [{source: {ipBlocks: [\"10.0.0.0/24\"]}}]}"), tcp(), P0),
        deny("ipBlocks, other source", allow_rule("{from: [{source: {ipBlocks: [\"10.0.0.0/24\"]}}]}"), tcp().src("10.1.0.5"), None),
        deny("notIpBlocks", allow_rule("{from: [{source: {notIpBlocks: [\"10.0.0.5\"]}}]}"), tcp(), None),
        allow("remoteIpBlocks are the source address", allow_rule("{from: [{source: {remoteIpBlocks: [\"10.0.0.5\"]}}]}"), tcp(), P0),
        deny("notRemoteIpBlocks in DENY", deny_rule("{from: [{source: {notRemoteIpBlocks: [\"10.0.0.0/8\"]}}]}"), tcp().src("192.168.1.1"), P0),
        allow("when destination.port", allow_rule("{when: [{key: destination.port, values: [\"9000\"]}]}"), tcp(), P0),
        allow("when destination.ip", allow_rule("{when: [{key: destination.ip, values: [\"10.96.0.20\"]}]}"), tcp(), P0),
        allow("when source.namespace", allow_rule("{when: [{key: source.namespace, values: [default]}]}"), tcp(), P0),
        allow("when source.principal", allow_rule("{when: [{key: source.principal, values: [\"cluster.local/ns/default/sa/sleep\"]}]}"), tcp(), P0),
        deny("when remote.ip notValues", allow_rule("{when: [{key: remote.ip, notValues: [\"10.0.0.5\"]}]}"), tcp(), None),
        // connection.sni: the ClientHello's server name of TLS passed through.
        allow("connection.sni matches the SNI of TLS passthrough", allow_rule("{when: [{key: connection.sni, values: [\"*.example.com\"]}]}"), tcp().tls("api.example.com"), P0),
        deny("connection.sni, other SNI", allow_rule("{when: [{key: connection.sni, values: [\"*.example.com\"]}]}"), tcp().tls("api.example.org"), None),
        deny("connection.sni never matches plain TCP", allow_rule("{when: [{key: connection.sni, values: [\"*\"]}]}"), tcp(), None),
        deny("connection.sni notValues in DENY", deny_rule("{when: [{key: connection.sni, notValues: [\"api.example.com\"]}]}"), tcp().tls("admin.example.com"), P0),
    ]
}

fn policy_name(d: &AuthzDecision) -> Option<(String, usize)> {
    Some((d.policy.as_ref()?.name.clone(), d.rule?))
}

#[tokio::test]
async fn tcp_connections_are_decided_with_istios_rules_for_http_only_fields() {
    let mut failures = Vec::new();
    for case in cases() {
        let chain = chain_with(&case.policies, AuthzFactory::default());
        let (decision, ctx) = connect(&chain, &case.conn).await;
        let recorded = ctx.extensions.get::<AuthzDecision>();
        let by = recorded.and_then(policy_name);
        let want_by = case.by.map(|(p, r)| (p.to_owned(), r));
        let closed = matches!(decision, ConnectionDecision::Close(_));
        let flagged = ctx.response_flags.contains(&ResponseFlag::RbacAccessDenied);
        if closed == case.allowed
            || recorded.map(|d| d.allowed) != Some(case.allowed)
            || by != want_by
            || flagged == case.allowed
        {
            failures.push(format!(
                "{}: want allowed={} by {want_by:?}, got {decision:?} recorded {recorded:?} flags {:?}",
                case.name, case.allowed, ctx.response_flags
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_denied_connection_is_closed_with_the_rbac_reason_and_deciding_rule() {
    let chain = chain_with(
        &deny_rule("{to: [{operation: {methods: [GET]}}]}"),
        AuthzFactory::default(),
    );
    let (decision, ctx) = connect(&chain, &tcp()).await;
    assert_eq!(
        decision,
        ConnectionDecision::Close(
            "RBAC: access denied by DENY policy AuthorizationPolicy foo/p rule 0".into()
        )
    );
    assert_eq!(ctx.response_flags, vec![ResponseFlag::RbacAccessDenied]);
    let chain = chain_with(
        &allow_rule("{to: [{operation: {paths: [\"/\"]}}]}"),
        AuthzFactory::default(),
    );
    let (decision, _) = connect(&chain, &tcp()).await;
    assert_eq!(
        decision,
        ConnectionDecision::Close(
            "RBAC: access denied: ALLOW policies apply but none matches".into()
        )
    );
}

#[tokio::test]
async fn an_allowed_connection_records_the_decision_for_the_metrics() {
    let chain = chain_with(&allow_rule("{}"), AuthzFactory::default());
    let (decision, ctx) = connect(&chain, &tcp()).await;
    assert_eq!(decision, ConnectionDecision::Continue);
    let recorded = ctx.extensions.get::<AuthzDecision>().unwrap();
    assert!(recorded.allowed);
    assert_eq!(recorded.action, "ALLOW");
    assert!(ctx.response_flags.is_empty());
}

#[tokio::test]
async fn a_dry_run_deny_is_recorded_but_not_enforced_on_a_connection() {
    let policy = svc(
        "p",
        "action: DENY\nrules: [{to: [{operation: {methods: [GET]}}]}]",
    )
    .replace(
        "namespace: foo}",
        "namespace: foo, annotations: {istio.io/dry-run: \"true\"}}",
    );
    let chain = chain_with(&[policy], AuthzFactory::default());
    let (decision, ctx) = connect(&chain, &tcp()).await;
    assert_eq!(decision, ConnectionDecision::Continue);
    let shadow = ctx.extensions.get::<AuthzDryRun>().unwrap();
    assert!(!shadow.0.allowed, "the dry-run DENY matches: {shadow:?}");
    assert!(shadow.0.dry_run);
    assert!(ctx.extensions.get::<AuthzDecision>().unwrap().allowed);
}

#[tokio::test]
async fn an_audit_rule_with_http_fields_marks_every_connection() {
    let chain = chain_with(
        &[svc(
            "a",
            "action: AUDIT\nrules: [{to: [{operation: {paths: [\"/x\"]}}]}]",
        )],
        AuthzFactory::default(),
    );
    let (decision, ctx) = connect(&chain, &tcp()).await;
    assert_eq!(decision, ConnectionDecision::Continue);
    let audit = ctx.extensions.get::<AuthzAudit>().unwrap();
    assert_eq!(audit.0.len(), 1);
    assert_eq!(audit.0[0].policy.name, "a");
}

fn custom(provider: &str) -> Vec<String> {
    vec![svc(
        "ext",
        &format!(
            "action: CUSTOM\nprovider: {{name: {provider}}}\nrules: [{{to: [{{operation: {{paths: [\"/admin\"]}}}}]}}]"
        ),
    )]
}

fn with_provider(fail_open: bool) -> AuthzFactory {
    let mut provider = ExtAuthzProvider::new("authz", "127.0.0.1:1");
    provider.fail_open = fail_open;
    AuthzFactory {
        providers: HashMap::from([("authz".to_owned(), provider)]),
        ..AuthzFactory::default()
    }
}

#[tokio::test]
async fn a_custom_rule_matching_a_connection_fails_closed_since_http_ext_authz_cannot_check_it() {
    let chain = chain_with(&custom("authz"), with_provider(false));
    let (decision, ctx) = connect(&chain, &tcp()).await;
    let ConnectionDecision::Close(reason) = decision else {
        panic!("want closed, got {decision:?}");
    };
    assert!(
        reason
            .starts_with("RBAC: access denied by CUSTOM policy AuthorizationPolicy foo/ext rule 0"),
        "{reason}"
    );
    assert!(reason.contains("cannot check a TCP connection"), "{reason}");
    assert_eq!(
        ctx.response_flags,
        vec![ResponseFlag::UnauthorizedExternalService]
    );
    let recorded = ctx.extensions.get::<AuthzDecision>().unwrap();
    assert_eq!(
        (recorded.allowed, recorded.action.as_str()),
        (false, "CUSTOM")
    );
}

#[tokio::test]
async fn a_fail_open_custom_provider_lets_the_connection_through_unchecked() {
    let chain = chain_with(&custom("authz"), with_provider(true));
    let (decision, ctx) = connect(&chain, &tcp()).await;
    assert_eq!(decision, ConnectionDecision::Continue);
    assert!(ctx.response_flags.is_empty());
}

#[tokio::test]
async fn a_custom_rule_with_an_unknown_provider_denies_the_connection() {
    let chain = chain_with(&custom("missing"), AuthzFactory::default());
    let (decision, ctx) = connect(&chain, &tcp()).await;
    let ConnectionDecision::Close(reason) = decision else {
        panic!("want closed, got {decision:?}");
    };
    assert!(
        reason.contains("its ext_authz provider is unknown"),
        "{reason}"
    );
    assert_eq!(
        ctx.response_flags,
        vec![ResponseFlag::UnauthorizedExternalService]
    );
}
