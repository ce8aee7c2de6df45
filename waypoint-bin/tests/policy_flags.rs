//! Every policy flag of `waypoint run`, proven through the real binary: the same manifests
//! served with and without the flag give different answers. A flag that is parsed and never
//! wired (as `run` once did with all of these) fails here.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::run::{Echo, policy, rbac_denied, served};

const ECHO_VIP: &str = "10.96.0.10:80";

/// The `waypoint run` of these tests: every request goes to the echo Service's VIP.
struct Running(common::run::Running);

impl Running {
    fn start(
        manifests: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> (Running, tempfile::TempDir) {
        let (running, dir) = common::run::Running::start(manifests, flags, env);
        (Running(running), dir)
    }

    fn send(&self, source: &str, path: &str, headers: &[&str]) -> String {
        self.0.send_to(ECHO_VIP, source, path, headers)
    }

    fn get(&self, path: &str) -> String {
        self.send("10.244.0.7:40000", path, &[])
    }
}

fn gateway(namespace: &str, name: &str, class: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  gatewayClassName: {class}\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n"
    )
}

fn manifests(echo: &Echo, more: &[String]) -> String {
    let mut docs = vec![common::service("echo", "10.96.0.10", echo.port)];
    docs.extend(more.iter().cloned());
    docs.join("---\n")
}

const ON_ECHO: &str = r#"{kind: Service, group: "", name: echo}"#;

#[test]
fn ext_authz_providers_given_to_run_decide_custom_policies() {
    let echo = Echo::start();
    let config = manifests(
        &echo,
        &[
            policy(
                "default",
                "open",
                ON_ECHO,
                "  action: CUSTOM\n  provider: {name: open}\n  rules: [{to: [{operation: {paths: [\"/open/*\"]}}]}]\n",
            ),
            policy(
                "default",
                "shut",
                ON_ECHO,
                "  action: CUSTOM\n  provider: {name: shut}\n  rules: [{to: [{operation: {paths: [\"/shut/*\"]}}]}]\n",
            ),
        ],
    );
    let check = format!("127.0.0.1:{}", echo.port);
    // `shut` asks the checker for /status/403/<path>, which it refuses.
    let providers = format!("open={check}|shut={check},path_prefix=/status/403");
    let (with, _d1) = Running::start(&config, &["--ext-authz", &providers], &[]);
    assert!(served(&with.get("/open/a")), "{}", with.get("/open/a"));
    let shut = with.get("/shut/a");
    assert!(
        !shut.contains("200 OK") && !shut.contains("\"pod\""),
        "{shut}"
    );

    // Without the providers, a CUSTOM policy fails closed (ProviderNotFound).
    let (without, _d2) = Running::start(&config, &[], &[]);
    assert!(
        rbac_denied(&without.get("/open/a")),
        "{}",
        without.get("/open/a")
    );
}

#[test]
fn path_normalization_flag_changes_what_policies_see() {
    let echo = Echo::start();
    let config = manifests(
        &echo,
        &[policy(
            "default",
            "no-admin",
            ON_ECHO,
            "  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin/*\"]}}]}]\n",
        )],
    );
    // BASE (the default) keeps `//`, so the DENY rule's path does not match; merging slashes
    // makes it match.
    let (base, _d1) = Running::start(&config, &[], &[]);
    assert!(served(&base.get("//admin/x")), "{}", base.get("//admin/x"));
    let (merged, _d2) = Running::start(&config, &["--path-normalization", "merge-slashes"], &[]);
    assert!(
        rbac_denied(&merged.get("//admin/x")),
        "{}",
        merged.get("//admin/x")
    );
    let (by_env, _d3) = Running::start(
        &config,
        &[],
        &[("WAYPOINT_PATH_NORMALIZATION", "merge-slashes")],
    );
    assert!(rbac_denied(&by_env.get("//admin/x")));
}

