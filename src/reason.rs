//! [`Reason`]: why a backend fetch failed or why Shellac answered by itself,
//! as one `Copy` value instead of a string.
//!
//! The same reason crosses many modules: a backend error names it, the
//! waiting list hands it to the waiters, the synthetic page, its JSON and the
//! `X-Shellac-Error` header show it, the metrics count by it and the logs
//! print it. As an enum, a typo is a compile error and a consumer can match
//! on it (`Reason::QueueFull`) instead of comparing strings. Its labels,
//! [`Reason::as_str`], are the ones operators already see: changing one
//! changes a metric label, a log field and a response body.
//!
//! This is a leaf: it imports nothing from the crate.

use std::fmt;

/// Why a fetch failed or a synthetic answer was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // --- A backend fetch without a usable response head (`FetchError`).
    /// The TCP connection was refused, failed, or closed before the request was sent.
    Connect,
    /// `connect_timeout` expired.
    ConnectTimeout,
    /// The TLS handshake with an HTTPS backend failed: an untrusted chain,
    /// a name mismatch, or the handshake itself.
    Tls,
    /// `first_byte_timeout` expired.
    FirstByteTimeout,
    /// The response head broke `http_resp_hdr_len` or `http_resp_size`.
    RespHdrTooLarge,
    /// The backend sent something that is not HTTP, or closed mid-head.
    InvalidResponse,
    /// `max_connections` reached and the wait queue full: shed at once.
    QueueFull,
    /// `queue_timeout` expired waiting for a connection slot.
    QueueTimeout,
    /// No backend of the pool may take traffic.
    NoHealthyBackend,
    /// `[retry] deadline` passed before any attempt produced an answer.
    Deadline,

    // --- A backend that answered with an error.
    /// A 5xx answer, as a failed attempt in the backend metrics.
    Status5xx,
    /// A 500, 502, 503 or 504 replaced by a stale object (stale-if-error).
    BackendErrorStatus,

    // --- A request head refused (`limits.rs`).
    /// A header line longer than `http_req_hdr_len` (431).
    HttpReqHdrLen,
    /// A request head larger than `http_req_size` (431).
    HttpReqSize,
    /// Both `Content-Length` and `Transfer-Encoding` (400).
    ContentLengthWithTransferEncoding,
    /// More than one `Content-Length` (400).
    DuplicateContentLength,
    /// A `Content-Length` that is not a number (400).
    InvalidContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 request (400).
    TransferEncodingInHttp10,
    /// A transfer coding other than exactly `chunked` (501).
    UnsupportedTransferEncoding,
    /// A method Shellac does not forward (501).
    UnknownMethod,
    /// More than one `Host` (400).
    DuplicateHost,
    /// Userinfo (`user@`) in the request target (400).
    UserinfoInTarget,
    /// No `Host` in an HTTP/1.1 request (400).
    MissingHost,
    /// A `Host` that is not a valid `host[:port]` (400).
    InvalidHost,
    /// `Host` and the target's authority disagree (400).
    HostMismatch,
    /// A body over `[server] max_request_body`, declared or streamed (413).
    MaxRequestBody,
    /// A request body hyper could not decode (400).
    InvalidRequestBody,
    /// A request body that stalled for `between_bytes_timeout` (408).
    RequestBodyTimeout,

    // --- The pipeline's own answers.
    /// A connection over `[server] max_connections` (503).
    MaxConnections,
    /// No `[[route]]` matched (503).
    NoRoute,
    /// `Cache-Control: only-if-cached` and nothing cached (504).
    OnlyIfCached,
    /// A `PURGE` that removed the URL's variants.
    Purge,
    /// `PURGE` while `[cache] purge_allow` is empty (405).
    PurgeNotEnabled,
    /// `PURGE` from a client outside `[cache] purge_allow` (403).
    PurgeNotAllowed,
    /// A Magento 2 `PURGE` with neither `X-Magento-Tags-Pattern` nor
    /// `X-Pool`, or an invalidation whose pattern is no regex (400).
    InvalidationMalformed,

    // --- Operations.
    /// Maintenance mode is on (503).
    Maintenance,
    /// Over a `[[rate_limit]]` quota (429).
    RateLimited,
}

