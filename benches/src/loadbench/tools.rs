//! Cross-checks with well-known load tools: `wrk` (HTTP/1.1) and `h2load` (h2c), run against the
//! direct upstream and each proxy without PROXY protocol, and their output parsed into rows.

use std::time::Duration;

use super::report::Row;

/// Parses a wrk latency like `1.23ms`, `456.78us`, `2.00s`.
fn parse_wrk_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v * scale))
}

/// A row from `wrk --latency` output (wrk reports p50/p75/p90/p99, not p99.9).
pub fn parse_wrk(proxy: &str, variant: &str, out: &str) -> Row {
    let mut row = Row {
        proxy: proxy.into(),
        variant: variant.into(),
        ..Default::default()
    };
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            let mut parts = t.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("50%"), Some(v)) => row.p50 = parse_wrk_duration(v),
                (Some("99%"), Some(v)) => row.p99 = parse_wrk_duration(v),
                (Some(p), Some(_)) if p.ends_with('%') => {}
                _ => in_dist = false,
            }
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            row.rps = v.trim().parse().ok();
        }
        if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            row.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(v) = t.strip_prefix("Socket errors:") {
            row.note = format!("socket errors:{v}");
        }
    }
    if row.rps.is_none() {
        row.note = format!(
            "FAILED: no `Requests/sec` in wrk output: {}",
            out.lines().last().unwrap_or("")
        );
    } else if row.errors > 0 {
        row.note = "non-2xx answers: wrk's rps counts them".into();
    }
    row
}

/// A row from `h2load` output (h2load reports min/max/mean, not percentiles: the mean goes in
/// the note).
pub fn parse_h2load(proxy: &str, variant: &str, out: &str) -> Row {
    let mut row = Row {
        proxy: proxy.into(),
        variant: variant.into(),
        ..Default::default()
    };
    let mut mean = None;
    let mut succeeded = None;
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("finished in") {
            // "finished in 5.00s, 12345.67 req/s, 1.23MB/s"
            row.rps = rest
                .split(',')
                .nth(1)
                .and_then(|f| f.trim().strip_suffix("req/s"))
                .and_then(|v| v.trim().parse().ok());
        }
        if let Some(rest) = t.strip_prefix("status codes:") {
            // "0 2xx, 0 3xx, 12 4xx, 0 5xx"
            for part in rest.split(',') {
                let mut it = part.split_whitespace();
                if let (Some(n), Some(class)) = (it.next(), it.next())
                    && (class == "4xx" || class == "5xx")
                {
                    row.errors += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
        if let Some(rest) = t.strip_prefix("requests:") {
            succeeded = rest
                .split(',')
                .find_map(|p| p.trim().strip_suffix("succeeded"))
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        if let Some(rest) = t.strip_prefix("time for request:") {
            // min max mean sd +/-sd
            mean = rest.split_whitespace().nth(2).and_then(parse_wrk_duration);
        }
    }
    match row.rps {
        None => {
            row.note = format!(
                "FAILED: no `finished in` line in h2load output: {}",
                out.lines().last().unwrap_or("")
            )
        }
        Some(_) => {
            row.note = format!(
                "h2load gives no percentiles; mean {}",
                super::report::fmt_latency(mean)
            );
            if row.errors > 0 {
                row.note.push_str("; non-2xx answers are in its rps");
            }
            if succeeded == Some(0) {
                row.note.push_str("; no request succeeded");
            }
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://127.0.0.1:18080/r00000/items
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  300.00us   9.87ms   80.00%
    Req/Sec    42.10k     1.00k   44.00k    70.00%
  Latency Distribution
     50%    1.48ms
     75%    1.60ms
     90%    1.80ms
     99%    2.50ms
  210000 requests in 5.00s, 240.00MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  42000.50
Transfer/sec:     48.00MB
";

    const H2LOAD: &str = "starting benchmark...
finished in 5.00s, 61234.40 req/s, 70.12MB/s
requests: 306172 total, 306172 started, 306172 done, 306000 succeeded, 172 failed, 0 errored, 0 timeout
status codes: 306000 2xx, 0 3xx, 172 4xx, 0 5xx
time for request:      210us     12.34ms      4.10ms      1.20ms    70.00%
";

    #[test]
    fn wrk_output() {
        let r = parse_wrk("direct", "wrk", WRK);
        assert_eq!(r.rps, Some(42000.5));
        assert_eq!(r.p50, Some(Duration::from_micros(1480)));
        assert_eq!(r.p99, Some(Duration::from_micros(2500)));
        assert_eq!(r.p999, None);
        assert_eq!(r.errors, 12);
        let bad = parse_wrk(
            "direct",
            "wrk",
            "unable to connect to 127.0.0.1:1 Connection refused",
        );
        assert!(bad.note.starts_with("FAILED"));
        assert_eq!(
            parse_wrk_duration("456.78us"),
            Some(Duration::from_secs_f64(456.78e-6))
        );
    }

    #[test]
    fn h2load_output() {
        let r = parse_h2load("envoy", "h2load", H2LOAD);
        assert_eq!(r.rps, Some(61234.4));
        assert_eq!(r.errors, 172);
        assert!(r.note.contains("mean 4100 µs"), "{}", r.note);
        assert!(
            parse_h2load("x", "", "connect error")
                .note
                .starts_with("FAILED")
        );
    }
}
