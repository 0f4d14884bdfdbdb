//! `[tls]` and `[[tls.certificate]]`: the certificates are read, parsed and
//! checked here, at load time, so that `--check` and a reload refuse a
//! missing or unreadable file, a PEM file without a certificate, a key
//! that does not match its certificate, with the file, line and key — the
//! listener never finds out at its first handshake.
//!
//! PEM is parsed by `rustls-pki-types`; the leaf's names and expiry are
//! read with `x509-parser`; the key is loaded, and matched against the
//! leaf's public key, by the rustls provider the listeners use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use crate::config::check::span;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::{RawCertificate, RawTls};
use crate::config::{defaults, CaFile, CertificateConfig, Listen, TlsConfig, TlsVersion};

/// `[tls]`, read from the configuration file at `path`; `listen` says
/// whether any listener needs a certificate. Sentences for
/// [`Config::warnings`](crate::config::Config) go to `warnings`.
pub(super) fn build(
    path: &Path,
    raw: &RawTls,
    listen: &[Listen],
    listen_span: Option<std::ops::Range<usize>>,
    loc: &Locator<'_>,
    warnings: &mut Vec<String>,
) -> Result<TlsConfig, ConfigError> {
    let min_version = match &raw.min_version {
        None => defaults::TLS_MIN_VERSION,
        Some(v) => match v.get_ref().as_str() {
            "1.2" => TlsVersion::Tls12,
            "1.3" => TlsVersion::Tls13,
            other => {
                return Err(loc.error(
                    span(v),
                    format!("expected \"1.2\" or \"1.3\", found \"{other}\""),
                ))
            }
        },
    };
    let mut certificates = Vec::with_capacity(raw.certificate.len());
    for c in &raw.certificate {
        certificates.push(certificate(path, c, loc)?);
    }
    if certificates.is_empty() && listen.iter().any(|l| l.tls) {
        return Err(loc.error_at_key(
            listen_span,
            "server.listen",
            "a listener has tls = true: expected at least one [[tls.certificate]] \
             with `certificate` and `private_key`",
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for c in &certificates {
        if c.not_after - now < EXPIRY_WARNING.as_secs() as i64 {
            let when = UNIX_EPOCH + Duration::from_secs(c.not_after.max(0) as u64);
            let verb = if c.not_after <= now {
                "expired"
            } else {
                "expires"
            };
            warnings.push(format!(
                "TLS certificate {} for {} {verb} {} (less than 14 days)",
                c.file.display(),
                c.names_label(),
                httpdate::fmt_http_date(when),
            ));
        }
    }
    Ok(TlsConfig {
        min_version,
        certificates,
    })
}

/// A certificate closer than this to its `notAfter` is warned about at
/// every load (14 days: a monthly renewal that failed twice shows up).
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// `file` resolved against the configuration file's directory.
fn resolve(config: &Path, file: &str) -> PathBuf {
    let name = Path::new(file);
    match config.parent() {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name.to_path_buf(),
    }
}

/// The text of the PEM file `file` names, or the error at its key.
fn read(
    config: &Path,
    file: &Spanned<String>,
    loc: &Locator<'_>,
) -> Result<(PathBuf, Vec<u8>), ConfigError> {
    let full = resolve(config, file.get_ref());
    match std::fs::read(&full) {
        Ok(bytes) => Ok((full, bytes)),
        Err(e) => Err(loc.error(
            span(file),
            format!(
                "expected a readable PEM file, cannot read \"{}\": {e}",
                full.display()
            ),
        )),
    }
}

/// One `[[tls.certificate]]`, loaded and checked.
fn certificate(
    config: &Path,
    raw: &RawCertificate,
    loc: &Locator<'_>,
) -> Result<CertificateConfig, ConfigError> {
    let (cert_file, cert_pem) = read(config, &raw.certificate, loc)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            loc.error(
                span(&raw.certificate),
                format!("\"{}\" is not valid PEM: {e}", cert_file.display()),
            )
        })?;
    let Some(leaf) = chain.first() else {
        return Err(loc.error(
            span(&raw.certificate),
            format!(
                "expected a PEM file with a certificate (-----BEGIN CERTIFICATE-----, \
                 the leaf first), \"{}\" has none",
                cert_file.display()
            ),
        ));
    };
    let (sans, not_after) = leaf_facts(leaf).map_err(|e| {
        loc.error(
            span(&raw.certificate),
            format!(
                "expected an X.509 certificate, the first one in \"{}\" does not parse: {e}",
                cert_file.display()
            ),
        )
    })?;

    let (key_file, key_pem) = read(config, &raw.private_key, loc)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => String::from("it has none"),
            e => e.to_string(),
        };
        loc.error(
            span(&raw.private_key),
            format!(
                "expected a PEM private key (PKCS#8, PKCS#1 or SEC1) in \"{}\": {why}",
                key_file.display()
            ),
        )
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &crate::config::tls_provider()).map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the key does not match the certificate \"{}\"",
                    cert_file.display()
                ),
                e => format!("the key cannot be used: {e}"),
            };
            loc.error(
                span(&raw.private_key),
                format!("expected the private key of the certificate: {why}"),
            )
        })?;

    let names = match &raw.names {
        None => sans,
        Some(list) => {
            let mut names = Vec::with_capacity(list.get_ref().len());
            for name in list.get_ref() {
                names.push(server_name(name, loc)?);
            }
            if names.is_empty() {
                return Err(loc.error(
                    span(list),
                    "expected at least one name, or no `names` (the certificate's own)",
                ));
            }
            names
        }
    };
    Ok(CertificateConfig {
        file: cert_file,
        names,
        not_after,
        key: Arc::new(certified),
    })
}

/// One entry of `names`: a host name, or `*.` and one, lower-cased.
fn server_name(name: &Spanned<String>, loc: &Locator<'_>) -> Result<String, ConfigError> {
    let text = name.get_ref().trim_end_matches('.').to_ascii_lowercase();
    let host = text.strip_prefix("*.").unwrap_or(&text);
    let valid = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(loc.error(
            span(name),
            format!(
                "expected a host name such as \"example.com\" or \"*.example.com\", found \"{}\"",
                name.get_ref()
            ),
        ));
    }
    Ok(text)
}

/// The leaf's DNS subject alternative names (lower-case) and `notAfter`.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let not_after = cert.validity().not_after.timestamp();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok((names, not_after))
}

/// A backend's `tls_ca`: a readable PEM file with at least one certificate
/// that webpki accepts as a trust anchor.
pub(super) fn ca_file(
    config: &Path,
    file: &Spanned<String>,
    loc: &Locator<'_>,
) -> Result<CaFile, ConfigError> {
    let (full, pem) = read(config, file, loc)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            loc.error(
                span(file),
                format!("\"{}\" is not valid PEM: {e}", full.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(loc.error(
            span(file),
            format!(
                "expected a PEM file with at least one CA certificate \
                 (-----BEGIN CERTIFICATE-----), \"{}\" has none",
                full.display()
            ),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if ignored > 0 {
        return Err(loc.error(
            span(file),
            format!(
                "expected CA certificates, {ignored} of the {} in \"{}\" cannot be used \
                 as a trust anchor",
                certs.len(),
                full.display()
            ),
        ));
    }
    Ok(CaFile { file: full, certs })
}
