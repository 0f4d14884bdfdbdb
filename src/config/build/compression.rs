//! `[compression]`: gzip and brotli the Varnish way. The level is checked
//! against zlib's range and every type against the shape of a media type,
//! so that a typo fails at load rather than silently compressing nothing.

use crate::config::check::span;
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawCompression;
use crate::config::CompressionConfig;
use crate::pattern::Glob;

/// `[compression]`, its defaults filled in.
pub(super) fn build(
    c: &RawCompression,
    loc: &Locator<'_>,
) -> Result<CompressionConfig, ConfigError> {
    let gzip_level = match &c.gzip_level {
        None => defaults::GZIP_LEVEL,
        Some(level) => match u32::try_from(*level.get_ref()) {
            Ok(l) if l <= 9 => l,
            _ => {
                return Err(loc.error(
                    span(level),
                    format!(
                        "expected a gzip level from 0 to 9, found {}",
                        level.get_ref()
                    ),
                ))
            }
        },
    };
    let types = match &c.types {
        None => defaults::COMPRESSIBLE_TYPES
            .iter()
            .filter_map(|t| Glob::new(t).ok())
            .collect(),
        Some(types) => types
            .iter()
            .map(|t| media_glob(t.get_ref()).map_err(|message| loc.error(span(t), message)))
            .collect::<Result<_, _>>()?,
    };
    Ok(CompressionConfig {
        gzip_support: c.gzip_support.unwrap_or(defaults::GZIP_SUPPORT),
        brotli: c.brotli.unwrap_or(defaults::BROTLI),
        types,
        min_size: c.min_size.map_or(defaults::COMPRESSION_MIN_SIZE, |s| s.0),
        gzip_level,
    })
}

/// A media-type glob: `type/subtype`, each side a token or containing `*`
/// (`text/*`, `application/*+json`), lower-cased (media types compare
/// case-insensitively).
pub(super) fn media_glob(text: &str) -> Result<Glob, String> {
    let expected = || {
        format!("expected a media type such as \"text/html\" or a glob such as \"text/*\", found {text:?}")
    };
    let (kind, subtype) = text.trim().split_once('/').ok_or_else(expected)?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(kind) || !token(subtype) {
        return Err(expected());
    }
    Glob::new(&text.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BACKEND: &str = "[[backend]]\naddress = \"127.0.0.1:1\"\n";

    fn parse(section: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(Path::new("test.toml"), &format!("{BACKEND}{section}"))
    }

    #[test]
    fn defaults_follow_varnish() {
        let c = parse("").expect("valid").compression;
        assert!(c.gzip_support && c.brotli);
        assert_eq!((c.min_size, c.gzip_level), (1024, 6));
        assert!(c.compressible("text/html; charset=utf-8"));
        assert!(c.compressible("Application/JSON"));
        assert!(!c.compressible("image/png"));
    }

    #[test]
    fn bad_level_and_type_are_located() {
        let err = parse("[compression]\ngzip_level = 12\n").unwrap_err();
        assert_eq!(err.key(), Some("compression.gzip_level"), "{err}");
        assert_eq!(err.line(), Some(4), "{err}");
        let err = parse("[compression]\ntypes = [\"text/*\", \"html\"]\n").unwrap_err();
        assert_eq!(err.line(), Some(4), "{err}");
        assert!(err.to_string().contains("media type"), "{err}");
    }
}
