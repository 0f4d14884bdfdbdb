//! `[esi]`: how deep includes nest (Varnish's `max_esi_depth`) and which
//! media types are parsed, each type checked like `[compression] types`
//! so that a typo fails at load rather than silently parsing nothing.

use super::compression::media_glob;
use crate::config::check::span;
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawEsi;
use crate::config::EsiConfig;
use crate::pattern::Glob;

/// `[esi]`, its defaults filled in.
pub(super) fn build(e: &RawEsi, loc: &Locator<'_>) -> Result<EsiConfig, ConfigError> {
    let max_depth = match &e.max_depth {
        None => defaults::ESI_MAX_DEPTH,
        Some(depth) => match u32::try_from(*depth.get_ref()) {
            Ok(d) if d <= 64 => d,
            _ => {
                return Err(loc.error(
                    span(depth),
                    format!(
                        "expected a nesting depth from 0 to 64, found {}",
                        depth.get_ref()
                    ),
                ))
            }
        },
    };
    let types = match &e.types {
        None => defaults::ESI_TYPES
            .iter()
            .filter_map(|t| Glob::new(t).ok())
            .collect(),
        Some(types) => types
            .iter()
            .map(|t| media_glob(t.get_ref()).map_err(|message| loc.error(span(t), message)))
            .collect::<Result<_, _>>()?,
    };
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
