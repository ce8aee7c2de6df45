//! TLS origination against a local rustls server: trust, names, SNI, client certificates,
//! revocation, and the configuration errors that name their field.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::resources::ObjectMeta;

/// A test CA that issues server and client certificates.
struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

/// An issued certificate and its key, in PEM.
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
        // Distinct names: a verifier looks issuers up by name.
        let name = format!("waypoint test CA {}", fastrand::u64(..));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn issue(&self, names: &[&str], serial: u64) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn crl(&self, revoked: &[u64]) -> String {
        let now = rcgen::date_time_ymd(2020, 1, 1);
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    /// Writes `text` to a file in the test's directory; its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

/// What the server saw of one handshake.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    client_cert: bool,
    alpn: Option<Vec<u8>>,
}

/// A TLS server presenting `server`; with `client_ca`, it demands a client certificate from
/// that CA. Serves one connection: answers `ok` and reports what it saw.
async fn server(
    server: &Issued,
    client_ca: Option<&Pki>,
) -> (SocketAddr, tokio::task::JoinHandle<Option<Seen>>) {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            vec![server.der.clone()],
            PrivateKeyDer::try_from(server.key_der.clone()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.ok()?;
        let (_, conn) = tls.get_ref();
        let seen = Seen {
            sni: conn.server_name().map(str::to_owned),
            client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        };
        tls.write_all(b"ok").await.ok()?;
        tls.shutdown().await.ok()?;
        Some(seen)
    });
    (addr, task)
}

/// Connects to `addr` through `layer` and reads the server's answer.
async fn talk(layer: &TlsLayer, addr: SocketAddr) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut io = layer.handshake(Box::new(tcp)).await?;
    let mut out = String::new();
    io.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn spec<'a>() -> OriginationSpec<'a> {
    OriginationSpec::default()
}

