//! Invalidation requests from clients: plain `PURGE` (every variant of one
//! URL), and the purge protocols of the applications that ship a Varnish
//! integration, each turned on by its name in `[cache] invalidation`:
//!
//! | protocol | request | effect | answer |
//! |---|---|---|---|
//! | `magento2` | `PURGE` + `X-Magento-Tags-Pattern: <regex>` and/or `X-Pool: <regex>` | ban objects whose `X-Magento-Tags` / `X-Pool` matches | `200 Purged`; neither header: `400` |
//! | `wordpress` | `PURGE /path` + `X-Purge-Method: regex` | ban paths matching `/path` on the request's host | `200 Purged` |
//! | `wordpress` | `PURGE /path` (+ `X-Purge-Method: default`) | purge the URL | `200 Purged` |
//! | `drupal` | `BAN` + `Purge-Cache-Tags` or `Cache-Tags: t1 t2` | ban objects listing any tag in `Purge-Cache-Tags` or `Cache-Tags` | `200 Ban added.` |
//! | `drupal` | `BAN /regex` without tags | ban paths matching on the host | `200 Ban added.` |
//! | `xkey` | `PURGE` + `xkey-purge: k1 k2` | ban objects whose `xkey` lists any key | `200 Purged` |
//! | `xkey` | `PURGE` + `xkey-softpurge: k1 k2` | the same objects become stale (grace, revalidation) | `200 Purged` |
//!
//! Every one is refused as plain `PURGE` is (405 with an empty
//! `purge_allow`, 403 from outside it), goes to the other nodes through
//! the `[cache.l2]` fan-out (`Cache::purge`, `Cache::ban`), and is counted
//! in `shellac_invalidations{protocol}`. Bans are the lazy ones of
//! `cache/ban.rs`: tested against an object's stored headers when a lookup
//! finds it, and by the lurker in the background, never by a walk of the
//! store on the request.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use regex::Regex;

use super::{Exchange, Outcome, Proxy, RequestCtx};
use crate::body::Body;
use crate::cache::{BanMatcher, CacheKey};
use crate::config::Invalidation;
use crate::reason::Reason;
use crate::synth::Synthetic;

/// Magento's tag header (response) and pattern header (request).
const X_MAGENTO_TAGS: HeaderName = HeaderName::from_static("x-magento-tags");
const X_MAGENTO_TAGS_PATTERN: HeaderName = HeaderName::from_static("x-magento-tags-pattern");
/// Magento's debug header, hidden from clients as its VCL does.
const X_MAGENTO_DEBUG: HeaderName = HeaderName::from_static("x-magento-debug");
/// capistrano-magento2's deploy pool, on responses and in purges alike.
const X_POOL: HeaderName = HeaderName::from_static("x-pool");
/// WordPress purge plugins: `regex` or `default`.
const X_PURGE_METHOD: HeaderName = HeaderName::from_static("x-purge-method");
/// Drupal's tag headers (request and response alike).
const PURGE_CACHE_TAGS: HeaderName = HeaderName::from_static("purge-cache-tags");
const CACHE_TAGS: HeaderName = HeaderName::from_static("cache-tags");
/// vmod_xkey's response header and request headers.
const XKEY: HeaderName = HeaderName::from_static("xkey");
const XKEY_PURGE: HeaderName = HeaderName::from_static("xkey-purge");
const XKEY_SOFTPURGE: HeaderName = HeaderName::from_static("xkey-softpurge");

/// What an accepted invalidation does.
#[derive(Debug)]
enum Action {
    /// Remove every variant of the request's URL.
    Purge,
    /// Add these bans.
    Ban(Vec<BanMatcher>),
}

/// An accepted invalidation: its protocol (the metric label), what it
/// does, and the body its application's VCL answers with.
#[derive(Debug)]
struct Plan {
    protocol: &'static str,
    action: Action,
    body: &'static str,
}

