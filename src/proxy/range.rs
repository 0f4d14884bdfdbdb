//! Range requests answered from cached objects (RFC 9110 §14): one range
//! gets a 206 with `Content-Range`; several ranges get the whole object (a
//! 200, which the RFC allows); an unsatisfiable range gets a 416.

use http::header::{self, HeaderMap};

use crate::cache::policy::{http_date, strong_eq};

/// How to answer a request's `Range` for a body of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No (usable) range: the whole body, 200.
    Whole,
    /// Bytes `start..=end`, 206.
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

/// Reads `Range` (and `If-Range` against the stored validators).
pub fn answer(request: &HeaderMap, stored: &HeaderMap, len: u64) -> RangeAnswer {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Whole;
    };
    if let Some(if_range) = request.get(header::IF_RANGE) {
        // If-Range: the range applies only to the representation the client
        // already has; otherwise it gets the whole new one (§13.1.5).
        let matches = match if_range.to_str().ok().map(str::trim) {
            Some(tag) if tag.starts_with('"') || tag.starts_with("W/") => stored
                .get(header::ETAG)
                .and_then(|e| e.to_str().ok())
                .is_some_and(|etag| strong_eq(tag, etag.trim())),
            _ => match (
                http_date(if_range),
                stored.get(header::LAST_MODIFIED).and_then(http_date),
            ) {
                (Some(since), Some(modified)) => modified <= since,
                _ => false,
            },
        };
        if !matches {
            return RangeAnswer::Whole;
        }
    }
    parse(range, len)
}

fn parse(range: &str, len: u64) -> RangeAnswer {
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |t: &str| t.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(n) if len > 0 => RangeAnswer::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Whole,
        },
        // bytes=N-: from N to the end.
        (false, true) => match number(first) {
            Some(start) if start < len => RangeAnswer::Part {
                start,
                end: len - 1,
            },
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Whole,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= len {
                    RangeAnswer::Unsatisfiable
                } else {
                    RangeAnswer::Part {
                        start,
                        end: end.min(len - 1),
                    }
                }
            }
            _ => RangeAnswer::Whole,
        },
        (true, true) => RangeAnswer::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(
            parse("bytes=0-9", 100),
            RangeAnswer::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse("bytes=90-", 100),
            RangeAnswer::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse("bytes=-10", 100),
            RangeAnswer::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse("bytes=95-200", 100),
            RangeAnswer::Part { start: 95, end: 99 }
        );
        assert_eq!(parse("bytes=100-", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(parse("bytes=200-300", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(parse("bytes=0-1,5-6", 100), RangeAnswer::Whole);
        assert_eq!(parse("items=0-1", 100), RangeAnswer::Whole);
        assert_eq!(parse("bytes=5-1", 100), RangeAnswer::Whole);
    }
}
