//! HTTPS backends (`tls = true`): the rustls client configuration built
//! once per backend from its settings, and the handshake that the client
//! and the probes share, with its failure put into words.
//!
//! The roots are `tls_ca` when set, else the Mozilla root store
//! (`webpki-roots`, compiled in: no dependence on the host's CA bundle,
//! which differs between distributions and is often missing in a minimal
//! container). `tls_verify = false` swaps in a verifier that accepts any
//! certificate; the configuration warns about it at every load. ALPN offers
//! `http/1.1` alone, since the backend client speaks HTTP/1.1.
//!
//! The TLS stream goes *inside* the byte counter of `client.rs`
//! (`Counted<Io>`), so the keep-alive-race detection counts decrypted
//! bytes of answers, never a TLS record such as a session ticket or a
//! close_notify alert.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{tls_provider, BackendConfig};

/// What a backend needs to open TLS connections: the connector and the
/// server name (SNI, and the name verified).
#[derive(Clone)]
pub(super) struct BackendTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl BackendTls {
    /// The TLS side of `config`, or `None` for a plain-HTTP backend (or
    /// settings the configuration check would have refused).
    pub(super) fn new(config: &BackendConfig) -> Option<BackendTls> {
        if !config.tls {
            return None;
        }
        let name = match ServerName::try_from(config.tls_name()) {
            Ok(name) => name.to_owned(),
            Err(error) => {
                tracing::error!(backend = %config.name, %error, "invalid TLS server name");
                return None;
            }
        };
        let builder = match ClientConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder,
            Err(error) => {
                tracing::error!(backend = %config.name, %error, "no usable TLS versions");
                return None;
            }
        };
        let mut client = if config.tls_verify {
            let mut roots = RootCertStore::empty();
            match &config.tls_ca {
                Some(ca) => {
                    roots.add_parsable_certificates(ca.certs.iter().cloned());
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny))
                .with_no_client_auth()
        };
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(BackendTls {
            connector: TlsConnector::from(Arc::new(client)),
            name,
        })
    }

    /// The handshake on a connected `stream`; the error says what failed,
    /// for [`FetchError::Tls`](super::FetchError::Tls) and the probe log.
    /// The caller bounds it (`connect_timeout`, the probe's `timeout`).
    pub(super) async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        self.connector
            .connect(self.name.clone(), stream)
            .await
            .map_err(|error| self.describe(&error))
    }

    /// A handshake failure in words: the name mismatch, the untrusted
    /// chain, the alert the backend sent, or the I/O error.
    fn describe(&self, error: &std::io::Error) -> String {
        let expected = self.name.to_str();
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return format!("handshake failed: {error}");
        };
        match tls {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!("certificate name mismatch: expected {expected}"),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => String::from(
                "certificate not trusted: unknown issuer (not signed by tls_ca or a Mozilla root)",
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => String::from("certificate expired"),
            rustls::Error::InvalidCertificate(other) => format!("certificate rejected: {other}"),
            rustls::Error::AlertReceived(alert) => {
                format!("handshake failed: the backend sent the alert {alert:?}")
            }
            other => format!("handshake failed: {other}"),
        }
    }
}

/// `tls_verify = false`: every certificate is accepted, and every
/// signature (the handshake still needs one to go on).
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
