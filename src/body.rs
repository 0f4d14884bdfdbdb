//! The one body type Shellac hands to hyper, in both directions, plus the two
//! wrappers every backend body goes through:
//!
//! - [`TimedBody`] enforces `between_bytes_timeout` while the body streams, so
//!   a backend that stalls mid-body fails the transfer instead of hanging it;
//! - [`CaptureBody`] copies a cacheable response into the cache *while* it
//!   streams to the first client (it keeps the `Bytes` pieces, then joins
//!   them into one exact-size allocation) and stores it only when the body
//!   ended cleanly, so nothing truncated is ever cached.
//!
//! - [`LimitedBody`] counts a client's request body while it is forwarded
//!   and fails it past `[server] max_request_body`, noting why in a shared
//!   [`RequestBodyState`] so the pipeline can answer 413 (or 400 for a body
//!   hyper could not decode) instead of blaming the backend.
//!
//! `Body` is an enum rather than a boxed trait object so that cache hits (a
//! `Bytes` handed out as it is) cost no allocation for the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::backend::{Checkin, InFlight};

/// Why a body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The backend sent nothing for `between_bytes_timeout`.
    #[error(
        "backend {backend}: between_bytes_timeout ({timeout:?}) expired while reading the body"
    )]
    BetweenBytesTimeout {
        /// The backend's name.
        backend: Arc<str>,
        /// The configured limit that fired.
        timeout: Duration,
    },
    /// The backend connection failed mid-body (closed early, bad chunking).
    #[error("backend {backend}: body failed: {source}")]
    Backend {
        /// The backend's name.
        backend: Arc<str>,
        /// hyper's description of what broke.
        #[source]
        source: hyper::Error,
    },
    /// The client's request body failed while being forwarded.
    #[error("client request body failed: {0}")]
    Client(#[from] hyper::Error),
    /// The client's request body grew past `max_request_body`.
    #[error("client request body exceeds max_request_body ({max} bytes)")]
    RequestTooLarge {
        /// The configured limit in bytes.
        max: u64,
    },
}

/// A request or response body as Shellac passes it around.
pub enum Body {
    /// No body at all.
    Empty,
    /// A complete body in memory: cache hits and synthetic pages.
    Full(Option<Bytes>),
    /// A client's request body, forwarded as it arrives.
    Incoming(Incoming),
    /// A backend response body under `between_bytes_timeout`.
    Backend(TimedBody),
    /// A backend response body that is also being stored. Boxed: it is the
    /// largest variant and the rarest, and every `Body` (and every response
    /// that holds one, hits included) is as large as the largest variant.
    Capture(Box<CaptureBody>),
    /// A client's request body, forwarded as it arrives under `max_request_body`.
    Limited(LimitedBody),
}

impl Body {
    /// A complete in-memory body.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body::Full(Some(bytes.into()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(inner) => Pin::new(inner).poll_frame(cx).map_err(BodyError::Client),
            Body::Backend(inner) => Pin::new(inner).poll_frame(cx),
            Body::Capture(inner) => Pin::new(inner.as_mut()).poll_frame(cx),
            Body::Limited(inner) => Pin::new(inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::Incoming(inner) => inner.is_end_stream(),
            Body::Backend(inner) => inner.is_end_stream(),
            Body::Capture(inner) => inner.inner.is_end_stream(),
            Body::Limited(inner) => inner.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(inner) => inner.size_hint(),
            Body::Backend(inner) => inner.size_hint(),
            Body::Capture(inner) => inner.inner.size_hint(),
            Body::Limited(inner) => inner.inner.size_hint(),
        }
    }
}

impl From<Incoming> for Body {
    fn from(incoming: Incoming) -> Body {
        Body::Incoming(incoming)
    }
}

// === impl TimedBody ===

