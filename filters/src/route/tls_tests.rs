//! HTTPS listeners in memory: the listener the SNI chose against the one the Host picks (421),
//! the `https` scheme of redirects on TLS connections, and listener certificate status.

use waypoint_core::conn::TlsInfo;

use super::gateway_tests::{Gw, docs, gateway, gw, http_route, to};

const ADDR: &str = "10.0.0.9:443";

fn https_listener(name: &str, hostname: Option<&str>, cert: &str) -> String {
    let host = hostname.map_or(String::new(), |h| format!(", hostname: \"{h}\""));
    format!(
        "  - {{name: {name}, port: 443, protocol: HTTPS{host}, tls: {{certificateRefs: [{cert}]}}}}\n"
    )
}

/// The Gateway of upstream's misdirected-requests test: a catch-all listener, an exact one, a
/// wildcard and an exact name under the wildcard, each with a route of its own.
fn misdirect_gateway() -> Gw {
    let cert = "{kind: Secret, name: cert}";
    let listeners = [
        https_listener("https", None, cert),
        https_listener("exact", Some("second-example.org"), cert),
        https_listener("wild", Some("*.wildcard.org"), cert),
        https_listener("under-wild", Some("fourth-example.wildcard.org"), cert),
    ]
    .concat();
    let route = |name: &str, section: &str, hosts: &str, backend: &str| {
        let parents = format!("[{{name: tls, sectionName: {section}}}]");
        http_route(name, "infra", &parents, hosts, &to(backend))
    };
    gw(&docs(&[
        gateway("tls", "10.0.0.9", &listeners),
        route("r1", "https", "[example.org]", "v1"),
        route("r2", "exact", "[]", "v2"),
        route("r3", "wild", "[]", "v3"),
        route("r4", "under-wild", "[]", "v1"),
    ]))
}

fn tls(sni: Option<&str>) -> Option<TlsInfo> {
    Some(TlsInfo {
        sni: sni.map(str::to_owned),
        alpn: Some(b"h2".to_vec()),
    })
}

async fn get_tls(g: &Gw, sni: Option<&str>, host: &str) -> String {
    let req = http::Request::get("/x").header("host", host);
    match g.send_on(ADDR, tls(sni), req).await.0 {
        (None, backend) => backend,
        (Some(status), _) => status.as_u16().to_string(),
    }
}

#[tokio::test]
async fn host_of_another_listener_than_the_sni_is_misdirected() {
    let g = misdirect_gateway();
    // (SNI, Host, backend or status), as upstream's test expects them.
    let cases = [
        ("example.org", "example.org", "v1"),
        ("example.org", "second-example.org", "421"),
        ("example.org", "unknown-example.org", "404"),
        ("second-example.org", "second-example.org", "v2"),
        ("second-example.org", "example.org", "421"),
        ("second-example.org", "unknown-example.org", "421"),
        (
            "third-example.wildcard.org",
            "third-example.wildcard.org",
            "v3",
        ),
        (
            "third-example.wildcard.org",
            "fith-example.wildcard.org",
            "v3",
        ),
        (
            "third-example.wildcard.org",
            "fourth-example.wildcard.org",
            "421",
        ),
        ("third-example.wildcard.org", "second-example.org", "421"),
        (
            "fourth-example.wildcard.org",
            "fourth-example.wildcard.org",
            "v1",
        ),
        (
            "fourth-example.wildcard.org",
            "fith-example.wildcard.org",
            "421",
        ),
        ("unknown-example.org", "example.org", "v1"),
        ("unknown-example.org", "unknown-example.org", "404"),
        // SNI is case-insensitive and may end with a dot.
        ("Second-Example.org.", "second-example.org", "v2"),
    ];
    for (sni, host, want) in cases {
        assert_eq!(
            get_tls(&g, Some(sni), host).await,
            want,
            "SNI {sni}, Host {host}"
        );
    }
    // Without SNI (or without TLS) the Host alone chooses, as on plain HTTP.
    assert_eq!(get_tls(&g, None, "second-example.org").await, "v2");
    assert_eq!(g.get(ADDR, "second-example.org", "/x").await, "v2");
}

