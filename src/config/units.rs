//! The two value types every setting is written in: durations (`"250ms"`,
//! `"3.5s"`, `"2m"`) and byte sizes (`4096`, `"8KiB"`, `"256MiB"`).
//!
//! Both deserialize straight from TOML, so a bad value is reported by the
//! TOML parser with its exact position, and `config::error` turns that
//! position into a file, line and key.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// What a duration value must look like; used in error messages.
pub(crate) const DURATION_EXPECTED: &str =
    "a duration string such as \"250ms\", \"3.5s\" or \"2m\"";
/// What a size value must look like; used in error messages.
pub(crate) const SIZE_EXPECTED: &str =
    "a size: a whole number of bytes, or a string such as \"8KiB\" or \"256MiB\"";

/// A duration written as a string with a unit (humantime syntax, fractions allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

/// A size in bytes, written as an integer or a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Parses `"3.5s"`, `"250ms"`, `"2m"`, `"0s"`. A bare number is refused on
/// purpose: Varnish takes bare seconds, and guessing the unit silently is how
/// a `first_byte_timeout = 60000` becomes seventeen hours.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "expected {DURATION_EXPECTED}, found an empty string"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("expected {DURATION_EXPECTED}, found \"{text}\" ({e})"))
}

/// Parses `"8KiB"`, `"32 MiB"`, `"1GiB"`, `"100MB"`, `"512k"`, `"4096"`.
///
/// Binary units (`KiB`, `MiB`, `GiB`, `TiB`) and Varnish's one-letter units
/// (`k`, `m`, `g`, `t`, which Varnish defines as powers of 1024) multiply by
/// 1024; decimal units (`kB`, `KB`, `MB`, `GB`, `TB`) by 1000; `B` or no unit
/// means bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let bad = || format!("expected {SIZE_EXPECTED}, found \"{text}\"");
    let value: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit {
        "" | "B" | "b" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "kB" => 1_000,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "TiB" | "t" | "T" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "expected {DURATION_EXPECTED}, found the bare number {v}: write the unit, e.g. \"{v}s\""
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "expected {DURATION_EXPECTED}, found the bare number {v}: write the unit, e.g. \"{v}s\""
                )))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("expected {SIZE_EXPECTED}, found {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_fractions_and_units() {
        assert_eq!(parse_duration("3.5s"), Ok(Duration::from_millis(3500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn sizes_in_binary_decimal_and_varnish_units() {
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("32 MiB"), Ok(32 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("-1").is_err());
    }
}