impl Proxy {
    /// The answer to `req` when it is an invalidation: `PURGE`, or `BAN`
    /// with `drupal` on; `None` for any other request.
    pub(super) fn invalidation<B>(
        &self,
        ctx: &mut RequestCtx,
        req: &Request<B>,
        exchange: &Exchange,
    ) -> Option<Response<Body>> {
        let on = self.config.cache.invalidation;
        let ban = is_drupal_ban(on, req.method().as_str());
        if req.method().as_str() != "PURGE" && !ban {
            return None;
        }
        if let Some(refusal) = self.purge_refusal(ctx) {
            return Some(refusal);
        }
        let host = crate::host::for_key(exchange.host.as_deref());
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let plan = if ban {
            drupal(req.headers(), &host, target)
        } else {
            purge(on, req.headers(), &host, target)
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(reason) => {
                let refusal = Synthetic::refuse(StatusCode::BAD_REQUEST, reason);
                return Some(self.synthetic(ctx, refusal));
            }
        };
        Some(self.apply(ctx, &exchange.key, plan))
    }

    /// 405 while `[cache] purge_allow` is empty, 403 for a client outside it.
    fn purge_refusal(&self, ctx: &mut RequestCtx) -> Option<Response<Body>> {
        let allow = &self.config.cache.purge_allow;
        let (status, reason) = if allow.is_empty() {
            (StatusCode::METHOD_NOT_ALLOWED, Reason::PurgeNotEnabled)
        } else if !allow.iter().any(|net| net.contains(&ctx.client_ip)) {
            (StatusCode::FORBIDDEN, Reason::PurgeNotAllowed)
        } else {
            return None;
        };
        Some(self.synthetic(ctx, Synthetic::refuse(status, reason)))
    }

    fn apply(&self, ctx: &mut RequestCtx, key: &CacheKey, plan: Plan) -> Response<Body> {
        match &plan.action {
            Action::Purge => {
                self.cache.purge(key);
                tracing::info!(xid = ctx.xid, key = key.as_str(), client = %ctx.client_ip, protocol = plan.protocol, "purged");
            }
            Action::Ban(matchers) => {
                for matcher in matchers {
                    self.cache.ban(matcher.clone());
                }
                tracing::info!(xid = ctx.xid, ?matchers, client = %ctx.client_ip, protocol = plan.protocol, "ban added");
            }
        }
        self.ops.metrics.invalidated(plan.protocol);
        ctx.outcome = Outcome::Synth;
        ctx.error = Some(Reason::Purge);
        let mut response = Response::new(Body::full(plan.body));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// Removes the headers an application sends only for its cache
    /// (Magento's `X-Magento-Tags` and `X-Magento-Debug`, which its VCL
    /// unsets in `vcl_deliver`) from a response to a client.
    pub(super) fn hide_invalidation_headers(&self, headers: &mut HeaderMap) {
        if self.config.cache.invalidation.magento2 {
            headers.remove(X_MAGENTO_TAGS);
            headers.remove(X_MAGENTO_DEBUG);
        }
    }
}

/// Whether a request with `method` is a Drupal `BAN` (only with `drupal`
/// on: otherwise `BAN` is an unknown method, 501, as before).
pub(super) fn is_drupal_ban(on: Invalidation, method: &str) -> bool {
    on.drupal && method == "BAN"
}

/// A `PURGE`: the first protocol on whose header is there, else Magento's
/// 400 when `magento2` is on (its VCL requires a header), else a URL purge.
fn purge(on: Invalidation, headers: &HeaderMap, host: &str, target: &str) -> Result<Plan, Reason> {
    let purged = |protocol, action| Plan {
        protocol,
        action,
        body: "Purged\n",
    };
    if on.xkey {
        let mut bans = Vec::new();
        let hard = tags(headers, &[XKEY_PURGE]);
        if !hard.is_empty() {
            bans.push(BanMatcher::AnyTag {
                headers: vec![XKEY],
                tags: hard,
            });
        }
        let soft = tags(headers, &[XKEY_SOFTPURGE]);
        if !soft.is_empty() {
            bans.push(BanMatcher::Soft(Box::new(BanMatcher::AnyTag {
                headers: vec![XKEY],
                tags: soft,
            })));
        }
        if !bans.is_empty() {
            return Ok(purged("xkey", Action::Ban(bans)));
        }
    }
    if on.magento2 {
        let mut bans = Vec::new();
        for (request, response) in [(X_MAGENTO_TAGS_PATTERN, X_MAGENTO_TAGS), (X_POOL, X_POOL)] {
            for value in headers.get_all(request) {
                bans.push(BanMatcher::HeaderRegex {
                    header: response.clone(),
                    regex: regex(value.to_str().ok())?,
                });
            }
        }
        if !bans.is_empty() {
            return Ok(purged("magento2", Action::Ban(bans)));
        }
    }
    if on.wordpress {
        if let Some(method) = headers.get(X_PURGE_METHOD) {
            if method.as_bytes().eq_ignore_ascii_case(b"regex") {
                let matcher = BanMatcher::HostPathRegex {
                    host: host.to_string(),
                    regex: regex(Some(target))?,
                };
                return Ok(purged("wordpress", Action::Ban(vec![matcher])));
            }
            return Ok(purged("wordpress", Action::Purge));
        }
    }
    if on.magento2 {
        // Magento's VCL: "X-Magento-Tags-Pattern or X-Pool header required".
        return Err(Reason::InvalidationMalformed);
    }
    Ok(purged("purge", Action::Purge))
}

/// A Drupal `BAN`: the objects listing any of the tags of `Purge-Cache-Tags`
/// or `Cache-Tags`; without tags, the paths matching the target on the host
/// (the usual Drupal VCL's `req.url ~` ban).
fn drupal(headers: &HeaderMap, host: &str, target: &str) -> Result<Plan, Reason> {
    let tags = tags(headers, &[PURGE_CACHE_TAGS, CACHE_TAGS]);
    let matcher = if tags.is_empty() {
        BanMatcher::HostPathRegex {
            host: host.to_string(),
            regex: regex(Some(target))?,
        }
    } else {
        BanMatcher::AnyTag {
            headers: vec![PURGE_CACHE_TAGS, CACHE_TAGS],
            tags,
        }
    };
    Ok(Plan {
        protocol: "drupal",
        action: Action::Ban(vec![matcher]),
        body: "Ban added.\n",
    })
}

/// The tags of every `names` header, separated by spaces, commas or `|`
/// (Drupal's purger joins them with `|` when the VCL treats them as a regex
/// alternation).
fn tags(headers: &HeaderMap, names: &[HeaderName]) -> Vec<String> {
    names
        .iter()
        .flat_map(|name| headers.get_all(name).iter())
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(|c: char| c.is_ascii_whitespace() || c == ',' || c == '|'))
        .filter(|tag| !tag.is_empty())
        .map(str::to_string)
        .collect()
}

