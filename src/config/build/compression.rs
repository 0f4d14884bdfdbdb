//! `[compression]`: gzip and brotli the Varnish way. The level is checked
//! against zlib's range and every type against the shape of a media type,
//! so that a typo fails at load rather than silently compressing nothing.

use crate::config::check::{int_in, media_types};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawCompression;
use crate::config::CompressionConfig;

/// `[compression]`, its defaults filled in.
pub(super) fn build(
    c: &RawCompression,
    loc: &Locator<'_>,
) -> Result<CompressionConfig, ConfigError> {
    let gzip_level = int_in(
        c.gzip_level.as_ref(),
        i64::from(defaults::GZIP_LEVEL),
        0..=9,
        "a gzip level",
        loc,
    )? as u32;
    let types = media_types(c.types.as_deref(), defaults::COMPRESSIBLE_TYPES, loc)?;
    Ok(CompressionConfig {
        gzip_support: c.gzip_support.unwrap_or(defaults::GZIP_SUPPORT),
        brotli: c.brotli.unwrap_or(defaults::BROTLI),
        types,
        min_size: c.min_size.map_or(defaults::COMPRESSION_MIN_SIZE, |s| s.0),
        gzip_level,
    })
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
