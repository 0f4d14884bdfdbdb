//! RFC 9111 for a shared cache, as pure functions of request head, response
//! head and time: `Cache-Control` parsing, whether a request may use the
//! cache, whether a response may be stored and for how long, and age.
//!
//! No I/O, no clock reads, no moka: everything here is easy to unit-test,
//! bench and fuzz.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
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

/// Statuses RFC 9110 §15.1 calls heuristically cacheable: a response with
/// one of them may get heuristic freshness from `Last-Modified`.
pub fn heuristic_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Error statuses never stored unless `[cache] store_errors = true`: they
/// are how cache-poisoning denial of service works.
pub fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 413 | 414 | 431) || status.is_server_error()
}

/// `Shellac-Cache-Control`: Shellac's own targeted field (RFC 9213).
/// (`HeaderName` constants, not `&str`: a lookup by `&str` parses and
/// validates the name on every call, ≈ 1,000 instructions per miss each.)
pub const SHELLAC_CACHE_CONTROL: HeaderName = HeaderName::from_static("shellac-cache-control");
/// `CDN-Cache-Control` (RFC 9213).
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The directives Shellac obeys for a response: the most specific targeted
/// field present (`Shellac-Cache-Control`, then `CDN-Cache-Control`), else
/// `Cache-Control` (RFC 9213 §2.2: a targeted field, when present, replaces
/// `Cache-Control` entirely for its target).
pub fn response_cache_control(headers: &HeaderMap) -> CacheControl {
    for targeted in [SHELLAC_CACHE_CONTROL, CDN_CACHE_CONTROL] {
        if headers.contains_key(&targeted) {
            return CacheControl::parse_values(headers.get_all(&targeted).iter());
        }
    }
    CacheControl::from_headers(headers)
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

/// Whether a method invalidates what the cache holds for its target when
/// the response is not an error (RFC 9111 §4.4).
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    let unsafe_method = matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    );
    unsafe_method && (status.is_success() || status.is_redirection())
}

/// The cache settings the storage decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct StoreRules {
    /// Freshness for responses that give none and have no `Last-Modified`.
    pub default_ttl: Duration,
    /// The cap on heuristic freshness (10 % of the `Last-Modified` age).
    pub heuristic_max: Duration,
    /// How long a stale object may still be served while it is refreshed.
    pub default_grace: Duration,
    /// How long a stale object is kept beyond grace for revalidation and
    /// stale-if-error.
    pub default_keep: Duration,
    /// Store error statuses when they claim freshness.
    pub store_errors: bool,
}

/// Why a response is not stored (for logs and `Cache-Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// Not a GET.
    Method,
    /// `no-store` in the request.
    RequestNoStore,
    /// `no-store` in the response.
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
    /// No freshness and nothing to revalidate with.
    NotFresh,
    /// A 206 (or any partial response): Shellac stores whole
    /// representations only (RFC 9111 §3.3), so a part is never stored as if
    /// it were the whole.
    Partial,
    /// A body delimited only by the backend closing the connection (no
    /// `Content-Length`, not chunked): a truncated body cannot be told from
    /// a whole one (RFC 9112 §6.3 item 8), so it is never stored.
    CloseDelimited,
}

impl NotStored {
    /// A short name for logs and `Cache-Status` `detail`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::ErrorStatus => "error-status",
            NotStored::Credentials => "credentials",
            NotStored::NotFresh => "not-fresh",
            NotStored::Partial => "partial",
            NotStored::CloseDelimited => "close-delimited",
        }
    }

    /// Whether the response itself (not this request) made it uncacheable,
    /// so that other requests for the key should not queue for it
    /// (hit-for-miss).
    pub fn is_response_decision(self) -> bool {
        !matches!(
            self,
            NotStored::Method | NotStored::RequestNoStore | NotStored::Credentials
        )
    }
}

/// How long a stored object stays usable, decided when it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Freshness lifetime.
    pub ttl: Duration,
    /// After `ttl`: served stale at once while one background fetch refreshes it.
    pub grace: Duration,
    /// After grace: kept for revalidation (conditional fetch) and stale-if-error.
    pub keep: Duration,
    /// After `ttl`: how long it may replace an error (RFC 5861 `stale-if-error`,
    /// at least grace + keep).
    pub stale_if_error: Duration,
    /// `must-revalidate`, `proxy-revalidate` or `no-cache`: never served
    /// stale, and `no-cache` means revalidated on every use.
    pub must_revalidate: bool,
    /// `no-cache`: every use revalidates with the backend first.
    pub no_cache: bool,
}

impl Lifetimes {
    /// How long the store keeps an object past its freshness.
    pub fn retention(&self) -> Duration {
        (self.grace + self.keep).max(self.stale_if_error)
    }
}

