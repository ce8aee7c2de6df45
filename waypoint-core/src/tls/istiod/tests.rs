#![allow(clippy::unwrap_used)]

use super::*;

fn client(address: &str) -> IstiodCa {
    IstiodCa {
        address: address.to_owned(),
        token_path: "/t".into(),
        root_path: "/r".into(),
        cluster_id: "Kubernetes".into(),
        identity: "spiffe://cluster.local/ns/infra/sa/waypoint"
            .parse()
            .unwrap(),
        validity: Duration::from_secs(60),
    }
}

#[test]
fn the_csr_has_an_empty_subject_and_our_spiffe_id_as_its_only_san() {
    let (key, csr) = client("istiod:15012").csr().unwrap();
    let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
    assert_eq!(parsed.params.distinguished_name.iter().count(), 0);
    let uris: Vec<_> = parsed
        .params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SanType::URI(uri) => uri.as_str().to_owned(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    assert_eq!(uris, ["spiffe://cluster.local/ns/infra/sa/waypoint"]);
    assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
}

#[test]
fn a_grpc_status_in_trailers_or_headers_is_an_error_with_its_decoded_message() {
    let ca = client("istiod:15012");
    let mut headers = http::HeaderMap::new();
    assert!(ca.check_status(&headers).is_ok());
    headers.insert("grpc-status", "0".parse().unwrap());
    assert!(ca.check_status(&headers).is_ok());
    headers.insert("grpc-status", "7".parse().unwrap());
    headers.insert(
        "grpc-message",
        "no%20such%20identity%3A%20%E2%9C%97".parse().unwrap(),
    );
    let error = ca.check_status(&headers).unwrap_err();
    assert_eq!(
        error.to_string(),
        "CA istiod:15012 refused: PERMISSION_DENIED (7): no such identity: \u{2717}"
    );
    headers.insert("grpc-status", "seven".parse().unwrap());
    assert!(matches!(
        ca.check_status(&headers),
        Err(IstiodError::Protocol { .. })
    ));
}

#[test]
fn addresses_are_host_and_port() {
    assert_eq!(
        client("istiod.istio-system.svc:15012").host_port().unwrap(),
        ("istiod.istio-system.svc".to_owned(), 15012)
    );
    assert_eq!(
        client("[::1]:15012").host_port().unwrap(),
        ("::1".to_owned(), 15012)
    );
    for bad in ["istiod", "istiod:port", ":15012"] {
        let error = client(bad).host_port().unwrap_err();
        assert!(error.is_permanent(), "{bad}");
        assert!(error.to_string().contains(bad), "{error}");
    }
}

#[test]
fn the_root_the_ca_sends_last_is_not_presented() {
    let dev = crate::tls::DevCa::generate("cluster.local").unwrap();
    let ca = client("istiod:15012");
    let (key, csr) = ca.csr().unwrap();
    let leaf = dev
        .sign_csr(&csr, ca.identity.as_str(), Duration::from_secs(600))
        .unwrap();
    let root = dev.root_pem();
    let certs = ca
        .accept(&[leaf.clone(), root.clone()], &key, root.as_bytes())
        .unwrap();
    assert_eq!(certs.chain.len(), 1);
    let certs = ca.accept(&[leaf], &key, root.as_bytes()).unwrap();
    assert_eq!(certs.chain.len(), 1);
    assert!(matches!(
        ca.accept(&[], &key, root.as_bytes()),
        Err(IstiodError::Protocol { .. })
    ));
}
