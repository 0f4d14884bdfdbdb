//! `FetchError`: why a backend fetch failed, naming the backend and the
//! limit or timeout involved, and what it means for the client; and
//! `BodyError`: why a backend's response body stopped after its head.

use std::sync::Arc;
use std::time::Duration;

use crate::reason::Reason;
use crate::retry::{Failure, FailureKind};

/// A backend fetch that produced no usable response head.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The TCP connection was refused or failed.
    #[error("backend {backend}: connect failed: {source}")]
    Connect {
        /// The backend's name.
        backend: Arc<str>,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection did not complete within `connect_timeout`.
    #[error("backend {backend}: connect_timeout ({timeout:?}) expired")]
    ConnectTimeout {
        /// The backend's name.
        backend: Arc<str>,
        /// The limit that fired.
        timeout: Duration,
    },
    /// The TLS handshake with an HTTPS backend (`tls = true`) failed: the
    /// chain is not trusted, the certificate is not for `tls_server_name`,
    /// or the handshake itself broke. Like a failed connect, the request
    /// never left.
    #[error("backend {backend}: TLS {detail}")]
    Tls {
        /// The backend's name.
        backend: Arc<str>,
        /// What failed, e.g. "certificate name mismatch: expected api.example.com".
        detail: String,
    },
    /// No response head within `first_byte_timeout` of sending the request.
    #[error("backend {backend}: first_byte_timeout ({timeout:?}) expired")]
    FirstByteTimeout {
        /// The backend's name.
        backend: Arc<str>,
        /// The limit that fired.
        timeout: Duration,
    },
    /// The response head broke `http_resp_hdr_len` or `http_resp_size`.
    #[error("backend {backend}: response head larger than {limit} ({max} bytes)")]
    HeadTooLarge {
        /// The backend's name.
        backend: Arc<str>,
        /// The config key of the limit: `http_resp_hdr_len` or `http_resp_size`.
        limit: &'static str,
        /// The configured value.
        max: usize,
    },
    /// The backend closed the connection or sent something that is not HTTP.
    #[error("backend {backend}: invalid or incomplete response: {source}")]
    Protocol {
        /// The backend's name.
        backend: Arc<str>,
        /// hyper's description.
        #[source]
        source: hyper::Error,
    },
    /// A reused (pooled) connection failed before any byte of an answer
    /// came back: the backend had closed it while it sat idle, as its own
    /// keep-alive timer allows. Not a failure of the backend: the request
    /// is sent once more on a fresh connection when it can be.
    #[error(
        "backend {backend}: pooled connection closed by the backend before any answer: {source}"
    )]
    PooledConnectionClosed {
        /// The backend's name.
        backend: Arc<str>,
        /// hyper's description.
        #[source]
        source: hyper::Error,
    },
    /// A fresh connection closed before the request could be sent.
    #[error("backend {backend}: connection closed before the request was sent")]
    ClosedBeforeSend {
        /// The backend's name.
        backend: Arc<str>,
    },
    /// `max_connections` was reached and the wait queue was full: shed at once.
    #[error("backend {backend}: max_connections ({max_connections}) reached and queue_length ({queue_length}) full")]
    QueueFull {
        /// The backend's name.
        backend: Arc<str>,
        /// Its `max_connections`.
        max_connections: usize,
        /// Its `queue_length`.
        queue_length: usize,
    },
    /// The request waited `queue_timeout` for a slot and got none.
    #[error(
        "backend {backend}: queue_timeout ({timeout:?}) expired waiting for a connection slot"
    )]
    QueueTimeout {
        /// The backend's name.
        backend: Arc<str>,
        /// The limit that fired.
        timeout: Duration,
    },
    /// The pool has no usable backend (all sick, ejected or backing off).
    #[error("pool {pool}: no healthy backend available")]
    NoBackend {
        /// The pool's name.
        pool: Arc<str>,
    },
    /// The client's request body sent nothing for `between_bytes_timeout`
    /// while it was being forwarded: the client's fault (a 408), not the
    /// backend's.
    #[error("backend {backend}: the client's request body stalled for between_bytes_timeout ({timeout:?})")]
    RequestBodyTimeout {
        /// The backend the body was going to.
        backend: Arc<str>,
        /// The limit that fired.
        timeout: Duration,
    },
    /// `[retry] deadline` passed while waiting for this backend (for a
    /// slot, the connect or the response head): the client has waited
    /// long enough, whatever the backend's own timeouts allow.
    #[error("backend {backend}: [retry] deadline ({deadline:?}) reached")]
    Deadline {
        /// The backend being waited for.
        backend: Arc<str>,
        /// The configured deadline.
        deadline: Duration,
    },
}

/// A backend response body that stopped before its end.
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
    Failed {
        /// The backend's name.
        backend: Arc<str>,
        /// hyper's description of what broke.
        #[source]
        source: hyper::Error,
    },
}

