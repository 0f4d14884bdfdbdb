//! The `[[rule]]` step, on both sides of the pipeline.
//!
//! On the request (`start`, after the gate and before the route and the
//! cache key, as Varnish's `vcl_recv` runs before backend selection): every
//! matching rule in the file's order rewrites the request — cookies, query
//! parameters, headers — and adds its `key_headers` / `key_cookies`, its
//! `pass` and lifetimes; the first matching `redirect` or `respond` ends
//! the request there. What the route, the key, the cookie check and the
//! backend see is the request as rewritten.
//!
//! On the response: `cookies = "strip"` removes `Set-Cookie` before the
//! storability decision (`fetch` in `proxy/mod.rs`), and `response_headers`
//! edit what the client gets at the exit, from the cache or not, so that
//! the stored object keeps the backend's headers. Shellac's own answers
//! (a rule's redirect or respond, the 503, 429…) are not edited, as
//! Varnish's `vcl_synth` is not `vcl_deliver`.
//!
//! With no rules (the default) each side costs one `is_empty` check; a rule
//! allocates only when it actually rewrites something or adds to the key.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};

use super::{headers, Outcome, Proxy, RequestCtx};
use crate::body::Body;
use crate::cache::policy::Lifetimes;
use crate::config::{LocationPart, RuleAnswer, RuleConfig};

/// A set of rule indices (the rules whose `response_headers` apply):
/// the first 64 inline, so a request allocates nothing for it unless a
/// configuration with more rules matches past the 64th.
#[derive(Default)]
pub(crate) struct Matched {
    first: u64,
    more: Vec<u64>,
}

impl Matched {
    fn insert(&mut self, i: usize) {
        if i < 64 {
            self.first |= 1 << i;
            return;
        }
        let word = i / 64 - 1;
        if self.more.len() <= word {
            self.more.resize(word + 1, 0);
        }
        self.more[word] |= 1 << (i % 64);
    }

    fn is_empty(&self) -> bool {
        self.first == 0 && self.more.iter().all(|w| *w == 0)
    }

    fn contains(&self, i: usize) -> bool {
        if i < 64 {
            return self.first & (1 << i) != 0;
        }
        self.more
            .get(i / 64 - 1)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// What the rules decided for the store phase: a copy per request, no
/// allocation.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Effects {
    /// `cookies = "strip"`: `Set-Cookie` goes before the store decision.
    pub(super) strip_set_cookie: bool,
    /// The last matching rule's `ttl`, `grace`, `keep`.
    pub(super) ttl: Option<Duration>,
    pub(super) grace: Option<Duration>,
    pub(super) keep: Option<Duration>,
}

impl Effects {
    /// The rules' `ttl`, `grace` and `keep` over what the response (and the
    /// route) said; grace not for a response that must revalidate, as for
    /// `[[route]] grace`.
    pub(super) fn apply(&self, mut lifetimes: Lifetimes) -> Lifetimes {
        if let Some(ttl) = self.ttl {
            lifetimes.ttl = ttl;
        }
        if let (Some(grace), false) = (self.grace, lifetimes.must_revalidate) {
            lifetimes.grace = grace;
        }
        if let Some(keep) = self.keep {
            lifetimes.keep = keep;
        }
        if self.grace.is_some() || self.keep.is_some() {
            lifetimes.stale_if_error = lifetimes
                .stale_if_error
                .max(lifetimes.grace + lifetimes.keep);
        }
        lifetimes
    }
}

/// An `esi = true` request is answered whole: the page is assembled from
/// fragments that the template's validators and byte ranges do not
/// describe, so its conditions and range go (for the backend too).
fn esi_request(headers: &mut HeaderMap) {
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
    ] {
        headers.remove(name);
    }
}

/// What the request rules leave for the route phase.
#[derive(Default)]
pub(super) struct Applied {
    /// The last matching rule's `pass`.
    pub(super) pass: Option<bool>,
    /// What goes on to the store phase.
    pub(super) effects: Effects,
    /// The values `key_headers` and `key_cookies` add to the cache key;
    /// empty (no allocation) when no matching rule has any.
    pub(super) key_extra: String,
    /// Every cookie left is one named in `key_cookies`: the request may use
    /// the cache (one object per value) despite its `Cookie`.
    pub(super) cookies_keyed: bool,
}

