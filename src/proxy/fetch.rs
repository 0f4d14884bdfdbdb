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

use std::sync::Arc;
use std::time::SystemTime;

use http::header::RETRY_AFTER;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body as _;

use super::{Attempt, RequestCtx};
use crate::backend::{self, FetchError, PathKey};
use crate::body::{Body, RequestBodyState};
use crate::config::{RetryConfig, RouteConfig};
use crate::peer::ClientAddr;
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
    let mut run = Attempts::new(pool, rules, ctx.method.clone(), parts, body, body_state);
    pool.budget().record_request();
    // Bounded: every pass returns, stops, or is a retry within `max_retries`.
    for _ in 0..(rules.max_retries as usize + pool.members().len() + 1) {
        // 1.-2. A backend, a slot of it, and the request for it.
        let Some(Begun {
            index,
            backend,
            first_here,
            slot,
            req,
            timeout,
        }) = run.begin(key, route, again, ctx).await
        else {
            break;
        };
        // 3. Send, and judge the answer.
        let sent_at = std::time::Instant::now();
        let sent = send(backend, req, timeout, run.deadline, again, ctx).await;
        let judged = match sent {
            Ok(response) => run.answered(response, slot, index, first_here, sent_at, ctx),
            Err(failure) => run.failed(failure, slot, index, ctx),
        };
        match judged {
            Judged::Done(response) => return Ok(response),
            Judged::Stop => break,
            Judged::Retry => {}
        }
        // 4. Back off before the next attempt.
        if !run.back_off(ctx).await {
            break;
        }
    }
    run.finish(ctx)
}

/// Sends an Upgrade request (a tunnel: WebSocket and the like) to a backend
/// of `pool`, on a fresh connection of its own
/// (`BackendClient::send_upgrade`). The backend is picked and admitted as
/// for any request (probe-sick and ejected backends skipped, a slot of its
/// `max_connections`, the queue); only a connect that failed, the request
/// never having left, moves on as `[retry]` allows, like a fetch. Once the
/// request was sent, what came back stands, an error or any answer (a 5xx
/// too): the backend may have acted on it, and a tunnel is no request to
/// repeat. The slot travels with the response body as for a fetch; the
/// tunnel keeps that body, so a `101` holds the slot until the tunnel closes.
#[allow(clippy::too_many_arguments)]
pub(super) async fn upgrade(
    pool: &Pool,
    route: &RouteConfig,
    rules: &RetryConfig,
    key: &str,
    parts: Parts,
    body: Body,
    again: &(dyn Fn() -> Parts + Sync),
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, FetchError> {
    let mut run = Attempts::new(pool, rules, ctx.method.clone(), parts, body, None);
    // Bounded as `fetch` is: every pass returns, stops, or is a retry.
    for _ in 0..(rules.max_retries as usize + pool.members().len() + 1) {
        let Some(Begun {
            index,
            backend,
            first_here,
            slot,
            req,
            timeout,
        }) = run.begin(key, route, again, ctx).await
        else {
            break;
        };
        let sent_at = std::time::Instant::now();
        let failure = match backend
            .client
            .send_upgrade(req, timeout, run.deadline)
            .await
        {
            Ok(response) => {
                run.note_answer(&response, &slot, first_here, sent_at, ctx);
                return Ok(hold_slot(response, slot));
            }
            Err(failure) => failure,
        };
        if !failure.error.never_sent() {
            ctx.attempts.push(Attempt {
                backend: backend.name().clone(),
                result: Err(failure.error.reason()),
            });
            pool.record_error(&slot, run.path, &failure.error);
            return Err(failure.error);
        }
        // A connect that failed: another attempt, as a fetch would make.
        if !matches!(run.failed(failure, slot, index, ctx), Judged::Retry) {
            break;
        }
        if !run.back_off(ctx).await {
            break;
        }
    }
    run.finish(ctx)
}

/// What one attempt's outcome leads to.
// Returned at once, never stored: boxing the response would cost an
// allocation per fetch for nothing.
#[allow(clippy::large_enum_variant)]
enum Judged {
    /// This response goes to the client.
    Done(Response<Body>),
    /// No more attempts: what stands goes to the client.
    Stop,
    /// Another attempt, after the backoff.
    Retry,
}

/// An attempt ready to go: the backend (its index in the pool), whether
/// it is the first attempt on it, its slot, the request and the
/// `first_byte_timeout` that applies.
struct Begun<'a> {
    index: usize,
    backend: &'a Arc<backend::Backend<Body>>,
    first_here: bool,
    slot: InFlight,
    req: Request<Body>,
    timeout: std::time::Duration,
}

