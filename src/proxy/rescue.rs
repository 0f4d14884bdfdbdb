//! The one place where a failure becomes a response (like linkerd's
//! `ClientRescue` or pingora's `fail_to_proxy`): stale content when a
//! stored object may stand in for an error (RFC 5861 stale-if-error),
//! otherwise a synthetic answer — the honest "503 Backend fetch failed"
//! with `Retry-After`, or 400 / 408 / 413 when the client's own body was at
//! fault.
//!
//! A failed fetch is logged once, here; the pages themselves are rendered
//! by `synth`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::request::Parts;
use http::{Response, StatusCode};

use super::deliver::close_connection;
use super::fetch::Pool;
use super::upstream::ClientHead;
use super::{headers, release, Exchange, Outcome, Proxy, RequestCtx};
use crate::backend::FetchError;
use crate::body::{Body, RequestBodyFault};
use crate::cache::coalesce::{Outcome as Flight, WriterGuard};
use crate::cache::policy;
use crate::cache::CachedObject;
use crate::config::defaults::{RETRY_AFTER_MAX, RETRY_AFTER_MIN};
use crate::reason::Reason;
use crate::synth::{Facts, Synthetic};

/// The stale object, if there is one and it may stand in for an error now
/// (`stale-if-error`, grace and keep; never past `must-revalidate`).
pub(super) fn stale_for_error(stale: Option<&Arc<CachedObject>>) -> Option<&Arc<CachedObject>> {
    stale.filter(|s| policy::usable_on_error(&s.lifetimes, s.age(Instant::now())))
}

/// RFC 5861 §4: the answers a stale object may replace.
pub(super) fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

impl Proxy {
    /// A fetch that produced no response. When the client's own body
    /// failed first, that is the client's fault: 400 or 413. Otherwise the
    /// failure is logged (once, here) and answered with stale content when
    /// there is some, else the synthetic 503.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fetch_failed(
        &self,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        pool: &Pool,
        error: FetchError,
        client: &ClientHead,
        stale: Option<Arc<CachedObject>>,
        guard: Option<WriterGuard>,
    ) -> Response<Body> {
        if let Some(fault) = exchange.body_state.as_ref().and_then(|s| s.fault()) {
            release(guard, Flight::Abandoned);
            return self.request_body_refused(ctx, fault, client.version);
        }
        if error.is_client_fault() {
            release(guard, Flight::Abandoned);
            return self.request_body_timed_out(ctx, &error, client.version);
        }
        tracing::warn!(
            xid = ctx.xid,
            backend = error.backend().unwrap_or("-"),
            reason = error.reason().as_str(),
            %error,
            "backend fetch failed"
        );
        release(guard, Flight::Failed(error.reason()));
        ctx.error = Some(error.reason());
        self.stale_or_fail(ctx, &client.parts(), stale, error.reason(), pool)
    }

    /// Stale content when `stale` may stand in for an error, else the
    /// synthetic 503 with the pool's honest `Retry-After`.
    pub(super) fn stale_or_fail(
        &self,
        ctx: &mut RequestCtx,
        parts: &Parts,
        stale: Option<Arc<CachedObject>>,
        reason: Reason,
        pool: &Pool,
    ) -> Response<Body> {
        if let Some(stale) = stale_for_error(stale.as_ref()) {
            return self.serve_stale_on_error(ctx, parts, stale, reason);
        }
        ctx.error = Some(reason);
        let refusal = Synthetic::backend_fetch_failed(reason, self.retry_after(pool));
        self.synthetic(ctx, refusal)
    }

    /// A 5xx answer replaced by the stale object (RFC 5861 §4); the waiting
    /// list learns that the fetch failed.
    pub(super) fn stale_instead_of_status(
        &self,
        ctx: &mut RequestCtx,
        client: &ClientHead,
        stale: &CachedObject,
        status: StatusCode,
        guard: Option<WriterGuard>,
    ) -> Response<Body> {
        let reason = Reason::BackendErrorStatus;
        release(guard, Flight::Failed(reason));
        ctx.error = Some(reason);
        let mut response = self.serve_stale_on_error(ctx, &client.parts(), stale, reason);
        if let Ok(value) = HeaderValue::from_str(&format!(
            "shellac; hit; fwd=stale; fwd-status={}",
            status.as_u16()
        )) {
            response.headers_mut().insert(headers::CACHE_STATUS, value);
        }
        response
    }

    /// The honest `Retry-After`: when a backend of the pool may take traffic
    /// again, within [1 s, 300 s]; `[server] retry_after` when nothing is known.
    pub(super) fn retry_after(&self, pool: &Pool) -> Duration {
        pool.retry_after()
            .map_or(self.config.server.retry_after, |d| {
                d.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
            })
    }

    /// The answer when forwarding the client's body failed because of the
    /// body itself: 413 past `max_request_body`, else 400. The connection is
    /// closed: the rest of the body is unread, and may be unreadable.
    fn request_body_refused(
        &self,
        ctx: &mut RequestCtx,
        fault: RequestBodyFault,
        version: http::Version,
    ) -> Response<Body> {
        let refusal = match fault {
            RequestBodyFault::TooLarge => {
                Synthetic::refuse(StatusCode::PAYLOAD_TOO_LARGE, Reason::MaxRequestBody)
            }
            RequestBodyFault::Malformed => {
                Synthetic::refuse(StatusCode::BAD_REQUEST, Reason::InvalidRequestBody)
            }
        };
        tracing::info!(
            xid = ctx.xid,
            reason = refusal.reason.as_str(),
            "request body refused"
        );
        let response = self.synthetic(ctx, refusal);
        close_connection(response, version)
    }

    /// The client stopped sending its body (`between_bytes_timeout`): 408,
    /// and the connection is closed, the rest of the body being unread.
    fn request_body_timed_out(
        &self,
        ctx: &mut RequestCtx,
        error: &FetchError,
        version: http::Version,
    ) -> Response<Body> {
        tracing::info!(xid = ctx.xid, reason = error.reason().as_str(), %error, "request body timed out");
        let refusal = Synthetic::refuse(StatusCode::REQUEST_TIMEOUT, error.reason());
        let response = self.synthetic(ctx, refusal);
        close_connection(response, version)
    }

    fn serve_stale_on_error(
        &self,
        ctx: &mut RequestCtx,
        parts: &Parts,
        stale: &CachedObject,
        reason: Reason,
    ) -> Response<Body> {
        tracing::info!(
            xid = ctx.xid,
            reason = reason.as_str(),
            "serving stale content instead of an error (stale-if-error)"
        );
        ctx.outcome = Outcome::HitStale;
        let status = headers::status_value(format!("shellac; hit; fwd=stale; detail={reason}"));
        self.deliver(parts, stale, Instant::now(), "HIT-STALE", status)
    }

    /// A response Shellac makes itself, rendered by `synth` with the
    /// request's XID and the backends it tried.
    pub(super) fn synthetic(&self, ctx: &mut RequestCtx, refusal: Synthetic) -> Response<Body> {
        ctx.outcome = Outcome::Synth;
        ctx.error.get_or_insert(refusal.reason);
        let facts = Facts {
            xid: ctx.xid,
            json: ctx.wants_json,
            backends_tried: &ctx.tried,
        };
        let mut response = refusal.render_with(&self.pages, &facts);
        response
            .headers_mut()
            .insert(headers::X_CACHE, HeaderValue::from_static("SYNTH"));
        response
    }
}