impl Proxy {
    /// Runs every matching `[[rule]]` over `req` in the file's order: the
    /// rewritten request and what the later phases need, or the answer of
    /// the first matching `redirect` / `respond`.
    // Returned at once, never stored (as `Handled`): boxing the answer
    // would cost an allocation for nothing.
    #[allow(clippy::result_large_err)]
    pub(super) fn request_rules<B>(
        &self,
        req: &mut Request<B>,
        ctx: &mut RequestCtx,
    ) -> Result<Applied, Response<Body>> {
        let rules = &self.config.rules;
        let mut applied = Applied::default();
        if rules.is_empty() {
            return Ok(applied);
        }
        let mut keyed = Matched::default();
        for (i, rule) in rules.iter().enumerate() {
            if !matches(rule, req) {
                continue;
            }
            rewrite(rule, req);
            if rule.strip_cookies {
                applied.effects.strip_set_cookie = true;
            }
            if !rule.response_headers.is_empty() {
                ctx.response_rules.insert(i);
            }
            if rule.keys() {
                keyed.insert(i);
            }
            if rule.pass.is_some() {
                applied.pass = rule.pass;
            }
            if rule.esi {
                ctx.esi_rule = true;
                esi_request(req.headers_mut());
            }
            let e = &mut applied.effects;
            e.ttl = rule.ttl.or(e.ttl);
            e.grace = rule.grace.or(e.grace);
            e.keep = rule.keep.or(e.keep);
            if let Some(answer) = &rule.answer {
                ctx.outcome = Outcome::Synth;
                return Err(answer_with(answer, req));
            }
        }
        if !keyed.is_empty() {
            let keying = || rules.iter().enumerate().filter(|(i, _)| keyed.contains(*i));
            applied.key_extra = key_extra(keying().map(|(_, r)| r), req.headers());
            applied.cookies_keyed = req.headers().contains_key(header::COOKIE)
                && cookies(req.headers()).all(|(name, _)| {
                    keying().any(|(_, r)| r.key_cookies.iter().any(|k| k == name))
                });
        }
        Ok(applied)
    }

    /// `response_headers` of the rules that matched the request, on what
    /// the client gets (not on Shellac's own answers).
    pub(super) fn response_rules(&self, ctx: &RequestCtx, headers: &mut HeaderMap) {
        if ctx.response_rules.is_empty() || ctx.outcome == Outcome::Synth {
            return;
        }
        for (i, rule) in self.config.rules.iter().enumerate() {
            if ctx.response_rules.contains(i) {
                let edits = &rule.response_headers;
                for name in &edits.remove {
                    headers.remove(name);
                }
                for (name, value) in &edits.set {
                    headers.insert(name.clone(), value.clone());
                }
            }
        }
    }
}

/// The request's host as sent (the authority of an absolute-form target
/// wins over `Host`, RFC 9112 §3.2.2), as the route phase reads it.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req.headers().get(header::HOST)?.to_str().ok(),
    }
}

/// Whether every match key `rule` gives holds for `req`.
fn matches<B>(rule: &RuleConfig, req: &Request<B>) -> bool {
    let path = req.uri().path();
    rule.methods
        .as_ref()
        .is_none_or(|m| m.contains(req.method()))
        && rule
            .path_prefix
            .as_deref()
            .is_none_or(|prefix| path.starts_with(prefix))
        && rule
            .host
            .as_ref()
            .is_none_or(|pattern| request_host(req).is_some_and(|host| pattern.matches(host)))
        && rule.path_regex.as_ref().is_none_or(|re| re.is_match(path))
}

