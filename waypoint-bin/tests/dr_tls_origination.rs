//! DestinationRule `tls` through the real binary: `waypoint run` originates TLS to an echo
//! backend that terminates it itself (a rustls server in this process, its certificates from a
//! test CA), and `waypoint check` refuses a rule whose material cannot be read.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use waypoint_bin::tools::echo::{EchoIdentity, EchoOptions, EchoServer, spawn_with};

use common::run::Running;

const VIP: &str = "10.96.0.10:80";

/// A test CA issuing the backend's and the client's certificates, with its files on disk.
struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    dir: tempfile::TempDir,
}

struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dr tls test CA");
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn issue(&self, names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(self.ca_pem.as_bytes());
        roots.add(der.unwrap()).unwrap();
        roots
    }
}

/// The echo backend behind TLS, in this process: its certificate is `server`; with
/// `demand_client_cert` it refuses clients without a certificate from the test CA.
struct TlsEcho {
    port: u16,
    _server: EchoServer,
    _runtime: tokio::runtime::Runtime,
}

impl TlsEcho {
    fn start(pki: &Pki, server: &Issued, demand_client_cert: bool) -> TlsEcho {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if demand_client_cert {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(pki.roots()),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(
                vec![server.der.clone()],
                PrivateKeyDer::try_from(server.key_der.clone()).unwrap(),
            )
            .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let identity = EchoIdentity {
                pod: "echo-pod".into(),
                ..Default::default()
            };
            let options = EchoOptions::default().with_tls(Arc::new(config));
            spawn_with(listener, identity, options).unwrap()
        });
        TlsEcho {
            port: server.addr().port(),
            _server: server,
            _runtime: runtime,
        }
    }
}

/// The echo Service (VIP 10.96.0.10:80, endpoint the TLS backend) and a DestinationRule for
/// it with `tls` = `tls` (a YAML flow mapping); `more` documents after them.
fn manifests(echo: &TlsEcho, tls: &str, more: &str) -> String {
    format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo-tls, namespace: default}}\nspec:\n  host: echo.default.svc.cluster.local\n  trafficPolicy:\n    tls: {tls}\n{more}",
        common::service("echo", "10.96.0.10", echo.port)
    )
}

