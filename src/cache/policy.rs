//! RFC 9111 for a shared cache, as pure functions of request head, response
//! head and time: `Cache-Control` parsing, whether a request may use the
//! cache, whether a response may be stored and for how long, and age.
//!
//! No I/O, no clock reads, no moka: everything here is easy to unit-test,
//! bench and fuzz.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

/// The largest delta-seconds value a cache must handle (RFC 9111 §1.2.2):
/// larger or overflowing values are taken as this.
pub const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// The `Cache-Control` directives Shellac acts on, from one or more header lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (with or without a field list).
    pub no_cache: bool,
    /// `private` (with or without a field list).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `immutable`.
    pub immutable: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `only-if-cached` (request).
    pub only_if_cached: bool,
    /// `max-age=N`, seconds.
    pub max_age: Option<u64>,
    /// `s-maxage=N`, seconds.
    pub s_maxage: Option<u64>,
    /// `max-stale` (request): `Some(None)` without a value, i.e. any staleness.
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh=N` (request), seconds.
    pub min_fresh: Option<u64>,
    /// `stale-while-revalidate=N` (RFC 5861), seconds.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861), seconds.
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` line of `headers` as one list.
    pub fn from_headers(headers: &HeaderMap) -> CacheControl {
        Self::parse_values(headers.get_all(header::CACHE_CONTROL).iter())
    }

    /// Parses header values as one comma-separated list (RFC 9110 §5.3).
    ///
    /// Names are case-insensitive; values may be tokens or quoted strings
    /// (commas inside quotes do not split). When a directive with a value
    /// appears twice, the first occurrence wins (RFC 9111 §4.2.1). A
    /// delta-seconds value that is not a number makes the directive mean 0
    /// (stale), the conservative reading; an overflowing one is capped at
    /// [`DELTA_SECONDS_MAX`].
    pub fn parse_values<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in values {
            let Ok(text) = value.to_str() else { continue };
            for (name, arg) in directives(text) {
                cc.apply(name, arg);
            }
        }
        cc
    }

    /// Parses one header value (tests and benches).
    pub fn parse(text: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        for (name, arg) in directives(text) {
            cc.apply(name, arg);
        }
        cc
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        let seconds = |arg: Option<&str>| Some(arg.map_or(0, delta_seconds));
        let eq = |d: &str| name.eq_ignore_ascii_case(d);
        if eq("no-store") {
            self.no_store = true;
        } else if eq("no-cache") {
            self.no_cache = true;
        } else if eq("private") {
            self.private = true;
        } else if eq("public") {
            self.public = true;
        } else if eq("must-revalidate") {
            self.must_revalidate = true;
        } else if eq("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if eq("immutable") {
            self.immutable = true;
        } else if eq("no-transform") {
            self.no_transform = true;
        } else if eq("only-if-cached") {
            self.only_if_cached = true;
        } else if eq("max-age") {
            self.max_age = self.max_age.or_else(|| seconds(arg));
        } else if eq("s-maxage") {
            self.s_maxage = self.s_maxage.or_else(|| seconds(arg));
        } else if eq("max-stale") {
            self.max_stale = self.max_stale.or(Some(arg.map(delta_seconds)));
        } else if eq("min-fresh") {
            self.min_fresh = self.min_fresh.or_else(|| seconds(arg));
        } else if eq("stale-while-revalidate") {
            self.stale_while_revalidate = self.stale_while_revalidate.or_else(|| seconds(arg));
        } else if eq("stale-if-error") {
            self.stale_if_error = self.stale_if_error.or_else(|| seconds(arg));
        }
        // Unknown directives are ignored (RFC 9111 §5.2.3).
    }
}

/// Splits a Cache-Control value into (name, argument) pairs, honouring
/// quoted strings and their backslash escapes.
fn directives(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            return None;
        }
        // Find the end of this directive: the next comma outside quotes.
        let bytes = rest.as_bytes();
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = bytes.len();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if in_quotes => escaped = true,
                b'"' => in_quotes = !in_quotes,
                b',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let item = &rest[..end];
        rest = &rest[end..];
        let (name, arg) = match item.split_once('=') {
            Some((n, a)) => {
                let a = a.trim();
                let a = a
                    .strip_prefix('"')
                    .and_then(|a| a.strip_suffix('"'))
                    .unwrap_or(a);
                (n.trim(), Some(a))
            }
            None => (item.trim(), None),
        };
        if !name.is_empty() {
            return Some((name, arg));
        }
    })
}