/// The request-side actions of one matching rule, in this order: cookies,
/// query, then headers (`remove` before `set`).
fn rewrite<B>(rule: &RuleConfig, req: &mut Request<B>) {
    if rule.strip_cookies {
        req.headers_mut().remove(header::COOKIE);
    }
    if let Some(keep) = &rule.cookies_keep {
        keep_cookies(req.headers_mut(), |name| {
            keep.iter().any(|g| g.matches(name))
        });
    }
    if !rule.query_drop.is_empty() || rule.query_sort {
        rewrite_query(rule, req.uri_mut());
    }
    let edits = &rule.request_headers;
    if edits.is_empty() {
        return;
    }
    for name in &edits.remove {
        req.headers_mut().remove(name);
    }
    for (name, value) in &edits.set {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    // A new `Host` must be what the route and the key read: an
    // absolute-form target's authority would win over it.
    if req.headers().contains_key(header::HOST)
        && edits.set.iter().any(|(n, _)| n == header::HOST)
        && req.uri().authority().is_some()
    {
        let target = req.uri().path_and_query().cloned();
        let origin_form = target.unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(origin_form);
    }
}

/// Every `name=value` piece of the request's cookies (HTTP/2 crumbs
/// included), trimmed.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
}

/// A cookie piece's name: what comes before its `=` (all of it without one).
fn cookie_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name).trim()
}

/// Every cookie of the request: `(name, value)`.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    cookie_pairs(headers).map(|pair| {
        let value = pair.split_once('=').map_or("", |(_, value)| value);
        (cookie_name(pair), value.trim())
    })
}

/// Keeps the cookies whose name `keep` accepts, as they were sent, in one
/// `Cookie` header in their order (`a=1; b=2`); none left, no header.
/// Untouched (no allocation) when every cookie stays.
fn keep_cookies(headers: &mut HeaderMap, keep: impl Fn(&str) -> bool) {
    if !headers.contains_key(header::COOKIE)
        || cookie_pairs(headers).all(|pair| keep(cookie_name(pair)))
    {
        return;
    }
    let mut kept = String::new();
    for pair in cookie_pairs(headers).filter(|pair| keep(cookie_name(pair))) {
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    }
    headers.remove(header::COOKIE);
    if let (false, Ok(value)) = (kept.is_empty(), HeaderValue::from_str(&kept)) {
        headers.insert(header::COOKIE, value);
    }
}

