//! Unit tests of the echo backend's parsing helpers (loopback tests are in tests/echo.rs).

use super::*;

#[test]
fn durations_as_go_parses_them() {
    let ok = |s: &str| parse_duration(s).unwrap();
    assert_eq!(ok("250ms"), Duration::from_millis(250));
    assert_eq!(ok("1.5s"), Duration::from_millis(1500));
    assert_eq!(ok("1m30s"), Duration::from_secs(90));
    assert_eq!(ok("2h"), Duration::from_secs(7200));
    assert_eq!(ok("10us"), Duration::from_micros(10));
    assert_eq!(ok("0"), Duration::ZERO);
    assert_eq!(ok("-1s"), Duration::ZERO);
    for bad in ["", "soon", "10", "1x", "s", "1e400h", "--1s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert!(parse_duration("10").unwrap_err().contains("missing unit"));
}

#[test]
fn query_values() {
    let q = "uuid=a%2Fb&succeedAfter=2&x&empty=&uuid=second&sp=a+b";
    assert_eq!(query_value(q, "uuid").as_deref(), Some("a/b"));
    assert_eq!(query_value(q, "succeedAfter").as_deref(), Some("2"));
    assert_eq!(query_value(q, "x").as_deref(), Some(""));
    assert_eq!(query_value(q, "empty").as_deref(), Some(""));
    assert_eq!(query_value(q, "sp").as_deref(), Some("a b"));
    assert_eq!(query_value(q, "missing"), None);
    assert_eq!(url_decode("100%"), "100%");
    assert_eq!(url_decode("%zz%41"), "%zzA");
}

#[test]
fn status_paths() {
    let code = |target: &str| {
        let req = Request::builder().uri(target).body(()).unwrap();
        status(&req).status().as_u16()
    };
    assert_eq!(code("/status/503"), 503);
    assert_eq!(code("/status/999"), 999);
    assert_eq!(code("/status/101"), 200);
    assert_eq!(code("/status/050"), 400);
    assert_eq!(code("/status/5030"), 400);
    assert_eq!(code("/status/50"), 400);
    assert_eq!(code("/status/503?x=1"), 400);
    assert_eq!(code("/status/abc"), 400);
}

#[test]
fn echo_set_header() {
    let req = Request::builder()
        .header("x-echo-set-header", "X-Foo: one, X-Bar:two")
        .header("x-echo-set-header", "x-foo:three,bad name:x,")
        .body(())
        .unwrap();
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    set_echo_headers(&req, &mut resp);
    assert_eq!(resp.headers()["x-foo"], "one,three");
    assert_eq!(resp.headers()["x-bar"], "two");
    assert_eq!(resp.headers().len(), 2);
}

#[test]
fn names_protos_and_hosts() {
    assert_eq!(canonical("x-echo-set-header"), "X-Echo-Set-Header");
    assert_eq!(proto(Version::HTTP_2), "HTTP/2.0");
    assert_eq!(proto(Version::HTTP_11), "HTTP/1.1");
    assert_eq!(proto(Version::HTTP_10), "HTTP/1.0");
    let h2 = Request::builder()
        .version(Version::HTTP_2)
        .uri("http://authority.example/x")
        .header("host", "header.example")
        .body(())
        .unwrap();
    assert_eq!(host(&h2), "authority.example");
    let h1 = Request::builder()
        .uri("/x")
        .header("host", "header.example")
        .body(())
        .unwrap();
    assert_eq!(host(&h1), "header.example");
    // Go's server ignores Host when an HTTP/1.1 target is in absolute form.
    let absolute = Request::builder()
        .uri("http://target.example:81/x")
        .header("host", "header.example")
        .body(())
        .unwrap();
    assert_eq!(host(&absolute), "target.example:81");
}
