//! `RequestCtx`: what happened to one request, filled in by each phase of
//! `proxy::handle` and read once at its single exit for the metrics, the
//! trace line and the access log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{header, Method, StatusCode, Version};

use crate::config::LogFormat;
use crate::metrics::Finished;
pub use crate::metrics::{Attempt, Outcome};
use crate::peer::ClientAddr;
use crate::reason::Reason;

/// The facts about one request that logs and metrics need.
pub struct RequestCtx {
    /// Request id, shown as `XID` on synthetic pages.
    pub xid: u64,
    /// When Shellac started handling it.
    pub start: Instant,
    /// The client's address: the peer, or the source its PROXY protocol
    /// header named.
    pub client: ClientAddr,
    /// The client's address as believed after `trusted_proxies`.
    pub client_ip: IpAddr,
    /// It arrived over TLS: `https` in its cache key and in
    /// `X-Forwarded-Proto` / `Forwarded` to the backend.
    pub tls: bool,
    /// The method.
    pub method: Method,
    /// How the cache took part.
    pub outcome: Outcome,
    /// The backend fetched from, if any.
    pub backend: Option<Arc<str>>,
    /// Why a fetch failed or a synthetic answer was made.
    pub error: Option<Reason>,
    /// Why a fetched response was not stored.
    pub not_stored: Option<&'static str>,
    /// It waited for another request's fetch of the same key.
    pub collapsed: bool,
    /// Retries made by the fetch phase (sent as `X-Shellac-Retries`).
    pub retries: u32,
    /// Every backend tried, in order.
    pub tried: Vec<Arc<str>>,
    /// The client prefers a JSON error body to HTML.
    pub wants_json: bool,
    /// Every backend request made for it, retries included.
    pub attempts: Vec<Attempt>,
    /// The matching `[[rule]]`s whose `response_headers` apply at the exit.
    pub(crate) response_rules: super::rules::Matched,
    /// For an Upgrade tunnel, once it has ended: bytes from the client to
    /// the backend and from the backend to the client.
    pub tunnel_bytes: Option<(u64, u64)>,
    /// A `101` was relayed: what the tunnel needs, taken at the exit.
    pub(super) tunnel: Option<Box<super::tunnel::Pending>>,
    /// A matching `[[rule]]` has `esi = true`.
    pub(crate) esi_rule: bool,
    /// 0 for a client's request, else the ESI include depth of a
    /// sub-request (`esi.rs`): not rate-limited, not in the access log.
    pub(crate) esi_depth: u32,
}

impl RequestCtx {
    /// A context for a request that just arrived.
    pub fn new(xid: u64, client: ClientAddr, method: Method) -> RequestCtx {
        RequestCtx {
            xid,
            start: Instant::now(),
            client,
            client_ip: client.ip(),
            tls: false,
            method,
            outcome: Outcome::Pass,
            backend: None,
            error: None,
            not_stored: None,
            collapsed: false,
            retries: 0,
            tried: Vec::new(),
            wants_json: false,
            attempts: Vec::new(),
            response_rules: Default::default(),
            tunnel_bytes: None,
            tunnel: None,
            esi_rule: false,
            esi_depth: 0,
        }
    }