/// Whether a response to `method` may be stored, and if so for how long
/// (RFC 9111 §3 and §4.2; RFC 5861; RFC 9213).
pub fn storable(
    method: &Method,
    mode: RequestMode,
    request_cc: &CacheControl,
    status: StatusCode,
    response_headers: &HeaderMap,
    rules: StoreRules,
) -> Result<Lifetimes, NotStored> {
    if method != Method::GET || mode == RequestMode::Pass {
        return Err(NotStored::Method);
    }
    let cc = response_cache_control(response_headers);
    if request_cc.no_store {
        return Err(NotStored::RequestNoStore);
    }
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private && !has_field_list(response_headers, "private") {
        return Err(NotStored::Private);
    }
    if response_headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_star(response_headers) {
        return Err(NotStored::VaryStar);
    }
    if status == StatusCode::PARTIAL_CONTENT || response_headers.contains_key(header::CONTENT_RANGE)
    {
        return Err(NotStored::Partial);
    }
    if is_error_status(status) && !rules.store_errors {
        return Err(NotStored::ErrorStatus);
    }
    if mode == RequestMode::PassMaybeStore
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStored::Credentials);
    }
    let has_validator = response_headers.contains_key(header::ETAG)
        || response_headers.contains_key(header::LAST_MODIFIED);
    let ttl = match explicit_lifetime(&cc, response_headers) {
        Some(lifetime) => lifetime,
        None => match heuristic_lifetime(status, response_headers, rules.heuristic_max) {
            Some(lifetime) => lifetime,
            None if default_ttl_status(status) => rules.default_ttl,
            None => Duration::ZERO,
        },
    };
    let no_cache = cc.no_cache && !has_field_list(response_headers, "no-cache");
    let must_revalidate = cc.must_revalidate || cc.proxy_revalidate || no_cache;
    let ttl = if no_cache { Duration::ZERO } else { ttl };
    let (grace, keep) = if no_cache {
        // Revalidated on every use: kept as long as an object without
        // freshness information would live, so that there is something to
        // revalidate.
        (Duration::ZERO, rules.default_keep.max(rules.default_ttl))
    } else if must_revalidate {
        (Duration::ZERO, rules.default_keep)
    } else if ttl.is_zero() {
        // Never fresh: grace would serve what was never fresh; only keep
        // (revalidation) applies.
        (Duration::ZERO, rules.default_keep)
    } else {
        (
            cc.stale_while_revalidate
                .map_or(rules.default_grace, Duration::from_secs),
            rules.default_keep,
        )
    };
    let stale_if_error = if must_revalidate {
        Duration::ZERO
    } else {
        cc.stale_if_error
            .map_or(Duration::ZERO, Duration::from_secs)
            .max(grace + keep)
    };
    let lifetimes = Lifetimes {
        ttl,
        grace,
        keep,
        stale_if_error,
        must_revalidate,
        no_cache,
    };
    // Something stale can still be revalidated, but only with a validator;
    // without one, an object that is never fresh is never useful.
    let useful = !ttl.is_zero() || (has_validator && !lifetimes.retention().is_zero());
    if !useful {
        return Err(NotStored::NotFresh);
    }
    Ok(lifetimes)
}

/// Whether `directive` appears with a field list (`private="Set-Cookie"`),
/// which restricts the directive to those fields (RFC 9111 §5.2.2.4, §5.2.2.7).
fn has_field_list(headers: &HeaderMap, directive: &str) -> bool {
    field_list(headers, directive).next().is_some()
}

/// The fields named by `no-cache="..."` and `private="..."`: a shared cache
/// stores the response without them.
pub fn qualified_fields<'a>(headers: &'a HeaderMap) -> impl Iterator<Item = String> + 'a {
    field_list(headers, "no-cache").chain(field_list(headers, "private"))
}

fn field_list<'a>(headers: &'a HeaderMap, directive: &'a str) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(directives)
        .filter(move |(name, arg)| {
            name.eq_ignore_ascii_case(directive) && arg.is_some_and(|a| !a.is_empty())
        })
        .flat_map(|(_, arg)| {
            arg.unwrap_or("")
                .split(',')
                .map(|f| f.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|f| !f.is_empty())
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

/// Heuristic freshness (RFC 9111 §4.2.2): 10 % of the time since
/// `Last-Modified`, capped at `max`, for heuristically cacheable statuses only.
pub fn heuristic_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    max: Duration,
) -> Option<Duration> {
    if !heuristic_status(status) {
        return None;
    }
    let modified = headers.get(header::LAST_MODIFIED).and_then(http_date)?;
    let date = headers
        .get(header::DATE)
        .and_then(http_date)
        .unwrap_or_else(SystemTime::now);
    let since = date.duration_since(modified).unwrap_or(Duration::ZERO);
    Some((since / 10).min(max))
}

fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim() == "*")
}

