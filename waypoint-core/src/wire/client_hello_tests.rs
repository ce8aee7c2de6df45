use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::*;

/// The first bytes a real rustls client sends for `server_name`, offering `alpn`.
fn rustls_hello(server_name: &str, alpn: &[&str]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

/// A ClientHello body with these extensions (type, data), TLS 1.2 layout.
fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7; 32]);
    body.push(0); // session id
    body.extend([0, 2, 0x13, 0x01]); // one suite
    body.extend([1, 0]); // null compression
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend(kind.to_be_bytes());
        ext.extend((data.len() as u16).to_be_bytes());
        ext.extend(data);
    }
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    body
}

/// `body` as a ClientHello handshake message in records of at most `fragment` bytes.
fn records(body: &[u8], fragment: usize) -> Vec<u8> {
    let mut message = vec![CLIENT_HELLO];
    message.extend(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend(body);
    let mut out = Vec::new();
    for chunk in message.chunks(fragment) {
        out.extend([HANDSHAKE, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

fn sni(name: &[u8]) -> (u16, Vec<u8>) {
    let mut entry = vec![HOST_NAME];
    entry.extend((name.len() as u16).to_be_bytes());
    entry.extend(name);
    let mut data = (entry.len() as u16).to_be_bytes().to_vec();
    data.extend(entry);
    (EXT_SERVER_NAME, data)
}

#[test]
fn a_rustls_client_hello_gives_its_server_name_and_alpn() {
    let bytes = rustls_hello("Echo.Example.com", &["h2", "http/1.1"]);
    let hello = parse(&bytes).unwrap().unwrap();
    assert_eq!(hello.server_name.as_deref(), Some("echo.example.com"));
    assert_eq!(hello.alpn, ["h2", "http/1.1"]);
}

#[test]
fn every_proper_prefix_needs_more_bytes() {
    let bytes = rustls_hello("a.example.com", &[]);
    for n in 0..bytes.len() {
        assert_eq!(parse(&bytes[..n]), Ok(None), "prefix of {n} bytes");
    }
    // Bytes after the hello (a client that already sent more) do not matter.
    let mut more = bytes.clone();
    more.extend(b"trailing");
    assert!(parse(&more).unwrap().is_some());
}

#[test]
fn a_hello_fragmented_over_many_records_is_reassembled() {
    let body = hello_with(&[sni(b"split.example.com")]);
    let bytes = records(&body, 7);
    let hello = parse(&bytes).unwrap().unwrap();
    assert_eq!(hello.server_name.as_deref(), Some("split.example.com"));
}

#[test]
fn a_hello_over_16_kib_is_read_up_to_the_limit() {
    let padding = (0xffa5, vec![0; 20_000]);
    let body = hello_with(&[padding.clone(), sni(b"big.example.com")]);
    let bytes = records(&body, 1 << 14);
    assert!(bytes.len() > 16 * 1024);
    let hello = parse(&bytes).unwrap().unwrap();
    assert_eq!(hello.server_name.as_deref(), Some("big.example.com"));

    let huge = hello_with(&[(0xffa5, vec![0; 60_000]), (0xffa6, vec![0; 10_000])]);
    let bytes = records(&huge, 1 << 14);
    // Refused as soon as the header says so, before all of it arrived.
    assert!(matches!(parse(&bytes[..9]), Err(HelloError::TooLarge(_))));
}

#[test]
fn a_hello_without_extensions_has_no_server_name() {
    let mut body = hello_with(&[]);
    body.truncate(body.len() - 2); // no extensions block at all
    assert_eq!(
        parse(&records(&body, 100)),
        Ok(Some(ClientHello::default()))
    );
}

#[test]
fn a_trailing_dot_is_dropped_and_bad_names_are_refused() {
    let hello = parse(&records(&hello_with(&[sni(b"a.example.com.")]), 512));
    assert_eq!(
        hello.unwrap().unwrap().server_name.as_deref(),
        Some("a.example.com")
    );
    for bad in [&b""[..], b".", b"a..", b"a b", b"caf\xc3\xa9"] {
        let result = parse(&records(&hello_with(&[sni(bad)]), 512));
        assert!(matches!(result, Err(HelloError::Malformed(_))), "{bad:?}");
    }
}

#[test]
fn what_is_not_a_client_hello_is_refused_with_why() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
    assert_eq!(parse(b"\x16\x02"), Err(HelloError::NotTls));
    // A ServerHello (type 2) where a ClientHello belongs.
    assert_eq!(
        parse(&[HANDSHAKE, 3, 3, 0, 4, 2, 0, 0, 0]),
        Err(HelloError::NotClientHello(2))
    );
    assert!(matches!(
        parse(&[HANDSHAKE, 3, 3, 0x50, 0]),
        Err(HelloError::TooLarge(_))
    ));
    assert_eq!(
        parse(&[HANDSHAKE, 3, 3, 0, 0]),
        Err(HelloError::Malformed("empty handshake record"))
    );
    // An alert record in the middle of a fragmented hello.
    let mut bytes = records(&hello_with(&[sni(b"x.example.com")]), 10);
    bytes.truncate(15);
    bytes.extend([0x15, 3, 3, 0, 2, 2, 40]);
    assert!(matches!(parse(&bytes), Err(HelloError::Malformed(_))));
    // Lengths that point past the message.
    let mut body = hello_with(&[sni(b"x.example.com")]);
    let n = body.len();
    body[n - 1] ^= 0xff;
    body.truncate(n - 3);
    assert!(matches!(
        parse(&records(&body, 512)),
        Err(HelloError::Malformed(_))
    ));
    let twice = hello_with(&[sni(b"a.example.com"), sni(b"b.example.com")]);
    assert_eq!(
        parse(&records(&twice, 512)),
        Err(HelloError::Malformed("an extension appears twice"))
    );
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        HelloError::NotTls.to_string(),
        "not TLS: the first record is not a handshake"
    );
    assert_eq!(
        HelloError::TooLarge(70_000).to_string(),
        "ClientHello of 70000 bytes exceeds the 65536-byte limit"
    );
}
