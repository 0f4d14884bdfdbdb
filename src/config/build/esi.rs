//! `[esi]`: how deep includes nest (Varnish's `max_esi_depth`) and which
//! media types are parsed, each type checked like `[compression] types`
//! so that a typo fails at load rather than silently parsing nothing.

use crate::config::check::{int_in, media_types};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawEsi;
use crate::config::EsiConfig;

/// `[esi]`, its defaults filled in.
pub(super) fn build(e: &RawEsi, loc: &Locator<'_>) -> Result<EsiConfig, ConfigError> {
    let max_depth = int_in(
        e.max_depth.as_ref(),
        i64::from(defaults::ESI_MAX_DEPTH),
        0..=64,
        "a nesting depth",
        loc,
    )? as u32;
    let types = media_types(e.types.as_deref(), defaults::ESI_TYPES, loc)?;
    Ok(EsiConfig { max_depth, types })
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
        let c = parse("").expect("valid");
        assert_eq!(c.esi.max_depth, 5);
        assert!(c.esi.parses("text/html; charset=utf-8"));
        assert!(!c.esi.parses("text/plain"));
        let c = parse("[esi]\nmax_depth = 2\ntypes = [\"text/*\"]\n[[rule]]\npath_prefix = \"/\"\nesi = true\n")
            .expect("valid");
        assert_eq!(c.esi.max_depth, 2);
        assert!(c.esi.parses("Text/Plain"));
        assert!(c.rules[0].esi);
    }

    #[test]
    fn bad_depth_and_type_are_located() {
        let err = parse("[esi]\nmax_depth = -1\n").unwrap_err();
        assert_eq!(err.key(), Some("esi.max_depth"), "{err}");
        assert_eq!(err.line(), Some(4), "{err}");
        let err = parse("[esi]\ntypes = [\"html\"]\n").unwrap_err();
        assert_eq!(err.line(), Some(4), "{err}");
        assert!(err.to_string().contains("media type"), "{err}");
        let err = parse("[[rule]]\nesi = \"yes\"\n").unwrap_err();
        assert_eq!(err.line(), Some(4), "{err}");
    }
}
