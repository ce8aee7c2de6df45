//! What an echo pod's container spec asks of the echo server, read as upstream's echo-basic
//! reads its environment: `TCP_ECHO_SERVER` selects the TCP line protocol; a certificate and
//! key (`TLS_SERVER_CERT` with `TLS_SERVER_PRIVKEY` for HTTP, `TLS_SERVER_PRIV_KEY` for TCP,
//! the two modes spell it differently upstream) make it serve TLS on `HTTPS_PORT` or
//! `TLS_PORT` (default 8443). The files are found as the kubelet would mount them: the volume
//! mounted at the file's directory, its Secret, and the `items` mapping a key to a path.
//! echo-basic in HTTP mode also serves h2c alone on `H2C_PORT` (default 3001), answering 400
//! to HTTP/1.1 there: HTTPRouteBackendProtocolH2C relies on it.

use serde_json::Value;

/// The plain port of a TCP-mode server and the default TLS port of either mode.
pub const DEFAULT_TCP_PORT: u16 = 3000;
/// echo-basic's default `H2C_PORT`.
pub const DEFAULT_H2C_PORT: u16 = 3001;
/// Upstream's default `HTTPS_PORT` and `TLS_PORT`.
pub const DEFAULT_TLS_PORT: u16 = 8443;

/// How a pod's echo server runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EchoSetup {
    /// Upstream's TCP mode: this is the plain port (`TCP_PORT`).
    pub tcp_port: Option<u16>,
    /// TLS on one port with a Secret's certificate.
    pub tls: Option<PodTls>,
    /// echo-basic's h2c port (`H2C_PORT`, default 3001): it answers HTTP/1.1 with 400.
    pub h2c_port: Option<u16>,
}

/// The TLS port of a pod and where its certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodTls {
    /// The port that serves TLS.
    pub port: u16,
    /// The Secret (`namespace/name`) mounted.
    pub secret: String,
    /// The Secret's key holding the certificate (`tls.crt`).
    pub cert_key: String,
    /// The Secret's key holding the private key (`tls.key`).
    pub key_key: String,
}

fn env<'c>(container: &'c Value, name: &str) -> Option<&'c str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

fn port_env(container: &Value, name: &str, default: u16) -> Result<u16, String> {
    match env(container, name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("env {name}: {v:?} is not a port number")),
    }
}

/// The Secret and key a container reads at `path`: `(namespace/name, key)`.
fn secret_file(
    namespace: &str,
    container: &Value,
    pod_spec: &Value,
    path: &str,
) -> Result<(String, String), String> {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|m| {
            let dir = m["mountPath"].as_str()?.trim_end_matches('/');
            let rest = path.strip_prefix(dir)?.strip_prefix('/')?;
            Some((m["name"].as_str()?, rest))
        })
        .ok_or_else(|| format!("{path}: no volume is mounted there"))?;
    let (volume_name, file) = mount;
    let secret = pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == volume_name)
        .map(|v| &v["secret"])
        .filter(|s| s.is_object())
        .ok_or_else(|| format!("{path}: volume {volume_name} is not a Secret volume"))?;
    let secret_name = secret["secretName"]
        .as_str()
        .ok_or_else(|| format!("volume {volume_name}: no secretName"))?;
    let key = match secret["items"].as_array() {
        Some(items) => items
            .iter()
            .find(|i| i["path"] == file)
            .and_then(|i| i["key"].as_str())
            .ok_or_else(|| format!("{path}: volume {volume_name} maps no key to {file}"))?,
        None => file,
    };
    Ok((format!("{namespace}/{secret_name}"), key.to_owned()))
}