impl Reason {
    /// Every reason, for tests and for documentation tables.
    pub const ALL: [Reason; 37] = [
        Reason::Connect,
        Reason::ConnectTimeout,
        Reason::Tls,
        Reason::FirstByteTimeout,
        Reason::RespHdrTooLarge,
        Reason::InvalidResponse,
        Reason::QueueFull,
        Reason::QueueTimeout,
        Reason::NoHealthyBackend,
        Reason::Deadline,
        Reason::Status5xx,
        Reason::BackendErrorStatus,
        Reason::HttpReqHdrLen,
        Reason::HttpReqSize,
        Reason::ContentLengthWithTransferEncoding,
        Reason::DuplicateContentLength,
        Reason::InvalidContentLength,
        Reason::TransferEncodingInHttp10,
        Reason::UnsupportedTransferEncoding,
        Reason::UnknownMethod,
        Reason::DuplicateHost,
        Reason::UserinfoInTarget,
        Reason::MissingHost,
        Reason::InvalidHost,
        Reason::HostMismatch,
        Reason::MaxRequestBody,
        Reason::InvalidRequestBody,
        Reason::RequestBodyTimeout,
        Reason::MaxConnections,
        Reason::NoRoute,
        Reason::OnlyIfCached,
        Reason::Purge,
        Reason::PurgeNotEnabled,
        Reason::PurgeNotAllowed,
        Reason::InvalidationMalformed,
        Reason::Maintenance,
        Reason::RateLimited,
    ];

    /// The short label used in logs, metrics labels, `X-Shellac-Error` and
    /// the synthetic page's `reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::ConnectTimeout => "connect_timeout",
            Reason::Tls => "tls",
            Reason::FirstByteTimeout => "first_byte_timeout",
            Reason::RespHdrTooLarge => "resp_hdr_too_large",
            Reason::InvalidResponse => "invalid_response",
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
            Reason::NoHealthyBackend => "no_healthy_backend",
            Reason::Deadline => "deadline",
            Reason::Status5xx => "status_5xx",
            Reason::BackendErrorStatus => "backend_error_status",
            Reason::HttpReqHdrLen => "http_req_hdr_len",
            Reason::HttpReqSize => "http_req_size",
            Reason::ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            Reason::DuplicateContentLength => "duplicate_content_length",
            Reason::InvalidContentLength => "invalid_content_length",
            Reason::TransferEncodingInHttp10 => "transfer_encoding_in_http10",
            Reason::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            Reason::UnknownMethod => "unknown_method",
            Reason::DuplicateHost => "duplicate_host",
            Reason::UserinfoInTarget => "userinfo_in_target",
            Reason::MissingHost => "missing_host",
            Reason::InvalidHost => "invalid_host",
            Reason::HostMismatch => "host_mismatch",
            Reason::MaxRequestBody => "max_request_body",
            Reason::InvalidRequestBody => "invalid_request_body",
            Reason::RequestBodyTimeout => "request_body_timeout",
            Reason::MaxConnections => "max_connections",
            Reason::NoRoute => "no_route",
            Reason::OnlyIfCached => "only_if_cached",
            Reason::Purge => "purge",
            Reason::PurgeNotEnabled => "purge_not_enabled",
            Reason::PurgeNotAllowed => "purge_not_allowed",
            Reason::InvalidationMalformed => "invalidation_malformed",
            Reason::Maintenance => "maintenance",
            Reason::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for Reason {
    /// The label, as [`Reason::as_str`] gives it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels are distinct and safe everywhere they go: a metric label, a
    /// header value, a JSON string, HTML (no escaping needed).
    #[test]
    fn labels_are_distinct_lower_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let label = reason.as_str();
            assert!(seen.insert(label), "{label} twice");
            assert!(
                label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{label}"
            );
            assert_eq!(reason.to_string(), label);
        }
    }
}