/// A backend body that fails with [`BodyError::BetweenBytesTimeout`] when no
/// frame arrives within the backend's `between_bytes_timeout`, and that
/// hands its connection back to the pool once it has been read to the end.
pub struct TimedBody {
    inner: Incoming,
    backend: Arc<str>,
    timeout: Duration,
    /// When the last frame (or the head) arrived: the timeout counts from it.
    last: Instant,
    /// Armed only when a poll finds no frame ready. Most bodies of small
    /// responses are already in hyper's channel when first polled, and then
    /// no timer is ever registered.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The connection, back to the pool when the body has ended cleanly.
    checkin: Option<Checkin>,
    /// Released when the body is dropped: the backend's in-flight slot,
    /// which must last as long as the response streams.
    held: Option<InFlight>,
}

impl TimedBody {
    /// Wraps a backend body; the between-bytes timeout counts from now.
    pub fn new(
        inner: Incoming,
        backend: Arc<str>,
        timeout: Duration,
        checkin: Checkin,
    ) -> TimedBody {
        TimedBody {
            inner,
            backend,
            timeout,
            last: Instant::now(),
            deadline: None,
            checkin: Some(checkin),
            held: None,
        }
    }

    /// Keeps the backend's in-flight `slot` until this body is dropped.
    pub fn hold(&mut self, slot: InFlight) {
        self.held = Some(slot);
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }

    /// The body ended cleanly: the connection can serve another request.
    fn ended(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.body_ended();
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.last = Instant::now();
                if self.is_end_stream() {
                    self.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(source))) => {
                self.checkin = None;
                Poll::Ready(Some(Err(BodyError::Backend {
                    backend: self.backend.clone(),
                    source,
                })))
            }
            Poll::Ready(None) => {
                self.ended();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let due = self.last + self.timeout;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if deadline.deadline() != due {
                    deadline.as_mut().reset(due);
                }
                ready!(deadline.as_mut().poll(cx));
                self.checkin = None;
                Poll::Ready(Some(Err(BodyError::BetweenBytesTimeout {
                    backend: self.backend.clone(),
                    timeout: self.timeout,
                })))
            }
        }
    }
}

impl Drop for TimedBody {
    /// A body with nothing left to read (`Content-Length: 0`, 204, 304, the
    /// answer to a HEAD) is often dropped without being polled; its
    /// connection is still good.
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.ended();
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        TimedBody::poll_frame(self.get_mut(), cx)
    }

    fn is_end_stream(&self) -> bool {
        TimedBody::is_end_stream(self)
    }

    fn size_hint(&self) -> SizeHint {
        TimedBody::size_hint(self)
    }
}

// === impl CaptureBody ===

/// What a capture ended with.
pub enum Captured {
    /// The whole body, which ended cleanly.
    Complete(Bytes),
    /// More than `max_size` bytes arrived; nothing is kept.
    TooLarge,
}

/// Called once when a captured body ended cleanly or grew too large; never
/// called when the body failed or was dropped half-way (nothing truncated is
/// stored).
pub type OnComplete = Box<dyn FnOnce(Captured) + Send>;

/// Streams a backend body to the client and keeps the pieces; when the body
/// ends cleanly and stayed within `max_size`, hands the whole body to
/// `on_complete`. An error, an oversized body or a client that goes away
/// (the body is dropped) stores nothing.
pub struct CaptureBody {
    inner: TimedBody,
    pieces: Vec<Bytes>,
    size: u64,
    max_size: u64,
    on_complete: Option<OnComplete>,
}