/// delta-seconds (RFC 9111 §1.2.2): digits only; anything else reads as 0.
fn delta_seconds(text: &str) -> u64 {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    text.parse::<u64>()
        .map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX))
}

/// Statuses the cache may store with `default_ttl` when the response gives no
/// freshness of its own, as Varnish's builtin rules do.
pub fn default_ttl_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 410
    )
}

/// Error statuses never stored unless `[cache] store_errors = true`: they
/// are how cache-poisoning denial of service works.
pub fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 413 | 414 | 431) || status.is_server_error()
}

/// How a request meets the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestMode {
    /// Look it up; store the response when it allows.
    Lookup,
    /// Do not look up; the response may still be stored when it says it is
    /// shareable (`public`, `s-maxage`): requests with `Authorization` or `Cookie`.
    PassMaybeStore,
    /// Do not look up, do not store: unsafe or unusual methods.
    Pass,
}

/// Whether a request may be answered from the cache.
pub fn request_mode(method: &Method, headers: &HeaderMap) -> RequestMode {
    if method != Method::GET && method != Method::HEAD {
        return RequestMode::Pass;
    }
    if headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE) {
        return RequestMode::PassMaybeStore;
    }
    RequestMode::Lookup
}

/// The cache settings the storage decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct StoreRules {
    /// Freshness for responses that give none.
    pub default_ttl: Duration,
    /// Store error statuses when they claim freshness.
    pub store_errors: bool,
}

/// Why a response is not stored (for logs and `Cache-Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// Not a GET.
    Method,
    /// `no-store` in the request or response.
    NoStore,
    /// `private`.
    Private,
    /// `Set-Cookie`.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
    /// An error status and `store_errors` is off.
    ErrorStatus,
    /// A request with credentials and a response that is not explicitly shareable.
    Credentials,
    /// `no-cache` (revalidation on every use is not supported yet).
    NoCache,
    /// No freshness (explicit zero, or no rule gives it any).
    NotFresh,
}

impl NotStored {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::ErrorStatus => "error-status",
            NotStored::Credentials => "credentials",
            NotStored::NoCache => "no-cache",
            NotStored::NotFresh => "not-fresh",
        }
    }
}

/// Whether a response to `method` may be stored, and if so its freshness
/// lifetime (RFC 9111 §3 and §4.2.1).
pub fn storable(
    method: &Method,
    mode: RequestMode,
    request_headers: &HeaderMap,
    status: StatusCode,
    response_headers: &HeaderMap,
    rules: StoreRules,
) -> Result<Duration, NotStored> {
    if method != Method::GET || mode == RequestMode::Pass {
        return Err(NotStored::Method);
    }
    let req_cc = CacheControl::from_headers(request_headers);
    let cc = CacheControl::from_headers(response_headers);
    if req_cc.no_store || cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if response_headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_star(response_headers) {
        return Err(NotStored::VaryStar);
    }
    if is_error_status(status) && !rules.store_errors {
        return Err(NotStored::ErrorStatus);
    }
    if mode == RequestMode::PassMaybeStore
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStored::Credentials);
    }
    if cc.no_cache {
        return Err(NotStored::NoCache);
    }
    let lifetime = match explicit_lifetime(&cc, response_headers) {
        Some(lifetime) => lifetime,
        None if default_ttl_status(status) => rules.default_ttl,
        None => Duration::ZERO,
    };
    if lifetime.is_zero() {
        return Err(NotStored::NotFresh);
    }
    Ok(lifetime)
}

/// The freshness lifetime the response states itself: `s-maxage`, then
/// `max-age`, then `Expires` − `Date` (RFC 9111 §4.2.1). An `Expires` that
/// cannot be parsed means already stale.
pub fn explicit_lifetime(cc: &CacheControl, headers: &HeaderMap) -> Option<Duration> {
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(s));
    }
    let expires = headers.get(header::EXPIRES)?;
    let Some(expires) = http_date(expires) else {
        return Some(Duration::ZERO);
    };
    let date = headers
        .get(header::DATE)
        .and_then(http_date)
        .unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim() == "*")
}