/// The state of one request's attempts.
struct Attempts<'a> {
    pool: &'a Pool,
    rules: &'a RetryConfig,
    body_state: Option<&'a RequestBodyState>,
    path: PathKey,
    /// The request, until it is sent (or when hyper gave it back).
    request: Option<Request<Body>>,
    /// Its body is already complete (GET, HEAD, an empty POST): it can be
    /// sent again with a new copy of its head; a streamed body cannot.
    resendable: bool,
    method: http::Method,
    deadline: Option<Deadline>,
    tried: Vec<usize>,
    /// The backends this request reached: none of them is asked again.
    reached: Vec<usize>,
    standing: Option<Standing>,
}

impl<'a> Attempts<'a> {
    fn new(
        pool: &'a Pool,
        rules: &'a RetryConfig,
        method: http::Method,
        parts: Parts,
        body: Body,
        body_state: Option<&'a RequestBodyState>,
    ) -> Attempts<'a> {
        Attempts {
            pool,
            rules,
            body_state,
            path: PathKey::of(parts.uri.path()),
            resendable: body.is_end_stream(),
            method,
            request: Some(Request::from_parts(parts, body)),
            deadline: Deadline::start(rules.deadline),
            tried: Vec::new(),
            reached: Vec::new(),
            standing: None,
        }
    }

    /// The client's own body failed: nothing is held against the backend.
    fn client_fault(&self) -> bool {
        self.body_state.is_some_and(|s| s.fault().is_some())
    }

    fn pick(&self, key: &str) -> Option<(usize, &'a Arc<backend::Backend<Body>>)> {
        let reached = &self.reached;
        self.pool
            .pick(key, &self.tried)
            .filter(|(i, _)| !reached.contains(i))
            .or_else(|| self.pool.pick(key, reached))
            .filter(|(i, _)| !reached.contains(i))
    }

    /// A slot of `backend`'s capacity, within the deadline; none when it
    /// shed the request or the deadline passed (what stands then says why).
    async fn admit(
        &mut self,
        backend: &Arc<backend::Backend<Body>>,
        priority: u8,
        ctx: &mut RequestCtx,
    ) -> Option<InFlight> {
        let admitted = match self.deadline {
            None => backend.admit(priority).await,
            Some(d) => match tokio::time::timeout(d.left(), backend.admit(priority)).await {
                Ok(admitted) => admitted,
                Err(_) => {
                    stand_unless_set(&mut self.standing, deadline_reached(backend, d));
                    return None;
                }
            },
        };
        match admitted {
            Ok(slot) => Some(slot),
            Err(shed) => {
                // Load shedding (queue full or timed out) is a failure of
                // this backend in the metrics and the 503's facts too.
                ctx.tried.push(backend.name().clone());
                ctx.attempts.push(Attempt {
                    backend: backend.name().clone(),
                    result: Err(shed.reason()),
                });
                stand_error(&mut self.standing, shed);
                None
            }
        }
    }

    /// The start of an attempt, the same for a fetch and a tunnel: pick a
    /// usable backend (another one than before when there is one, never
    /// one this request already reached), take a slot of it (at once,
    /// after queueing, or none: load shedding), and the request to send
    /// it, with the client's ends for a `proxy_protocol` backend's header.
    /// `None`: no more attempts; what stands says why.
    async fn begin(
        &mut self,
        key: &str,
        route: &RouteConfig,
        again: &(dyn Fn() -> Parts + Sync),
        ctx: &mut RequestCtx,
    ) -> Option<Begun<'a>> {
        let (index, backend) = self.pick(key)?;
        // Retries on the same backend are one piece of its traffic.
        let first_here = !self.tried.contains(&index);
        self.tried.push(index);
        let slot = self.admit(backend, route.priority, ctx).await?;
        ctx.backend = Some(backend.name().clone());
        ctx.tried.push(backend.name().clone());
        let mut req = self.next_request(again)?;
        if backend.client.config().proxy_protocol != 0 {
            req.extensions_mut().insert(client_ends(ctx));
        }
        let timeout = route
            .first_byte_timeout
            .unwrap_or(backend.client.config().first_byte_timeout);
        Some(Begun {
            index,
            backend,
            first_here,
            slot,
            req,
            timeout,
        })
    }

    /// The pause before the next attempt (full jitter); `false` when it
    /// would outlast the deadline: then the standing result goes.
    async fn back_off(&self, ctx: &mut RequestCtx) -> bool {
        let pause = retry::backoff(self.rules, ctx.retries, &mut rand::thread_rng());
        if self.deadline.is_some_and(|d| d.left() <= pause) {
            return false;
        }
        ctx.retries += 1;
        tokio::time::sleep(pause).await;
        true
    }

    /// The request to send: the original, or a new copy of its head when
    /// its body was complete.
    fn next_request(&mut self, again: &(dyn Fn() -> Parts + Sync)) -> Option<Request<Body>> {
        let resendable = self.resendable;
        self.request
            .take()
            .or_else(|| resendable.then(|| Request::from_parts(again(), Body::Empty)))
    }

    /// What an answer says: the attempt for the metrics, and the backend's
    /// passive health (unless the client's body failed).
    fn note_answer(
        &self,
        response: &Response<Body>,
        slot: &InFlight,
        first_here: bool,
        sent_at: std::time::Instant,
        ctx: &mut RequestCtx,
    ) {
        let status = response.status();
        let result = if status.is_server_error() {
            Err(Reason::Status5xx)
        } else {
            Ok(sent_at.elapsed())
        };
        ctx.attempts.push(Attempt {
            backend: slot.backend().name().clone(),
            result,
        });
        if !self.client_fault() {
            let after = retry_after(response);
            self.pool
                .record_answer(slot, self.path, status, after, first_here);
        }
    }

    /// The backend answered: passed on, or retried on another backend.
    fn answered(
        &mut self,
        response: Response<Body>,
        slot: InFlight,
        index: usize,
        first_here: bool,
        sent_at: std::time::Instant,
        ctx: &mut RequestCtx,
    ) -> Judged {
        let status = response.status();
        self.note_answer(&response, &slot, first_here, sent_at, ctx);
        let backend = slot.backend().name().clone();
        // `index` is reached now; it joins the list only when a retry
        // follows (most answers go straight out, and need no allocation).
        if !retry::may_retry(
            self.rules,
            &self.method,
            Failure::Status(status),
            ctx.retries,
        ) || !can_resend(&self.request, self.resendable)
            || !another_usable(self.pool, &self.reached, Some(index))
            || self.deadline.is_some_and(|d| d.passed())
            || !self.pool.budget().try_retry()
        {
            return Judged::Done(hold_slot(response, slot));
        }
        self.reached.push(index);
        tracing::info!(xid = ctx.xid, backend = %backend, status = status.as_u16(), retry = ctx.retries + 1, "retrying after backend status, on another backend");
        // A newer answer replaces an older one.
        self.standing = Some(Standing::Answer(Box::new(response), slot));
        Judged::Retry
    }

    /// No usable answer came: retried, or the end of the attempts.
    fn failed(
        &mut self,
        failure: backend::SendFailure<Body>,
        slot: InFlight,
        index: usize,
        ctx: &mut RequestCtx,
    ) -> Judged {
        ctx.attempts.push(Attempt {
            backend: slot.backend().name().clone(),
            result: Err(failure.error.reason()),
        });
        if !self.client_fault() {
            self.pool.record_error(&slot, self.path, &failure.error);
        }
        if let Some(returned) = failure.request {
            self.request = Some(*returned);
        }
        let error = failure.error;
        if matches!(error, FetchError::Deadline { .. }) {
            // The deadline stops the wait; what stood before stands.
            stand_unless_set(&mut self.standing, error);
            return Judged::Stop;
        }
        let elsewhere = retry::another_backend_only(error.failure());
        if elsewhere {
            self.reached.push(index);
        }
        // A request that never reached the backend added no load to
        // it, so its retry does not draw on the budget.
        if !retry::may_retry(self.rules, &self.method, error.failure(), ctx.retries)
            || !can_resend(&self.request, self.resendable)
            || (elsewhere && !another_usable(self.pool, &self.reached, None))
            || !(error.never_sent() || self.pool.budget().try_retry())
        {
            stand_error(&mut self.standing, error);
            return Judged::Stop;
        }
        tracing::info!(xid = ctx.xid, backend = %slot.backend().name(), reason = error.reason().as_str(), %error, retry = ctx.retries + 1, "retrying after fetch error");
        stand_error(&mut self.standing, error);
        drop(slot);
        Judged::Retry
    }

    /// What stands when the attempts are over.
    fn finish(self, ctx: &mut RequestCtx) -> Result<Response<Body>, FetchError> {
        match self.standing {
            Some(Standing::Answer(response, slot)) => {
                ctx.backend = Some(slot.backend().name().clone());
                Ok(hold_slot(*response, slot))
            }
            Some(Standing::Error(error)) => Err(error),
            None => Err(FetchError::NoBackend {
                pool: self.pool.name().clone(),
            }),
        }
    }
}

