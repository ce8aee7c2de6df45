//! The TLS ClientHello decoder that TLS passthrough routes by.
//!
//! Properties, beyond "never panics":
//! - a hello decoded from some bytes decodes the same from any longer input (it never depends
//!   on what follows it);
//! - every prefix of those bytes either needs more or is already that same hello: a client
//!   whose hello arrives in pieces is never refused for how it was cut;
//! - a server name is lowercase printable ASCII without a trailing dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypoint_core::wire::client_hello::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(hello)) = parse(data) else {
        return;
    };
    if let Some(name) = &hello.server_name {
        assert!(!name.is_empty() && !name.ends_with('.'));
        assert!(name.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()));
    }
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"\x17\x03\x03\x00\x01x");
    assert_eq!(parse(&longer), Ok(Some(hello.clone())));
    // Cut points spread over the input, both ends included.
    let step = (data.len() / 64).max(1);
    for cut in (0..data.len()).step_by(step).chain([data.len().saturating_sub(1)]) {
        match parse(&data[..cut]) {
            Ok(None) => {}
            Ok(Some(h)) => assert_eq!(h, hello, "prefix of {cut} bytes"),
            Err(e) => panic!("prefix of {cut} bytes refused ({e}) though the whole is a hello"),
        }
    }
});
