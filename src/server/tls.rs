//! The TLS side of a listener: the rustls acceptor built from `[tls]`
//! (once per configuration load, so a reload's certificates serve every new
//! handshake while open connections keep theirs), the certificate chosen
//! by SNI, and the handshake, bounded by `header_timeout`.
//!
//! Certificate choice ([`ByName`]): the exact name first, then a `*.`
//! wildcard one label deep (`a.example.com` matches `*.example.com`, not
//! `a.b.example.com`), else the first `[[tls.certificate]]`, which is also
//! what a client without SNI gets. ALPN offers `h2` and `http/1.1`; the
//! connection code serves what the client then speaks (HTTP/2 starts with
//! its preface).
//!
//! Plain HTTP sent to a TLS port is told by its first byte (a TLS
//! handshake starts with 0x16, a request with a method's capital letter)
//! and answered with a bare `400` saying so, then closed — as nginx does;
//! left to rustls it would get a TLS alert, which curl shows as "Received
//! HTTP/0.9". Anything else that is not TLS fails the handshake and is
//! closed at once. (On a Unix-socket listener the first byte cannot be
//! peeked, see `listener::Stream`: plain HTTP there fails the handshake.)

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::conn::Settings;
use super::listener::Stream;
use crate::config::{TlsConfig, TlsVersion};
use crate::peer::ClientAddr;

/// The ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The answer to plain HTTP on a TLS port. Bare, like hyper's own 431:
/// no request was parsed, so there is nothing for a synthetic page to say.
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 49\r\nconnection: close\r\n\r\n\
This port speaks HTTPS: use https:// to reach it\n";

/// The acceptor for `tls`'s certificates; none when there are none (no
/// listener has `tls = true`; the configuration refuses that otherwise).
pub(super) fn acceptor(tls: &TlsConfig) -> Option<TlsAcceptor> {
    let resolver = ByName::new(tls)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = match rustls::ServerConfig::builder_with_provider(crate::config::tls_provider())
        .with_protocol_versions(versions)
    {
        Ok(builder) => builder,
        Err(error) => {
            // Only an inconsistent provider could get here; it is built in.
            tracing::error!(%error, "cannot set up TLS: TLS listeners refuse connections");
            return None;
        }
    };
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Some(TlsAcceptor::from(Arc::new(config)))
}

/// Runs the TLS handshake on `stream` within `header_timeout`: the
/// decrypted stream, or none when the client
/// failed it (plain HTTP on a TLS port, an unknown protocol version, too
/// slow), which is logged at debug and closes the connection.
pub(super) async fn handshake<S: Stream>(
    acceptor: &TlsAcceptor,
    stream: S,
    client: ClientAddr,
    settings: &Settings,
) -> Option<TlsStream<S>> {
    let timeout = settings.handshake_timeout();
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, stream.peek_first()).await {
        Ok(Ok(Some(first))) if first.is_ascii_uppercase() => {
            tracing::debug!(client = %client, "plain HTTP on a TLS listener: answered 400");
            refuse_plain_http(stream).await;
            return None;
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::debug!(client = %client, %error, "TLS client connection failed before a handshake");
            return None;
        }
        Err(_) => {
            tracing::debug!(client = %client, ?timeout, "TLS handshake not started within header_timeout");
            return None;
        }
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            tracing::debug!(client = %client, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(client = %client, ?timeout, "TLS handshake not finished within header_timeout");
            None
        }
    }
}

/// Answers plain HTTP with [`PLAIN_HTTP_ON_TLS`] and closes: our side
/// first (FIN), then what the client still sends is read and dropped for
/// up to a second, so that closing with unread bytes does not reset the
/// connection before the client has read the answer.
async fn refuse_plain_http<S: Stream>(mut stream: S) {
    let bound = std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(bound, async {
        stream.write_all(PLAIN_HTTP_ON_TLS).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Picks the certificate for a client's SNI name.
#[derive(Debug)]
struct ByName {
    /// Exact names (lower-case), each to the first certificate naming it.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` as `example.com`: what a name's parent must be.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The first certificate: no SNI, or no name matched.
    first: Arc<CertifiedKey>,
}

impl ByName {
    fn new(tls: &TlsConfig) -> Option<ByName> {
        let first = tls.certificates.first()?.key.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for certificate in &tls.certificates {
            for name in &certificate.names {
                let table = match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(name.clone()),
                };
                table.or_insert_with(|| certificate.key.clone());
            }
        }
        Some(ByName {
            exact,
            wildcard,
            first,
        })
    }

    fn pick(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else {
            return &self.first;
        };
        // SNI is case-insensitive; clients send lower case, so only an odd
        // one costs a copy.
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(key) = self.exact.get(name) {
            return key;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.first)
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).clone())
    }
}
