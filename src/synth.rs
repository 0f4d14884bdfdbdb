//! Every response Shellac makes itself: the "503 Backend fetch failed"
//! page, and the 400/431/501/504 answers to requests it will not forward.
//!
//! Pages are small, self-contained HTML in the shape of Varnish's "Guru
//! Meditation" page, so operators recognise them; each carries the XID that
//! finds the matching log line, and `Cache-Control: no-store` so no cache
//! downstream keeps an error. Nothing here logs: the caller logs once.

use std::time::Duration;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::Body;

/// Why Shellac answered by itself; `reason` is the short name used in logs
/// and metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synthetic {
    /// The status sent.
    pub status: StatusCode,
    /// The short reason, e.g. `connect_timeout` or `header_too_large`.
    pub reason: &'static str,
    /// `Retry-After`, when the client should come back later.
    pub retry_after: Option<Duration>,
}

impl Synthetic {
    /// The synthetic 503 for a failed backend fetch.
    pub fn backend_fetch_failed(reason: &'static str, retry_after: Duration) -> Synthetic {
        Synthetic {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason,
            retry_after: Some(retry_after),
        }
    }

    /// A refusal without `Retry-After` (400, 431, 501, 504).
    pub fn refuse(status: StatusCode, reason: &'static str) -> Synthetic {
        Synthetic {
            status,
            reason,
            retry_after: None,
        }
    }

    /// The page title: "503 Backend fetch failed" or "431 Request Header Fields Too Large".
    fn title(&self) -> String {
        let text = if self.status == StatusCode::SERVICE_UNAVAILABLE {
            "Backend fetch failed"
        } else {
            self.status.canonical_reason().unwrap_or("Error")
        };
        format!("{} {}", self.status.as_u16(), text)
    }

    /// Renders the response for request `xid`.
    pub fn render(&self, xid: u64) -> Response<Body> {
        let title = self.title();
        let page = format!(
            "<!DOCTYPE html>\n<html>\n  <head>\n    <title>{title}</title>\n  </head>\n  <body>\n    <h1>Error {title}</h1>\n    <p>{reason}</p>\n    <h3>Guru Meditation:</h3>\n    <p>XID: {xid}</p>\n    <hr>\n    <p>Shellac cache server</p>\n  </body>\n</html>\n",
            reason = html_escape(self.reason),
        );
        let mut response = Response::new(Body::full(page));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(after)));
        }
        response
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
            Synthetic::backend_fetch_failed("connect", Duration::from_secs(5)).render(42);
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
}
