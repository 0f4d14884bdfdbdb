//! Checks on the request head that hyper does not make itself, each
//! answering with the status a client should see: 400 for a malformed
//! request, 413 for a declared body over `max_request_body`, 431 for an
//! oversized head, 501 for a method or transfer coding Shellac does not
//! proxy. hyper already enforces `header_timeout`, `http_max_hdr` and the
//! read buffer; the per-line and whole-head sizes are measured here.
//!
//! # Message framing (RFC 9112 §6.1, §6.3)
//!
//! Request smuggling lives in the gap between two parsers that frame the
//! same bytes differently. hyper has already refused what it cannot parse
//! (bad tokens, NUL and control bytes, obs-fold, a space before the colon,
//! conflicting or malformed `Content-Length`, a `Transfer-Encoding` whose
//! final coding is not `chunked`). What it accepts but a downstream parser
//! might read differently is refused here, *before* anything is forwarded:
//!
//! - `Content-Length` together with `Transfer-Encoding`: 400. §6.1 allows
//!   "reject, or use Transfer-Encoding alone", and requires closing the
//!   connection either way; rejecting means no such request ever reaches a
//!   backend.
//! - more than one `Content-Length` field line, or a list (`3, 3`), even of
//!   equal values: 400 (§6.3 permits accepting equal values; Varnish does
//!   not, nor do we).
//! - `Transfer-Encoding` other than exactly one `chunked`: 501 (§6.1: a
//!   coding the server does not understand), except that hyper answers 400
//!   first when `chunked` is not the final coding.
//! - `Transfer-Encoding` in an HTTP/1.0 request: 400 (§6.1: faulty framing).
//!
//! Every refusal here is sent with `Connection: close` by the pipeline: once
//! the head is in doubt, so is where the next request would start.
//!
//! # Target and Host (RFC 9112 §3.2, RFC 9110 §7.2)
//!
//! `Host` must be a valid `host[:port]` without userinfo, and at most one.
//! An absolute-form target (or an HTTP/2 `:authority`) must name the same
//! host and port as `Host` when both are present: §3.2.2 says the target's
//! authority wins, but a front end routing on `Host` would then disagree
//! with Shellac about which site the request is for, so a mismatch is 400.

use http::uri::Authority;
use http::{header, HeaderMap, Method, Request, StatusCode, Version};

use crate::config::ServerConfig;
use crate::reason::Reason;
use crate::synth::Synthetic;

/// Methods Shellac forwards. Others (CONNECT, WebDAV's, made-up ones) get 501,
/// like a Varnish without a `vcl_recv` that pipes them.
fn is_known_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::PATCH
            | Method::OPTIONS
            | Method::TRACE
    ) || method.as_str() == "PURGE"
}

/// How many `Content-Length` and `Transfer-Encoding` field lines the raw
/// request head had, as counted by the server before hyper parsed it (hyper
/// folds repeats and drops `Content-Length` next to `Transfer-Encoding`).
/// The server hands it to the pipeline with the request (HTTP/1 only);
/// absent means unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFraming {
    /// `Content-Length` field lines in the head.
    pub content_length_lines: u16,
    /// `Transfer-Encoding` field lines in the head.
    pub transfer_encoding_lines: u16,
}

/// Refuses a request head Shellac will not forward.
pub fn check<B>(
    req: &Request<B>,
    framing: Option<RawFraming>,
    config: &ServerConfig,
) -> Result<(), Synthetic> {
    let headers = req.headers();
    // Request line: method SP target SP version CRLF.
    let mut head_size = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    for (name, value) in headers {
        let line = name.as_str().len() + 2 + value.len();
        if line > config.http_req_hdr_len {
            return Err(Synthetic::refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Reason::HttpReqHdrLen,
            ));
        }
        head_size += line + 2;
    }
    if head_size > config.http_req_size {
        return Err(Synthetic::refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reason::HttpReqSize,
        ));
    }
    check_host(req)?;
    if let Some(raw) = framing {
        if raw.content_length_lines > 0 && raw.transfer_encoding_lines > 0 {
            return Err(Synthetic::refuse(
                StatusCode::BAD_REQUEST,
                Reason::ContentLengthWithTransferEncoding,
            ));
        }
        if raw.content_length_lines > 1 {
            return Err(Synthetic::refuse(
                StatusCode::BAD_REQUEST,
                Reason::DuplicateContentLength,
            ));
        }
    }
    check_framing(headers, req.version(), config.max_request_body)?;
    if !is_known_method(req.method()) {
        return Err(Synthetic::refuse(
            StatusCode::NOT_IMPLEMENTED,
            Reason::UnknownMethod,
        ));
    }
    Ok(())
}

/// `Host` and the target's authority: present when required, valid, single,
/// and in agreement.
fn check_host<B>(req: &Request<B>) -> Result<(), Synthetic> {
    let bad = |reason| Err(Synthetic::refuse(StatusCode::BAD_REQUEST, reason));
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return bad(Reason::DuplicateHost);
    }
    let authority = req.uri().authority();
    if authority.is_some_and(|a| a.as_str().contains('@')) {
        return bad(Reason::UserinfoInTarget);
    }
    let Some(host) = host else {
        if req.version() == Version::HTTP_11 && authority.is_none() {
            return bad(Reason::MissingHost);
        }
        return Ok(());
    };
    if authority.is_none() && is_plain_host(host.as_bytes()) {
        return Ok(());
    }
    let Some(host) = host
        .to_str()
        .ok()
        .and_then(|h| h.parse::<Authority>().ok())
        .filter(valid_host)
    else {
        return bad(Reason::InvalidHost);
    };
    if let Some(authority) = authority {
        if !same_authority(authority, &host) {
            return bad(Reason::HostMismatch);
        }
    }
    Ok(())
}

