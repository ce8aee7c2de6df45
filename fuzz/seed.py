#!/usr/bin/env python3
"""Writes the seed corpora of every fuzz target from the inputs our tests use.

Run from anywhere; it writes fuzz/corpus/<target>/seed-*. libFuzzer grows the corpus from
these; `run.sh` merges what it found back (minimized) so the committed corpora stay small.
"""
import base64
import json
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# --- proxy_protocol: one knob byte (header limit, read chunk size), then the wire bytes.
SIG = bytes.fromhex("0d0a0d0a000d0a515549540a")
ID = b"spiffe://cluster.local/ns/default/sa/default"


def v2(cmd, fam, body):
    return SIG + bytes([cmd, fam]) + struct.pack(">H", len(body)) + body


def tlv(kind, value):
    return bytes([kind]) + struct.pack(">H", len(value)) + value


ztunnel = bytes.fromhex(
    "0d0a0d0a000d0a515549540a 21 11 003b 7f000001 7f000001 b762 1f90 d0 002c".replace(" ", "")
) + ID
v4 = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack(">HH", 1234, 80)
v6 = bytes.fromhex("fd00" + "00" * 13 + "01") + bytes.fromhex("fd00" + "00" * 13 + "02") + struct.pack(">HH", 1234, 443)
tlvs = (
    tlv(0xD0, ID)
    + tlv(0xD1, b"cart.shop.svc.cluster.local")
    + tlv(0xE0, b"k8s.namespace.name=shop,k8s.deployment.name=cart")
    + tlv(0xEF, b"\x00\xffvendor")
    + tlv(0x03, b"")
)
proxy = {
    "ztunnel": ztunnel + b"GET / HTTP/1.1\r\n",
    "v4-tlvs": v2(0x21, 0x11, v4 + tlvs),
    "v6-tlvs": v2(0x21, 0x21, v6 + tlvs),
    "local-tlv": v2(0x20, 0x00, tlv(0xEE, b"abc")),
    "local-addrs": v2(0x20, 0x11, v4),
    "unspec-tlv": v2(0x21, 0x00, tlv(0xD0, b"x")),
    "conflicting-id": v2(0x21, 0x11, v4 + tlv(0xD0, ID) + tlv(0xD0, ID + b"x")),
    "bad-host": v2(0x21, 0x11, v4 + tlv(0xD1, b"a..b")),
    "v1-tcp4": b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\nGET",
    "v1-tcp6": b"PROXY TCP6 fd00::1 fd00::2 1 2\r\n",
    "v1-unknown": b"PROXY UNKNOWN\r\n",
    "v1-lf": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "http": b"GET / HTTP/1.1\r\n",
    "tls": b"\x16\x03\x01",
}
for i, (name, wire) in enumerate(proxy.items()):
    write("proxy_protocol", name, bytes([(i * 37) & 0xFF]) + wire)

# --- hbone_connect: "METHOD authority" then "name: value" lines.
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BAGGAGE = "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=cart,service.name=cart,service.version=v2"
hbone = {
    "ztunnel": f"CONNECT 10.0.0.1:80\nbaggage: {BAGGAGE}\nforwarded: for=\"10.1.2.3:4567\";host=cart.shop.svc\ntraceparent: {TP}",
    "v6-unknown": "CONNECT [fd00::7]:8080\nforwarded: for=unknown\ntraceparent: 00-xyz-00f067aa0ba902b7-01",
    "get": "GET 10.0.0.1:80",
    "hostname": "CONNECT cart.shop:80",
    "port0": "CONNECT 10.0.0.1:0",
    "forwarded-forms": "CONNECT 10.0.0.1:80\nforwarded: host=x;FOR=\"10.1.2.3:1\"\nforwarded: for = \"10.1.2.3:2\" ; proto=http\nforwarded: for=\"[fd00::1]\"\nforwarded: host=\"a;b,c\";for=\"10.0.0.3:3\"",
    "forwarded-bad": "CONNECT 10.0.0.1:80\nforwarded: for=fd00::1:80\nforwarded: for=10.1.2.3:99999\nforwarded: for=\"[fd00::1]:80\"x",
    "baggage-many": "CONNECT 10.0.0.1:80\nbaggage: k8s.namespace.name=shop\nbaggage: k8s.pod.name=cart-1;prop=1, cloud.region = eu ,k8s..name=x,%41%zz=%",
    "traceparent-upper": "CONNECT 10.0.0.1:80\ntraceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "traceparent-zero": "CONNECT 10.0.0.1:80\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
}
for name, text in hbone.items():
    write("hbone_connect", name, text)

# --- manifests: the test fixtures and the quickstart, one file each.
for base in ["waypoint-core/tests/fixtures/config", "examples/quickstart"]:
    for dirpath, _, files in os.walk(os.path.join(REPO, base)):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml", ".json")):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    write("manifests", f.replace("/", "_"), fh.read())