/// A client's pattern (400 when it is not a valid regex, or empty).
fn regex(pattern: Option<&str>) -> Result<Regex, Reason> {
    match pattern.map(str::trim) {
        Some(p) if !p.is_empty() => Regex::new(p).map_err(|_| Reason::InvalidationMalformed),
        _ => Err(Reason::InvalidationMalformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Invalidation {
        Invalidation {
            magento2: true,
            wordpress: true,
            drupal: true,
            xkey: true,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn a_purge_goes_to_the_protocol_whose_header_it_carries() {
        let plan = |on, h: &[(&'static str, &'static str)]| purge(on, &headers(h), "a.com", "/x");
        let magento = plan(all(), &[("x-magento-tags-pattern", "((^|,)cat_p_1(,|$))")]).unwrap();
        assert_eq!(magento.protocol, "magento2");
        let xkey = plan(all(), &[("xkey-purge", "k1 k2")]).unwrap();
        assert_eq!(xkey.protocol, "xkey");
        let wp = plan(all(), &[("x-purge-method", "regex")]).unwrap();
        assert!(matches!(wp.action, Action::Ban(_)), "{wp:?}");
        let wp = plan(all(), &[("x-purge-method", "default")]).unwrap();
        assert!(matches!(wp.action, Action::Purge), "{wp:?}");
        assert_eq!(plan(all(), &[]).unwrap_err(), Reason::InvalidationMalformed);
        let off = plan(Invalidation::default(), &[("x-magento-tags-pattern", ".*")]).unwrap();
        assert_eq!(off.protocol, "purge");
        let bad = plan(all(), &[("x-magento-tags-pattern", "(")]);
        assert_eq!(bad.unwrap_err(), Reason::InvalidationMalformed);
    }

    #[test]
    fn tags_split_on_spaces_commas_and_bars() {
        let h = headers(&[
            ("cache-tags", "node:1 node:2|user:3"),
            ("purge-cache-tags", "a,b"),
        ]);
        assert_eq!(
            tags(&h, &[PURGE_CACHE_TAGS, CACHE_TAGS]),
            ["a", "b", "node:1", "node:2", "user:3"]
        );
    }
}
