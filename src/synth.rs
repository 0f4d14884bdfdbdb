//! Every response Shellac makes itself: the "503 Backend fetch failed"
//! page, and the 400/431/501/504 answers to requests it will not forward.
//!
//! Pages are small, self-contained HTML in the shape of Varnish's "Guru
//! Meditation" page, so operators recognise them; each carries the XID that
//! finds the matching log line, and `Cache-Control: no-store` so no cache
//! downstream keeps an error. Nothing here logs: the caller logs once.
//!
//! The operator may replace the page with `[server] synthetic_template`
//! (read when the configuration loads; `{{status}}`, `{{reason}}`,
//! `{{xid}}` and `{{retry_after}}` are filled in). A client that asks for
//! JSON (`Accept: application/json` and not `text/html`) gets the same facts
//! as JSON, with the backends tried. `[server] debug_headers` adds
//! `X-Shellac-Error: <reason>`.

use std::sync::Arc;
use std::time::Duration;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER,
};
use http::{Response, StatusCode};

use crate::body::Body;
use crate::config::ServerConfig;
use crate::reason::Reason;

/// `X-Shellac-Error`: the short reason of a synthetic answer (debug only).
pub const X_SHELLAC_ERROR: HeaderName = HeaderName::from_static("x-shellac-error");

/// How synthetic answers look, from the configuration.
#[derive(Clone, Debug, Default)]
pub struct Pages {
    template: Option<Arc<str>>,
    debug_headers: bool,
}

impl Pages {
    /// The pages `[server]` asks for.
    pub fn new(server: &ServerConfig) -> Pages {
        Pages {
            template: server.synthetic_template.clone(),
            debug_headers: server.debug_headers,
        }
    }
}

/// What one request's synthetic answer tells.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    /// The request id.
    pub xid: u64,
    /// The client prefers JSON to HTML.
    pub json: bool,
    /// The backends tried, in order.
    pub backends_tried: &'a [Arc<str>],
}

/// Whether `Accept` asks for JSON and not for HTML.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let mut json = false;
    for value in headers.get_all(ACCEPT) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let media = item.split(';').next().unwrap_or("").trim();
            if media.eq_ignore_ascii_case("text/html") {
                return false;
            }
            json |= media.eq_ignore_ascii_case("application/json");
        }
    }
    json
}

/// Why Shellac answered by itself; `reason` is the short name used in logs
/// and metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synthetic {
    /// The status sent.
    pub status: StatusCode,
    /// The short reason, e.g. `connect_timeout` or `header_too_large`.
    pub reason: Reason,
    /// `Retry-After`, when the client should come back later.
    pub retry_after: Option<Duration>,
}

impl Synthetic {
    /// The synthetic 503 for a failed backend fetch.
    pub fn backend_fetch_failed(reason: Reason, retry_after: Duration) -> Synthetic {
        Synthetic {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason,
            retry_after: Some(retry_after),
        }
    }

    /// The 503 every request gets while maintenance mode is on.
    pub fn maintenance(retry_after: Duration) -> Synthetic {
        Synthetic {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: Reason::Maintenance,
            retry_after: Some(retry_after),
        }
    }

    /// A 429 for a client over its rate limit.
    pub fn rate_limited(retry_after: Duration) -> Synthetic {
        Synthetic {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: Reason::RateLimited,
            retry_after: Some(retry_after),
        }
    }

    /// A refusal without `Retry-After` (400, 431, 501, 504).
    pub fn refuse(status: StatusCode, reason: Reason) -> Synthetic {
        Synthetic {
            status,
            reason,
            retry_after: None,
        }
    }

    /// The page title: "503 Backend fetch failed" or "431 Request Header Fields Too Large".
    fn title(&self) -> String {
        let text = if self.reason == Reason::Maintenance {
            "Service Unavailable: maintenance"
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            "Backend fetch failed"
        } else {
            self.status.canonical_reason().unwrap_or("Error")
        };
        format!("{} {}", self.status.as_u16(), text)
    }

    /// Renders the built-in HTML page for request `xid`.
    pub fn render(&self, xid: u64) -> Response<Body> {
        self.render_with(
            &Pages::default(),
            &Facts {
                xid,
                ..Facts::default()
            },
        )
    }