/// Sends `req` to `backend`. A pooled connection the backend had closed
/// while idle (no byte of an answer came back): once more on a fresh
/// connection, when the request is whole (its body complete and kept),
/// whatever retry_on says, outside the budget and the retry count: the
/// backend never saw it (Varnish's extrachance).
async fn send(
    backend: &backend::Backend<Body>,
    req: Request<Body>,
    timeout: std::time::Duration,
    deadline: Option<Deadline>,
    again: &(dyn Fn() -> Parts + Sync),
    ctx: &RequestCtx,
) -> Result<Response<Body>, backend::SendFailure<Body>> {
    // `begin` gave the first request the client's ends; a resent copy
    // needs them again.
    let proxy_header = backend.client.config().proxy_protocol != 0;
    let mut sent = backend.client.send_returning(req, timeout, deadline).await;
    if let Err(failure) = &mut sent {
        if let Some(replay) = failure.replay.take() {
            tracing::debug!(xid = ctx.xid, backend = %backend.name(), error = %failure.error, "pooled connection was closed: sending again on a fresh connection");
            let body = if replay.is_empty() {
                Body::Empty
            } else {
                Body::full(replay)
            };
            let mut req = Request::from_parts(again(), body);
            if proxy_header {
                req.extensions_mut().insert(client_ends(ctx));
            }
            sent = backend.client.send_fresh(req, timeout, deadline).await;
        }
    }
    sent
}

/// The client's connection, for the PROXY header of a `proxy_protocol`
/// backend (`backend/proxy_protocol.rs`): its source; the address it
/// connected to is not known here, so the backend connection's own local
/// address stands in for it.
fn client_ends(ctx: &RequestCtx) -> backend::ClientEnds {
    backend::ClientEnds {
        client: match ctx.client {
            ClientAddr::Ip(addr) => Some(addr),
            ClientAddr::Unix => None,
        },
        server: None,
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

/// Whether a usable backend is left that this request has not reached
/// (those in `reached`, and `also`).
fn another_usable(pool: &Pool, reached: &[usize], also: Option<usize>) -> bool {
    pool.members()
        .iter()
        .enumerate()
        .any(|(i, backend)| !reached.contains(&i) && also != Some(i) && backend.is_usable())
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