/// GET `path` for host `host` to the echo VIP through the waypoint, as ztunnel sends it: the
/// status line and body.
fn get(wp: &Running, host: &str, path: &str) -> String {
    let out = common::waypoint()
        .args(["send", "--to", &format!("127.0.0.1:{}", wp.sandwich)])
        .args(["--destination", VIP, "--source", "10.244.0.7:40000"])
        .args(["--identity", "spiffe://cluster.local/ns/default/sa/sleep"])
        .args(["--host", host, "--path", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The access log entry of the request for `path`.
fn logged(wp: &Running, path: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = wp.stdout.recv_timeout(left) else {
            panic!("no access log line for {path}");
        };
        if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
            && entry["path"] == path
        {
            return entry;
        }
    }
}

#[test]
fn simple_with_the_test_ca_reaches_the_backend_with_the_request_host_as_sni() {
    let pki = Pki::new();
    let echo = TlsEcho::start(&pki, &pki.issue(&["api.example.com"]), false);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let config = manifests(
        &echo,
        &format!("{{mode: SIMPLE, caCertificates: {ca}}}"),
        "",
    );
    let (wp, _dir) = Running::start(&config, &[], &[]);
    let out = get(&wp, "api.example.com", "/simple");
    assert!(out.contains("200 OK"), "{out}");
    assert!(out.contains("\"serverName\":\"api.example.com\""), "{out}");

    // Without the rule the backend gets plain HTTP and the exchange fails.
    let plain = common::service("echo", "10.96.0.10", echo.port);
    let (wp, _dir) = Running::start(&plain, &[], &[]);
    let out = get(&wp, "api.example.com", "/plain");
    assert!(!out.contains("200 OK"), "{out}");
}

#[test]
fn a_certificate_without_the_expected_name_or_from_an_unknown_ca_is_503_uf() {
    let pki = Pki::new();
    let echo = TlsEcho::start(&pki, &pki.issue(&["api.example.com"]), false);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let config = manifests(
        &echo,
        &format!("{{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [other.example.com]}}"),
        "",
    );
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let out = get(&wp, "api.example.com", "/wrong-san");
    assert!(out.contains("503"), "{out}");
    assert!(out.contains("match none of subjectAltNames"), "{out}");
    let entry = logged(&wp, "/wrong-san");
    assert_eq!(entry["response_flags"], "UF", "{entry}");

    // The Web-PKI roots (no caCertificates) do not know the test CA.
    let config = manifests(&echo, "{mode: SIMPLE}", "");
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let out = get(&wp, "api.example.com", "/web-pki");
    assert!(
        out.contains("503") && out.contains("UnknownIssuer"),
        "{out}"
    );
    assert_eq!(logged(&wp, "/web-pki")["response_flags"], "UF");

    // insecureSkipVerify accepts it all the same.
    let config = manifests(&echo, "{mode: SIMPLE, insecureSkipVerify: true}", "");
    let (wp, _dir) = Running::start(&config, &[], &[]);
    let out = get(&wp, "whatever.example", "/insecure");
    assert!(out.contains("200 OK"), "{out}");
}

#[test]
fn sni_is_what_the_backend_sees_and_what_the_certificate_must_name() {
    let pki = Pki::new();
    let echo = TlsEcho::start(&pki, &pki.issue(&["backend.internal"]), false);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let config = manifests(
        &echo,
        &format!("{{mode: SIMPLE, caCertificates: {ca}, sni: backend.internal}}"),
        "",
    );
    let (wp, _dir) = Running::start(&config, &[], &[]);
    let out = get(&wp, "api.example.com", "/sni");
    assert!(out.contains("200 OK"), "{out}");
    assert!(out.contains("\"serverName\":\"backend.internal\""), "{out}");
}

#[test]
fn mutual_presents_the_client_certificate_the_backend_demands() {
    let pki = Pki::new();
    let echo = TlsEcho::start(&pki, &pki.issue(&["api.example.com"]), true);
    let client = pki.issue(&["client.example.com"]);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let cert = pki.file("client.pem", &client.cert_pem);
    let key = pki.file("client-key.pem", &client.key_pem);

    let config = manifests(
        &echo,
        &format!(
            "{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {cert}, privateKey: {key}}}"
        ),
        "",
    );
    let (wp, _dir) = Running::start(&config, &[], &[]);
    let out = get(&wp, "api.example.com", "/mutual");
    assert!(out.contains("200 OK"), "{out}");

    // SIMPLE presents none: the backend refuses the connection.
    let config = manifests(
        &echo,
        &format!("{{mode: SIMPLE, caCertificates: {ca}}}"),
        "",
    );
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let out = get(&wp, "api.example.com", "/no-client-cert");
    assert!(out.contains("503"), "{out}");
    assert_eq!(logged(&wp, "/no-client-cert")["response_flags"], "UF");
}

#[test]
fn credential_name_takes_the_client_certificate_and_ca_from_a_secret() {
    let pki = Pki::new();
    let echo = TlsEcho::start(&pki, &pki.issue(&["api.example.com"]), true);
    let client = pki.issue(&["client.example.com"]);
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n      ");
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client-tls, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n      {}\n  tls.key: |\n      {}\n  ca.crt: |\n      {}\n",
        indent(&client.cert_pem),
        indent(&client.key_pem),
        indent(&pki.ca_pem)
    );
    let config = manifests(&echo, "{mode: MUTUAL, credentialName: client-tls}", &secret);
    let (wp, _dir) = Running::start(&config, &[], &[]);
    let out = get(&wp, "api.example.com", "/secret");
    assert!(out.contains("200 OK"), "{out}");
}

#[test]
fn check_refuses_a_rule_whose_files_or_secret_are_missing_naming_the_field() {
    let pki = Pki::new();
    let echo = TlsEcho::start(&pki, &pki.issue(&["api.example.com"]), false);
    let config = manifests(
        &echo,
        "{mode: SIMPLE, caCertificates: /nonexistent/ca.pem}",
        "",
    );
    let (ok, out) = common::run::check(&config, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("spec.trafficPolicy.tls.caCertificates: cannot read /nonexistent/ca.pem"),
        "{out}"
    );

    let config = manifests(&echo, "{mode: MUTUAL, credentialName: nowhere}", "");
    let (ok, out) = common::run::check(&config, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "spec.trafficPolicy.tls.credentialName: Secret default/nowhere does not exist"
        ),
        "{out}"
    );
}

/// A rule refused for its `tls` block would otherwise leave the port as if it had no rule:
/// plain text to a backend the operator meant to reach over TLS. The port is not served
/// instead (503 `UF`), and `check` and `/config_dump` say why; a plain echo behind it proves
/// nothing went out.
#[test]
fn a_refused_tls_rule_fails_its_port_closed_instead_of_sending_plain_text() {
    let plain = common::run::Echo::start();
    let config = format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo-tls, namespace: default}}\nspec:\n  host: echo.default.svc.cluster.local\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: /nonexistent/ca.pem}}\n",
        common::service("echo", "10.96.0.10", plain.port)
    );
    let (ok, out) = common::run::check(&config, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "NOT SERVED: DestinationRule default/echo-tls sets tls for this port but was refused"
        ),
        "{out}"
    );
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let answer = get(&wp, "echo.default.svc.cluster.local", "/refused");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("not sending in plain text"), "{answer}");
    assert!(!answer.contains("\"pod\""), "{answer}");
    assert_eq!(logged(&wp, "/refused")["response_flags"], "UF");
    let dump = wp.admin("/config_dump");
    assert!(
        dump.contains("\"tlsRefusedBy\": \"DestinationRule default/echo-tls\""),
        "{dump}"
    );
}