#[test]
fn root_namespace_flag_moves_gateway_class_policies_for_authz_and_authn() {
    let echo = Echo::start();
    let deny_class = policy(
        "mesh-root",
        "deny-class",
        "{kind: GatewayClass, group: gateway.networking.k8s.io, name: waypoint}",
        "  action: DENY\n  rules: [{to: [{operation: {paths: [\"/denied\"]}}]}]\n",
    );
    // A RequestAuthentication in the same root namespace: a malformed token is refused (401)
    // only where the policy applies.
    let jwt_class = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt-class, namespace: mesh-root}\nspec:\n  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: waypoint}]\n  jwtRules: [{issuer: \"https://issuer.example\", jwks: '{\"keys\": []}'}]\n".to_owned();
    let config = manifests(
        &echo,
        &[gateway("default", "wp", "waypoint"), deny_class, jwt_class],
    );
    let bad_token = ["Authorization: Bearer not.a.jwt"];

    let (default_root, _d1) = Running::start(&config, &[], &[]);
    assert!(served(&default_root.get("/denied")));
    let out = default_root.send("10.244.0.7:40000", "/ok", &bad_token);
    assert!(served(&out), "{out}");

    let (moved, _d2) = Running::start(&config, &["--root-namespace", "mesh-root"], &[]);
    assert!(
        rbac_denied(&moved.get("/denied")),
        "{}",
        moved.get("/denied")
    );
    let out = moved.send("10.244.0.7:40000", "/ok", &bad_token);
    assert!(out.contains("401") && !out.contains("\"pod\""), "{out}");
    assert!(served(&moved.get("/ok")));

    let (by_env, _d3) = Running::start(&config, &[], &[("WAYPOINT_ROOT_NAMESPACE", "mesh-root")]);
    assert!(rbac_denied(&by_env.get("/denied")));
}

#[test]
fn gateway_flags_choose_which_gateways_policies_are_ours() {
    let echo = Echo::start();
    let deny_b = policy(
        "default",
        "deny-b",
        "{kind: Gateway, group: gateway.networking.k8s.io, name: wp-b}",
        "  action: DENY\n  rules: [{}]\n",
    );
    let deny_other_class = policy(
        "istio-system",
        "deny-other-class",
        "{kind: GatewayClass, group: gateway.networking.k8s.io, name: other-class}",
        "  action: DENY\n  rules: [{to: [{operation: {paths: [\"/class\"]}}]}]\n",
    );
    let config = manifests(
        &echo,
        &[
            gateway("default", "wp-a", "waypoint"),
            gateway("default", "wp-b", "other-class"),
            deny_b,
            deny_other_class,
        ],
    );
    // No --gateway: every Gateway in the config is this waypoint, wp-b's policy included.
    let (all, _d1) = Running::start(&config, &[], &[]);
    assert!(rbac_denied(&all.get("/")));

    // With --gateway, the echo Service must be bound to that Gateway to be served at all: its
    // namespace names the waypoint.
    let bound_to = |gw: &str| {
        format!(
            "{config}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: default, labels: {{istio.io/use-waypoint: {gw}}}}}\n"
        )
    };
    let (config, config_b) = (bound_to("wp-a"), bound_to("wp-b"));
    let (a, _d2) = Running::start(&config, &["--gateway", "default/wp-a"], &[]);
    assert!(served(&a.get("/")), "{}", a.get("/"));
    // wp-a's class is `waypoint`: the other class's policy is not ours either.
    assert!(served(&a.get("/class")));

    let (b, _d3) = Running::start(&config_b, &[], &[("WAYPOINT_GATEWAY", "default/wp-b")]);
    assert!(rbac_denied(&b.get("/")));

    // --gateway-class names the class outright.
    let (class, _d4) = Running::start(
        &config,
        &[
            "--gateway",
            "default/wp-a",
            "--gateway-class",
            "other-class",
        ],
        &[],
    );
    assert!(served(&class.get("/")));
    assert!(rbac_denied(&class.get("/class")));
}

#[test]
fn xff_trusted_hops_flag_chooses_the_remote_address() {
    let echo = Echo::start();
    let config = manifests(
        &echo,
        &[policy(
            "default",
            "from-office",
            ON_ECHO,
            "  action: ALLOW\n  rules: [{from: [{source: {remoteIpBlocks: [\"10.1.2.3/32\"]}}]}]\n",
        )],
    );
    let xff = ["X-Forwarded-For: 10.1.2.3"];
    let source = "10.9.9.9:40000";
    // Unset: the first X-Forwarded-For entry is the remote address.
    let (first, _d1) = Running::start(&config, &[], &[]);
    let out = first.send(source, "/", &xff);
    assert!(served(&out), "{out}");
    // 0 trusted hops: the header is ignored and the connection's source decides.
    let (none, _d2) = Running::start(&config, &["--xff-trusted-hops", "0"], &[]);
    let out = none.send(source, "/", &xff);
    assert!(rbac_denied(&out), "{out}");
    let out = none.send("10.1.2.3:40000", "/", &[]);
    assert!(served(&out), "{out}");
}

#[test]
fn check_takes_the_policy_flags_too() {
    let custom = policy(
        "default",
        "custom",
        ON_ECHO,
        "  action: CUSTOM\n  provider: {name: checker}\n  rules: [{}]\n",
    );
    let config = format!(
        "{}---\n{custom}",
        common::service("echo", "10.96.0.10", 8080)
    );
    let (_, without) = common::run::check(&config, &[]);
    assert!(without.contains("ProviderNotFound"), "{without}");
    let (_, with) = common::run::check(&config, &["--ext-authz", "checker=127.0.0.1:9"]);
    assert!(!with.contains("ProviderNotFound"), "{with}");
}
