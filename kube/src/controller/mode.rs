//! Which kind of waypoint a Gateway asks for, read as istiod reads it, and whether its
//! listeners fit that kind.
//!
//! The annotation `ambient.istio.io/waypoint-inbound-binding` (the Gateway's wins over its
//! GatewayClass's) is `<protocol>/<port>`. istiod knows two protocols: `PROXY` (ztunnel hands
//! inbound traffic to the waypoint over PROXY protocol on that port: sandwich mode) and `NONE`;
//! any other value it ignores, so the waypoint is native HBONE. `PROXY` with a port that is not
//! a number (or none) keeps PROXY with port 0, which makes ztunnel keep each connection's
//! original destination port: no single listener can serve that, so we refuse the Gateway and
//! say why, and we refuse ports outside 1..=65535 the same way.
//!
//! Listeners: a native waypoint needs the `HBONE` listener on 15008 (istiod binds traffic to
//! it), a sandwich waypoint a listener on the binding port.

use serde_json::Value;

/// The inbound-binding annotation.
pub const INBOUND_BINDING: &str = "ambient.istio.io/waypoint-inbound-binding";
/// The HBONE port, fixed by ztunnel.
pub const HBONE_PORT: u16 = 15008;

/// How ztunnel reaches the waypoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// ztunnel connects over HBONE (mTLS HTTP/2 CONNECT) to port 15008.
    Native,
    /// ztunnel in the waypoint's pod hands connections over with a PROXY header on `port`.
    Sandwich {
        /// The binding port.
        port: u16,
    },
}

/// Why a Gateway is not provisioned: the Gateway API condition reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `Accepted=False` reason (`Invalid`, `ListenersNotValid`).
    pub reason: &'static str,
    /// What is wrong and what to do, naming the annotation or listener.
    pub message: String,
}

/// The mode of `gateway` of class `class` (either may be a JSON object read from the API).
pub fn mode_of(gateway: &Value, class: Option<&Value>) -> Result<Mode, Refusal> {
    let annotation = |object: Option<&Value>| {
        object?
            .pointer("/metadata/annotations")?
            .get(INBOUND_BINDING)?
            .as_str()
            .map(str::to_owned)
    };
    let (value, on) = match annotation(Some(gateway)) {
        Some(value) => (value, "Gateway"),
        None => match annotation(class) {
            Some(value) => (value, "GatewayClass"),
            None => return Ok(Mode::Native),
        },
    };
    let (protocol, port) = match value.split_once('/') {
        Some((protocol, port)) => (protocol, Some(port)),
        None => (value.as_str(), None),
    };
    if protocol != "PROXY" {
        // istiod ignores it (NONE, or a protocol it does not know): native.
        return Ok(Mode::Native);
    }
    let invalid = |why: &str| Refusal {
        reason: "Invalid",
        message: format!(
            "{on} annotation {INBOUND_BINDING}: {value:?} {why}; expected PROXY/<port> with a port in 1..=65535 (for example PROXY/15088)"
        ),
    };
    let Some(port) = port else {
        return Err(invalid(
            "names no port (istiod reads port 0: ztunnel would keep each connection's destination port)",
        ));
    };
    match port.parse::<u32>() {
        Err(_) => Err(invalid(
            "has a port that is not a number (istiod reads port 0: ztunnel would keep each connection's destination port)",
        )),
        Ok(port) => match u16::try_from(port) {
            Ok(port) if port > 0 => Ok(Mode::Sandwich { port }),
            _ => Err(invalid("has a port out of range")),
        },
    }
}

/// The listener `mode` binds to, or why there is none.
pub fn check_listeners(gateway: &Value, mode: Mode) -> Result<(), Refusal> {
    let listeners = gateway
        .pointer("/spec/listeners")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let has = |port: u16, protocol: Option<&str>| {
        listeners.iter().any(|l| {
            l.get("port").and_then(Value::as_u64) == Some(u64::from(port))
                && protocol.is_none_or(|p| l.get("protocol").and_then(Value::as_str) == Some(p))
        })
    };
    match mode {
        Mode::Native if !has(HBONE_PORT, Some("HBONE")) => Err(Refusal {
            reason: "ListenersNotValid",
            message: format!(
                "a native HBONE waypoint needs a listener {{port: {HBONE_PORT}, protocol: HBONE}} (istiod sends traffic to it); for sandwich mode set the annotation {INBOUND_BINDING}: PROXY/<port> and a listener on that port"
            ),
        }),
        Mode::Sandwich { port } if !has(port, None) => Err(Refusal {
            reason: "ListenersNotValid",
            message: format!(
                "the inbound binding PROXY/{port} needs a listener on port {port} (for example {{port: {port}, protocol: istio.io/PROXY}})"
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn annotated(value: &str) -> Value {
        json!({"metadata": {"annotations": {INBOUND_BINDING: value}}})
    }

    #[test]
    fn the_gateway_annotation_wins_over_the_class_and_absence_means_native() {
        let class = annotated("PROXY/15088");
        assert_eq!(mode_of(&json!({}), None), Ok(Mode::Native));
        assert_eq!(
            mode_of(&json!({}), Some(&class)),
            Ok(Mode::Sandwich { port: 15088 })
        );
        assert_eq!(
            mode_of(&annotated("PROXY/15001"), Some(&class)),
            Ok(Mode::Sandwich { port: 15001 })
        );
        assert_eq!(mode_of(&annotated("NONE"), Some(&class)), Ok(Mode::Native));
    }

    #[test]
    fn protocols_istiod_ignores_leave_the_waypoint_native() {
        for value in ["NONE", "NONE/15088", "HTTP/80", "proxy/15088", ""] {
            assert_eq!(
                mode_of(&annotated(value), None),
                Ok(Mode::Native),
                "{value}"
            );
        }
    }

    #[test]
    fn a_proxy_binding_without_a_usable_port_is_refused_naming_the_annotation() {
        for value in [
            "PROXY/abc",
            "PROXY",
            "PROXY/",
            "PROXY/0",
            "PROXY/70000",
            "PROXY/-1",
        ] {
            let refusal = mode_of(&annotated(value), None).expect_err(value);
            assert_eq!(refusal.reason, "Invalid");
            assert!(
                refusal.message.contains(INBOUND_BINDING),
                "{}",
                refusal.message
            );
            assert!(
                refusal.message.contains(&format!("{value:?}")),
                "{}",
                refusal.message
            );
        }
    }

    #[test]
    fn each_mode_needs_its_listener() {
        let native =
            json!({"spec": {"listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}});
        let sandwich = json!({"spec": {"listeners": [{"name": "proxy", "port": 15088, "protocol": "istio.io/PROXY"}]}});
        assert_eq!(check_listeners(&native, Mode::Native), Ok(()));
        assert_eq!(
            check_listeners(&sandwich, Mode::Sandwich { port: 15088 }),
            Ok(())
        );
        let no_hbone = check_listeners(&sandwich, Mode::Native).expect_err("native");
        assert_eq!(no_hbone.reason, "ListenersNotValid");
        assert!(no_hbone.message.contains("15008"));
        let wrong_port =
            check_listeners(&native, Mode::Sandwich { port: 15088 }).expect_err("sandwich");
        assert!(wrong_port.message.contains("port 15088"));
        let http_on_15008 =
            json!({"spec": {"listeners": [{"name": "x", "port": 15008, "protocol": "HTTP"}]}});
        assert!(check_listeners(&http_on_15008, Mode::Native).is_err());
    }
}
