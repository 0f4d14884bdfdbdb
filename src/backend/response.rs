//! [`TimedBody`]: a backend's response body as it streams, under the three
//! things that must follow it for as long as it lasts:
//!
//! - `between_bytes_timeout`: a backend that stalls mid-body fails the
//!   transfer ([`BodyError::BetweenBytesTimeout`]) instead of hanging it;
//! - the connection ([`Checkin`]), handed back to the backend's idle list
//!   once the body has been read to its end, and closed otherwise;
//! - the backend's in-flight slot ([`InFlight`]), released when the body is
//!   dropped, which wakes the next queued request.
//!
//! They live here, with the connection pool and the slots they belong to,
//! rather than in the crate's `body` module: `body` wraps this type (plain,
//! or copied into the cache), and so depends on `backend`, never the reverse.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::client::{Checkin, RequestBody};
use super::error::BodyError;
use super::InFlight;

/// A backend body that fails with [`BodyError::BetweenBytesTimeout`] when no
/// frame arrives within the backend's `between_bytes_timeout`, and that
/// hands its connection back to the pool once it has been read to the end.
/// `B` is the body type of the requests that connection sends.
pub struct TimedBody<B: RequestBody> {
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
    checkin: Option<Checkin<B>>,
    /// Released when the body is dropped: the backend's in-flight slot,
    /// which must last as long as the response streams.
    held: Option<InFlight<B>>,
}

impl<B: RequestBody> TimedBody<B> {
    /// Wraps a backend body; the between-bytes timeout counts from now.
    pub(super) fn new(
        inner: Incoming,
        backend: Arc<str>,
        timeout: Duration,
        checkin: Checkin<B>,
    ) -> TimedBody<B> {
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
    pub fn hold(&mut self, slot: InFlight<B>) {
        self.held = Some(slot);
    }

    /// The body ended cleanly: the connection can serve another request.
    fn ended(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.body_ended();
        }
    }
}

impl<B: RequestBody> Drop for TimedBody<B> {
    /// A body with nothing left to read (`Content-Length: 0`, 204, 304, the
    /// answer to a HEAD) is often dropped without being polled; its
    /// connection is still good.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl<B: RequestBody> http_body::Body for TimedBody<B> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last = Instant::now();
                if this.inner.is_end_stream() {
                    this.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(source))) => {
                this.checkin = None;
                Poll::Ready(Some(Err(BodyError::Failed {
                    backend: this.backend.clone(),
                    source,
                })))
            }
            Poll::Ready(None) => {
                this.ended();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let due = this.last + this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if deadline.deadline() != due {
                    deadline.as_mut().reset(due);
                }
                ready!(deadline.as_mut().poll(cx));
                this.checkin = None;
                Poll::Ready(Some(Err(BodyError::BetweenBytesTimeout {
                    backend: this.backend.clone(),
                    timeout: this.timeout,
                })))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
