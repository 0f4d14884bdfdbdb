//! Checks on the request head that hyper does not make itself, each
//! answering with the status a client should see: 400 for a malformed
//! request, 431 for an oversized head, 501 for a method Shellac does not
//! proxy. hyper already enforces `header_timeout`, `http_max_hdr` and the
//! read buffer; the per-line and whole-head sizes are measured here.

use http::{header, Method, Request, StatusCode, Version};

use crate::config::ServerConfig;
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

/// Refuses a request head Shellac will not forward.
pub fn check<B>(req: &Request<B>, config: &ServerConfig) -> Result<(), Synthetic> {
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
                "http_req_hdr_len",
            ));
        }
        head_size += line + 2;
    }
    if head_size > config.http_req_size {
        return Err(Synthetic::refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "http_req_size",
        ));
    }
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(Synthetic::refuse(StatusCode::BAD_REQUEST, "duplicate_host"));
    }
    if hosts == 0 && req.version() == Version::HTTP_11 && req.uri().authority().is_none() {
        return Err(Synthetic::refuse(StatusCode::BAD_REQUEST, "missing_host"));
    }
    if !is_known_method(req.method()) {
        return Err(Synthetic::refuse(
            StatusCode::NOT_IMPLEMENTED,
            "unknown_method",
        ));
    }
    Ok(())
}
