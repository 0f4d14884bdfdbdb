//! A watcher over the raw bytes of an HTTP/1 client connection that notes,
//! for each request head, how many `Content-Length` and `Transfer-Encoding`
//! field lines it had.
//!
//! Why: hyper frames a request with both by `Transfer-Encoding` alone and
//! drops the `Content-Length`, and it folds a repeated equal
//! `Content-Length` into one. Both are allowed by RFC 9112 §6.3, but §6.1
//! then requires closing the connection, and a front end that framed the
//! same bytes by `Content-Length` would disagree about where the next
//! request starts (request smuggling). The parsed request no longer shows
//! what was there, so this watcher counts the field lines as the bytes go
//! by and `limits::check` refuses the request (400, connection closed).
//!
//! It follows the framing just far enough to find each head: it skips
//! `Content-Length` bodies and chunked bodies, and gives up (counting
//! nothing more) on anything it cannot follow, such as HTTP/2 or a malformed
//! chunk size; hyper refuses those itself.

use std::collections::VecDeque;

use crate::limits::RawFraming;

/// The longest head the watcher buffers; beyond it hyper has refused the
/// request with 431 already (`http_req_size` is at most this in practice).
const MAX_HEAD: usize = 256 * 1024;
/// The most heads remembered ahead of the requests hyper hands over
/// (pipelining); beyond it the watcher gives up.
const MAX_PENDING: usize = 64;

enum State {
    /// Reading a request head (or the empty lines before one).
    Head(HeadScan),
    /// Skipping a `Content-Length` body.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data and its CRLF.
    ChunkData(u64),
    /// Reading trailer lines up to the empty one.
    Trailers(Vec<u8>),
    /// Not following this connection any more.
    Off,
}

/// A head being read, a line at a time: lines that arrive whole are looked
/// at where they lie in the read, so only a line split across two reads is
/// copied (into `partial`).
#[derive(Default)]
struct HeadScan {
    framing: RawFraming,
    /// The value of the last `Content-Length` line, when it parsed.
    length: Option<u64>,
    /// Lines seen so far, the request line included.
    lines: usize,
    /// Bytes of this head so far.
    size: usize,
    /// The start of a line whose end has not been read yet.
    partial: Vec<u8>,
}

/// The per-connection watcher; feed it every byte read, in order.
pub(super) struct FramingWatch {
    state: State,
    heads: VecDeque<RawFraming>,
}

impl FramingWatch {
    pub(super) fn new() -> FramingWatch {
        FramingWatch {
            state: State::Head(HeadScan::default()),
            heads: VecDeque::new(),
        }
    }

    /// The counts for the next request hyper hands over, in order.
    pub(super) fn next_head(&mut self) -> RawFraming {
        self.heads.pop_front().unwrap_or_default()
    }

    /// Stops following the connection, and lets go of what it buffered:
    /// after a `101` the bytes are a tunnel's, not HTTP (a binary stream
    /// would otherwise fill a head buffer of up to `MAX_HEAD` per tunnel).
    pub(super) fn stop(&mut self) {
        self.state = State::Off;
        self.heads = VecDeque::new();
    }