#[tokio::test]
async fn simple_with_the_test_ca_verifies_the_request_host_and_sends_it_as_sni() {
    let pki = Pki::new();
    let cert = pki.issue(&["api.example.com"], 1);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let origination = Origination::build(
        &OriginationSpec {
            ca_certificates: Some(&ca),
            ..spec()
        },
        None,
    )
    .unwrap();

    let (addr, seen) = server(&cert, None).await;
    let layer = origination.layer(AppProtocol::Http1, Some("api.example.com:443"), addr);
    assert_eq!(talk(&layer, addr).await.unwrap(), "ok");
    let seen = seen.await.unwrap().unwrap();
    assert_eq!(seen.sni.as_deref(), Some("api.example.com"));
    assert!(!seen.client_cert);
    assert_eq!(
        seen.alpn, None,
        "HTTP/1.1 offers no ALPN, as Istio configures Envoy"
    );

    // Another host is not on the certificate: refused, with rustls' reason.
    let (addr, _seen) = server(&cert, None).await;
    let layer = origination.layer(AppProtocol::Http1, Some("other.example.com"), addr);
    let err = talk(&layer, addr).await.unwrap_err();
    assert!(
        err.contains("TLS handshake with other.example.com"),
        "{err}"
    );
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn an_unknown_ca_is_refused_and_the_web_pki_does_not_trust_a_private_ca() {
    let pki = Pki::new();
    let other = Pki::new();
    let cert = pki.issue(&["api.example.com"], 1);
    let other_ca = other.file("ca.pem", &other.ca_pem);
    for ca in [Some(other_ca.as_str()), None] {
        let origination = Origination::build(
            &OriginationSpec {
                ca_certificates: ca,
                ..spec()
            },
            None,
        )
        .unwrap();
        let (addr, _seen) = server(&cert, None).await;
        let layer = origination.layer(AppProtocol::Http1, Some("api.example.com"), addr);
        let err = talk(&layer, addr).await.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{ca:?}: {err}");
    }
}

#[tokio::test]
async fn explicit_sni_is_sent_and_checked_and_h2_backends_offer_alpn_h2() {
    let pki = Pki::new();
    let cert = pki.issue(&["backend.internal"], 1);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let origination = Origination::build(
        &OriginationSpec {
            ca_certificates: Some(&ca),
            sni: Some("backend.internal"),
            ..spec()
        },
        None,
    )
    .unwrap();
    let (addr, seen) = server(&cert, None).await;
    // The request's host does not matter once sni is set.
    let layer = origination.layer(AppProtocol::H2c, Some("api.example.com"), addr);
    assert_eq!(talk(&layer, addr).await.unwrap(), "ok");
    let seen = seen.await.unwrap().unwrap();
    assert_eq!(seen.sni.as_deref(), Some("backend.internal"));
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn subject_alt_names_replace_the_server_name_in_the_check() {
    let pki = Pki::new();
    let cert = pki.issue(&["svc-a.internal", "*.wild.internal"], 1);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let with_sans = |sans: &[String]| {
        Origination::build(
            &OriginationSpec {
                ca_certificates: Some(&ca),
                subject_alt_names: sans,
                ..spec()
            },
            None,
        )
        .unwrap()
    };
    // The host is not on the certificate, but a configured SAN is.
    let good = with_sans(&["nope.internal".into(), "svc-a.internal".into()]);
    let (addr, seen) = server(&cert, None).await;
    let layer = good.layer(AppProtocol::Http1, Some("api.example.com"), addr);
    assert_eq!(talk(&layer, addr).await.unwrap(), "ok");
    assert_eq!(
        seen.await.unwrap().unwrap().sni.as_deref(),
        Some("api.example.com")
    );

    let wild = with_sans(&["x.wild.internal".into()]);
    let (addr, _seen) = server(&cert, None).await;
    let layer = wild.layer(AppProtocol::Http1, None, addr);
    assert_eq!(talk(&layer, addr).await.unwrap(), "ok");

    // The host is on the certificate, but no configured SAN is: refused.
    let wrong = with_sans(&["svc-b.internal".into()]);
    let (addr, _seen) = server(&cert, None).await;
    let layer = wrong.layer(AppProtocol::Http1, Some("svc-a.internal"), addr);
    let err = talk(&layer, addr).await.unwrap_err();
    assert!(
        err.contains("match none of subjectAltNames [svc-b.internal]"),
        "{err}"
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_unknown_ca_and_a_wrong_name() {
    let pki = Pki::new();
    let cert = pki.issue(&["api.example.com"], 1);
    let origination = Origination::build(
        &OriginationSpec {
            insecure_skip_verify: true,
            ..spec()
        },
        None,
    )
    .unwrap();
    let (addr, _seen) = server(&cert, None).await;
    let layer = origination.layer(AppProtocol::Http1, Some("who.cares"), addr);
    assert_eq!(talk(&layer, addr).await.unwrap(), "ok");
}

#[tokio::test]
async fn mutual_presents_the_client_certificate_the_server_demands() {
    let pki = Pki::new();
    let server_cert = pki.issue(&["api.example.com"], 1);
    let client = pki.issue(&["client.example.com"], 2);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let cert_file = pki.file("client.pem", &client.cert_pem);
    let key_file = pki.file("client-key.pem", &client.key_pem);

    let mutual = Origination::build(
        &OriginationSpec {
            mutual: true,
            client_certificate: Some(&cert_file),
            private_key: Some(&key_file),
            ca_certificates: Some(&ca),
            ..spec()
        },
        None,
    )
    .unwrap();
    let (addr, seen) = server(&server_cert, Some(&pki)).await;
    let layer = mutual.layer(AppProtocol::Http1, Some("api.example.com"), addr);
    assert_eq!(talk(&layer, addr).await.unwrap(), "ok");
    assert!(seen.await.unwrap().unwrap().client_cert);

    // SIMPLE to the same server: it wants a certificate and gets none.
    let simple = Origination::build(
        &OriginationSpec {
            ca_certificates: Some(&ca),
            ..spec()
        },
        None,
    )
    .unwrap();
    let (addr, seen) = server(&server_cert, Some(&pki)).await;
    let layer = simple.layer(AppProtocol::Http1, Some("api.example.com"), addr);
    // TLS 1.3: the client finishes first and learns of the refusal on its first read.
    let refused = talk(&layer, addr).await;
    assert!(
        refused.is_err() || refused.as_deref() == Ok(""),
        "{refused:?}"
    );
    assert!(seen.await.unwrap().is_none());
}

#[tokio::test]
async fn a_revoked_server_certificate_is_refused_with_ca_crl() {
    let pki = Pki::new();
    let revoked = pki.issue(&["api.example.com"], 7);
    let fine = pki.issue(&["api.example.com"], 8);
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let crl = pki.file("crl.pem", &pki.crl(&[7]));
    let origination = Origination::build(
        &OriginationSpec {
            ca_certificates: Some(&ca),
            ca_crl: Some(&crl),
            ..spec()
        },
        None,
    )
    .unwrap();
    let (addr, _seen) = server(&revoked, None).await;
    let layer = origination.layer(AppProtocol::Http1, Some("api.example.com"), addr);
    let err = talk(&layer, addr).await.unwrap_err();
    assert!(err.contains("Revoked"), "{err}");

    let (addr, _seen) = server(&fine, None).await;
    let layer = origination.layer(AppProtocol::Http1, Some("api.example.com"), addr);
    assert_eq!(talk(&layer, addr).await.unwrap(), "ok");
}

fn secret(ns: &str, name: &str, kind: Option<&str>, data: &[(&str, &str)]) -> Sourced<Secret> {
    Sourced {
        source: "test".into(),
        resource: Secret {
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            kind: kind.map(str::to_owned),
            data: BTreeMap::new(),
            string_data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        },
    }
}

#[tokio::test]
async fn credential_name_reads_the_secret_of_the_waypoint_namespace() {
    let pki = Pki::new();
    let server_cert = pki.issue(&["api.example.com"], 1);
    let client = pki.issue(&["client.example.com"], 2);
    let secrets = vec![
        secret(
            "egress",
            "client-tls",
            Some("kubernetes.io/tls"),
            &[
                ("tls.crt", &client.cert_pem),
                ("tls.key", &client.key_pem),
                ("ca.crt", &pki.ca_pem),
            ],
        ),
        // The Opaque layout, its CA in a `-cacert` Secret of its own.
        secret(
            "egress",
            "opaque",
            None,
            &[("cert", &client.cert_pem), ("key", &client.key_pem)],
        ),
        secret("egress", "opaque-cacert", None, &[("cacert", &pki.ca_pem)]),
    ];
    let scope = SecretScope {
        namespace: "egress",
        secrets: &secrets,
    };
    for name in ["client-tls", "opaque"] {
        let origination = Origination::build(
            &OriginationSpec {
                mutual: true,
                credential_name: Some(name),
                ..spec()
            },
            Some(scope),
        )
        .unwrap();
        let (addr, seen) = server(&server_cert, Some(&pki)).await;
        let layer = origination.layer(AppProtocol::Http1, Some("api.example.com"), addr);
        assert_eq!(talk(&layer, addr).await.unwrap(), "ok", "{name}");
        assert!(seen.await.unwrap().unwrap().client_cert, "{name}");
    }

    // A Secret of another namespace is not the waypoint's.
    let other = SecretScope {
        namespace: "default",
        secrets: &secrets,
    };
    let err = Origination::build(
        &OriginationSpec {
            credential_name: Some("client-tls"),
            ..spec()
        },
        Some(other),
    )
    .unwrap_err();
    assert!(
        err.starts_with("credentialName: Secret default/client-tls does not exist"),
        "{err}"
    );
}

#[test]
fn unusable_material_is_refused_with_the_field_named() {
    let pki = Pki::new();
    let client = pki.issue(&["client"], 1);
    let cert = pki.file("c.pem", &client.cert_pem);
    let key = pki.file("k.pem", &client.key_pem);
    let garbage = pki.file("garbage.pem", "not pem at all");
    let missing = "/nonexistent/ca.pem";
    let other_key = pki.file("other-key.pem", &pki.issue(&["x"], 2).key_pem);
    let secrets = vec![secret(
        "egress",
        "half",
        None,
        &[("cert", &client.cert_pem)],
    )];
    let scope = SecretScope {
        namespace: "egress",
        secrets: &secrets,
    };
    let cases: Vec<(OriginationSpec<'_>, &str)> = vec![
        (
            OriginationSpec {
                ca_certificates: Some(missing),
                ..spec()
            },
            "caCertificates: cannot read /nonexistent/ca.pem",
        ),
        (
            OriginationSpec {
                ca_certificates: Some(&garbage),
                ..spec()
            },
            "caCertificates: no CERTIFICATE in the PEM",
        ),
        (
            OriginationSpec {
                ca_crl: Some(missing),
                ..spec()
            },
            "caCrl: cannot read",
        ),
        (
            OriginationSpec {
                mutual: true,
                private_key: Some(&key),
                ..spec()
            },
            "clientCertificate: required for MUTUAL",
        ),
        (
            OriginationSpec {
                mutual: true,
                client_certificate: Some(&cert),
                private_key: Some(missing),
                ..spec()
            },
            "privateKey: cannot read",
        ),
        (
            OriginationSpec {
                mutual: true,
                client_certificate: Some(&cert),
                private_key: Some(&other_key),
                ..spec()
            },
            "privateKey: the key does not belong to the clientCertificate certificate",
        ),
        (
            OriginationSpec {
                sni: Some("not a name"),
                ..spec()
            },
            "sni: \"not a name\" is not a valid DNS name",
        ),
        (
            OriginationSpec {
                mutual: true,
                credential_name: Some("half"),
                ..spec()
            },
            "credentialName: Secret egress/half needs tls.crt and tls.key",
        ),
    ];
    for (spec, want) in cases {
        let err = Origination::build(&spec, Some(scope)).unwrap_err();
        assert!(err.starts_with(want), "{spec:?}: {err}");
    }
}

#[test]
fn host_names_drop_ports_and_brackets_and_ips_are_ip_server_names() {
    let dns = |s: &str| ServerName::try_from(s.to_owned()).unwrap();
    let ip = |s: &str| ServerName::IpAddress(s.parse::<IpAddr>().unwrap().into());
    assert_eq!(
        host_server_name("API.example.com:8443"),
        Some(dns("api.example.com"))
    );
    assert_eq!(
        host_server_name("api.example.com"),
        Some(dns("api.example.com"))
    );
    assert_eq!(host_server_name("10.0.0.1:80"), Some(ip("10.0.0.1")));
    assert_eq!(host_server_name("[fd00::1]:443"), Some(ip("fd00::1")));
    assert_eq!(host_server_name("fd00::1"), Some(ip("fd00::1")));
    assert_eq!(host_server_name("bad host"), None);
}

#[test]
fn wildcard_sans_cover_one_label() {
    assert!(san_matches("a.example.com", "A.Example.com"));
    assert!(san_matches("*.example.com", "a.example.com"));
    assert!(!san_matches("*.example.com", "a.b.example.com"));
    assert!(!san_matches("*.example.com", "example.com"));
    assert!(san_matches(
        "spiffe://cluster.local/ns/a/sa/b",
        "spiffe://cluster.local/ns/a/sa/b"
    ));
}

#[test]
fn layers_pool_together_per_rule_material_and_name() {
    let pki = Pki::new();
    let ca = pki.file("ca.pem", &pki.ca_pem);
    let with_ca = OriginationSpec {
        ca_certificates: Some(&ca),
        ..spec()
    };
    let origination = Origination::build(&with_ca, None).unwrap();
    let at: SocketAddr = "10.0.0.1:443".parse().unwrap();
    let a = origination.layer(AppProtocol::Http1, Some("a.example.com"), at);
    assert_eq!(
        a,
        origination.layer(AppProtocol::Http1, Some("a.example.com:443"), at)
    );
    assert_ne!(
        a,
        origination.layer(AppProtocol::Http1, Some("b.example.com"), at)
    );
    assert_ne!(
        a,
        origination.layer(AppProtocol::H2c, Some("a.example.com"), at)
    );

    // A reload with the same rule and the same file contents reuses the configuration, so
    // pooled connections survive it; new contents (a rotated CA) make a new one.
    let rebuilt = Origination::build(&with_ca, None).unwrap();
    assert!(Arc::ptr_eq(&origination, &rebuilt));
    pki.file("ca.pem", &Pki::new().ca_pem);
    let rotated = Origination::build(&with_ca, None).unwrap();
    assert_ne!(
        a,
        rotated.layer(AppProtocol::Http1, Some("a.example.com"), at)
    );
    let insecure = OriginationSpec {
        insecure_skip_verify: true,
        ..spec()
    };
    assert!(!Arc::ptr_eq(
        &Origination::build(&insecure, None).unwrap(),
        &Origination::build(&spec(), None).unwrap()
    ));
}