/// The echo setup of `container` in a pod of `namespace` whose spec is `pod_spec`.
pub fn echo_setup(
    namespace: &str,
    container: &Value,
    pod_spec: &Value,
) -> Result<EchoSetup, String> {
    let tcp = env(container, "TCP_ECHO_SERVER").is_some_and(|v| !v.is_empty());
    let (key_env, port_env_name) = if tcp {
        ("TLS_SERVER_PRIV_KEY", "TLS_PORT")
    } else {
        ("TLS_SERVER_PRIVKEY", "HTTPS_PORT")
    };
    let tcp_port = if tcp {
        Some(port_env(container, "TCP_PORT", DEFAULT_TCP_PORT)?)
    } else {
        None
    };
    let cert = env(container, "TLS_SERVER_CERT").filter(|v| !v.is_empty());
    let key = env(container, key_env).filter(|v| !v.is_empty());
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => {
            let (secret, cert_key) = secret_file(namespace, container, pod_spec, cert)?;
            let (key_secret, key_key) = secret_file(namespace, container, pod_spec, key)?;
            if key_secret != secret {
                return Err(format!(
                    "certificate from Secret {secret} but key from Secret {key_secret}"
                ));
            }
            Some(PodTls {
                port: port_env(container, port_env_name, DEFAULT_TLS_PORT)?,
                secret,
                cert_key,
                key_key,
            })
        }
        _ => None,
    };
    // echo-basic's HTTP mode serves h2c alone on its own port; the mesh echo image does not.
    let echo_basic = container["image"]
        .as_str()
        .is_some_and(|image| image.contains("/echo-basic:"));
    let h2c_port = if echo_basic && !tcp {
        Some(port_env(container, "H2C_PORT", DEFAULT_H2C_PORT)?)
    } else {
        None
    };
    Ok(EchoSetup {
        tcp_port,
        tls,
        h2c_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(env: Value) -> (Value, Value) {
        let container = json!({
            "name": "c",
            "env": env,
            "volumeMounts": [{"name": "secret-volume", "mountPath": "/etc/secret-volume"}],
        });
        let spec = json!({"containers": [container.clone()], "volumes": [{
            "name": "secret-volume",
            "secret": {"secretName": "s", "items": [
                {"key": "tls.crt", "path": "crt"}, {"key": "tls.key", "path": "key"}]},
        }]});
        (container, spec)
    }

    #[test]
    fn a_tcp_backend_with_its_key_spelled_the_tcp_way_serves_tls_on_8443() {
        let (c, spec) = pod(json!([
            {"name": "TLS_SERVER_CERT", "value": "/etc/secret-volume/crt"},
            {"name": "TLS_SERVER_PRIV_KEY", "value": "/etc/secret-volume/key"},
            {"name": "TCP_ECHO_SERVER", "value": "1"},
        ]));
        let setup = echo_setup("infra", &c, &spec).unwrap();
        assert_eq!(setup.tcp_port, Some(3000));
        let tls = setup.tls.unwrap();
        assert_eq!(tls.port, 8443);
        assert_eq!(tls.secret, "infra/s");
        assert_eq!(
            (tls.cert_key.as_str(), tls.key_key.as_str()),
            ("tls.crt", "tls.key")
        );
    }

    #[test]
    fn an_http_backend_needs_the_http_spelling_of_the_key_variable() {
        let (c, spec) = pod(json!([
            {"name": "TLS_SERVER_CERT", "value": "/etc/secret-volume/crt"},
            {"name": "TLS_SERVER_PRIV_KEY", "value": "/etc/secret-volume/key"},
        ]));
        assert_eq!(
            echo_setup("infra", &c, &spec).unwrap(),
            EchoSetup::default()
        );
        let (c, spec) = pod(json!([
            {"name": "TLS_SERVER_CERT", "value": "/etc/secret-volume/crt"},
            {"name": "TLS_SERVER_PRIVKEY", "value": "/etc/secret-volume/key"},
            {"name": "HTTPS_PORT", "value": "9443"},
        ]));
        let setup = echo_setup("infra", &c, &spec).unwrap();
        assert_eq!(setup.tcp_port, None);
        assert_eq!(setup.tls.unwrap().port, 9443);
    }

    #[test]
    fn a_certificate_path_no_secret_is_mounted_at_is_an_error_naming_it() {
        let (c, spec) = pod(json!([
            {"name": "TLS_SERVER_CERT", "value": "/elsewhere/crt"},
            {"name": "TLS_SERVER_PRIVKEY", "value": "/etc/secret-volume/key"},
        ]));
        let err = echo_setup("infra", &c, &spec).unwrap_err();
        assert!(err.contains("/elsewhere/crt"), "{err}");
        let (c, spec) = pod(json!([{"name": "TCP_ECHO_SERVER", "value": "1"},
            {"name": "TCP_PORT", "value": "many"}]));
        assert!(
            echo_setup("infra", &c, &spec)
                .unwrap_err()
                .contains("TCP_PORT")
        );
    }

    #[test]
    fn the_base_tls_and_tcp_backends_become_pods_on_their_plain_and_tls_ports() {
        use crate::cluster::{Cluster, ClusterState, parse_yaml};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/conformance/gateway-api-v1.6.1/conformance/base/manifests.yaml");
        let Ok(text) = std::fs::read_to_string(&root) else {
            eprintln!("{} missing: the test did not run", root.display());
            return;
        };
        let cluster = Cluster::apply(parse_yaml(&text).unwrap(), &mut ClusterState::default());
        let pod = |name: &str| {
            cluster
                .pods
                .iter()
                .find(|p| p.name == name && p.namespace == "gateway-conformance-infra")
                .unwrap()
                .clone()
        };
        let tls = pod("tls-backend-0");
        assert_eq!(tls.ports, vec![(3000, false), (8443, false)]);
        let setup = tls.echo.unwrap();
        assert_eq!(setup.tcp_port, None);
        assert_eq!(
            setup.tls.unwrap().secret,
            "gateway-conformance-infra/tls-checks-certificate"
        );
        let tcp = pod("tcp-backend-1");
        assert_eq!(tcp.ports, vec![(3000, false), (8443, false)]);
        let setup = tcp.echo.unwrap();
        assert_eq!(setup.tcp_port, Some(3000));
        assert_eq!(setup.h2c_port, None);
        assert_eq!(
            setup.tls.unwrap().secret,
            "gateway-conformance-infra/tls-passthrough-checks-certificate"
        );
        // Its Service's second port targets 3001: echo-basic's h2c-only port.
        let infra = pod("infra-backend-v1-0");
        assert!(infra.ports.contains(&(3001, false)), "{:?}", infra.ports);
        let h2c_only = EchoSetup {
            h2c_port: Some(3001),
            ..EchoSetup::default()
        };
        assert_eq!(infra.echo.unwrap(), h2c_only);
    }

    #[test]
    fn only_echo_basic_in_http_mode_has_an_h2c_port_which_h2c_port_moves() {
        let image = |image: &str, env: Value| {
            let container = json!({"name": "c", "image": image, "env": env});
            echo_setup("infra", &container, &json!({}))
                .unwrap()
                .h2c_port
        };
        let echo_basic = "registry.k8s.io/gateway-api/echo-basic:v1.5.1";
        assert_eq!(image(echo_basic, json!([])), Some(3001));
        let moved = json!([{"name": "H2C_PORT", "value": "4001"}]);
        assert_eq!(image(echo_basic, moved), Some(4001));
        let tcp = json!([{"name": "TCP_ECHO_SERVER", "value": "1"}]);
        assert_eq!(image(echo_basic, tcp), None);
        assert_eq!(image("gcr.io/istio-testing/app:latest", json!([])), None);
    }
}