/// Parses an HTTP-date (RFC 9110 §5.6.7), any of the three forms.
pub fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The age a response already had when it arrived (RFC 9111 §4.2.3):
/// the larger of its apparent age (`response_time − Date`) and its `Age`
/// header plus the time the request took.
pub fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent = headers
        .get(header::DATE)
        .and_then(http_date)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let age_value = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .map_or(0, delta_seconds);
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent.max(Duration::from_secs(age_value) + delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("valid header"));
        }
        map
    }

    #[test]
    fn parses_case_quotes_and_duplicates() {
        let cc = CacheControl::parse("Public, MAX-AGE=\"60\", max-age=5, s-maxage=10");
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(10));
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        let cc = CacheControl::parse("private=\"set-cookie, x-a\", max-age=3");
        assert!(cc.private);
        assert_eq!(cc.max_age, Some(3));
        let cc = CacheControl::parse("no-cache=\"a\\\", b\", no-store");
        assert!(cc.no_cache && cc.no_store);
    }

    #[test]
    fn odd_inputs() {
        assert_eq!(CacheControl::parse(""), CacheControl::default());
        assert_eq!(CacheControl::parse(",,, ,"), CacheControl::default());
        assert_eq!(CacheControl::parse("max-age=abc").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age=-1").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age").max_age, Some(0));
        assert_eq!(
            CacheControl::parse("max-age=99999999999999999999").max_age,
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(CacheControl::parse("max-stale").max_stale, Some(None));
        assert_eq!(CacheControl::parse("max-stale=5").max_stale, Some(Some(5)));
        assert!(CacheControl::parse("  no-store  ").no_store);
        assert!(!CacheControl::parse("no-storex").no_store);
    }

    #[test]
    fn several_header_lines_form_one_list() {
        let h = headers(&[("cache-control", "public"), ("cache-control", "max-age=7")]);
        let cc = CacheControl::from_headers(&h);
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(7));
    }

    const RULES: StoreRules = StoreRules {
        default_ttl: Duration::from_secs(120),
        store_errors: false,
    };

    fn decide(status: u16, resp: &[(&'static str, &str)]) -> Result<Duration, NotStored> {
        storable(
            &Method::GET,
            RequestMode::Lookup,
            &HeaderMap::new(),
            StatusCode::from_u16(status).expect("status"),
            &headers(resp),
            RULES,
        )
    }

    #[test]
    fn freshness_order_and_defaults() {
        assert_eq!(
            decide(200, &[("cache-control", "max-age=5, s-maxage=9")]),
            Ok(Duration::from_secs(9))
        );
        assert_eq!(decide(200, &[]), Ok(Duration::from_secs(120)));
        assert_eq!(decide(302, &[]), Err(NotStored::NotFresh));
        assert_eq!(
            decide(302, &[("cache-control", "max-age=5")]),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            decide(200, &[("expires", "garbage")]),
            Err(NotStored::NotFresh)
        );
        assert_eq!(
            decide(
                200,
                &[
                    ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
                    ("expires", "Mon, 23 Nov 2026 10:01:00 GMT")
                ]
            ),
            Ok(Duration::from_secs(60))
        );
    }

    #[test]
    fn never_stored() {
        assert_eq!(
            decide(200, &[("cache-control", "no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            decide(200, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            decide(200, &[("set-cookie", "a=b")]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            decide(503, &[("cache-control", "max-age=60")]),
            Err(NotStored::ErrorStatus)
        );
        assert_eq!(
            decide(400, &[("cache-control", "max-age=60")]),
            Err(NotStored::ErrorStatus)
        );
        assert_eq!(
            decide(200, &[("vary", "Accept, *")]),
            Err(NotStored::VaryStar)
        );
    }

    #[test]
    fn credentials_need_an_explicit_share() {
        let req = headers(&[("authorization", "Bearer x")]);
        let mode = request_mode(&Method::GET, &req);
        assert_eq!(mode, RequestMode::PassMaybeStore);
        let status = StatusCode::OK;
        let plain = headers(&[("cache-control", "max-age=60")]);
        let public = headers(&[("cache-control", "public, max-age=60")]);
        assert_eq!(
            storable(&Method::GET, mode, &req, status, &plain, RULES),
            Err(NotStored::Credentials)
        );
        assert!(storable(&Method::GET, mode, &req, status, &public, RULES).is_ok());
    }

    #[test]
    fn initial_age_uses_age_header_and_delay() {
        let now = SystemTime::now();
        let h = headers(&[("age", "30")]);
        let age = initial_age(&h, now - Duration::from_secs(2), now);
        assert_eq!(age, Duration::from_secs(32));
    }
}
