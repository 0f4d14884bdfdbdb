//! The PROXY protocol (v1 text, v2 binary) on `proxy_protocol = true`
//! listeners: the header a load balancer or TLS terminator writes before
//! anything else, naming the client it accepted. Parsed by `ppp`.
//!
//! The header is read exactly, never a byte beyond it, so what follows
//! (HTTP, or a TLS handshake) reaches the connection code untouched: v2 is
//! its fixed 16 bytes and then the length they give; v1, a line of at most
//! 107 bytes, is read at most two bytes at a time until its CRLF (about
//! twenty reads for a typical line, once per connection: the price of not
//! peeking, which tokio offers for TCP but not for Unix sockets; v2 costs
//! three). A v2 header may carry at most [`V2_MAX`] bytes in all: addresses
//! and TLVs (AWS adds its endpoint id, HAProxy and hitch the TLS details)
//! fit in far less.
//!
//! What becomes the client address: the header's source for `PROXY TCP4`
//! / `TCP6` and v2 `PROXY` over IPv4/IPv6; the connection's own peer for
//! v1 `UNKNOWN`, v2 `LOCAL` (the balancer's health checks) and v2 address
//! families Shellac does not use (Unix, unspecified). Anything else — no
//! header, a malformed one, one too long, or one not complete within
//! `header_timeout` — closes the connection without a word.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ppp::{v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::peer::ClientAddr;

/// The longest v1 line, CRLF included (the specification's bound).
pub(super) const V1_MAX: usize = 107;
/// The longest v2 header accepted: its 16 fixed bytes and up to 4,080 of
/// addresses and TLVs.
pub(super) const V2_MAX: usize = 4096;
/// The v2 signature (the first 12 bytes of every v2 header).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v2 header's fixed part: signature, version and command, family and
/// protocol, length.
const V2_FIXED: usize = 16;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum HeaderError {
    #[error("no PROXY protocol header within header_timeout ({0:?})")]
    Timeout(Duration),
    #[error("the connection closed before a complete PROXY protocol header")]
    Closed,
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(std::io::Error),
}

/// Reads the PROXY header that starts `stream`, within `timeout`: the
/// client address it names (or `peer`, see the module comment).
pub(super) async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: ClientAddr,
    timeout: Duration,
) -> Result<ClientAddr, HeaderError> {
    match tokio::time::timeout(timeout, read(stream, peer)).await {
        Ok(result) => result,
        Err(_) => Err(HeaderError::Timeout(timeout)),
    }
}

async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: ClientAddr,
) -> Result<ClientAddr, HeaderError> {
    // 8 bytes tell the versions apart: v2's signature, v1's "PROXY ".
    let mut header = vec![0u8; 8];
    fill(stream, &mut header).await?;
    if header[..] == V2_SIGNATURE[..8] {
        header.resize(V2_FIXED, 0);
        fill(stream, &mut header[8..]).await?;
        if header[..12] != V2_SIGNATURE[..] {
            return Err(HeaderError::Missing);
        }
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if V2_FIXED + length > V2_MAX {
            return Err(HeaderError::TooLong(V2_MAX));
        }
        header.resize(V2_FIXED + length, 0);
        fill(stream, &mut header[V2_FIXED..]).await?;
        let parsed =
            v2::Header::try_from(&header[..]).map_err(|e| HeaderError::Malformed(e.to_string()))?;
        return Ok(from_v2(&parsed, peer));
    }
    if !header.starts_with(b"PROXY ") {
        return Err(HeaderError::Missing);
    }
    while !header.ends_with(b"\r\n") {
        if header.len() >= V1_MAX {
            return Err(HeaderError::TooLong(V1_MAX));
        }
        // Two bytes can end the line only as its CRLF; after a CR, one.
        let want = if header.ends_with(b"\r") { 1 } else { 2 };
        let at = header.len();
        header.resize((at + want).min(V1_MAX), 0);
        fill(stream, &mut header[at..]).await?;
    }
    let parsed =
        v1::Header::try_from(&header[..]).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    Ok(from_v1(&parsed, peer))
}

/// Reads exactly `buf.len()` bytes.
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> Result<(), HeaderError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HeaderError::Closed),
        Err(e) => Err(HeaderError::Io(e)),
    }
}

