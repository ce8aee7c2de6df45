//! An echo backend that answers like the Gateway API conformance echo server: a JSON body
//! describing the request it received, so a person or a test can see what the waypoint sent.
//!
//! Supported: `?delay=<duration>` (e.g. `500ms`, `2s`) waits before answering; `/status/NNN`
//! answers that status; request header `X-Echo-Set-Header: Name:Val,Name2:Val2` becomes response
//! headers. HTTP/1.1 and h2c are both served on the same port.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Who the echo backend says it is (the conformance tests look at `pod` to tell backends apart).
#[derive(Clone, Debug, Default)]
pub struct EchoIdentity {
    /// Reported as `pod`.
    pub pod: String,
    /// Reported as `namespace`.
    pub namespace: String,
    /// Reported as `service`.
    pub service: String,
}

/// Serves the echo backend on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, identity: EchoIdentity) {
    let identity = std::sync::Arc::new(identity);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let identity = identity.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(answer(req, &identity).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` and serves the echo backend on it in a background task; returns the bound
/// address.
pub async fn spawn(addr: SocketAddr, identity: EchoIdentity) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, identity));
    Ok(local)
}

async fn answer(req: Request<Incoming>, identity: &EchoIdentity) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    // Drain the request body so the client's upload completes; its size is reported.
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let query = parts.uri.query().unwrap_or_default();
    if let Some(delay) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay="))
        .and_then(parse_delay)
    {
        tokio::time::sleep(delay).await;
    }
    let status = parts
        .uri
        .path()
        .strip_prefix("/status/")
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);

    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let name = canonical(name.as_str());
        headers
            .entry(name)
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let json = serde_json::json!({
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "host": host,
        "method": parts.method.as_str(),
        "proto": format!("{:?}", parts.version),
        "headers": headers,
        "namespace": identity.namespace,
        "ingress": "",
        "service": identity.service,
        "pod": identity.pod,
        "bodyLength": body_len,
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(set) = parts
        .headers
        .get("x-echo-set-header")
        .and_then(|v| v.to_str().ok())
    {
        for pair in set.split(',') {
            if let Some((name, value)) = pair.split_once(':')
                && let (Ok(name), Ok(value)) = (
                    HeaderName::try_from(name.trim()),
                    HeaderValue::try_from(value.trim()),
                )
            {
                resp.headers_mut().append(name, value);
            }
        }
    }
    resp
}

/// `X-Forwarded-For` style capitalisation, as Go's echo server reports header names.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn parse_delay(value: &str) -> Option<Duration> {
    if let Some(ms) = value.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(s) = value.strip_suffix('s') {
        return s
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_and_names() {
        assert_eq!(parse_delay("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_delay("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_delay("-1s"), None);
        assert_eq!(parse_delay("soon"), None);
        assert_eq!(canonical("x-echo-set-header"), "X-Echo-Set-Header");
    }
}