# --- jwt: token, newline, JWKS.
def b64(v):
    return base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()


EC = {"kty": "EC", "crv": "P-256", "kid": "ec",
      "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
      "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
JWKS = json.dumps({"keys": [
    EC,
    {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
    dict(EC, kid="enc", use="enc"),
    dict(EC, kid="mislabelled", alg="RS256"),
    {"kty": "RSA", "kid": "broken"},
    {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
    "not a key",
]})
claims = {"iss": "https://issuer.example", "sub": "alice", "aud": ["https://a.example.com/", "b"],
          "azp": "client", "exp": 2000000000, "nbf": 1600000000, "iat": 1600000000}
jwt = {
    "es256": (b64({"alg": "ES256", "kid": "ec", "typ": "JWT"}), b64(claims), "c2ln"),
    "rs256-nokid": (b64({"alg": "RS256"}), b64({"iss": "i", "aud": "b", "exp": 1.5e9}), "c2ln"),
    "hs256": (b64({"alg": "HS256"}), b64(claims), "c2ln"),
    "none": (b64({"alg": "none"}), b64(claims), "c2ln"),
    "eddsa": (b64({"alg": "EdDSA", "kid": "ed"}), b64({"exp": "soon", "nbf": -1}), "c2ln"),
    "array-claims": (b64({"alg": "ES256"}), b64([1, 2]), "c2ln"),
}
for name, parts in jwt.items():
    write("jwt", name, ".".join(parts) + "\n" + JWKS)
write("jwt", "padded", b64({"alg": "ES256"}) + "==." + b64(claims) + "=.sig\n{}")
write("jwt", "two-dots", "a.b\n" + JWKS)

# --- path_normalize: mode byte, then the request target (paths from normalize.rs tests).
paths = [
    "/public/./%61b%63/../x//y?q=%2e", "/a%2Fb//c", "/a/../../b", "/%2e%2E/admin", "/a\\b/..\\c",
    "/x/%00", "*", "/admin/..%2F..%2Fsecret", "/a/b/./c/.", "/..", "/%252e%252e/", "/ä/%C3%A4/..",
    "//a//b/../c?x=/../", "/a%5Cb%5c..%5Cc", "/api/v1/%7Euser/./",
]
for i, p in enumerate(paths):
    for mode in range(4):
        write("path_normalize", f"{i}-{mode}", bytes([mode]) + p.encode())

# --- route_match: pattern, value, prefix, route host, listener host, Host header.
routes = [
    "/v[0-9]+/.*\n/v2/users\n/v2\n*.example.com\n\nA.Example.COM:8080",
    "^/exact$\n/exact\n/\nexample.com\n*.com\nexample.com.",
    "a)|(b\nb\n/abc/\n*.a.example.com\n*.example.com\nx.a.example.com",
    "(?i)foo.*bar\nFOObar\n/abc\na.b\na.b\n[::1]:80",
    "[\n/abcd\n/abc\n*.b-2.com\nb-2.com\nb-2.com:1",
    "\\d{2,}\n12345\n//\n\n\n",
]
for i, r in enumerate(routes):
    write("route_match", str(i), r)

# --- client_hello: TLS records carrying a ClientHello (whole, fragmented, oddities).


def hello_body(extensions, with_block=True):
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00"
    if not with_block:
        return body
    ext = b"".join(struct.pack(">HH", t, len(d)) + d for t, d in extensions)
    return body + struct.pack(">H", len(ext)) + ext


def sni_ext(name):
    entry = b"\x00" + struct.pack(">H", len(name)) + name
    return (0, struct.pack(">H", len(entry)) + entry)


def alpn_ext(protocols):
    lst = b"".join(bytes([len(p)]) + p for p in protocols)
    return (16, struct.pack(">H", len(lst)) + lst)


def tls_records(body, fragment):
    msg = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"".join(
        b"\x16\x03\x01" + struct.pack(">H", len(msg[i:i + fragment])) + msg[i:i + fragment]
        for i in range(0, len(msg), fragment)
    )


hellos = {
    "sni-alpn": tls_records(hello_body([sni_ext(b"echo.example.com"), alpn_ext([b"h2", b"http/1.1"])]), 16384),
    "fragmented": tls_records(hello_body([sni_ext(b"a.b.example.com")]), 9),
    "no-extensions": tls_records(hello_body([], with_block=False), 512),
    "padded": tls_records(hello_body([(0xFFA5, bytes(3000)), sni_ext(b"Big.Example.COM.")]), 1000),
    "two-names": tls_records(hello_body([sni_ext(b"a.example.com"), sni_ext(b"b.example.com")]), 512),
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "server-hello": b"\x16\x03\x03\x00\x04\x02\x00\x00\x00",
}
for name, data in hellos.items():
    write("client_hello", name, data)