#[tokio::test]
async fn redirects_on_tls_connections_are_https() {
    let listeners = [
        https_listener("https", None, "{name: cert}"),
        "  - {name: http, port: 80, protocol: HTTP}\n".to_owned(),
    ]
    .concat();
    let redirect = |path: &str, extra: &str| {
        format!(
            "  - matches: [{{path: {{type: Exact, value: {path}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {{hostname: example.org{extra}}}}}]\n"
        )
    };
    let rules = [
        redirect("/nil", ""),
        redirect("/port-8443", ", port: 8443"),
        redirect("/http", ", scheme: http"),
    ]
    .concat();
    let g = gw(&docs(&[
        gateway("tls", "10.0.0.9", &listeners),
        http_route("r", "infra", "[{name: tls}]", "[]", &rules),
    ]));
    let location = |dest: &'static str, tls: Option<TlsInfo>, path: &'static str| {
        let g = &g;
        async move {
            let req = http::Request::get(path).header("host", "example.org");
            g.send_on(dest, tls, req).await.1
        }
    };
    let sni = || tls(Some("example.org"));
    let cases = [
        (ADDR, sni(), "/nil", "https://example.org/nil"),
        (
            ADDR,
            sni(),
            "/port-8443",
            "https://example.org:8443/port-8443",
        ),
        (ADDR, sni(), "/http", "http://example.org/http"),
        // The same routes on the plain listener keep http.
        ("10.0.0.9:80", None, "/nil", "http://example.org/nil"),
    ];
    for (dest, tls, path, want) in cases {
        assert_eq!(
            location(dest, tls, path).await.as_deref(),
            Some(want),
            "{dest}{path}"
        );
    }
}

/// `ResolvedRefs=<reason> Programmed=<reason>` of one listener of Gateway `tls`.
fn listener_conditions(g: &Gw, listener: &str) -> String {
    let status = g
        .out()
        .gateways
        .iter()
        .find(|s| s.gateway.name == "tls")
        .unwrap();
    let l = status
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .unwrap();
    l.conditions[1..]
        .iter()
        .map(|c| format!("{}={}/{}", c.kind, c.status, c.reason))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn unusable_certificate_refs_are_listener_status() {
    let listeners = [
        https_listener("missing", Some("a.org"), "{name: nope}"),
        https_listener(
            "kind",
            Some("b.org"),
            "{group: example.com, kind: Vault, name: x}",
        ),
        https_listener("cross", Some("c.org"), "{name: cert, namespace: web}"),
        "  - {name: no-tls, port: 443, protocol: HTTPS, hostname: d.org}\n".to_owned(),
    ]
    .concat();
    let g = gw(&docs(&[gateway("tls", "10.0.0.9", &listeners)]));
    for (listener, reason) in [
        ("missing", "InvalidCertificateRef"),
        ("kind", "InvalidCertificateRef"),
        ("cross", "RefNotPermitted"),
        ("no-tls", "InvalidCertificateRef"),
    ] {
        assert_eq!(
            listener_conditions(&g, listener),
            format!("ResolvedRefs=false/{reason} Programmed=false/Invalid"),
            "{listener}"
        );
    }
    let status = g
        .out()
        .gateways
        .iter()
        .find(|s| s.gateway.name == "tls")
        .unwrap();
    let cross = &status.listeners[2].conditions[1].message;
    assert!(
        cross.contains("spec.listeners[2].tls.certificateRefs[0]")
            && cross.contains("ReferenceGrant"),
        "{cross}"
    );
    // Nothing was servable, so no address terminates TLS.
    assert!(g.config.frontend_tls.is_empty());
}