impl CaptureBody {
    /// Captures `inner`, giving up on storing once more than `max_size` bytes arrived.
    pub fn new(inner: TimedBody, max_size: u64, on_complete: OnComplete) -> CaptureBody {
        CaptureBody {
            inner,
            pieces: Vec::new(),
            size: 0,
            max_size,
            on_complete: Some(on_complete),
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(_)) = (frame.data_ref(), &self.on_complete) {
                    self.size += data.len() as u64;
                    if self.size > self.max_size {
                        if let Some(on_complete) = self.on_complete.take() {
                            on_complete(Captured::TooLarge);
                        }
                        self.pieces = Vec::new();
                    } else {
                        self.pieces.push(data.clone());
                    }
                }
                // hyper stops polling once the body says it has ended (a
                // Content-Length body that has all its bytes), so the end is
                // recognised here as well as at `None`.
                if self.inner.is_end_stream() {
                    self.complete();
                }
            }
            Poll::Ready(Some(Err(_))) => self.give_up(),
            Poll::Ready(None) => self.complete(),
            Poll::Pending => {}
        }
        polled
    }

    fn complete(&mut self) {
        if let Some(on_complete) = self.on_complete.take() {
            on_complete(Captured::Complete(concat(
                std::mem::take(&mut self.pieces),
                self.size,
            )));
        }
    }

    fn give_up(&mut self) {
        self.on_complete = None;
        self.pieces = Vec::new();
    }
}

/// Joins body pieces into one allocation of exactly `size` bytes, even when
/// there is a single piece: a piece is a view into hyper's read buffer (8 KiB
/// or more), and storing the view would keep that whole buffer alive for as
/// long as the object lives (measured: 6.8 KiB of RSS per stored 1 KiB
/// object). The copy is paid once per store, never per hit.
fn concat(pieces: Vec<Bytes>, size: u64) -> Bytes {
    let mut joined = BytesMut::with_capacity(size as usize);
    for piece in pieces {
        joined.extend_from_slice(&piece);
    }
    joined.freeze()
}

impl http_body::Body for CaptureBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        CaptureBody::poll_frame(self.get_mut(), cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl LimitedBody ===

/// Why a client's request body was cut off, when it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBodyFault {
    /// More than `max_request_body` bytes arrived: 413.
    TooLarge,
    /// hyper could not decode it (bad chunk size, early close): 400.
    Malformed,
}

/// Shared between a [`LimitedBody`] and the pipeline: a failed backend fetch
/// is the client's fault when the body it was forwarding failed first.
#[derive(Debug, Default)]
pub struct RequestBodyState(AtomicU8);

impl RequestBodyState {
    const TOO_LARGE: u8 = 1;
    const MALFORMED: u8 = 2;

    /// The fault, if the body was cut off.
    pub fn fault(&self) -> Option<RequestBodyFault> {
        match self.0.load(Ordering::Acquire) {
            Self::TOO_LARGE => Some(RequestBodyFault::TooLarge),
            Self::MALFORMED => Some(RequestBodyFault::Malformed),
            _ => None,
        }
    }

    fn set(&self, value: u8) {
        self.0.store(value, Ordering::Release);
    }
}

/// A client's request body that fails with [`BodyError::RequestTooLarge`]
/// once more than `max` bytes arrived. The declared `Content-Length` was
/// already checked against the same limit in `limits.rs`; this catches
/// chunked bodies, whose size is known only as they stream.
pub struct LimitedBody {
    inner: Incoming,
    received: u64,
    max: u64,
    state: Arc<RequestBodyState>,
}

impl LimitedBody {
    /// Wraps a client's body; `state` learns why it failed, if it does.
    pub fn new(inner: Incoming, max: u64, state: Arc<RequestBodyState>) -> LimitedBody {
        LimitedBody {
            inner,
            received: 0,
            max,
            state,
        }
    }
}

/// Puts a client's request body under `max` bytes; bodies already in memory
/// pass unchanged.
pub fn limit_request(body: Body, max: u64, state: Arc<RequestBodyState>) -> Body {
    match body {
        Body::Incoming(inner) => Body::Limited(LimitedBody::new(inner, max, state)),
        other => other,
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.received > this.max {
            return Poll::Ready(Some(Err(BodyError::RequestTooLarge { max: this.max })));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.max {
                        this.state.set(RequestBodyState::TOO_LARGE);
                        return Poll::Ready(Some(Err(BodyError::RequestTooLarge {
                            max: this.max,
                        })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.state.set(RequestBodyState::MALFORMED);
                Poll::Ready(Some(Err(BodyError::Client(error))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