/// What a stored object can do for a request, by its age (RFC 9111 §4.2,
/// §5.2.1; RFC 5861).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usability {
    /// Fresh enough for this request: a hit.
    Fresh,
    /// Stale but the request accepts it (`max-stale`): a hit, no refresh needed.
    StaleAccepted,
    /// Stale within grace: serve it now and refresh it in the background.
    Grace,
    /// Must be fetched (conditionally, when it has a validator) before use.
    Revalidate,
}

/// Decides what a stored object of `age` with `lifetimes` can do for a
/// request with directives `req`.
pub fn usability(lifetimes: &Lifetimes, age: Duration, req: &CacheControl) -> Usability {
    if lifetimes.no_cache || req.no_cache {
        return Usability::Revalidate;
    }
    let ttl = lifetimes.ttl;
    let fresh = ttl > age;
    // The client's own limits: `max-age` (not older than) and `min-fresh`
    // (fresh for at least this much longer). They forbid stale answers too.
    let client_ok = req
        .max_age
        .is_none_or(|max| age <= Duration::from_secs(max))
        && req
            .min_fresh
            .is_none_or(|min| ttl.saturating_sub(age) >= Duration::from_secs(min));
    if fresh && client_ok {
        return Usability::Fresh;
    }
    if lifetimes.must_revalidate || !client_ok {
        return Usability::Revalidate;
    }
    let staleness = age - ttl;
    match req.max_stale {
        Some(None) => Usability::StaleAccepted,
        Some(Some(max)) if staleness <= Duration::from_secs(max) => Usability::StaleAccepted,
        _ if staleness < lifetimes.grace => Usability::Grace,
        _ => Usability::Revalidate,
    }
}

/// Whether a stale object of `age` may replace a failed fetch (RFC 5861 §4).
pub fn usable_on_error(lifetimes: &Lifetimes, age: Duration) -> bool {
    !lifetimes.must_revalidate && age.saturating_sub(lifetimes.ttl) < lifetimes.stale_if_error
}

/// Whether a client's conditional request is satisfied by a stored
/// response, so that a 304 is the answer (RFC 9110 §13.1.1, §13.1.3, §13.2.2):
/// `If-None-Match` by weak comparison; `If-Modified-Since` only without it.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm.trim() == "*"
            || inm
                .split(',')
                .any(|candidate| weak_eq(candidate.trim(), etag.trim()));
    }
    // The request's date first: most requests have none, and parsing the
    // stored `Last-Modified` for nothing cost ~1,100 instructions per hit.
    let Some(since) = request.get(header::IF_MODIFIED_SINCE).and_then(http_date) else {
        return false;
    };
    let Some(modified) = stored.get(header::LAST_MODIFIED).and_then(http_date) else {
        return false;
    };
    modified <= since
}

/// Weak entity-tag comparison: equal opaque tags, `W/` ignored.
pub fn weak_eq(a: &str, b: &str) -> bool {
    let opaque = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_string();
    opaque(a) == opaque(b) && a.ends_with('"') && b.ends_with('"')
}