/// `query_drop` then `query_sort` on the target; the URI is rebuilt only
/// when that changes it. Parameter names are compared as sent (not
/// percent-decoded); empty pieces (`a=1&&b=2`) go.
fn rewrite_query(rule: &RuleConfig, uri: &mut Uri) {
    let Some(query) = uri.query() else {
        return;
    };
    let dropped = |param: &&str| {
        param.is_empty() || rule.query_drop.iter().any(|g| g.matches(param_name(param)))
    };
    let unsorted = || {
        let mut names = query.split('&').filter(|p| !dropped(p)).map(param_name);
        let Some(mut last) = names.next() else {
            return false;
        };
        names.any(|n| {
            let out_of_order = n < last;
            last = n;
            out_of_order
        })
    };
    let drops = query.split('&').any(|p| dropped(&p));
    if !(drops || rule.query_sort && unsorted()) {
        return;
    }
    let mut params: Vec<&str> = query.split('&').filter(|p| !dropped(p)).collect();
    if rule.query_sort {
        // Stable: parameters of one name keep their order (`a=2&a=1`).
        params.sort_by(|a, b| param_name(a).cmp(param_name(b)));
    }
    let mut target = String::with_capacity(uri.path().len() + query.len() + 1);
    target.push_str(uri.path());
    if !params.is_empty() {
        target.push('?');
        target.push_str(&params.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = PathAndQuery::try_from(target) {
        parts.path_and_query = Some(path_and_query);
        if let Ok(rewritten) = Uri::from_parts(parts) {
            *uri = rewritten;
        }
    }
}

/// A query parameter's name: what comes before its `=`.
fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

/// What `key_headers` and `key_cookies` of the keying rules add to the
/// key, each piece after a NUL (which no URL, header value or cookie
/// holds): `\0h:name=value` (`\0h:name` when absent) and `\0c:name=value`.
fn key_extra<'a>(keying: impl Iterator<Item = &'a RuleConfig>, headers: &HeaderMap) -> String {
    let mut extra = String::new();
    for rule in keying {
        for name in &rule.key_headers {
            extra.push_str("\0h:");
            extra.push_str(name.as_str());
            for (n, value) in headers.get_all(name).iter().enumerate() {
                extra.push(if n == 0 { '=' } else { ',' });
                extra.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
        }
        for name in &rule.key_cookies {
            extra.push_str("\0c:");
            extra.push_str(name);
            if let Some((_, value)) = cookies(headers).find(|(n, _)| n == name) {
                extra.push('=');
                extra.push_str(value);
            }
        }
    }
    extra
}

/// The answer of a `redirect` or `respond` rule.
fn answer_with<B>(answer: &RuleAnswer, req: &Request<B>) -> Response<Body> {
    let mut response = match answer {
        RuleAnswer::Redirect { status, location } => {
            let mut url = String::new();
            for part in location {
                match part {
                    LocationPart::Text(text) => url.push_str(text),
                    LocationPart::Host => {
                        let host = request_host(req).map(crate::host::without_port);
                        url.push_str(&host.unwrap_or("").to_ascii_lowercase());
                    }
                    LocationPart::Path => url.push_str(req.uri().path()),
                    LocationPart::Query => {
                        if let Some(query) = req.uri().query().filter(|q| !q.is_empty()) {
                            url.push('?');
                            url.push_str(query);
                        }
                    }
                }
            }
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = *status;
            // The pieces are a checked template and a parsed URI: always a
            // valid value; should the host not be, the location is not sent.
            if let Ok(value) = HeaderValue::from_str(&url) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            response
        }
        RuleAnswer::Respond {
            status,
            content_type,
            body,
        } => {
            let mut response = Response::new(Body::full(body.clone()));
            *response.status_mut() = *status;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
            response
        }
    };
    response
        .headers_mut()
        .insert(headers::X_CACHE, HeaderValue::from_static("SYNTH"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Glob;

    fn rule(drop: &[&str], sort: bool) -> RuleConfig {
        RuleConfig {
            query_drop: drop.iter().map(|g| Glob::new(g).expect("glob")).collect(),
            query_sort: sort,
            ..RuleConfig::default()
        }
    }

    fn rewritten(rule: &RuleConfig, target: &str) -> String {
        let mut uri: Uri = target.parse().expect("uri");
        rewrite_query(rule, &mut uri);
        uri.to_string()
    }

    #[test]
    fn query_drop_and_sort() {
        let r = rule(&["utm_*", "gclid"], true);
        assert_eq!(rewritten(&r, "/p?id=1"), "/p?id=1");
        assert_eq!(rewritten(&r, "/p?id=1&utm_source=x"), "/p?id=1");
        assert_eq!(rewritten(&r, "/p?utm_campaign=y&id=1"), "/p?id=1");
        assert_eq!(rewritten(&r, "/p?utm_campaign=y"), "/p");
        assert_eq!(rewritten(&r, "/p?b=2&a=1"), "/p?a=1&b=2");
        assert_eq!(rewritten(&r, "/p?b=2&a=2&a=1"), "/p?a=2&a=1&b=2");
        assert_eq!(rewritten(&r, "/p?a&&b=1"), "/p?a&b=1");
        let keep_order = rule(&["x"], false);
        assert_eq!(rewritten(&keep_order, "/p?b=2&x=1&a=1"), "/p?b=2&a=1");
    }

    #[test]
    fn cookies_kept_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("sessionid=1; _ga=x;flag; wp-settings-1=a=b"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("wp-x=2"));
        let keep = |n: &str| n == "sessionid" || n == "flag" || n.starts_with("wp-");
        keep_cookies(&mut headers, keep);
        assert_eq!(
            headers[header::COOKIE],
            "sessionid=1; flag; wp-settings-1=a=b; wp-x=2"
        );
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        keep_cookies(&mut headers, |_| false);
        assert!(!headers.contains_key(header::COOKIE));
    }

    #[test]
    fn matched_sets_grow_past_64() {
        let mut m = Matched::default();
        assert!(m.is_empty());
        m.insert(3);
        m.insert(130);
        assert!(m.contains(3) && m.contains(130) && !m.contains(4) && !m.contains(66));
    }
}
