//! The single exit of every request: `[[rule]] response_headers`
//! (`rules.rs`), `X-Shellac-Retries`, the metrics,
//! the debug trace line and the access-log line, all read once from the
//! request's `RequestCtx` (nothing else on the path logs a request).

use http::header::HeaderValue;
use http::uri::Uri;
use http::Response;

use super::context::LogHead;
use super::deliver::content_length;
use super::{headers, Proxy, RequestCtx};
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
        if ctx.retries > 0 {
            response
                .headers_mut()
                .insert(headers::X_SHELLAC_RETRIES, HeaderValue::from(ctx.retries));
        }
        let status = response.status();
        self.ops.metrics.record(&ctx.finished(status.as_u16()));
        ctx.trace(uri, status);
        if let Some(head) = log_head {
            let bytes = content_length(response.headers());
            self.access_log
                .log(ctx.access_line(self.access_log.format(), &head, status, bytes));
        }
        response
    }
}
