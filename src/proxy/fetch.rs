//! The fetch phase: choose a backend of the route's pool, take a slot of
//! its capacity (maybe waiting in its queue), send, and retry what
//! `[retry]` allows after a full-jitter backoff, within the pool's retry
//! budget and the request's `[retry] deadline`.
//!
//! Where a retry may go: a request that *reached* a backend (it answered
//! with a 5xx, or timed out waiting for the head) is never sent to that
//! backend again, only to one not yet asked (`retry::another_backend_only`);
//! with one backend in the pool it is passed on as it is. A connect that
//! failed may be tried again on the same backend. What stands when the
//! retries come to nothing is the last answer if there was one (a backend's
//! own 503 beats a synthetic one), else the last error; the deadline never
//! replaces either, it only stops the wait.
//!
//! Apart from those retries, a request that met a pooled connection the
//! backend had closed (the keep-alive race: no byte of an answer came back)
//! is sent once more on a fresh connection to the same backend, when its
//! body is whole; that resend is not a retry (no budget, no backoff, not in
//! `X-Shellac-Retries`) and not a failure of the backend.
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
use crate::retry::{self, Deadline, Failure};

// The backend module is generic over the body of the requests it sends (so
// that it never names `Body`, which wraps its response body); the proxy
// sends the crate's one body type.
/// Every backend and pool of one configuration.
pub(super) type Backends = backend::Backends<Body>;
/// A pool of backends.
pub(super) type Pool = backend::Pool<Body>;
/// A backend's in-flight slot.
type InFlight = backend::InFlight<Body>;