    /// Renders the answer: JSON when asked for, else the operator's
    /// template or the built-in page.
    pub fn render_with(&self, pages: &Pages, facts: &Facts<'_>) -> Response<Body> {
        let retry_after = self.retry_after.map(retry_after_seconds);
        let (content_type, body) = if facts.json {
            let value = serde_json::json!({
                "status": self.status.as_u16(),
                "reason": self.reason.as_str(),
                "xid": facts.xid,
                "retry_after": retry_after,
                "backends_tried": facts.backends_tried.iter().map(|b| b.as_ref()).collect::<Vec<&str>>(),
            });
            ("application/json", format!("{value}\n"))
        } else if let Some(template) = &pages.template {
            let page = template
                .replace("{{status}}", &self.status.as_u16().to_string())
                .replace("{{reason}}", &html_escape(self.reason.as_str()))
                .replace("{{xid}}", &facts.xid.to_string())
                .replace(
                    "{{retry_after}}",
                    &retry_after.map_or(String::new(), |s| s.to_string()),
                );
            ("text/html; charset=utf-8", page)
        } else {
            ("text/html; charset=utf-8", self.page(facts.xid))
        };
        let mut response = Response::new(Body::full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(after));
        }
        if pages.debug_headers {
            if let Ok(value) = HeaderValue::from_str(self.reason.as_str()) {
                headers.insert(X_SHELLAC_ERROR, value);
            }
        }
        response
    }

    fn page(&self, xid: u64) -> String {
        let title = self.title();
        format!(
            "<!DOCTYPE html>\n<html>\n  <head>\n    <title>{title}</title>\n  </head>\n  <body>\n    <h1>Error {title}</h1>\n    <p>{reason}</p>\n    <h3>Guru Meditation:</h3>\n    <p>XID: {xid}</p>\n    <hr>\n    <p>Shellac cache server</p>\n  </body>\n</html>\n",
            reason = html_escape(self.reason.as_str()),
        )
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1: a client told
/// "0" would come straight back.
pub fn retry_after_seconds(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(5)), 5);
        assert_eq!(retry_after_seconds(Duration::from_millis(5200)), 6);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn page_names_the_failure_and_the_xid() {
        let response =
            Synthetic::backend_fetch_failed(Reason::Connect, Duration::from_secs(5)).render(42);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let Body::Full(Some(page)) = response.body() else {
            panic!("a full body")
        };
        let page = std::str::from_utf8(page).expect("utf-8");
        assert!(page.contains("<title>503 Backend fetch failed</title>"));
        assert!(page.contains("XID: 42"));
    }

    fn text(response: &Response<Body>) -> String {
        let Body::Full(Some(page)) = response.body() else {
            panic!("a full body")
        };
        String::from_utf8_lossy(page).to_string()
    }

    #[test]
    fn json_when_asked_and_not_html() {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(wants_json(&h));
        h.insert(
            ACCEPT,
            HeaderValue::from_static("text/html, application/json;q=0.9"),
        );
        assert!(!wants_json(&h));
        assert!(!wants_json(&HeaderMap::new()));
        let tried = [Arc::from("a"), Arc::from("b")];
        let response = Synthetic::backend_fetch_failed(Reason::Connect, Duration::from_secs(3))
            .render_with(
                &Pages::default(),
                &Facts {
                    xid: 7,
                    json: true,
                    backends_tried: &tried,
                },
            );
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(&text(&response)).expect("json");
        assert_eq!(v["status"], 503);
        assert_eq!(v["reason"], "connect");
        assert_eq!(v["xid"], 7);
        assert_eq!(v["retry_after"], 3);
        assert_eq!(v["backends_tried"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn template_placeholders_and_debug_header() {
        let pages = Pages {
            template: Some(Arc::from("{{status}}|{{reason}}|{{xid}}|{{retry_after}}")),
            debug_headers: true,
        };
        let response = Synthetic::backend_fetch_failed(Reason::QueueFull, Duration::from_secs(2))
            .render_with(
                &pages,
                &Facts {
                    xid: 9,
                    ..Facts::default()
                },
            );
        assert_eq!(text(&response), "503|queue_full|9|2");
        assert_eq!(response.headers()[X_SHELLAC_ERROR], "queue_full");
        let plain =
            Synthetic::backend_fetch_failed(Reason::Connect, Duration::from_secs(2)).render(1);
        assert!(plain.headers().get(X_SHELLAC_ERROR).is_none());
    }
}
