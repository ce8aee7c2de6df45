//! AuthorizationPolicy decisions, table-driven: policy manifests, a request, the expected
//! decision and the deciding policy and rule. Cases follow the istio.io reference pages
//! (authorization-policy, conditions, normalization) field by field.

// Test helpers unwrap: a malformed fixture should stop the test loudly.
#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderName, HeaderValue};
use waypoint_core::config::{Config, parse_manifests};
use waypoint_core::filter::{BuildContext, BuildReport, ExtensionRegistry};
use waypoint_core::identity::SpiffeId;
use waypoint_filters::authz::{
    AuthzFactory, Explanation, PolicySet, RequestAttributes, RequestPrincipal, explain,
};

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 8000}, {name: http-alt, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: foo}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 8000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: foo}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;

const SLEEP: &str = "spiffe://cluster.local/ns/default/sa/sleep";
const CURL: &str = "spiffe://cluster.local/ns/default/sa/curl";
const PROD: &str = "spiffe://cluster.local/ns/prod/sa/sleep";

/// A policy in `foo` attached to Service `httpbin`; `body` is the rest of the spec.
fn svc(name: &str, body: &str) -> String {
    let body: String = body.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  targetRefs: [{{kind: Service, group: \"\", name: httpbin}}]\n{body}"
    )
}

#[derive(Clone)]
struct Req {
    id: Option<&'static str>,
    src: &'static str,
    dst: &'static str,
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    jwt: Option<RequestPrincipal>,
}

fn req() -> Req {
    Req {
        id: Some(SLEEP),
        src: "10.0.0.5",
        dst: "10.96.0.10:8000",
        method: "GET",
        host: "httpbin.foo:8000",
        path: "/get",
        headers: Vec::new(),
        jwt: None,
    }
}

impl Req {
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
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn host(mut self, h: &'static str) -> Self {
        self.host = h;
        self
    }
    fn path(mut self, p: &'static str) -> Self {
        self.path = p;
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.push((k, v));
        self
    }
    fn jwt(mut self) -> Self {
        self.jwt = Some(RequestPrincipal {
            principal: "issuer.example.com/alice".into(),
            audiences: vec!["api.example.com".into(), "web".into()],
            presenter: Some("client-1".into()),
            claims: serde_json::json!({
                "iss": "issuer.example.com",
                "sub": "alice",
                "groups": ["admins", "dev"],
                "nested": {"role": "admin", "level": 3},
            }),
        });
        self
    }
}

struct Built {
    config: Config,
    set: PolicySet,
    reports: Vec<BuildReport>,
}

fn build(policies: &[String]) -> Built {
    let text = format!("{BASE}\n---\n{}", policies.join("\n---\n"));
    let config = parse_manifests(&text, "table.yaml").unwrap();
    for s in &config.statuses {
        assert!(s.is_ok(), "manifest rejected: {s:?}");
    }
    let registry = ExtensionRegistry::new();
    let mut cx = BuildContext::new(&config, &registry);
    let set = AuthzFactory::default().compile(&mut cx);
    let reports = cx.into_reports();
    Built {
        config,
        set,
        reports,
    }
}

fn decide(b: &Built, r: &Req) -> Explanation {
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_static(v),
        );
    }
    let identity: Option<SpiffeId> = r.id.map(|i| i.parse().unwrap());
    let attrs = RequestAttributes {
        identity: identity.as_ref(),
        source: Some(r.src.parse().unwrap()),
        destination: Some(r.dst.parse().unwrap()),
        method: r.method,
        host: r.host,
        path: r.path,
        headers: &headers,
        request_principal: r.jwt.as_ref(),
    };
    explain(&b.set, &b.config, &attrs).unwrap()
}

