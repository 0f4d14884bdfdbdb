//! `[[rule]]`: what operators write VCL for (cookies, query parameters,
//! header edits, redirects, fixed answers, per-URL TTLs), checked and
//! compiled once here so that the request path only matches and applies.
//!
//! Rules keep the file's order: unlike `[[route]]`, every matching rule
//! applies, one after the other. Headers that frame the message or belong
//! to one connection (`Content-Length`, `Transfer-Encoding`, `Connection`,
//! `Keep-Alive`, `TE`, `Trailer`, `Upgrade`, `Proxy-*`, and `Host` on the
//! response) may be neither set nor removed: an edit there would make
//! Shellac and its peer disagree about where a message ends.

use std::ops::Range;

use http::{HeaderName, HeaderValue, StatusCode};
use toml::Spanned;

use super::route::methods;
use crate::config::check::span;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::{RawHeaderEdits, RawRedirect, RawRespond, RawRule};
use crate::config::{defaults, HeaderEdits, LocationPart, RuleAnswer, RuleConfig};
use crate::pattern::{Glob, HostPattern};

/// Every `[[rule]]`, in the file's order.
pub(super) fn build(raw: &[RawRule], loc: &Locator<'_>) -> Result<Vec<RuleConfig>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| rule(i, r, loc))
        .collect()
}

/// The `i`th `[[rule]]`.
fn rule(i: usize, r: &RawRule, loc: &Locator<'_>) -> Result<RuleConfig, ConfigError> {
    let at = |key: &str, span: Option<Range<usize>>, message: String| {
        loc.error_at_key(span, &format!("rule[{i}].{key}"), message)
    };
    let host = match &r.host {
        None => None,
        Some(h) => Some(HostPattern::new(h.get_ref()).map_err(|m| at("host", span(h), m))?),
    };
    let path_prefix = match &r.path_prefix {
        Some(p) if !p.get_ref().starts_with('/') => {
            let m = format!(
                "expected a path starting with \"/\", found {:?}",
                p.get_ref()
            );
            return Err(at("path_prefix", span(p), m));
        }
        p => p.as_ref().map(|p| p.get_ref().clone()),
    };
    let path_regex = match &r.path_regex {
        None => None,
        Some(p) => Some(regex::Regex::new(p.get_ref()).map_err(|e| {
            at(
                "path_regex",
                span(p),
                format!("expected a regular expression (regex crate syntax): {e}"),
            )
        })?),
    };
    let methods = match &r.methods {
        None => None,
        Some(list) => Some(methods(list, loc)?),
    };
    let strip_cookies = match &r.cookies {
        None => false,
        Some(c) if c.get_ref() == "strip" => true,
        Some(c) => {
            let m = format!(
                "expected \"strip\" (use cookies_keep to keep some), found {:?}",
                c.get_ref()
            );
            return Err(at("cookies", span(c), m));
        }
    };
    let globs = |key: &str, list: &Option<Spanned<Vec<Spanned<String>>>>| match list {
        None => Ok(None),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|g| Glob::new(g.get_ref()).map_err(|m| at(key, span(g), m)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
    };
    let cookies_keep = globs("cookies_keep", &r.cookies_keep)?;
    let query_drop = globs("query_drop", &r.query_drop)?.unwrap_or_default();
    let key_headers = match &r.key_headers {
        None => Vec::new(),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|h| header_name(h).map_err(|m| at("key_headers", span(h), m)))
            .collect::<Result<_, _>>()?,
    };
    let key_cookies = match &r.key_cookies {
        None => Vec::new(),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|c| cookie_name(c.get_ref()).map_err(|m| at("key_cookies", span(c), m)))
            .collect::<Result<_, _>>()?,
    };
    let edits = |key: &str, raw: &Option<Spanned<RawHeaderEdits>>, response: bool| match raw {
        None => Ok(HeaderEdits::default()),
        Some(e) => header_edits(e, response).map_err(|(s, m)| at(key, s, m)),
    };
    let request_headers = edits("request_headers", &r.request_headers, false)?;
    let response_headers = edits("response_headers", &r.response_headers, true)?;
    let answer = match (&r.redirect, &r.respond) {
        (Some(_), Some(respond)) => {
            let m = "expected either redirect or respond in one rule, not both".to_string();
            return Err(at("respond", span(respond), m));
        }
        (Some(redirect), None) => {
            Some(self::redirect(redirect.get_ref()).map_err(|(s, m)| at("redirect", s, m))?)
        }
        (None, Some(respond)) => {
            Some(self::respond(respond.get_ref()).map_err(|(s, m)| at("respond", s, m))?)
        }
        (None, None) => None,
    };
    Ok(RuleConfig {
        host,
        path_prefix,
        path_regex,
        methods,
        strip_cookies,
        cookies_keep,
        query_drop,
        query_sort: r.query_sort.unwrap_or(false),
        key_headers,
        key_cookies,
        request_headers,
        response_headers,
        answer,
        pass: r.pass,
        ttl: r.ttl.map(|d| d.0),
        grace: r.grace.map(|d| d.0),
        keep: r.keep.map(|d| d.0),
        esi: r.esi.unwrap_or(false),
    })
}

