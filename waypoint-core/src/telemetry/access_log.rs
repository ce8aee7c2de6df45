//! Access logs: one line per request, JSON by default, written off the request path.
//!
//! The request path formats the line and hands it to a bounded channel; a dedicated thread
//! writes it (stdout by default). When the writer falls behind and the channel is full, the line
//! is dropped and `waypoint_access_log_dropped_total` counts it: a slow log never slows traffic.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// The line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// An Envoy-like text line: `[time] "METHOD PATH PROTOCOL" code flags rx tx ms ...`.
    Text,
}

/// How access logs are written.
pub struct AccessLogOptions {
    /// The line format.
    pub format: AccessLogFormat,
    /// The fraction of requests logged, `0.0..=1.0` (values outside are clamped).
    pub sample: f64,
    /// Where lines go; written by a dedicated thread.
    pub writer: Box<dyn Write + Send>,
    /// Lines waiting to be written before new ones are dropped.
    pub buffer: usize,
}

impl Default for AccessLogOptions {
    /// JSON, every request, to stdout, 4096 lines of buffer.
    fn default() -> Self {
        AccessLogOptions {
            format: AccessLogFormat::Json,
            sample: 1.0,
            writer: Box::new(io::stdout()),
            buffer: 4096,
        }
    }
}

impl fmt::Debug for AccessLogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLogOptions")
            .field("format", &self.format)
            .field("sample", &self.sample)
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

/// Longest path logged, in bytes; longer paths are cut at a character boundary.
pub(crate) const MAX_PATH_LEN: usize = 1024;

/// Everything one access log line says about a request.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct AccessLogEntry {
    /// When the request head arrived (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "ser_time")]
    pub start_time: SystemTime,
    /// The peer's SPIFFE URI, when proven.
    pub source_principal: Option<String>,
    /// The source address.
    pub source_address: Option<SocketAddr>,
    /// The original destination the client dialled.
    pub destination_address: Option<SocketAddr>,
    /// The Service the request went to (`name.ns.svc.cluster.local`).
    pub destination_service: Option<String>,
    /// The request method.
    pub method: String,
    /// The request authority (`:authority` or `Host`).
    pub authority: Option<String>,
    /// The request path and query, cut at [`MAX_PATH_LEN`] bytes.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'static str,
    /// The status sent downstream.
    pub response_code: u16,
    /// `-` or the Envoy-style flags joined by commas.
    pub response_flags: String,
    /// The endpoint the request was sent to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<SocketAddr>,
    /// Request body bytes received.
    pub bytes_received: u64,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// From the request head to the end of the response, in milliseconds.
    pub duration_ms: u64,
    /// The W3C trace id (32 hex digits).
    pub trace_id: String,
    /// The route rule that matched: `namespace/name#rule`.
    pub route: Option<String>,
    /// The authorization decision: `allow` or `deny`, when a policy filter ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<&'static str>,
    /// The policy and rule that decided: `Kind namespace/name#rule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_policy: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_millis(*t))
}

impl AccessLogEntry {
    /// The entry as one JSON line (no trailing newline).
    pub(crate) fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail; an empty object is the safe answer
        // if it ever did.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The entry as one text line (no trailing newline). Quoted fields are escaped so a value
    /// cannot forge a line.
    pub(crate) fn to_text(&self) -> String {
        let mut s = String::with_capacity(256);
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let _ = write!(
            s,
            "[{}] \"{} {} {}\" {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} \"{}\"",
            rfc3339_millis(self.start_time),
            escape(&self.method),
            escape(&self.path),
            self.protocol,
            self.response_code,
            self.response_flags,
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            escape(&dash(self.authority.clone())),
            dash(self.upstream_host.map(|a| a.to_string())),
            dash(self.source_address.map(|a| a.to_string())),
            dash(self.destination_address.map(|a| a.to_string())),
            escape(&dash(self.source_principal.clone())),
            escape(&dash(self.destination_service.clone())),
            escape(&dash(self.route.clone())),
            self.trace_id,
            self.authz.unwrap_or("-"),
            escape(&dash(self.authz_policy.clone())),
        );
        s
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Formats `t` as RFC 3339 in UTC with milliseconds: `2026-08-01T12:34:56.789Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (era arithmetic: 400-year eras of
/// 146097 days, with years starting in March so the leap day falls last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Hands access log lines to the writer thread.
#[derive(Debug)]
pub(crate) struct AccessLogger {
    tx: mpsc::Sender<String>,
    format: AccessLogFormat,
    sample: f64,
    dropped: Counter,
}

impl AccessLogger {
    /// Starts the writer thread. `dropped` counts lines lost to a full buffer. The thread ends
    /// once every line is written after the logger is dropped.
    pub(crate) fn start(opts: AccessLogOptions, dropped: Counter) -> io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<String>(opts.buffer.max(1));
        let mut writer = opts.writer;
        std::thread::Builder::new()
            .name("waypoint-access-log".to_owned())
            .spawn(move || {
                let mut failing = false;
                while let Some(line) = rx.blocking_recv() {
                    let mut res = writer.write_all(line.as_bytes());
                    // Write what is already queued before flushing: one flush per burst.
                    while let Ok(line) = rx.try_recv() {
                        res = res.and_then(|()| writer.write_all(line.as_bytes()));
                    }
                    res = res.and_then(|()| writer.flush());
                    match res {
                        Err(err) if !failing => {
                            tracing::warn!(error = %err, "access log write failed");
                            failing = true;
                        }
                        Err(_) => {}
                        Ok(()) => failing = false,
                    }
                }
            })?;
        Ok(AccessLogger {
            tx,
            format: opts.format,
            sample: opts.sample.clamp(0.0, 1.0),
            dropped,
        })
    }

    /// Whether this request is logged (decided before the entry is built, to save the work).
    pub(crate) fn sampled(&self) -> bool {
        self.sample >= 1.0 || (self.sample > 0.0 && fastrand::f64() < self.sample)
    }

    /// Queues the line for `entry`, or drops and counts it when the buffer is full.
    pub(crate) fn log(&self, entry: &AccessLogEntry) {
        let mut line = match self.format {
            AccessLogFormat::Json => entry.to_json(),
            AccessLogFormat::Text => entry.to_text(),
        };
        line.push('\n');
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let t = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339_millis(t(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(t(951_782_400, 5)),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            rfc3339_millis(t(1_785_587_696, 789)),
            "2026-08-01T12:34:56.789Z"
        );
        assert_eq!(
            rfc3339_millis(t(4_107_542_399, 999)),
            "2100-02-28T23:59:59.999Z"
        );
    }

    #[test]
    fn text_escapes_quotes_and_controls() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\x0ad");
        assert_eq!(truncate("ééé", 3), "é");
    }
}