/// What the client gets when no later attempt produces anything better.
enum Standing {
    /// The last failure.
    Error(FetchError),
    /// The last answer (a 5xx being retried elsewhere), with its backend's
    /// slot: it is passed on if the retry fails. Boxed: a rare path, and
    /// a response head is large.
    Answer(Box<Response<Body>>, InFlight),
}

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
    let deadline = Deadline::start(rules.deadline);
    let mut tried: Vec<usize> = Vec::new();
    // The backends this request reached: none of them is asked again.
    let mut reached: Vec<usize> = Vec::new();
    let mut standing: Option<Standing> = None;
    pool.budget().record_request();
    // Bounded: every pass returns, stops, or is a retry within `max_retries`.
    for _ in 0..(rules.max_retries as usize + pool.members().len() + 1) {
        // 1. Pick: a usable backend, another one than before when there is
        // one, and never one this request already reached.
        let Some((index, backend)) = pool
            .pick(key, &tried)
            .filter(|(i, _)| !reached.contains(i))
            .or_else(|| pool.pick(key, &reached))
            .filter(|(i, _)| !reached.contains(i))
        else {
            break;
        };
        // Retries on the same backend are one piece of its traffic.
        let first_here = !tried.contains(&index);
        tried.push(index);
        // 2. A slot: at once, after queueing, or a 503 at once (load shedding).
        let admitted = match deadline {
            None => backend.admit(route.priority).await,
            Some(d) => match tokio::time::timeout(d.left(), backend.admit(route.priority)).await {
                Ok(admitted) => admitted,
                Err(_) => {
                    stand_unless_set(&mut standing, deadline_reached(backend, d));
                    break;
                }
            },
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(shed) => {
                // Load shedding (queue full or timed out) is a failure of
                // this backend in the metrics and the 503's facts too.
                ctx.tried.push(backend.name().clone());
                ctx.attempts.push(Attempt {
                    backend: backend.name().clone(),
                    result: Err(shed.reason()),
                });
                stand_error(&mut standing, shed);
                break;
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
        let mut sent = backend.client.send_returning(req, timeout, deadline).await;
        // A pooled connection the backend had closed while idle (no byte of
        // an answer came back): once more on a fresh connection, when the
        // request is whole (its body complete and kept), whatever retry_on
        // says, outside the budget and the retry count: the backend never
        // saw it (Varnish's extrachance).
        if let Err(failure) = &mut sent {
            if let Some(replay) = failure.replay.take() {
                tracing::debug!(xid = ctx.xid, backend = %backend.name(), error = %failure.error, "pooled connection was closed: sending again on a fresh connection");
                let body = if replay.is_empty() {
                    Body::Empty
                } else {
                    Body::full(replay)
                };
                let req = Request::from_parts(again(), body);
                sent = backend.client.send_fresh(req, timeout, deadline).await;
            }
        }
        match sent {
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
                reached.push(index);
                if !retry::may_retry(rules, &method, Failure::Status(status), ctx.retries)
                    || !can_resend(&request, resendable)
                    || !another_usable(pool, &reached)
                    || deadline.is_some_and(|d| d.passed())
                    || !pool.budget().try_retry()
                {
                    return Ok(hold_slot(response, slot));
                }
                tracing::info!(xid = ctx.xid, backend = %backend.name(), status = status.as_u16(), retry = ctx.retries + 1, "retrying after backend status, on another backend");
                // A newer answer replaces an older one.
                standing = Some(Standing::Answer(Box::new(response), slot));
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
                if matches!(error, FetchError::Deadline { .. }) {
                    // The deadline stops the wait; what stood before stands.
                    stand_unless_set(&mut standing, error);
                    break;
                }
                let elsewhere = retry::another_backend_only(error.failure());
                if elsewhere {
                    reached.push(index);
                }
                // A request that never reached the backend added no load to
                // it, so its retry does not draw on the budget.
                if !retry::may_retry(rules, &method, error.failure(), ctx.retries)
                    || !can_resend(&request, resendable)
                    || (elsewhere && !another_usable(pool, &reached))
                    || !(error.never_sent() || pool.budget().try_retry())
                {
                    stand_error(&mut standing, error);
                    break;
                }
                tracing::info!(xid = ctx.xid, backend = %backend.name(), reason = error.reason().as_str(), %error, retry = ctx.retries + 1, "retrying after fetch error");
                stand_error(&mut standing, error);
                drop(slot);
            }
        }
        // 4. Back off (full jitter) before the next attempt; a pause that
        // would outlast the deadline is not taken, the standing result goes.
        let pause = retry::backoff(rules, ctx.retries, &mut rand::thread_rng());
        if deadline.is_some_and(|d| d.left() <= pause) {
            break;
        }
        ctx.retries += 1;
        tokio::time::sleep(pause).await;
    }
    match standing {
        Some(Standing::Answer(response, slot)) => {
            ctx.backend = Some(slot.backend().name().clone());
            Ok(hold_slot(*response, slot))
        }
        Some(Standing::Error(error)) => Err(error),
        None => Err(FetchError::NoBackend {
            pool: pool.name().clone(),
        }),
    }
}

/// A failed attempt: its error stands, unless an answer does (a backend's
/// own answer beats a synthetic 503).
fn stand_error(standing: &mut Option<Standing>, error: FetchError) {
    if !matches!(standing, Some(Standing::Answer(..))) {
        *standing = Some(Standing::Error(error));
    }
}

/// `error` stands only when nothing stood before (the deadline's error
/// never hides a backend's).
fn stand_unless_set(standing: &mut Option<Standing>, error: FetchError) {
    if standing.is_none() {
        *standing = Some(Standing::Error(error));
    }
}

fn deadline_reached(backend: &backend::Backend<Body>, deadline: Deadline) -> FetchError {
    FetchError::Deadline {
        backend: backend.name().clone(),
        deadline: deadline.total,
    }
}

/// Whether a usable backend is left that this request has not reached.
fn another_usable(pool: &Pool, reached: &[usize]) -> bool {
    pool.members()
        .iter()
        .enumerate()
        .any(|(i, backend)| !reached.contains(&i) && backend.is_usable())
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