    /// What the metrics count of this request, which ended with `status`.
    pub fn finished(&self, status: u16) -> Finished<'_> {
        Finished {
            outcome: self.outcome,
            status,
            duration: self.start.elapsed(),
            reason: self.error,
            collapsed: self.collapsed,
            attempts: &self.attempts,
        }
    }

    /// One trace line per request, at debug level (the access log proper
    /// is `[log] access`).
    pub fn trace(&self, uri: &http::Uri, status: StatusCode) {
        tracing::debug!(
            target: "shellac::access",
            xid = self.xid,
            client = %self.peer_client(),
            method = %self.method,
            url = %uri,
            status = status.as_u16(),
            cache = self.outcome.as_str(),
            backend = self.backend.as_deref().unwrap_or("-"),
            error = self.error.map_or("-", Reason::as_str),
            retries = self.retries,
            tried = %Tried(&self.tried),
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

/// The parts of the request head the access log needs, taken before the
/// request is consumed (only when the access log is on).
pub struct LogHead {
    url: String,
    version: Version,
    referer: Option<String>,
    user_agent: Option<String>,
}

impl LogHead {
    /// Copies what the log line shows.
    pub fn of<B>(req: &http::Request<B>) -> LogHead {
        let text = |name| {
            req.headers()
                .get(name)
                .map(|v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        LogHead {
            url: req.uri().to_string(),
            version: req.version(),
            referer: text(header::REFERER),
            user_agent: text(header::USER_AGENT),
        }
    }
}

impl RequestCtx {
    /// The client as logs show it: the believed address, or `unix:` for a
    /// Unix-socket client that neither a PROXY header nor a trusted
    /// `X-Forwarded-For` gave an address (nginx's `$remote_addr`).
    fn shown_client(&self) -> ShownClient {
        if self.client.is_unix() && self.client_ip == crate::peer::UNIX_IP {
            ShownClient::Unix
        } else {
            ShownClient::Ip(self.client_ip)
        }
    }

    /// The connection's client (the peer, or its PROXY header's source),
    /// before `trusted_proxies`: what the trace line shows.
    fn peer_client(&self) -> ShownClient {
        match self.client {
            ClientAddr::Unix => ShownClient::Unix,
            ip => ShownClient::Ip(ip.ip()),
        }
    }

    /// Time from sending to the response head of the backend request that
    /// answered, if any.
    fn ttfb(&self) -> Option<Duration> {
        self.attempts.last().and_then(|a| a.result.ok())
    }

    /// The access-log line: NCSA combined as varnishncsa writes it, plus the
    /// cache handling, the XID and the duration in seconds; or one JSON object.
    pub fn access_line(
        &self,
        format: LogFormat,
        head: &LogHead,
        status: StatusCode,
        bytes: Option<u64>,
    ) -> String {
        let now = SystemTime::now();
        let duration = self.start.elapsed();
        // A tunnel's bytes are those it moved; its response head had none.
        let bytes = self.tunnel_bytes.map_or(bytes, |(_, down)| Some(down));
        match format {
            LogFormat::Combined => {
                let quote = |v: &Option<String>| v.as_deref().unwrap_or("-").replace('"', "\\\"");
                let mut line = format!(
                    "{client} - - [{time}] \"{method} {url} {version:?}\" {status} {bytes} \"{referer}\" \"{ua}\" {cache} {xid} {secs:.6}",
                    client = self.shown_client(),
                    time = clf_time(now),
                    method = self.method,
                    url = head.url,
                    version = head.version,
                    status = status.as_u16(),
                    bytes = bytes.map_or_else(|| "-".to_string(), |b| b.to_string()),
                    referer = quote(&head.referer),
                    ua = quote(&head.user_agent),
                    cache = self.outcome.as_str(),
                    xid = self.xid,
                    secs = duration.as_secs_f64(),
                );
                if let Some((up, down)) = self.tunnel_bytes {
                    use std::fmt::Write as _;
                    let _ = write!(line, " tunnel={up}/{down}");
                }
                line
            }
            LogFormat::Json => {
                let mut line = serde_json::json!({
                "time": rfc3339(now),
                "xid": self.xid,
                "client": self.shown_client().to_string(),
                "method": self.method.as_str(),
                "url": head.url,
                "status": status.as_u16(),
                "bytes": bytes,
                "duration_ms": duration.as_secs_f64() * 1000.0,
                "cache": self.outcome.as_str(),
                "backend": self.backend.as_deref(),
                "retries": self.retries,
                "ttfb_ms": self.ttfb().map(|d| d.as_secs_f64() * 1000.0),
                "error": self.error.map(Reason::as_str),
                });
                if let Some((up, down)) = self.tunnel_bytes {
                    line["tunnel"] = serde_json::json!({
                        "client_to_backend": up,
                        "backend_to_client": down,
                    });
                }
                line.to_string()
            }
        }
    }
}

/// A client address as logs show it, written without allocating.
enum ShownClient {
    Ip(IpAddr),
    Unix,
}

impl std::fmt::Display for ShownClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShownClient::Ip(ip) => ip.fmt(f),
            ShownClient::Unix => f.write_str("unix:"),
        }
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn split_time(t: SystemTime) -> ((i64, u32, u32), u64, u64, u64, u32) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    (
        civil((secs / 86_400) as i64),
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
        since.subsec_millis(),
    )
}

/// `10/Oct/2000:13:55:36 +0000` (Common Log Format, UTC).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ((y, m, d), hh, mm, ss, _) = split_time(t);
    format!(
        "{d:02}/{}/{y}:{hh:02}:{mm:02}:{ss:02} +0000",
        MONTHS[(m - 1) as usize]
    )
}

/// `2026-11-23T15:20:01.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let ((y, m, d), hh, mm, ss, ms) = split_time(t);
    format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
}

/// The backends tried, comma-separated, for the log line.
struct Tried<'a>(&'a [Arc<str>]);

impl std::fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}
