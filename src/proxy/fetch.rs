//! The fetch phase: choose a backend of the route's pool, take a slot of
//! its capacity (maybe waiting in its queue), send, and retry what
//! `[retry]` allows on another healthy backend after a full-jitter backoff,
//! within the pool's retry budget.
//!
//! Each attempt's outcome also feeds the backend's passive health (its pool
//! judges it: `backend::Pool::record_answer` and `record_error`), except
//! when the client's own request body failed: a client fault never counts
//! against a backend. The backend's in-flight slot travels with the
//! response body and is released when the body is done.

use std::time::SystemTime;

use http::header::RETRY_AFTER;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body as _;

use super::{Attempt, RequestCtx};
use crate::backend::{self, FetchError, PathKey};
use crate::body::{Body, RequestBodyState};
use crate::config::{RetryConfig, RouteConfig};
use crate::reason::Reason;
use crate::retry::{self, Failure};

// The backend module is generic over the body of the requests it sends (so
// that it never names `Body`, which wraps its response body); the proxy
// sends the crate's one body type.
/// Every backend and pool of one configuration.
pub(super) type Backends = backend::Backends<Body>;
/// A pool of backends.
pub(super) type Pool = backend::Pool<Body>;
/// A backend's in-flight slot.
type InFlight = backend::InFlight<Body>;

/// Sends the prepared backend request to a backend of `pool`, retrying as
/// `[retry]` allows. `key` is the cache key text (for the `hash` policy).
/// `again` makes another copy of the head for a retry. `body_state` tells
/// whether the client's body failed (then nothing is held against the
/// backend). Records the backends tried and the retries in `ctx`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch(
    pool: &Pool,
    route: &RouteConfig,
    rules: &RetryConfig,
    key: &str,
    parts: Parts,
    body: Body,
    again: &(dyn Fn() -> Parts + Sync),
    body_state: Option<&RequestBodyState>,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, FetchError> {
    let path = PathKey::of(parts.uri.path());
    let client_fault = || body_state.is_some_and(|s| s.fault().is_some());
    // A request whose body is already complete (GET, HEAD, an empty POST)
    // can be sent again with a new copy of its head; a streamed body cannot.
    let resendable = body.is_end_stream();
    let mut request = Some(Request::from_parts(parts, body));
    let method = ctx.method.clone();
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<FetchError> = None;
    pool.budget().record_request();
    // Bounded: every pass returns, stops, or is a retry within `max_retries`.
    for _ in 0..(rules.max_retries as usize + pool.members().len() + 1) {
        // 1. Pick: a usable backend, another one than before when there is one.
        let Some((index, backend)) = pool.pick(key, &tried) else {
            break;
        };
        // Retries on the same backend are one piece of its traffic.
        let first_here = !tried.contains(&index);
        tried.push(index);
        // 2. A slot: at once, after queueing, or a 503 at once (load shedding).
        let slot = match backend.admit(route.priority).await {
            Ok(slot) => slot,
            Err(shed) => {
                // Load shedding (queue full or timed out) is a failure of
                // this backend in the metrics and the 503's facts too.
                ctx.tried.push(backend.name().clone());
                ctx.attempts.push(Attempt {
                    backend: backend.name().clone(),
                    result: Err(shed.reason()),
                });
                return Err(shed);
            }
        };
        ctx.backend = Some(backend.name().clone());
        ctx.tried.push(backend.name().clone());
        let Some(req) = request
            .take()
            .or_else(|| resendable.then(|| Request::from_parts(again(), Body::Empty)))
        else {
            break;
        };
        // 3. Send, and judge the answer.
        let timeout = route
            .first_byte_timeout
            .unwrap_or(backend.client.config().first_byte_timeout);
        let sent_at = std::time::Instant::now();
        match backend.client.send_returning(req, timeout).await {
            Ok(response) => {
                let status = response.status();
                let result = if status.is_server_error() {
                    Err(Reason::Status5xx)
                } else {
                    Ok(sent_at.elapsed())
                };
                ctx.attempts.push(Attempt {
                    backend: backend.name().clone(),
                    result,
                });
                if !client_fault() {
                    let after = retry_after(&response);
                    pool.record_answer(&slot, path, status, after, first_here);
                }
                if !retry::may_retry(rules, &method, Failure::Status(status), ctx.retries)
                    || !can_resend(&request, resendable)
                    || !pool.budget().try_retry()
                {
                    return Ok(hold_slot(response, slot));
                }
                tracing::info!(xid = ctx.xid, backend = %backend.name(), status = status.as_u16(), retry = ctx.retries + 1, "retrying after backend status");
            }
            Err(failure) => {
                ctx.attempts.push(Attempt {
                    backend: backend.name().clone(),
                    result: Err(failure.error.reason()),
                });
                if !client_fault() {
                    pool.record_error(&slot, path, &failure.error);
                }
                if let Some(returned) = failure.request {
                    request = Some(*returned);
                }
                let error = failure.error;
                // A request that never reached the backend added no load to
                // it, so its retry does not draw on the budget.
                if !retry::may_retry(rules, &method, error.failure(), ctx.retries)
                    || !can_resend(&request, resendable)
                    || !(error.never_sent() || pool.budget().try_retry())
                {
                    return Err(error);
                }
                tracing::info!(xid = ctx.xid, backend = %backend.name(), reason = error.reason().as_str(), %error, retry = ctx.retries + 1, "retrying after fetch error");
                last_error = Some(error);
            }
        }
        drop(slot);
        // 4. Back off (full jitter) before the next attempt.
        let pause = retry::backoff(rules, ctx.retries, &mut rand::thread_rng());
        ctx.retries += 1;
        tokio::time::sleep(pause).await;
    }
    Err(last_error.unwrap_or_else(|| FetchError::NoBackend {
        pool: pool.name().clone(),
    }))
}

/// Whether there is a request to send again.
fn can_resend(request: &Option<Request<Body>>, resendable: bool) -> bool {
    request.is_some() || resendable
}

/// The answer's own `Retry-After`, if any (the pool decides what it means
/// for the backend: see `record_answer`).
fn retry_after(response: &Response<Body>) -> Option<std::time::Duration> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
}

/// The response goes out with the backend slot attached to its body, so the
/// slot is released when the body has streamed (or was dropped).
fn hold_slot(response: Response<Body>, slot: InFlight) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let body = match body {
        Body::Backend(mut timed) => {
            timed.hold(slot);
            Body::Backend(timed)
        }
        other => other,
    };
    Response::from_parts(parts, body)
}
