//! `ConfigError`: every way a configuration can be refused, each naming the
//! file, the line and the key, and saying what was expected.
//!
//! The TOML parser reports byte offsets; [`Locator`] turns an offset back into
//! the line number and the dotted key (`backend[1].address`) an operator
//! would search their file for.

use std::ops::Range;
use std::path::PathBuf;

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        /// The file named on the command line.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A value is malformed, out of range, unknown, or refers to something missing.
    #[error("{file}{}: key `{key}`: {message}", at_line(*line))]
    Invalid {
        /// The file the error is in.
        file: PathBuf,
        /// 1-based line number (0 when no position is known).
        line: usize,
        /// The dotted key, e.g. `defaults.connect_timeout` or `backend[0].address`.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
}

impl ConfigError {
    /// The line the error points at, when known (for tests and tools).
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }

    /// The dotted key the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

/// `:12` for line 12; nothing when no line is known (a missing section).
fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

/// Maps byte offsets of a TOML source back to lines and dotted keys.
pub(crate) struct Locator<'a> {
    file: &'a std::path::Path,
    source: &'a str,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(file: &'a std::path::Path, source: &'a str) -> Self {
        Locator { file, source }
    }

    /// An error at `span` (a value's or key's position) with a message.
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        let message = message.into();
        match span {
            Some(span) => {
                let (line, key) = self.describe(span.start);
                ConfigError::Invalid {
                    file: self.file.to_path_buf(),
                    line,
                    key,
                    message,
                }
            }
            None => ConfigError::Invalid {
                file: self.file.to_path_buf(),
                line: 0,
                key: String::from("(top level)"),
                message,
            },
        }
    }

    /// An error about a key that is named directly (cross-reference checks).
    pub(crate) fn error_at_key(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let line = span.map(|s| self.line_of(s.start)).unwrap_or(0);
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Converts a `toml` parse error into a located `ConfigError`.
    pub(crate) fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        self.error(error.span(), error.message().trim().to_string())
    }

    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.source.len());
        self.source[..offset]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    /// The line number and the dotted key of the line holding `offset`:
    /// the nearest table header above it, plus the key on that line.
    fn describe(&self, offset: usize) -> (usize, String) {
        let line_no = self.line_of(offset);
        let lines: Vec<&str> = self.source.lines().collect();
        let this_line = lines.get(line_no.saturating_sub(1)).copied().unwrap_or("");
        let key_here = this_line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty() && !k.starts_with('['));

        // The table this line belongs to, with array-of-tables indices.
        let mut table = String::new();
        let mut array_counts: std::collections::HashMap<String, usize> = Default::default();
        for line in lines.iter().take(line_no) {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
                let name = name.trim().to_string();
                let n = array_counts.entry(name.clone()).or_insert(0);
                table = format!("{name}[{n}]");
                *n += 1;
            } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                let name = name.trim();
                // A sub-table of an array of tables, e.g. [backend.probe].
                table = match name.split_once('.') {
                    Some((parent, rest)) if array_counts.contains_key(parent) => {
                        format!("{parent}[{}].{rest}", array_counts[parent] - 1)
                    }
                    _ => name.to_string(),
                };
            }
        }
        let key = match (table.is_empty(), key_here) {
            (true, Some(k)) => k,
            (false, Some(k)) => format!("{table}.{k}"),
            (true, None) => String::from("(top level)"),
            (false, None) => table,
        };
        (line_no, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_keys_in_tables_and_arrays_of_tables() {
        let src = "[server]\nlisten = \"x\"\n[[backend]]\naddress = \"a\"\n[[backend]]\naddress = \"b\"\n[backend.probe]\nurl = 1\n";
        let loc = Locator::new(std::path::Path::new("f.toml"), src);
        let at = |needle: &str| src.find(needle).unwrap();
        assert_eq!(loc.describe(at("\"x\"")), (2, "server.listen".into()));
        assert_eq!(loc.describe(at("\"b\"")), (6, "backend[1].address".into()));
        assert_eq!(loc.describe(at("1\n")), (8, "backend[1].probe.url".into()));
    }
}