/// Strong entity-tag comparison: both strong and equal.
pub fn strong_eq(a: &str, b: &str) -> bool {
    !a.starts_with("W/") && !b.starts_with("W/") && a == b && a.ends_with('"')
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
        heuristic_max: Duration::from_secs(3600),
        default_grace: Duration::from_secs(10),
        default_keep: Duration::ZERO,
        store_errors: false,
    };

    fn decide(status: u16, resp: &[(&'static str, &str)]) -> Result<Duration, NotStored> {
        lifetimes(status, resp).map(|l| l.ttl)
    }

    fn lifetimes(status: u16, resp: &[(&'static str, &str)]) -> Result<Lifetimes, NotStored> {
        storable(
            &Method::GET,
            RequestMode::Lookup,
            &CacheControl::default(),
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
        let req_cc = CacheControl::from_headers(&req);
        assert_eq!(
            storable(&Method::GET, mode, &req_cc, status, &plain, RULES),
            Err(NotStored::Credentials)
        );
        assert!(storable(&Method::GET, mode, &req_cc, status, &public, RULES).is_ok());
    }

    #[test]
    fn heuristic_freshness_from_last_modified() {
        let lm = [
            ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
            ("last-modified", "Mon, 23 Nov 2026 09:00:00 GMT"),
        ];
        // 10 % of one hour, which beats default_ttl.
        assert_eq!(decide(200, &lm), Ok(Duration::from_secs(360)));
        // Capped.
        let old = [
            ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
            ("last-modified", "Mon, 02 Nov 2026 10:00:00 GMT"),
        ];
        assert_eq!(decide(200, &old), Ok(Duration::from_secs(3600)));
        // Only for heuristically cacheable statuses; 405 is one, 302 is not.
        assert_eq!(decide(405, &lm), Ok(Duration::from_secs(360)));
        assert_eq!(decide(302, &lm), Err(NotStored::NotFresh));
    }

    #[test]
    fn targeted_fields_win_over_cache_control() {
        let h = headers(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=30"),
        ]);
        assert_eq!(response_cache_control(&h).max_age, Some(30));
        let h = headers(&[
            ("cache-control", "max-age=5"),
            ("cdn-cache-control", "max-age=30"),
            ("shellac-cache-control", "max-age=60"),
        ]);
        assert_eq!(response_cache_control(&h).max_age, Some(60));
        assert_eq!(
            decide(
                200,
                &[
                    ("cache-control", "max-age=5"),
                    ("cdn-cache-control", "no-store")
                ]
            ),
            Err(NotStored::NoStore)
        );
    }

    #[test]
    fn grace_keep_and_revalidation_rules() {
        let l = lifetimes(
            200,
            &[(
                "cache-control",
                "max-age=60, stale-while-revalidate=30, stale-if-error=600",
            )],
        )
        .expect("stored");
        assert_eq!(
            (l.grace, l.stale_if_error),
            (Duration::from_secs(30), Duration::from_secs(600))
        );
        let l =
            lifetimes(200, &[("cache-control", "max-age=60, must-revalidate")]).expect("stored");
        assert!(l.must_revalidate);
        assert_eq!(l.grace, Duration::ZERO);
        let l = lifetimes(200, &[("cache-control", "no-cache"), ("etag", "\"a\"")])
            .expect("stored for revalidation");
        assert!(l.no_cache);
        assert_eq!(
            decide(200, &[("cache-control", "no-cache")]),
            Err(NotStored::NotFresh)
        );
        assert_eq!(
            decide(200, &[("cache-control", "max-age=0")]),
            Err(NotStored::NotFresh)
        );
        // Never fresh and no keep: nothing to serve, nothing worth revalidating.
        assert_eq!(
            decide(200, &[("cache-control", "max-age=0"), ("etag", "\"a\"")]),
            Err(NotStored::NotFresh)
        );
    }

    #[test]
    fn usability_by_age_and_request_directives() {
        let l = lifetimes(200, &[("cache-control", "max-age=60")]).expect("stored");
        let none = CacheControl::default();
        let s = Duration::from_secs;
        assert_eq!(usability(&l, s(10), &none), Usability::Fresh);
        assert_eq!(usability(&l, s(65), &none), Usability::Grace);
        assert_eq!(usability(&l, s(75), &none), Usability::Revalidate);
        assert_eq!(
            usability(&l, s(10), &CacheControl::parse("max-age=5")),
            Usability::Revalidate
        );
        assert_eq!(
            usability(&l, s(10), &CacheControl::parse("no-cache")),
            Usability::Revalidate
        );
        assert_eq!(
            usability(&l, s(55), &CacheControl::parse("min-fresh=10")),
            Usability::Revalidate
        );
        assert_eq!(
            usability(&l, s(90), &CacheControl::parse("max-stale=60")),
            Usability::StaleAccepted
        );
        assert_eq!(
            usability(&l, s(90), &CacheControl::parse("max-stale")),
            Usability::StaleAccepted
        );
        assert!(usable_on_error(&l, s(65)));
        assert!(!usable_on_error(&l, s(75)));
    }

    #[test]
    fn conditional_requests() {
        let stored = headers(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Mon, 23 Nov 2026 09:00:00 GMT"),
        ]);
        assert!(not_modified(
            &headers(&[("if-none-match", "\"v1\"")]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-none-match", "\"x\", W/\"v1\"")]),
            &stored
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Mon, 23 Nov 2026 09:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Mon, 23 Nov 2026 08:00:00 GMT")]),
            &stored
        ));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Mon, 23 Nov 2026 09:00:00 GMT")
            ]),
            &stored
        ));
        assert!(strong_eq("\"a\"", "\"a\""));
        assert!(!strong_eq("W/\"a\"", "W/\"a\""));
    }

    #[test]
    fn initial_age_uses_age_header_and_delay() {
        let now = SystemTime::now();
        let h = headers(&[("age", "30")]);
        let age = initial_age(&h, now - Duration::from_secs(2), now);
        assert_eq!(age, Duration::from_secs(32));
    }
}