    /// Follows `bytes`, just read from the client.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let state = std::mem::replace(&mut self.state, State::Off);
            self.state = match state {
                State::Off => return,
                State::Head(mut scan) => {
                    let (part, rest) = take_through_newline(bytes);
                    bytes = rest;
                    scan.size += part.len();
                    if scan.size > MAX_HEAD {
                        State::Off
                    } else if !part.ends_with(b"\n") {
                        scan.partial.extend_from_slice(part);
                        State::Head(scan)
                    } else if scan.partial.is_empty() {
                        self.head_line(scan, part)
                    } else {
                        let mut line = std::mem::take(&mut scan.partial);
                        line.extend_from_slice(part);
                        self.head_line(scan, &line)
                    }
                }
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    if left == n {
                        State::Head(HeadScan::default())
                    } else {
                        State::Body(left - n)
                    }
                }
                State::ChunkSize(mut line) => {
                    let (part, rest) = take_through_newline(bytes);
                    line.extend_from_slice(part);
                    bytes = rest;
                    if line.len() > 1024 {
                        State::Off
                    } else if line.ends_with(b"\n") {
                        chunk_size(&line).map_or(State::Off, |size| match size {
                            0 => State::Trailers(Vec::new()),
                            size => State::ChunkData(size.saturating_add(2)),
                        })
                    } else {
                        State::ChunkSize(line)
                    }
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    if left == n {
                        State::ChunkSize(Vec::new())
                    } else {
                        State::ChunkData(left - n)
                    }
                }
                State::Trailers(mut line) => {
                    let (part, rest) = take_through_newline(bytes);
                    line.extend_from_slice(part);
                    bytes = rest;
                    if line.len() > MAX_HEAD {
                        State::Off
                    } else if line == b"\r\n" || line == b"\n" {
                        State::Head(HeadScan::default())
                    } else if line.ends_with(b"\n") {
                        State::Trailers(Vec::new())
                    } else {
                        State::Trailers(line)
                    }
                }
            };
        }
    }

    /// Counts the framing fields of a complete head and picks how to skip its body.
    /// One complete line of a head (ending in `\n`).
    fn head_line(&mut self, mut scan: HeadScan, line: &[u8]) -> State {
        if line == b"\r\n" || line == b"\n" {
            // Empty lines before a request line are skipped (RFC 9112 §2.2);
            // after one, the empty line ends the head.
            return if scan.lines == 0 {
                State::Head(HeadScan::default())
            } else {
                self.head_done(scan)
            };
        }
        scan.lines += 1;
        if scan.lines == 1 {
            if line.starts_with(b"PRI * HTTP/2.0") {
                return State::Off;
            }
            return State::Head(scan);
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = &line[..colon];
            if name.eq_ignore_ascii_case(b"content-length") {
                scan.framing.content_length_lines += 1;
                scan.length = std::str::from_utf8(&line[colon + 1..])
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                scan.framing.transfer_encoding_lines += 1;
            }
        }
        State::Head(scan)
    }

    fn head_done(&mut self, scan: HeadScan) -> State {
        if self.heads.len() >= MAX_PENDING {
            return State::Off;
        }
        let framing = scan.framing;
        self.heads.push_back(framing);
        if framing.transfer_encoding_lines > 0 {
            State::ChunkSize(Vec::new())
        } else {
            match scan.length {
                Some(0) | None => State::Head(HeadScan::default()),
                Some(n) => State::Body(n),
            }
        }
    }
}

/// Splits `bytes` after the first `\n` (or keeps all of it when there is none).
fn take_through_newline(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(at) => bytes.split_at(at + 1),
        None => (bytes, &[]),
    }
}

/// The size on a chunk-size line (`1a;ext=1\r\n`), if it is one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text.trim_end().split(';').next()?.trim();
    u64::from_str_radix(size, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(bytes: &[u8], split: usize) -> Vec<RawFraming> {
        let mut watch = FramingWatch::new();
        for piece in bytes.chunks(split) {
            watch.feed(piece);
        }
        watch.heads.into_iter().collect()
    }

    #[test]
    fn counts_framing_lines_per_head_across_bodies() {
        let stream = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nTE:xxPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n\r\nGET /c HTTP/1.1\r\ncontent-length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /d HTTP/1.1\nContent-Length: 1\nContent-Length: 1\n\nx";
        for split in [1, 3, 7, stream.len()] {
            let got = heads(stream, split);
            let counts: Vec<(u16, u16)> = got
                .iter()
                .map(|f| (f.content_length_lines, f.transfer_encoding_lines))
                .collect();
            assert_eq!(
                counts,
                vec![(1, 0), (0, 1), (1, 1), (2, 0)],
                "split {split}"
            );
        }
    }

    #[test]
    fn gives_up_on_http2_and_bad_chunks() {
        assert!(heads(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 4).is_empty());
        let got = heads(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            5,
        );
        assert_eq!(got.len(), 1);
    }
}
