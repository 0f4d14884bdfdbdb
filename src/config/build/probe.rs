//! `[defaults.probe]` and `[backend.probe]`: a backend's active health
//! probe, Varnish style. The backend's own table overrides the defaults' key
//! by key, except that `url` and `request` are one choice: a backend that
//! sets either replaces both, so it never inherits a `request` it did not
//! mean alongside its own `url`.

use crate::config::check::{int_in, positive_duration, span};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawProbe;
use crate::config::ProbeConfig;

/// The probe of the backend at `address`: `own` over `dflt`, or `None` when
/// neither table is there (the backend is then always healthy).
pub(super) fn build(
    dflt: Option<&RawProbe>,
    own: Option<&RawProbe>,
    address: &str,
    loc: &Locator<'_>,
) -> Result<Option<ProbeConfig>, ConfigError> {
    let empty = RawProbe::default();
    let (d, o) = match (dflt, own) {
        (None, None) => return Ok(None),
        (d, o) => (d.unwrap_or(&empty), o.unwrap_or(&empty)),
    };
    let request = request(d, o, address, loc)?;
    let window = int_in(
        either(&o.window, &d.window),
        i64::from(defaults::PROBE_WINDOW),
        1..=i64::from(defaults::PROBE_WINDOW_MAX),
        "a probe window",
        loc,
    )?;
    let threshold = int_in(
        either(&o.threshold, &d.threshold),
        i64::from(defaults::PROBE_THRESHOLD).min(window),
        1..=window,
        "a threshold (at most the window)",
        loc,
    )?;
    let initial = int_in(
        either(&o.initial, &d.initial),
        threshold - 1,
        0..=window,
        "a number of initial successes (at most the window)",
        loc,
    )?;
    let expected_status = int_in(
        either(&o.expected_status, &d.expected_status),
        i64::from(defaults::PROBE_EXPECTED_STATUS),
        100..=599,
        "an HTTP status",
        loc,
    )?;
    Ok(Some(ProbeConfig {
        request,
        interval: positive_duration(
            either(&o.interval, &d.interval),
            defaults::PROBE_INTERVAL,
            loc,
        )?,
        timeout: positive_duration(either(&o.timeout, &d.timeout), defaults::PROBE_TIMEOUT, loc)?,
        // The ranges above make these conversions lossless.
        window: window as u32,
        threshold: threshold as u32,
        initial: initial as u32,
        expected_status: expected_status as u16,
    }))
}

/// The backend's own value when set, else the `[defaults.probe]` one.
fn either<'a, T>(own: &'a Option<T>, dflt: &'a Option<T>) -> Option<&'a T> {
    own.as_ref().or(dflt.as_ref())
}

/// The raw request a probe sends: `request` as written, or built from `url`
/// (the backend's own choice of the two, else the defaults').
fn request(
    d: &RawProbe,
    o: &RawProbe,
    address: &str,
    loc: &Locator<'_>,
) -> Result<String, ConfigError> {
    for table in [d, o] {
        if let (Some(_), Some(request)) = (&table.url, &table.request) {
            return Err(loc.error(
                span(request),
                "expected either `url` or `request` in a probe, found both",
            ));
        }
    }
    // `url` and `request` are one choice: the backend's own wins as a whole.
    let (url, request) = if o.url.is_some() || o.request.is_some() {
        (&o.url, &o.request)
    } else {
        (&d.url, &d.request)
    };
    match (url, request) {
        (_, Some(r)) => {
            let text = r.get_ref();
            let line_ok = text.split_once(' ').is_some_and(|(method, _)| {
                !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase())
            });
            if !line_ok || !text.ends_with("\r\n\r\n") {
                return Err(loc.error(
                    span(r),
                    "expected a whole HTTP/1.1 request such as \"GET /health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\" (ending with an empty line)",
                ));
            }
            Ok(text.clone())
        }
        (Some(u), None) => {
            let text = u.get_ref();
            if !text.starts_with('/') || text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(loc.error(
                    span(u),
                    format!("expected a path starting with \"/\" without spaces or control characters, found {text:?}"),
                ));
            }
            Ok(probe_request(text, address))
        }
        (None, None) => Ok(probe_request(defaults::PROBE_URL, address)),
    }
}

/// The probe request for `url`, as Varnish builds it: HTTP/1.1, the
/// backend's address as `Host`, and `Connection: close`.
fn probe_request(url: &str, address: &str) -> String {
    format!("GET {url} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: shellac-probe\r\n\r\n")
}