impl FetchError {
    /// The short reason used in logs and metrics labels.
    pub fn reason(&self) -> Reason {
        match self {
            FetchError::Connect { .. } => Reason::Connect,
            FetchError::ConnectTimeout { .. } => Reason::ConnectTimeout,
            FetchError::Tls { .. } => Reason::Tls,
            FetchError::FirstByteTimeout { .. } => Reason::FirstByteTimeout,
            FetchError::HeadTooLarge { .. } => Reason::RespHdrTooLarge,
            FetchError::Protocol { .. } | FetchError::PooledConnectionClosed { .. } => {
                Reason::InvalidResponse
            }
            FetchError::ClosedBeforeSend { .. } => Reason::Connect,
            FetchError::QueueFull { .. } => Reason::QueueFull,
            FetchError::QueueTimeout { .. } => Reason::QueueTimeout,
            FetchError::NoBackend { .. } => Reason::NoHealthyBackend,
            FetchError::Deadline { .. } => Reason::Deadline,
            FetchError::RequestBodyTimeout { .. } => Reason::RequestBodyTimeout,
        }
    }

    /// Which `[retry] retry_on` entry this failure falls under.
    pub fn kind(&self) -> FailureKind {
        match self {
            FetchError::Connect { .. }
            | FetchError::ConnectTimeout { .. }
            | FetchError::Tls { .. }
            | FetchError::ClosedBeforeSend { .. } => FailureKind::Connect,
            FetchError::FirstByteTimeout { .. } => FailureKind::FirstByteTimeout,
            FetchError::Protocol { .. } | FetchError::PooledConnectionClosed { .. } => {
                FailureKind::InvalidResponse
            }
            FetchError::HeadTooLarge { .. }
            | FetchError::QueueFull { .. }
            | FetchError::QueueTimeout { .. }
            | FetchError::NoBackend { .. }
            | FetchError::Deadline { .. }
            | FetchError::RequestBodyTimeout { .. } => FailureKind::NotRetryable,
        }
    }

    /// This failure as `retry::may_retry` judges it.
    pub fn failure(&self) -> Failure {
        Failure::Error {
            kind: self.kind(),
            never_sent: self.never_sent(),
        }
    }

    /// The backend that failed, when one was tried.
    pub fn backend(&self) -> Option<&str> {
        match self {
            FetchError::Connect { backend, .. }
            | FetchError::ConnectTimeout { backend, .. }
            | FetchError::Tls { backend, .. }
            | FetchError::FirstByteTimeout { backend, .. }
            | FetchError::HeadTooLarge { backend, .. }
            | FetchError::Protocol { backend, .. }
            | FetchError::PooledConnectionClosed { backend, .. }
            | FetchError::ClosedBeforeSend { backend }
            | FetchError::QueueFull { backend, .. }
            | FetchError::QueueTimeout { backend, .. }
            | FetchError::Deadline { backend, .. }
            | FetchError::RequestBodyTimeout { backend, .. } => Some(backend),
            FetchError::NoBackend { .. } => None,
        }
    }

    /// Whether this failure says something about the backend's health (it
    /// counts towards passive ejection). A full queue or an oversized head
    /// are Shellac's own limits, not the backend failing; a deadline cut
    /// the wait short of the backend's own timeouts; a stalled upload is
    /// the client's fault; a pooled connection the backend closed while
    /// idle is the keep-alive race, which any healthy backend loses now
    /// and then.
    pub fn counts_against_backend(&self) -> bool {
        !matches!(
            self,
            FetchError::QueueFull { .. }
                | FetchError::QueueTimeout { .. }
                | FetchError::NoBackend { .. }
                | FetchError::HeadTooLarge { .. }
                | FetchError::Deadline { .. }
                | FetchError::RequestBodyTimeout { .. }
                | FetchError::PooledConnectionClosed { .. }
        )
    }

    /// Whether the client, not the backend, made the fetch fail: the
    /// answer is the client's own error (408), never stale content or the
    /// backend 503.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, FetchError::RequestBodyTimeout { .. })
    }

    /// Whether the request certainly never reached the backend, so that even
    /// a non-idempotent request may be sent again.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            FetchError::Connect { .. }
                | FetchError::ConnectTimeout { .. }
                | FetchError::Tls { .. }
                | FetchError::ClosedBeforeSend { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds `[retry] retry_on` lists, and which failures never reached the backend.
    #[test]
    fn each_error_names_its_retry_kind() {
        let backend = || Arc::<str>::from("b");
        let refused = FetchError::Connect {
            backend: backend(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let first_byte = FetchError::FirstByteTimeout {
            backend: backend(),
            timeout: Duration::from_secs(1),
        };
        let full = FetchError::QueueFull {
            backend: backend(),
            max_connections: 1,
            queue_length: 0,
        };
        assert!(matches!(
            refused.failure(),
            Failure::Error {
                kind: FailureKind::Connect,
                never_sent: true
            }
        ));
        assert!(matches!(
            first_byte.failure(),
            Failure::Error {
                kind: FailureKind::FirstByteTimeout,
                never_sent: false
            }
        ));
        assert_eq!(full.kind(), FailureKind::NotRetryable);
    }
}
