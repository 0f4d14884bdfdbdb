//! The one body type Shellac hands to hyper, in both directions, plus the
//! wrappers around what it carries:
//!
//! - a backend's response body is `backend::TimedBody`, which enforces
//!   `between_bytes_timeout`, gives the connection back to the pool and holds
//!   the backend's in-flight slot (the backend module owns all three; this
//!   module wraps that body and so depends on `backend`, never the reverse);
//! - a cacheable response is read into a [`shared::SharedBody`] by a task
//!   of the fetch's own, at the backend's speed, and every client that
//!   wants it reads it from there at its own pace ([`shared::SharedReader`]);
//!   when it ended cleanly, its pieces are joined into one exact-size
//!   allocation for the cache, so nothing truncated is ever cached and a
//!   client that stops reading (or leaves) stalls no one and stores anyway.
//!
//! - [`LimitedBody`] counts a client's request body while it is forwarded
//!   and fails it past `[server] max_request_body`, noting why in a shared
//!   [`RequestBodyState`] so the pipeline can answer 413 (or 400 for a body
//!   hyper could not decode) instead of blaming the backend.
//!
//! - [`gunzip::Gunzip`] decodes a gzip body while it streams, for a client
//!   that cannot take gzip (`[compression]`).
//!
//! `Body` is an enum rather than a boxed trait object so that cache hits (a
//! `Bytes` handed out as it is) cost no allocation for the body.

pub mod gunzip;
pub mod shared;

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
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
    /// A gzip body being decoded for a client was not valid gzip.
    #[error("the gzip body could not be decoded: {0}")]
    Decode(std::io::Error),
    /// An ESI include marked `onerror="abort"` failed: the page stops.
    #[error("an ESI include with onerror=\"abort\" failed: {0}")]
    EsiAbort(String),
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
    /// A reader of a fetch in progress that is being stored (its own
    /// client's and every waiter's body).
    Shared(SharedReader),
    /// A client's request body, forwarded as it arrives under `max_request_body`.
    Limited(LimitedBody),
    /// A gzip body decoded while it streams (boxed: the decoder's state
    /// would make every body as large as it is).
    Gunzip(Box<gunzip::Gunzip>),
    /// Pieces made by a task as they come: a page assembled from ESI
    /// includes (`proxy/esi.rs`), sent in document order.
    Channel(tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>),
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
            Body::Shared(inner) => Pin::new(inner).poll_frame(cx),
            Body::Limited(inner) => Pin::new(inner).poll_frame(cx),
            Body::Gunzip(inner) => Pin::new(inner.as_mut()).poll_frame(cx),
            Body::Channel(rx) => rx
                .poll_recv(cx)
                .map(|piece| piece.map(|piece| piece.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::Incoming(inner) => inner.is_end_stream(),
            Body::Backend(inner) => inner.is_end_stream(),
            Body::Shared(inner) => inner.is_end_stream(),
            Body::Limited(inner) => inner.inner.is_end_stream(),
            Body::Gunzip(inner) => inner.is_end_stream(),
            Body::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(inner) => inner.size_hint(),
            Body::Backend(inner) => inner.size_hint(),
            Body::Shared(inner) => inner.size_hint(),
            Body::Limited(inner) => inner.inner.size_hint(),
            Body::Gunzip(inner) => inner.size_hint(),
            Body::Channel(_) => SizeHint::default(),
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
