//! The single exit of every request: `[[rule]] response_headers`
//! (`rules.rs`), `X-Shellac-Retries`, the metrics,
//! the debug trace line and the access-log line, all read once from the
//! request's `RequestCtx` (nothing else on the path logs a request). An
//! Upgrade tunnel is counted here at its `101` and logged, through
//! [`log_request`], when it ends (`tunnel.rs`).

use http::header::HeaderValue;
use http::uri::Uri;
use http::{Response, StatusCode};

use super::context::LogHead;
use super::deliver::content_length;
use super::{headers, Proxy, RequestCtx};
use crate::access_log::AccessLogger;
use crate::body::Body;

impl Proxy {
    /// The single exit: metrics, the debug trace and the access log.
    pub(super) fn exit(
        &self,
        ctx: &mut RequestCtx,
        uri: &Uri,
        log_head: Option<LogHead>,
        mut response: Response<Body>,
    ) -> Response<Body> {
        self.response_rules(ctx, response.headers_mut());
        self.hide_invalidation_headers(response.headers_mut());
        // An ESI include is part of its page's request: traced, but
        // neither counted nor logged as a request of its own (as
        // varnishncsa leaves ESI sub-requests out without -E).
        if ctx.esi_depth > 0 {
            ctx.trace(uri, response.status());
            return response;
        }
        self.count(ctx, &mut response);
        let bytes = content_length(response.headers());
        log_request(
            &self.access_log,
            ctx,
            uri,
            log_head.as_ref(),
            response.status(),
            bytes,
        );
        response
    }

    /// `X-Shellac-Retries` and the metrics, at the response head (a
    /// tunnel's too: its log line comes when it ends, `tunnel.rs`).
    pub(super) fn count(&self, ctx: &mut RequestCtx, response: &mut Response<Body>) {
        if ctx.retries > 0 {
            response
                .headers_mut()
                .insert(headers::X_SHELLAC_RETRIES, HeaderValue::from(ctx.retries));
        }
        let status = response.status();
        self.ops.metrics.record(&ctx.finished(status.as_u16()));
    }
}

/// The debug trace line and the access-log line of a request that has
/// ended with `status` (`bytes`: its `Content-Length`, if any).
pub(super) fn log_request(
    access_log: &AccessLogger,
    ctx: &RequestCtx,
    uri: &Uri,
    log_head: Option<&LogHead>,
    status: StatusCode,
    bytes: Option<u64>,
) {
    ctx.trace(uri, status);
    if let Some(head) = log_head {
        access_log.log(ctx.access_line(access_log.format(), head, status, bytes));
    }
}
