#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use super::*;
use crate::body::empty;
use crate::conn::Binding;

fn conn() -> ConnInfo {
    ConnInfo::new(Binding::Plain {
        listener: "t".into(),
    })
}

fn request(method: Method, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri("/");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(empty()).unwrap()
}

fn get(headers: &[(&str, &str)]) -> Request<Body> {
    request(Method::GET, headers)
}

#[test]
fn the_allow_list_never_takes_h2c_and_only_takes_tokens() {
    assert_eq!(
        "websocket,H2C".parse::<AllowedUpgrades>(),
        Err(UpgradeConfigError::H2c)
    );
    assert!(matches!(
        "web socket".parse::<AllowedUpgrades>(),
        Err(UpgradeConfigError::InvalidProtocol(_))
    ));
    assert!(matches!(
        "websocket/13".parse::<AllowedUpgrades>(),
        Err(UpgradeConfigError::InvalidProtocol(_))
    ));
    let list: AllowedUpgrades = " WebSocket , x-custom,websocket".parse().unwrap();
    assert_eq!(list.protocols(), ["websocket", "x-custom"]);
    assert_eq!(list.to_string(), "websocket,x-custom");
    assert!(list.allows("websocket/13") && list.allows("X-CUSTOM"));
    assert!(!list.allows("h2c"));
    assert_eq!(
        "none".parse::<AllowedUpgrades>().unwrap().protocols().len(),
        0
    );
    assert_eq!(AllowedUpgrades::default().to_string(), "websocket");
    let err = UpgradeConfigError::H2c.to_string();
    assert!(err.contains("never") && err.contains("smuggling"), "{err}");
}

#[test]
fn an_h2c_upgrade_is_stripped_with_its_settings_and_served_plain() {
    let policy = UpgradePolicy::default();
    let mut req = get(&[
        ("connection", "Upgrade, HTTP2-Settings, x-keep"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAAP__"),
    ]);
    assert!(matches!(policy.admit(&mut req, &conn()), Ok(None)));
    let h = req.headers();
    assert!(h.get("upgrade").is_none() && h.get("http2-settings").is_none());
    assert_eq!(h["connection"], "x-keep");
    assert_eq!(policy.count("h2c", UpgradeDecision::Stripped), 1);
}

#[test]
fn a_websocket_upgrade_is_allowed_and_an_h2c_offer_beside_it_dropped() {
    let policy = UpgradePolicy::new(AllowedUpgrades::default());
    let mut req = get(&[
        ("connection", "upgrade"),
        ("upgrade", "h2c, WebSocket"),
        ("http2-settings", "AAMAAABkAAQAAP__"),
    ]);
    let granted = policy.admit(&mut req, &conn()).unwrap().unwrap();
    assert_eq!(granted.label, "websocket");
    assert_eq!(req.headers()["upgrade"], "websocket");
    assert!(req.headers().get("http2-settings").is_none());
    assert_eq!(policy.count("websocket", UpgradeDecision::Allowed), 1);
}

#[test]
fn a_disallowed_upgrade_is_refused_with_403_and_connection_close() {
    let policy = UpgradePolicy::new(AllowedUpgrades::default());
    for protocol in ["x-custom-tunnel", "websocket, tls/1.3"] {
        let mut req = get(&[("connection", "upgrade"), ("upgrade", protocol)]);
        let resp = policy.admit(&mut req, &conn()).unwrap_err().into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()["connection"], "close");
    }
    // Client-chosen names share one label.
    assert_eq!(policy.count("other", UpgradeDecision::Refused), 2);
    // Allowed by configuration, the same request passes and gets its own label.
    let custom = UpgradePolicy::new("x-custom-tunnel".parse().unwrap());
    let mut req = get(&[("connection", "upgrade"), ("upgrade", "X-Custom-Tunnel")]);
    assert!(custom.admit(&mut req, &conn()).unwrap().is_some());
    assert_eq!(custom.count("x-custom-tunnel", UpgradeDecision::Allowed), 1);
}

#[test]
fn connect_is_refused_whatever_the_version() {
    let policy = UpgradePolicy::default();
    let mut req = request(Method::CONNECT, &[]);
    *req.uri_mut() = "10.0.0.1:443".parse().unwrap();
    let resp = policy.admit(&mut req, &conn()).unwrap_err().into_response();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["connection"], "close");

    let mut req = request(Method::CONNECT, &[]);
    *req.version_mut() = Version::HTTP_2;
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = policy.admit(&mut req, &conn()).unwrap_err().into_response();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // HTTP/2 has no Connection header.
    assert!(resp.headers().get("connection").is_none());
    assert_eq!(policy.count("connect", UpgradeDecision::Refused), 1);
    assert_eq!(policy.count("websocket", UpgradeDecision::Refused), 1);
}

#[test]
fn requests_without_a_switch_pass_untouched() {
    let policy = UpgradePolicy::default();
    // An Upgrade header that Connection does not name is no switch (hop-by-hop removal drops it).
    let mut req = get(&[("upgrade", "h2c")]);
    assert!(matches!(policy.admit(&mut req, &conn()), Ok(None)));
    assert_eq!(req.headers()["upgrade"], "h2c");
    let mut req = get(&[("x", "1")]);
    assert!(matches!(policy.admit(&mut req, &conn()), Ok(None)));
    assert_eq!(policy.count("h2c", UpgradeDecision::Stripped), 0);
}

#[test]
fn an_upgrade_added_by_a_filter_is_stripped_unless_allowed() {
    let policy = UpgradePolicy::default();
    let mut req = get(&[("connection", "upgrade"), ("upgrade", "h2c")]);
    policy.recheck(&mut req, &conn());
    assert!(req.headers().get("upgrade").is_none());
    assert_eq!(policy.count("h2c", UpgradeDecision::Stripped), 1);

    let mut req = get(&[("connection", "upgrade"), ("upgrade", "websocket")]);
    policy.recheck(&mut req, &conn());
    assert_eq!(req.headers()["upgrade"], "websocket");
}

#[test]
fn a_switch_must_name_a_protocol_the_request_offered() {
    let offered = vec!["websocket".to_owned()];
    let mut h = http::HeaderMap::new();
    assert!(switch_was_offered(&offered, &h).is_err());
    h.insert("upgrade", HeaderValue::from_static("WebSocket"));
    assert!(switch_was_offered(&offered, &h).is_ok());
    h.insert("upgrade", HeaderValue::from_static("h2c"));
    assert!(switch_was_offered(&offered, &h).is_err());
    assert!(switch_was_offered(&[], &h).is_err());
}

#[test]
fn the_counter_family_is_exposed_with_zeroed_series() {
    let policy = UpgradePolicy::new(AllowedUpgrades::default());
    let mut registry = Registry::default();
    policy.register(&mut registry);
    policy.backend_error(None);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "waypoint_upgrades_total{protocol=\"websocket\",decision=\"allowed\"} 0",
        "waypoint_upgrades_total{protocol=\"h2c\",decision=\"stripped\"} 0",
        "waypoint_upgrades_total{protocol=\"connect\",decision=\"refused\"} 0",
        "waypoint_upgrades_total{protocol=\"none\",decision=\"backend_error\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}
