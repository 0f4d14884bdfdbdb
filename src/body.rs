//! The one body type Shellac hands to hyper, in both directions, plus the
//! wrappers around what it carries:
//!
//! - a backend's response body is `backend::TimedBody`, which enforces
//!   `between_bytes_timeout`, gives the connection back to the pool and holds
//!   the backend's in-flight slot (the backend module owns all three; this
//!   module wraps that body and so depends on `backend`, never the reverse);
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

pub mod shared;

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use crate::backend::{self, TimedBody};
use shared::SharedReader;

/// Why a body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The backend's body stopped: `between_bytes_timeout`, or the
    /// connection failed mid-body.
    #[error(transparent)]
    Backend(#[from] backend::BodyError),
    /// The client's request body failed while being forwarded.
    #[error("client request body failed: {0}")]
    Client(#[from] hyper::Error),
    /// The client's request body grew past `max_request_body`.
    #[error("client request body exceeds max_request_body ({max} bytes)")]
    RequestTooLarge {
        /// The configured limit in bytes.
        max: u64,
    },
    /// The shared fetch this body was read from failed (every reader of it
    /// gets the same error).
    #[error("the shared fetch failed: {0}")]
    Fetch(Arc<BodyError>),
    /// The shared fetch outgrew `max_object_size` or `transit_capacity`
    /// while this reader was behind; another reader took the rest of it.
    #[error("the shared fetch stopped buffering (max_object_size or transit_capacity) {at} bytes into this body")]
    Behind {
        /// Bytes this reader had when it ended.
        at: u64,
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
    Backend(TimedBody<Body>),
    /// A backend response body that is also being stored. Boxed: it is the
    /// largest variant and the rarest, and every `Body` (and every response
    /// that holds one, hits included) is as large as the largest variant.
    Capture(Box<CaptureBody>),
    /// A client's request body, forwarded as it arrives under `max_request_body`.
    Limited(LimitedBody),
    /// A reader of a fetch in progress that is being stored.
    Shared(SharedReader),
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
            Body::Backend(inner) => Pin::new(inner).poll_frame(cx).map_err(BodyError::Backend),
            Body::Capture(inner) => Pin::new(inner.as_mut()).poll_frame(cx),
            Body::Limited(inner) => Pin::new(inner).poll_frame(cx),
            Body::Shared(inner) => Pin::new(inner).poll_frame(cx),
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
            Body::Shared(inner) => inner.is_end_stream(),
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
            Body::Shared(inner) => inner.size_hint(),
        }
    }
}

impl From<Incoming> for Body {
    fn from(incoming: Incoming) -> Body {
        Body::Incoming(incoming)
    }
}

/// How the backend client hands back a response body it received on a
/// connection whose requests carry a [`Body`].
impl From<TimedBody<Body>> for Body {
    fn from(timed: TimedBody<Body>) -> Body {
        Body::Backend(timed)
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
    inner: TimedBody<Body>,
    pieces: Vec<Bytes>,
    size: u64,
    max_size: u64,
    on_complete: Option<OnComplete>,
}

impl CaptureBody {
    /// Captures `inner`, giving up on storing once more than `max_size` bytes arrived.
    pub fn new(inner: TimedBody<Body>, max_size: u64, on_complete: OnComplete) -> CaptureBody {
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
        let polled = Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(BodyError::Backend);
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
