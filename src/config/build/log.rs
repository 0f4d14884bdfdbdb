//! `[log]`: where access-log lines go and in which format.

use std::path::PathBuf;

use crate::config::check::span;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawLog;
use crate::config::{AccessLog, LogConfig, LogFormat};

/// `[log]`: `access` is `"stdout"`, `"off"` (the default) or a file path.
pub(super) fn build(raw: &RawLog, loc: &Locator<'_>) -> Result<LogConfig, ConfigError> {
    let access = match raw.access.as_ref().map(|a| a.get_ref().as_str()) {
        None | Some("off") => AccessLog::Off,
        Some("stdout") => AccessLog::Stdout,
        Some("") => {
            return Err(loc.error(
                raw.access.as_ref().and_then(span),
                "expected \"stdout\", \"off\" or a file path",
            ))
        }
        Some(path) => AccessLog::File(PathBuf::from(path)),
    };
    let format = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("combined") => LogFormat::Combined,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(loc.error(
                raw.format.as_ref().and_then(span),
                format!("expected \"combined\" or \"json\", found \"{other}\""),
            ))
        }
    };
    Ok(LogConfig { access, format })
}