/// A problem inside a sub-table: where, and what.
type Located = (Option<Range<usize>>, String);

/// A header name (any case; HTTP names are case-insensitive).
fn header_name(name: &Spanned<String>) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.get_ref().as_bytes())
        .map_err(|_| format!("expected a header name, found {:?}", name.get_ref()))
}

/// A cookie name (an RFC 6265 token: no separators, no wildcards).
fn cookie_name(name: &str) -> Result<String, String> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}*".contains(&b));
    if token {
        Ok(name.to_string())
    } else {
        Err(format!(
            "expected a cookie name (exact, no \"*\"), found {name:?}"
        ))
    }
}

/// Whether a rule may not touch `name`: it frames the message or belongs
/// to one connection; `Host` only in a response (on the request it picks
/// the site, and setting it is a legitimate rewrite).
fn framing(name: &HeaderName, response: bool) -> bool {
    const FRAMING: [&str; 8] = [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    ];
    let name = name.as_str();
    FRAMING.contains(&name) || name.starts_with("proxy-") || (response && name == "host")
}

/// `request_headers` or `response_headers`.
fn header_edits(raw: &Spanned<RawHeaderEdits>, response: bool) -> Result<HeaderEdits, Located> {
    let refuse = |name: &HeaderName, verb: &str| {
        format!(
            "{name} may not be {verb} by a rule: it frames the message or belongs to one connection (expected another header)"
        )
    };
    let mut edits = HeaderEdits::default();
    for (name, value) in raw.get_ref().set.iter().flatten() {
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            (
                span(value),
                format!("expected a header name, found {name:?}"),
            )
        })?;
        if framing(&parsed, response) {
            return Err((span(value), refuse(&parsed, "set")));
        }
        let header_value = HeaderValue::from_str(value.get_ref()).map_err(|_| {
            (
                span(value),
                format!(
                    "expected a header value for {name} (visible characters, no line breaks), found {:?}",
                    value.get_ref()
                ),
            )
        })?;
        edits.set.push((parsed, header_value));
    }
    for name in raw.get_ref().remove.iter().flatten() {
        let parsed = header_name(name).map_err(|m| (span(name), m))?;
        if framing(&parsed, response) || (!response && parsed == http::header::HOST) {
            return Err((span(name), refuse(&parsed, "removed")));
        }
        edits.remove.push(parsed);
    }
    Ok(edits)
}

/// `redirect = { status, location }`.
fn redirect(raw: &RawRedirect) -> Result<RuleAnswer, Located> {
    let status = match &raw.status {
        None => defaults::RULE_REDIRECT_STATUS,
        Some(s) if [301, 302, 303, 307, 308].contains(s.get_ref()) => *s.get_ref() as u16,
        Some(s) => {
            let m = format!(
                "expected a redirect status, 301, 302, 303, 307 or 308, found {}",
                s.get_ref()
            );
            return Err((span(s), m));
        }
    };
    let location = location(raw.location.get_ref()).map_err(|m| (span(&raw.location), m))?;
    Ok(RuleAnswer::Redirect {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
        location,
    })
}

/// A `location` split at its placeholders `{host}`, `{path}`, `{query}`.
fn location(text: &str) -> Result<Vec<LocationPart>, String> {
    if text.is_empty() {
        return Err("expected a URL such as \"https://example.com{path}{query}\"".into());
    }
    if HeaderValue::from_str(text).is_err() {
        return Err(format!(
            "expected a URL of visible characters without line breaks, found {text:?}"
        ));
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(LocationPart::Text(rest[..open].to_string()));
        }
        let after = &rest[open..];
        let (part, len) = [
            ("{host}", LocationPart::Host),
            ("{path}", LocationPart::Path),
            ("{query}", LocationPart::Query),
        ]
        .into_iter()
        .find(|(name, _)| after.starts_with(name))
        .map(|(name, part)| (part, name.len()))
        .ok_or_else(|| {
            format!("expected only the placeholders {{host}}, {{path}} and {{query}} in {text:?}")
        })?;
        parts.push(part);
        rest = &after[len..];
    }
    if !rest.is_empty() {
        parts.push(LocationPart::Text(rest.to_string()));
    }
    Ok(parts)
}

/// `respond = { status, content_type, body }`.
fn respond(raw: &RawRespond) -> Result<RuleAnswer, Located> {
    let status = match &raw.status {
        None => defaults::RULE_RESPOND_STATUS,
        Some(s) if (200..=599).contains(s.get_ref()) => *s.get_ref() as u16,
        Some(s) => {
            let m = format!("expected a status from 200 to 599, found {}", s.get_ref());
            return Err((span(s), m));
        }
    };
    let content_type = match &raw.content_type {
        None => HeaderValue::from_static(defaults::RULE_RESPOND_CONTENT_TYPE),
        Some(t) => HeaderValue::from_str(t.get_ref()).map_err(|_| {
            let m = format!(
                "expected a media type such as \"text/plain\", found {:?}",
                t.get_ref()
            );
            (span(t), m)
        })?,
    };
    Ok(RuleAnswer::Respond {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        content_type,
        body: bytes::Bytes::from(raw.body.clone().unwrap_or_default()),
    })
}
