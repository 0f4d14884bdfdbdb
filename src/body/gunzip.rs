//! A gzip body decoded while it streams, for a client that cannot take
//! gzip (`[compression] gzip_support`): each input piece is fed to the
//! decoder in one `write`, which inflates at most its 32 KiB buffer, so
//! no poll inflates more than that however well the input compressed (a
//! gzip bomb costs the reader's pace, not a runtime thread's time).

use std::io::Write;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use flate2::write::GzDecoder;
use http_body::{Body as _, Frame, SizeHint};

use super::{Body, BodyError};

/// The decoded form of a gzip body.
pub struct Gunzip {
    inner: Body,
    decoder: GzDecoder<Vec<u8>>,
    /// Input not fed to the decoder yet.
    input: Bytes,
    /// The decoded length, when known (a stored object that Shellac
    /// compressed itself).
    len: Option<u64>,
    /// Decoded bytes still to skip, and to send (a range of the decoded body).
    skip: u64,
    remaining: Option<u64>,
    /// Whether any input arrived.
    fed: bool,
    done: bool,
}

impl Gunzip {
    /// Decodes `inner`; `len` is the decoded length if known.
    pub fn new(inner: Body, len: Option<u64>) -> Gunzip {
        Gunzip {
            inner,
            decoder: GzDecoder::new(Vec::new()),
            input: Bytes::new(),
            len,
            skip: 0,
            remaining: None,
            fed: false,
            done: false,
        }
    }

    /// Only the decoded bytes `start..=end` (a `Range` on the decoded
    /// representation): the rest is decoded and dropped as it streams.
    pub fn range(mut self, start: u64, end: u64) -> Gunzip {
        self.skip = start;
        self.remaining = Some(end.saturating_sub(start) + 1);
        self.len = self.remaining;
        self
    }

    /// `out` cut to the range, if any; ends the body after its last byte.
    fn in_range(&mut self, mut out: Bytes) -> Bytes {
        if self.skip > 0 {
            let n = self.skip.min(out.len() as u64);
            out.advance(n as usize);
            self.skip -= n;
        }
        if let Some(remaining) = &mut self.remaining {
            out.truncate((*remaining).min(out.len() as u64) as usize);
            *remaining -= out.len() as u64;
            if *remaining == 0 {
                self.done = true;
            }
        }
        out
    }

    /// What the decoder has produced since the last call.
    fn take_output(&mut self) -> Option<Bytes> {
        let out = std::mem::take(self.decoder.get_mut());
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn poll_decoded(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if !self.input.is_empty() {
                let fed = self.decoder.write(&self.input).map_err(BodyError::Decode)?;
                self.input.advance(fed);
                if fed == 0 {
                    // The gzip stream ended; what follows it is ignored.
                    self.input.clear();
                }
                if self.input.is_empty() {
                    // Hand on what the decoder holds before waiting for more.
                    self.decoder.flush().map_err(BodyError::Decode)?;
                }
                if let Some(out) = self.take_output() {
                    let out = self.in_range(out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                continue;
            }
            let frame = if self.inner.is_end_stream() {
                None
            } else {
                ready!(Pin::new(&mut self.inner).poll_frame(cx))
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.fed |= !data.is_empty();
                        self.input = data;
                    }
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None if !self.fed => {
                    // No body at all (a HEAD, a 304): nothing to decode.
                    self.done = true;
                    return Poll::Ready(None);
                }
                None => {
                    self.decoder.try_finish().map_err(BodyError::Decode)?;
                    let out = self.take_output().map(|out| self.in_range(out));
                    self.done = true;
                    return Poll::Ready(out.filter(|o| !o.is_empty()).map(Ok));
                }
            }
        }
    }
}

impl http_body::Body for Gunzip {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.get_mut()
            .poll_decoded(cx)
            .map(|next| next.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.len.map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn gzip(bytes: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(bytes).expect("in memory");
        Bytes::from(encoder.finish().expect("in memory"))
    }

    #[tokio::test]
    async fn a_well_compressed_body_comes_out_in_bounded_pieces() {
        // 8 MiB of zeros gzip into a few KiB: one input piece.
        let plain = vec![0u8; 8 << 20];
        let mut body = Gunzip::new(Body::full(gzip(&plain)), Some(plain.len() as u64));
        let (mut total, mut largest) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.expect("valid").into_data().expect("data");
            largest = largest.max(data.len());
            total += data.len();
        }
        assert_eq!(total, plain.len());
        assert!(largest <= 64 * 1024, "{largest} bytes in one piece");
    }

    #[tokio::test]
    async fn a_range_of_the_decoded_body() {
        let plain: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let body = Gunzip::new(Body::full(gzip(&plain)), None).range(70_000, 300_001);
        let got = body.collect().await.expect("valid").to_bytes();
        assert_eq!(got, plain[70_000..=300_001]);
        let broken = Gunzip::new(Body::full(Bytes::from_static(b"not gzip")), None);
        assert!(broken.collect().await.is_err());
    }
}
