//! The checks serde cannot express: the API server's CEL rules for Gateway API and core
//! resources, and Istio's validation. Each check names the field at fault; a resource that fails
//! one is left out of the config with an `Accepted=false` status.

mod core;
mod destination_rule;
mod istio;
mod l4_routes;
mod routes;
mod service_entry;

use std::net::IpAddr;

pub(super) use self::core::{check_service, check_slice, cluster_ips};
use super::resources::Gateway;
pub(super) use destination_rule::check_destination_rule;
pub(super) use istio::{check_authn, check_authz};
pub(super) use l4_routes::{check_tcp_route, check_tls_route};
pub(super) use routes::{check_grpc_route, check_http_route};
pub(super) use service_entry::check_service_entry;

/// The outcome of a check: why the resource is invalid, naming the field.
pub(super) type Check = Result<(), String>;

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(why()) }
}

/// RFC 1123 subdomain, lower case; `*.` first when `wildcard` (Gateway API `Hostname`).
fn check_hostname(at: &str, host: &str, wildcard: bool) -> Check {
    let bad = |why: &str| Err(format!("{at}: `{host}` is not a valid hostname ({why})"));
    if host.parse::<IpAddr>().is_ok() {
        return bad("IP addresses are not allowed");
    }
    let name = if wildcard {
        host.strip_prefix("*.").unwrap_or(host)
    } else {
        host
    };
    if name.is_empty() || name.len() > 253 {
        return bad("1-253 characters");
    }
    for label in name.split('.') {
        let chars_ok = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty()
            || label.len() > 63
            || !chars_ok
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return bad("lower-case letters, digits, `-` and `.`; `*.` only as a prefix");
        }
    }
    Ok(())
}

/// An HTTP token (RFC 7230), as Gateway API `HeaderName` requires.
fn check_header_name(at: &str, name: &str) -> Check {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ensure(ok, || format!("{at}: `{name}` is not a valid header name"))
}

pub(super) fn check_gateway(gateway: &Gateway) -> Check {
    let listeners = &gateway.spec.listeners;
    for (i, l) in listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        ensure(l.port != 0, || format!("{at}.port: must be 1-65535"))?;
        ensure(!listeners[..i].iter().any(|o| o.name == l.name), || {
            format!("{at}.name: duplicate listener name `{}`", l.name)
        })?;
        if let Some(h) = &l.hostname {
            check_hostname(&format!("{at}.hostname"), h, true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::routes::{check_path, grpc_name_ok};
    use super::*;

    #[test]
    fn hostnames_and_paths() {
        assert!(check_hostname("h", "*.example.com", true).is_ok());
        assert!(check_hostname("h", "*.example.com", false).is_err());
        assert!(
            check_hostname("h", "10.0.0.1", true)
                .unwrap_err()
                .contains("IP addresses")
        );
        assert!(check_hostname("h", "Foo.com", true).is_err());
        assert!(check_path("p", "/a/b").is_ok());
        for bad in ["a", "/a//b", "/a/../b", "/a%2fb", "/a/.", "/a b"] {
            assert!(check_path("p", bad).is_err(), "{bad}");
        }
        assert!(grpc_name_ok(
            "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho",
            true
        ));
        assert!(!grpc_name_ok("a..b", true));
        assert!(!grpc_name_ok("Echo.x", false));
    }
}