/// A `Host` of the everyday shape, `name[:port]` with a name of letters,
/// digits, dots and hyphens: valid without building an `Authority` (which
/// copies the value) on every request. Anything else takes the full check.
fn is_plain_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().position(|&b| b == b':') {
        Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
        None => (host, None),
    };
    let name_ok = name.first().is_some_and(u8::is_ascii_alphanumeric)
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port).is_ok_and(|p| p.parse::<u16>().is_ok())
    });
    name_ok && port_ok
}

/// `uri-host [":" port]` (RFC 9110 §7.2): no userinfo, and a colon after
/// the host (outside an IPv6 literal's brackets) only with a numeric port.
fn valid_host(host: &Authority) -> bool {
    let text = host.as_str();
    let after_literal = text.rsplit(']').next().unwrap_or(text);
    !text.contains('@') && after_literal.contains(':') == host.port_u16().is_some()
}

/// Same host (case-insensitively) and the same port, port 80 being the
/// default for a missing one.
fn same_authority(a: &Authority, b: &Authority) -> bool {
    a.host().eq_ignore_ascii_case(b.host())
        && a.port_u16().unwrap_or(80) == b.port_u16().unwrap_or(80)
}

/// The body framing headers: unambiguous, understood, and a declared length
/// within `max_request_body`. See the module documentation.
fn check_framing(headers: &HeaderMap, version: Version, max_body: u64) -> Result<(), Synthetic> {
    let bad = |reason| Err(Synthetic::refuse(StatusCode::BAD_REQUEST, reason));
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        if version == Version::HTTP_10 {
            return bad(Reason::TransferEncodingInHttp10);
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return bad(Reason::ContentLengthWithTransferEncoding);
        }
        let chunked_only = first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !chunked_only || te.next().is_some() {
            return Err(Synthetic::refuse(
                StatusCode::NOT_IMPLEMENTED,
                Reason::UnsupportedTransferEncoding,
            ));
        }
        return Ok(());
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(length) = lengths.next() else {
        return Ok(());
    };
    if lengths.next().is_some() {
        return bad(Reason::DuplicateContentLength);
    }
    let text = length.to_str().unwrap_or_default();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return bad(Reason::InvalidContentLength);
    }
    match text.parse::<u64>() {
        Ok(length) if length <= max_body => Ok(()),
        // All digits but too large for u64: certainly over the limit.
        _ => Err(Synthetic::refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::MaxRequestBody,
        )),
    }
}

/// Whether the request head announces a body (RFC 9112 §6.3): a
/// `Transfer-Encoding`, or a `Content-Length` other than 0.
pub fn has_body<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        crate::Config::parse(
            std::path::Path::new("t.toml"),
            "[server]\nmax_request_body = \"1KiB\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n",
        )
        .expect("valid")
        .server
    }

    fn request(target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    fn status(req: &Request<()>) -> Option<u16> {
        check(req, None, &config()).err().map(|s| s.status.as_u16())
    }

    #[test]
    fn framing_ambiguities_are_refused() {
        let te = ("transfer-encoding", "chunked");
        assert_eq!(status(&request("/", &[("host", "a"), te])), None);
        assert_eq!(
            status(&request("/", &[("host", "a"), te, ("content-length", "3")])),
            Some(400)
        );
        assert_eq!(
            status(&request(
                "/",
                &[("host", "a"), ("transfer-encoding", "gzip, chunked")]
            )),
            Some(501)
        );
        assert_eq!(
            status(&request(
                "/",
                &[
                    ("host", "a"),
                    ("content-length", "3"),
                    ("content-length", "3")
                ]
            )),
            Some(400)
        );
        assert_eq!(
            status(&request("/", &[("host", "a"), ("content-length", "2048")])),
            Some(413)
        );
        assert_eq!(
            status(&request("/", &[("host", "a"), ("content-length", "1024")])),
            None
        );
    }

    #[test]
    fn host_must_be_valid_and_agree_with_the_target() {
        assert_eq!(
            status(&request("http://a.example/x", &[("host", "A.example:80")])),
            None
        );
        assert_eq!(
            status(&request("http://a.example/x", &[("host", "b.example")])),
            Some(400)
        );
        assert_eq!(
            status(&request(
                "http://a.example:8080/x",
                &[("host", "a.example")]
            )),
            Some(400)
        );
        assert_eq!(status(&request("/", &[("host", "a b")])), Some(400));
        assert_eq!(status(&request("/", &[("host", "")])), Some(400));
        assert_eq!(status(&request("/", &[("host", "u@a")])), Some(400));
        assert_eq!(status(&request("/", &[("host", "a:")])), Some(400));
        assert_eq!(status(&request("http://a.example/x", &[])), None);
        assert_eq!(status(&request("/", &[("host", "a:65536")])), Some(400));
        assert_eq!(status(&request("/", &[("host", "[::1]:8080")])), None);
    }

    /// The fast path never accepts a host the full check would refuse.
    #[test]
    fn plain_hosts_pass_the_full_check_too() {
        let hosts = [
            "a",
            "A.Example",
            "a-b.c",
            "a..b",
            "1.2.3.4:8080",
            "a:0",
            "a:65535",
            "a:65536",
            "a:",
            ":80",
            "-a",
            "a_b",
            "a b",
            "a@b",
            "[::1]",
            "a:8x",
            "a:123456",
            "",
        ];
        for host in hosts {
            let full = host.parse::<Authority>().ok().filter(valid_host).is_some();
            if is_plain_host(host.as_bytes()) {
                assert!(full, "{host:?} is plain but fails the full check");
            }
        }
        assert!(is_plain_host(b"shop.example.com:8080"));
        assert!(!is_plain_host(b"a:65536"));
    }
}