fn from_v1(header: &v1::Header<'_>, peer: ClientAddr) -> ClientAddr {
    match header.addresses {
        v1::Addresses::Tcp4(a) => {
            ClientAddr::Ip(SocketAddr::from((a.source_address, a.source_port)))
        }
        v1::Addresses::Tcp6(a) => {
            ClientAddr::Ip(SocketAddr::from((a.source_address, a.source_port)))
        }
        v1::Addresses::Unknown => peer,
    }
}

fn from_v2(header: &v2::Header<'_>, peer: ClientAddr) -> ClientAddr {
    if header.command == v2::Command::Local {
        return peer;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => {
            ClientAddr::Ip(SocketAddr::from((a.source_address, a.source_port)))
        }
        v2::Addresses::IPv6(a) => {
            ClientAddr::Ip(SocketAddr::from((a.source_address, a.source_port)))
        }
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => peer,
    }
}

/// Logs a refused header: at warn at most once per [`WARN_EVERY`] (a
/// port scanner or a client sent to the wrong port must not flood the
/// log), at debug otherwise. The metric counts every one.
pub(super) fn log_refused(peer: ClientAddr, error: &HeaderError) {
    static START: OnceLock<Instant> = OnceLock::new();
    static LAST_WARN_MS: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(Instant::now);
    let now_ms = start.elapsed().as_millis() as u64 + WARN_EVERY.as_millis() as u64;
    let last = LAST_WARN_MS.load(Ordering::Relaxed);
    let warn = now_ms.saturating_sub(last) >= WARN_EVERY.as_millis() as u64
        && LAST_WARN_MS
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    if warn {
        tracing::warn!(
            client = %peer,
            %error,
            "connection closed: a proxy_protocol listener needs a valid PROXY header \
             (more within a minute are logged at debug; shellac_proxy_protocol_errors_total counts all)"
        );
    } else {
        tracing::debug!(client = %peer, %error, "connection closed: no valid PROXY header");
    }
}

/// How often a refused header may be logged at warn.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<ClientAddr, HeaderError>, Vec<u8>) {
        let peer = ClientAddr::Ip("192.0.2.1:1".parse().expect("addr"));
        let mut input = bytes;
        let result = read_header(&mut input, peer, Duration::from_secs(1)).await;
        (result, input.to_vec())
    }

    #[tokio::test]
    async fn v1_is_read_to_its_crlf_and_not_a_byte_more() {
        for tail in ["", "G", "GET / HTTP/1.1\r\n\r\n"] {
            let input = format!("PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n{tail}");
            let (result, left) = parse(input.as_bytes()).await;
            assert_eq!(
                result.expect("valid"),
                ClientAddr::Ip("203.0.113.7:5555".parse().expect("addr"))
            );
            assert_eq!(left, tail.as_bytes());
        }
        let (result, left) = parse(b"PROXY UNKNOWN\r\nGET").await;
        assert_eq!(result.expect("valid").to_string(), "192.0.2.1:1");
        assert_eq!(left, b"GET");
    }

    #[tokio::test]
    async fn v2_proxy_local_and_refusals() {
        let addrs: (SocketAddr, SocketAddr) = (
            "[2001:db8::5]:4000".parse().expect("addr"),
            "[2001:db8::1]:443".parse().expect("addr"),
        );
        let mut header = v2::Builder::with_addresses(0x21, v2::Protocol::Stream, addrs)
            .build()
            .expect("build");
        header.extend_from_slice(b"\x16\x03");
        let (result, left) = parse(&header).await;
        assert_eq!(result.expect("valid"), ClientAddr::Ip(addrs.0));
        assert_eq!(left, b"\x16\x03");

        let local = v2::Builder::new(0x20, 0x00).build().expect("build");
        let (result, _) = parse(&local).await;
        assert_eq!(result.expect("valid").to_string(), "192.0.2.1:1");

        let (result, _) = parse(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(matches!(result, Err(HeaderError::Missing)), "{result:?}");
        let (result, _) = parse(b"PROXY TCP4 nonsense here 1 2\r\n").await;
        assert!(
            matches!(result, Err(HeaderError::Malformed(_))),
            "{result:?}"
        );
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        let (result, _) = parse(long.as_bytes()).await;
        assert!(
            matches!(result, Err(HeaderError::TooLong(V1_MAX))),
            "{result:?}"
        );
        let (result, _) = parse(b"PROXY TCP4 1.2.3.4").await;
        assert!(matches!(result, Err(HeaderError::Closed)), "{result:?}");
    }
}