struct Case {
    name: &'static str,
    policies: Vec<String>,
    req: Req,
    allowed: bool,
    /// The deciding policy (name) and rule; `None` for a default decision.
    by: Option<(&'static str, usize)>,
}

fn allow(
    name: &'static str,
    policies: Vec<String>,
    req: Req,
    by: Option<(&'static str, usize)>,
) -> Case {
    Case {
        name,
        policies,
        req,
        allowed: true,
        by,
    }
}

fn deny(
    name: &'static str,
    policies: Vec<String>,
    req: Req,
    by: Option<(&'static str, usize)>,
) -> Case {
    Case {
        name,
        policies,
        req,
        allowed: false,
        by,
    }
}

/// ALLOW with one rule; the request must match it to pass.
fn allow_rule(rule: &str) -> Vec<String> {
    vec![svc("p", &format!("action: ALLOW\nrules: [{rule}]"))]
}

/// DENY with one rule.
fn deny_rule(rule: &str) -> Vec<String> {
    vec![svc("p", &format!("action: DENY\nrules: [{rule}]"))]
}

const P0: Option<(&str, usize)> = Some(("p", 0));

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let gateway_deny_all = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: gw, namespace: foo}\nspec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n  action: DENY\n  rules: [{}]\n".to_owned();
    let raw = |s: &str| s.to_owned();
    vec![
        // Actions and the evaluation order.
        allow("no policy: allowed", vec![], req(), None),
        deny("ALLOW with no rules denies all", vec![svc("p", "action: ALLOW")], req(), None),
        allow("ALLOW with an empty rule allows all", allow_rule("{}"), req(), P0),
        allow("DENY with no rules denies nothing", vec![svc("p", "action: DENY")], req(), None),
        deny("DENY with an empty rule denies all", deny_rule("{}"), req(), P0),
        deny("DENY wins over ALLOW", vec![svc("all", "rules: [{}]"), svc("d", "action: DENY\nrules: [{to: [{operation: {paths: [\"/admin\"]}}]}]")], req().path("/admin"), Some(("d", 0))),
        allow("ALLOW decides when DENY does not match", vec![svc("all", "rules: [{}]"), svc("d", "action: DENY\nrules: [{to: [{operation: {paths: [\"/admin\"]}}]}]")], req(), Some(("all", 0))),
        deny("ALLOW policies apply but none matches", allow_rule("{to: [{operation: {paths: [\"/x\"]}}]}"), req(), None),
        allow("any matching ALLOW policy allows", vec![svc("a", "rules: [{to: [{operation: {paths: [\"/x\"]}}]}]"), svc("b", "rules: [{to: [{operation: {paths: [\"/get\"]}}]}]"), ], req(), Some(("b", 0))),
        allow("the first matching rule is reported", vec![svc("p", "rules: [{to: [{operation: {paths: [\"/a\"]}}]}, {to: [{operation: {paths: [\"/get\"]}}]}]", )], req(), Some(("p", 1))),
        allow("AUDIT never changes the decision", vec![svc("p", "action: AUDIT\nrules: [{}]")], req(), None),
        allow("v1beta1 is read too", vec![svc("p", "action: DENY\nrules: [{}]") .replace("security.istio.io/v1", "security.istio.io/v1beta1") .replace("action: DENY", "action: ALLOW"), ], req(), P0),
        // Source: principals.
        allow("principals exact", allow_rule("{from: [{source: {principals: [\"cluster.local/ns/default/sa/sleep\"]}}]}"), req(), P0),
        deny("principals exact, other caller", allow_rule("{from: [{source: {principals: [\"cluster.local/ns/default/sa/sleep\"]}}]}"), req().id(CURL), None),
        allow("principals prefix", allow_rule("{from: [{source: {principals: [\"cluster.local/ns/default/*\"]}}]}"), req().id(CURL), P0),
        allow("principals suffix", allow_rule("{from: [{source: {principals: [\"*/sa/sleep\"]}}]}"), req().id(PROD), P0),
        deny("principals presence rejects unauthenticated", allow_rule("{from: [{source: {principals: [\"*\"]}}]}"), req().anon(), None),
        allow("principals presence accepts any identity", allow_rule("{from: [{source: {principals: [\"*\"]}}]}"), req().id(PROD), P0),
        deny("notPrincipals excludes the caller", allow_rule("{from: [{source: {notPrincipals: [\"cluster.local/ns/default/sa/sleep\"]}}]}", ), req(), None),
        allow("notPrincipals lets others in", allow_rule("{from: [{source: {notPrincipals: [\"cluster.local/ns/default/sa/sleep\"]}}]}", ), req().id(CURL), P0),
        allow("notPrincipals holds for unauthenticated", allow_rule("{from: [{source: {notPrincipals: [\"cluster.local/ns/default/sa/sleep\"]}}]}", ), req().anon(), P0),
        // Source: request principals (JWT).
        deny("requestPrincipals presence without token", allow_rule("{from: [{source: {requestPrincipals: [\"*\"]}}]}"), req(), None),
        allow("requestPrincipals presence with token", allow_rule("{from: [{source: {requestPrincipals: [\"*\"]}}]}"), req().jwt(), P0),
        allow("requestPrincipals exact", allow_rule("{from: [{source: {requestPrincipals: [\"issuer.example.com/alice\"]}}]}"), req().jwt(), P0),
        deny("requestPrincipals prefix, other issuer", allow_rule("{from: [{source: {requestPrincipals: [\"other.example.com/*\"]}}]}"), req().jwt(), None),
        deny("notRequestPrincipals denies requests without token", deny_rule("{from: [{source: {notRequestPrincipals: [\"*\"]}}]}"), req(), P0),
        allow("notRequestPrincipals spares requests with token", deny_rule("{from: [{source: {notRequestPrincipals: [\"*\"]}}]}"), req().jwt(), None),
        // Source: namespaces.
        allow("namespaces exact", allow_rule("{from: [{source: {namespaces: [\"default\"]}}]}"), req(), P0),
        deny("namespaces other", allow_rule("{from: [{source: {namespaces: [\"prod\"]}}]}"), req(), None),
        deny("namespaces need an identity", allow_rule("{from: [{source: {namespaces: [\"*\"]}}]}"), req().anon(), None),
        allow("notNamespaces hold for unauthenticated", allow_rule("{from: [{source: {notNamespaces: [\"default\"]}}]}"), req().anon(), P0),
        deny("DENY notNamespaces keeps other namespaces out", deny_rule("{from: [{source: {notNamespaces: [\"default\"]}}]}"), req().id(PROD), P0),
        // Source: IP blocks.
        allow("ipBlocks CIDR", allow_rule("{from: [{source: {ipBlocks: [\"10.0.0.0/24\"]}}]}"), req(), P0),
        deny("ipBlocks single address, other source", allow_rule("{from: [{source: {ipBlocks: [\"10.0.0.6\"]}}]}"), req(), None),
        deny("notIpBlocks in DENY", deny_rule("{from: [{source: {notIpBlocks: [\"10.0.0.0/8\"]}}]}"), req().src("192.168.1.1"), P0),
        allow("ipBlocks IPv6", allow_rule("{from: [{source: {ipBlocks: [\"fd00::/8\"]}}]}"), req().src("fd00::1"), P0),
        allow("ipBlocks IPv4-mapped source", allow_rule("{from: [{source: {ipBlocks: [\"10.0.0.5\"]}}]}"), req().src("::ffff:10.0.0.5"), P0),
        allow("ipBlocks ignore X-Forwarded-For", allow_rule("{from: [{source: {ipBlocks: [\"10.0.0.5\"]}}]}"), req().header("x-forwarded-for", "203.0.113.7"), P0),
        allow("remoteIpBlocks use X-Forwarded-For", allow_rule("{from: [{source: {remoteIpBlocks: [\"203.0.113.0/24\"]}}]}"), req().header("x-forwarded-for", "203.0.113.7, 10.0.0.9"), P0),
        allow("remoteIpBlocks fall back to the source", allow_rule("{from: [{source: {remoteIpBlocks: [\"10.0.0.0/24\"]}}]}"), req(), P0),
        deny("notRemoteIpBlocks in DENY", deny_rule("{from: [{source: {notRemoteIpBlocks: [\"10.0.0.0/8\"]}}]}"), req().header("x-forwarded-for", "203.0.113.7"), P0),
        // Source: service accounts.
        allow("serviceAccounts ns/sa", allow_rule("{from: [{source: {serviceAccounts: [\"default/sleep\"]}}]}"), req(), P0),
        deny("serviceAccounts other account", allow_rule("{from: [{source: {serviceAccounts: [\"default/curl\"]}}]}"), req(), None),
        deny("serviceAccounts same name, other namespace", allow_rule("{from: [{source: {serviceAccounts: [\"default/sleep\"]}}]}"), req().id(PROD), None),
        deny("serviceAccounts need an identity", allow_rule("{from: [{source: {serviceAccounts: [\"default/sleep\"]}}]}"), req().anon(), None),
        deny("notServiceAccounts in DENY", deny_rule("{from: [{source: {notServiceAccounts: [\"default/sleep\"]}}]}"), req().id(CURL), P0),
        deny("a bare service account never matches in ALLOW", allow_rule("{from: [{source: {serviceAccounts: [\"sleep\"]}}]}"), req(), None),
        // Source: fields are ANDed, list items ORed.
        allow("source fields ANDed", allow_rule("{from: [{source: {principals: [\"cluster.local/ns/x/sa/y\", \"cluster.local/ns/default/sa/sleep\"], ipBlocks: [\"10.0.0.0/8\"]}}]}", ), req(), P0),
        deny("source fields ANDed, one fails", allow_rule("{from: [{source: {principals: [\"cluster.local/ns/default/sa/sleep\"], notIpBlocks: [\"10.0.0.5\"]}}]}", ), req(), None),
        allow("any from entry matches", allow_rule("{from: [{source: {namespaces: [\"prod\"]}}, {source: {namespaces: [\"default\"]}}]}", ), req(), P0),
        // Operation: hosts.
        allow("hosts match without the port", allow_rule("{to: [{operation: {hosts: [\"httpbin.foo\"]}}]}"), req(), P0),
        allow("hosts match with the port", allow_rule("{to: [{operation: {hosts: [\"httpbin.foo:8000\"]}}]}"), req(), P0),
        allow("hosts are case-insensitive", allow_rule("{to: [{operation: {hosts: [\"HTTPBIN.Foo\"]}}]}"), req().host("httpbin.FOO"), P0),
        allow("hosts suffix", allow_rule("{to: [{operation: {hosts: [\"*.foo\"]}}]}"), req(), P0),
        allow("hosts prefix", allow_rule("{to: [{operation: {hosts: [\"httpbin.*\"]}}]}"), req(), P0),
        deny("notHosts", allow_rule("{to: [{operation: {notHosts: [\"httpbin.foo\"]}}]}"), req(), None),
        // Operation: ports.
        allow("ports", allow_rule("{to: [{operation: {ports: [\"8000\"]}}]}"), req(), P0),
        deny("ports, other port", allow_rule("{to: [{operation: {ports: [\"9000\"]}}]}"), req(), None),
        deny("notPorts in DENY", deny_rule("{to: [{operation: {notPorts: [\"8000\"]}}]}"), req().dst("10.96.0.10:9000"), P0),
        // Operation: methods.
        allow("methods", allow_rule("{to: [{operation: {methods: [\"GET\", \"HEAD\"]}}]}"), req(), P0),
        deny("methods, other method", allow_rule("{to: [{operation: {methods: [\"POST\"]}}]}"), req(), None),
        deny("notMethods", allow_rule("{to: [{operation: {notMethods: [\"DELETE\"]}}]}"), req().method("DELETE"), None),
        allow("methods prefix", allow_rule("{to: [{operation: {methods: [\"P*\"]}}]}"), req().method("PUT"), P0),
        // Operation: paths and templates.
        allow("paths exact", allow_rule("{to: [{operation: {paths: [\"/get\"]}}]}"), req(), P0),
        allow("paths ignore the query", allow_rule("{to: [{operation: {paths: [\"/get\"]}}]}"), req().path("/get?x=1"), P0),
        allow("paths prefix", allow_rule("{to: [{operation: {paths: [\"/api/*\"]}}]}"), req().path("/api/v1/users"), P0),
        allow("paths suffix", allow_rule("{to: [{operation: {paths: [\"*/info\"]}}]}"), req().path("/a/info"), P0),
        allow("paths presence", allow_rule("{to: [{operation: {paths: [\"*\"]}}]}"), req(), P0),
        deny("notPaths", allow_rule("{to: [{operation: {notPaths: [\"/admin*\"]}}]}"), req().path("/admin/x"), None),
        allow("template {*} one segment", allow_rule("{to: [{operation: {paths: [\"/foo/{*}\"]}}]}"), req().path("/foo/bar"), P0),
        deny("template {*} not two segments", allow_rule("{to: [{operation: {paths: [\"/foo/{*}\"]}}]}"), req().path("/foo/bar/baz"), None),
        deny("template {*} not an empty segment", allow_rule("{to: [{operation: {paths: [\"/foo/{*}\"]}}]}"), req().path("/foo/"), None),
        allow("template {**} rest of path", allow_rule("{to: [{operation: {paths: [\"/foo/{**}\"]}}]}"), req().path("/foo/bar/baz"), P0),
        allow("template {*} then {**}", allow_rule("{to: [{operation: {paths: [\"/foo/{*}/bar/{**}\"]}}]}"), req().path("/foo/buzz/bar/"), P0),
        allow("template {**} then a slash", allow_rule("{to: [{operation: {paths: [\"/foo/{**}/\"]}}]}"), req().path("/foo/bar/"), P0),
        deny("template {**}/ needs the slash", allow_rule("{to: [{operation: {paths: [\"/foo/{**}/\"]}}]}"), req().path("/foo/bar"), None),
        deny("an invalid template fails closed in DENY", deny_rule("{to: [{operation: {paths: [\"/foo/{*}.txt\"]}}]}"), req(), P0),
        // Normalization (BASE) before matching.
        deny("dot segments resolved", deny_rule("{to: [{operation: {paths: [\"/admin\"]}}]}"), req().path("/public/../admin"), P0),
        deny("unreserved escapes decoded", deny_rule("{to: [{operation: {paths: [\"/admin\"]}}]}"), req().path("/%61dmin"), P0),
        deny("backslash is a slash", deny_rule("{to: [{operation: {paths: [\"/admin/x\"]}}]}"), req().path("/admin\\x"), P0),
        allow("encoded slash stays encoded under BASE", deny_rule("{to: [{operation: {paths: [\"/admin/x\"]}}]}"), req().path("/admin%2Fx"), None),
        // Conditions.
        allow("request.headers values", allow_rule("{when: [{key: \"request.headers[version]\", values: [\"v1\", \"v2\"]}]}"), req().header("version", "v2"), P0),
        allow("request.headers name is case-insensitive", allow_rule("{when: [{key: \"request.headers[X-Token]\", values: [\"*\"]}]}"), req().header("x-token", "t"), P0),
        allow("request.headers notValues hold when absent", allow_rule("{when: [{key: \"request.headers[version]\", notValues: [\"v1\"]}]}"), req(), P0),
        deny("request.headers notValues", allow_rule("{when: [{key: \"request.headers[version]\", notValues: [\"v1\"]}]}"), req().header("version", "v1"), None),
        allow("duplicate headers are joined with commas", allow_rule("{when: [{key: \"request.headers[x-a]\", values: [\"a,b\"]}]}"), req().header("x-a", "a").header("x-a", "b"), P0),
        allow("source.ip", allow_rule("{when: [{key: source.ip, values: [\"10.0.0.0/8\"]}]}"), req(), P0),
        allow("remote.ip", allow_rule("{when: [{key: remote.ip, values: [\"203.0.113.7\"]}]}"), req().header("x-forwarded-for", "203.0.113.7"), P0),
        allow("source.namespace", allow_rule("{when: [{key: source.namespace, values: [\"default\"]}]}"), req(), P0),
        allow("source.principal", allow_rule("{when: [{key: source.principal, values: [\"cluster.local/ns/default/sa/sleep\"]}]}", ), req(), P0),
        allow("request.auth.principal", allow_rule("{when: [{key: request.auth.principal, values: [\"issuer.example.com/alice\"]}]}", ), req().jwt(), P0),
        allow("request.auth.audiences", allow_rule("{when: [{key: request.auth.audiences, values: [\"api.example.com\"]}]}"), req().jwt(), P0),
        allow("request.auth.presenter", allow_rule("{when: [{key: request.auth.presenter, values: [\"client-1\"]}]}"), req().jwt(), P0),
        allow("request.auth.claims list claim", allow_rule("{when: [{key: \"request.auth.claims[groups]\", values: [\"admins\"]}]}"), req().jwt(), P0),
        allow("request.auth.claims suffix", allow_rule("{when: [{key: \"request.auth.claims[iss]\", values: [\"*example.com\"]}]}"), req().jwt(), P0),
        allow("request.auth.claims nested", allow_rule("{when: [{key: \"request.auth.claims[nested][role]\", values: [\"admin\"]}]}", ), req().jwt(), P0),
        deny("request.auth.claims non-string never matches", allow_rule("{when: [{key: \"request.auth.claims[nested][level]\", values: [\"3\"]}]}"), req().jwt(), None),
        deny("request.auth.claims without a token", allow_rule("{when: [{key: \"request.auth.claims[groups]\", values: [\"admins\"]}]}"), req(), None),
        allow("destination.ip", allow_rule("{when: [{key: destination.ip, values: [\"10.96.0.0/16\"]}]}"), req(), P0),
        allow("destination.port", allow_rule("{when: [{key: destination.port, values: [\"8000\"]}]}"), req(), P0),
        deny("connection.sni never has a value", allow_rule("{when: [{key: connection.sni, values: [\"httpbin.foo\"]}]}"), req(), None),
        allow("connection.sni notValues hold", allow_rule("{when: [{key: connection.sni, notValues: [\"x\"]}]}"), req(), P0),
        deny("an unknown key never matches in ALLOW", allow_rule("{when: [{key: request.nope, values: [\"x\"]}]}"), req(), None),
        deny("all conditions must hold", allow_rule("{when: [{key: source.namespace, values: [\"default\"]}, {key: destination.port, values: [\"9000\"]}]}", ), req(), None),
        allow("from, to and when together", allow_rule("{from: [{source: {namespaces: [\"default\"]}}], to: [{operation: {methods: [\"GET\"]}}], when: [{key: \"request.headers[version]\", values: [\"v1\"]}]}", ), req().header("version", "v1"), P0),
        // Attachment.
        allow("a policy of another Service does not apply", vec![svc("p", "action: DENY\nrules: [{}]").replace("name: httpbin}", "name: other}")], req(), None),
        deny("a Gateway policy applies to every request", vec![gateway_deny_all.clone()], req(), Some(("gw", 0))),
        deny("a Gateway policy applies to unknown destinations", vec![gateway_deny_all], req().dst("10.1.1.1:80"), Some(("gw", 0))),
        deny("a GatewayClass policy in the root namespace applies", vec![raw("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: cls, namespace: istio-system}\nspec:\n  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]\n  action: DENY\n  rules: [{}]\n", )], req(), Some(("cls", 0))),
        allow("a GatewayClass policy elsewhere is ignored", vec![raw("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: cls, namespace: foo}\nspec:\n  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]\n  action: DENY\n  rules: [{}]\n", )], req(), None),
        allow("a selector policy is ignored", vec![raw("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: sel, namespace: foo}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  action: DENY\n  rules: [{}]\n", )], req(), None),
        allow("a namespace-wide policy is ignored", vec![raw("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ns, namespace: foo}\nspec:\n  action: DENY\n  rules: [{}]\n", )], req(), None),
        deny("targetRef (singular) attaches", vec![raw("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: one, namespace: foo}\nspec:\n  targetRef: {kind: Service, group: \"\", name: httpbin}\n  action: DENY\n  rules: [{}]\n", )], req(), Some(("one", 0))),
        allow("a ServiceEntry target is not the same-named Service", vec![raw("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: se, namespace: foo}\nspec:\n  targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: httpbin}]\n  action: DENY\n  rules: [{}]\n", )], req(), None),
        deny("a ServiceEntry target applies at the entry's addresses", vec![raw("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: httpbin, namespace: foo}\nspec:\n  hosts: [httpbin.example.com]\n  addresses: [240.0.0.10]\n  ports: [{number: 8000, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.9}]\n"), raw("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: se, namespace: foo}\nspec:\n  targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: httpbin}]\n  action: DENY\n  rules: [{}]\n", )], req().dst("240.0.0.10:8000"), Some(("se", 0))),
        allow("a dry-run DENY is not enforced", vec![svc("p", "action: DENY\nrules: [{}]").replace("namespace: foo}", "namespace: foo, annotations: {istio.io/dry-run: \"true\"}}", )], req(), None),
        deny("CUSTOM with an unknown provider fails closed", vec![svc("p", "action: CUSTOM\nprovider: {name: nowhere}\nrules: [{to: [{operation: {paths: [\"/get\"]}}]}]", )], req(), P0),
        allow("CUSTOM with an unknown provider spares non-matching requests", vec![svc("p", "action: CUSTOM\nprovider: {name: nowhere}\nrules: [{to: [{operation: {paths: [\"/admin\"]}}]}]", )], req(), None),
    ]
}

#[test]
fn decision_table() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let built = build(&case.policies);
        let e = decide(&built, &case.req);
        let got_by = e
            .decision
            .policy
            .as_ref()
            .map(|p| p.name.clone())
            .zip(e.decision.rule);
        let want_by = case.by.map(|(p, r)| (p.to_owned(), r));
        if e.decision.allowed != case.allowed || got_by != want_by {
            failures.push(format!(
                "{}: want allowed={} by {:?}, got allowed={} by {:?} ({})",
                case.name,
                case.allowed,
                want_by,
                e.decision.allowed,
                got_by,
                e.reason()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn audit_and_dry_run_are_recorded() {
    let b = build(&[
        svc(
            "audit",
            "action: AUDIT\nrules: [{to: [{operation: {paths: [\"/get\"]}}]}]",
        ),
        svc("dry", "action: DENY\nrules: [{}]").replace(
            "namespace: foo}",
            "namespace: foo, annotations: {istio.io/dry-run: \"true\"}}",
        ),
    ]);
    let e = decide(&b, &req());
    assert!(e.decision.allowed);
    assert_eq!(e.audit.len(), 1);
    assert_eq!(e.audit[0].policy.name, "audit");
    let shadow = e.dry_run.clone().expect("dry-run decision");
    assert!(!shadow.allowed && shadow.dry_run);
    assert_eq!(shadow.policy.map(|p| p.name), Some("dry".to_owned()));
    assert!(
        e.reason().contains("dry-run policies would deny it"),
        "{}",
        e.reason()
    );
}

#[test]
fn ignored_and_invalid_policies_are_reported() {
    let b = build(&[
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: sel, namespace: foo}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n".to_owned(),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ns, namespace: foo}\nspec:\n  action: DENY\n  rules: [{}]\n".to_owned(),
        svc("tmpl", "rules: [{to: [{operation: {paths: [\"/a/{**}/{*}\"]}}]}]"),
        svc("cidr", "rules: [{from: [{source: {notIpBlocks: [\"10.0.0.0/33\"]}}]}]"),
        svc("custom", "action: CUSTOM\nprovider: {name: nowhere}\nrules: [{}]"),
    ]);
    let find = |name: &str| {
        b.reports
            .iter()
            .find(|r| r.resource.name == name)
            .unwrap_or_else(|| panic!("no report for {name}: {:?}", b.reports))
    };
    assert_eq!(find("sel").reason, "Ignored");
    assert_eq!(find("sel").condition, "Accepted");
    assert!(find("sel").message.contains("selector"));
    assert_eq!(find("ns").reason, "Ignored");
    assert!(
        find("tmpl")
            .message
            .contains("spec.rules[0].to[0].operation.paths[0]"),
        "{:?}",
        find("tmpl")
    );
    assert!(find("tmpl").message.contains("last operator"));
    assert!(
        find("cidr").message.contains("notIpBlocks[0]"),
        "{:?}",
        find("cidr")
    );
    assert_eq!(find("custom").reason, "ProviderNotFound");
}

#[test]
fn cost_does_not_grow_with_policies_of_other_services() {
    let mut policies = Vec::with_capacity(10_001);
    for i in 0..10_000 {
        policies.push(format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: foo}}\nspec:\n  targetRefs: [{{kind: Service, group: \"\", name: svc{i}}}]\n  action: DENY\n  rules: [{{}}]\n"
        ));
    }
    policies.push(svc("mine", "rules: [{}]"));
    let b = build(&policies);
    assert_eq!(b.set.len(), 10_001);
    let applicable = b.set.policies_for(Some(("foo", "httpbin")));
    let names: Vec<&str> = applicable.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["mine"]);
    assert!(b.set.policies_for(Some(("foo", "nothing"))).is_empty());
    assert_eq!(b.set.policies_for(Some(("foo", "svc42")))[0].name, "p42");
    let e = decide(&b, &req());
    assert!(e.decision.allowed);
}
