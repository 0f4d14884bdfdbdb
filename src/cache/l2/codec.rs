//! The binary form of a [`CachedObject`] in the second tier.
//!
//! Versioned so that nodes of different Shellac versions can share one
//! Redis during a rolling upgrade: a record this version cannot read fails
//! [`decode`] cleanly (and counts as a miss), it never panics or allocates
//! what the record merely claims. All integers are big-endian.
//!
//! ```text
//! magic "SHL2" · version u8 (1) · flags u8 (bit 0 must_revalidate, bit 1 no_cache)
//! status u16 · stored_at unix ms u64 · initial_age ms u64
//! ttl ms u64 · grace ms u64 · keep ms u64 · stale_if_error ms u64
//! vary value count u16 · { len u32 · bytes }        (the request's Vary values)
//! header count u32 · { name len u16 · name · value len u32 · value }
//! body len u64 · body
//! ```
//!
//! Times: the stored time is wall-clock (unix ms), since nodes share no
//! monotonic clock; on decode the time spent in L2 is added to the
//! object's initial age, so `Age` and freshness stay right.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::cache::object::CachedObject;
use crate::cache::policy::Lifetimes;

/// The first bytes of every record.
pub const MAGIC: &[u8; 4] = b"SHL2";
/// The record layout this build writes and reads.
pub const VERSION: u8 = 1;

/// Why a record could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a Shellac record at all.
    #[error("not a Shellac L2 record (bad magic)")]
    BadMagic,
    /// Written by a Shellac with another layout.
    #[error("L2 record version {0} is not readable by this build (version {VERSION})")]
    Version(u8),
    /// The record ends before a field it announces.
    #[error("L2 record truncated while reading {0}")]
    Truncated(&'static str),
    /// A field holds an impossible value.
    #[error("L2 record has an invalid {0}")]
    Invalid(&'static str),
    /// Bytes after the body.
    #[error("L2 record has trailing bytes")]
    Trailing,
}

/// A decoded record.
#[derive(Debug)]
pub struct Decoded {
    /// The object, with `stored_at` = now and the time spent in L2 added to its age.
    pub object: CachedObject,
    /// When it was stored (or revalidated), unix ms: bans compare against this.
    pub stored_unix_ms: u64,
    /// The request's values for the response's `Vary` names.
    pub vary: Vec<String>,
}

/// Milliseconds since the epoch of `time` (0 before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Encodes `object` (stored under a request whose `Vary` values were `vary`).
pub fn encode(object: &CachedObject, vary: &[String], now: Instant, wall: SystemTime) -> Vec<u8> {
    let stored = wall
        .checked_sub(now.saturating_duration_since(object.stored_at))
        .unwrap_or(wall);
    let headers_len: usize = object
        .headers
        .iter()
        .map(|(n, v)| 6 + n.as_str().len() + v.len())
        .sum();
    let mut out = Vec::with_capacity(64 + headers_len + object.body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let lifetimes = &object.lifetimes;
    out.push(u8::from(lifetimes.must_revalidate) | (u8::from(lifetimes.no_cache) << 1));
    out.extend_from_slice(&object.status.as_u16().to_be_bytes());
    for value in [
        unix_ms(stored),
        ms(object.initial_age),
        ms(lifetimes.ttl),
        ms(lifetimes.grace),
        ms(lifetimes.keep),
        ms(lifetimes.stale_if_error),
    ] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    let vary = &vary[..vary.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(vary.len() as u16).to_be_bytes());
    for value in vary {
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&(object.headers.len() as u32).to_be_bytes());
    for (name, value) in &object.headers {
        // Header names are short (hyper refuses long ones) and values are
        // bounded by the head size limits, so the casts cannot truncate.
        out.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&(object.body.len() as u64).to_be_bytes());
    out.extend_from_slice(&object.body);
    out
}

/// Reads fields off a record, each read checked against what is left.
struct Reader {
    bytes: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError::Truncated(what))?;
        let piece = self.bytes.slice(self.at..end);
        self.at = end;
        Ok(piece)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_be_bytes(a))
    }

    fn len_u64(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        usize::try_from(self.u64(what)?).map_err(|_| DecodeError::Truncated(what))
    }
}

/// Decodes a record read from L2 at `now` / `wall`.
pub fn decode(bytes: Bytes, now: Instant, wall: SystemTime) -> Result<Decoded, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4, "magic").map_err(|_| DecodeError::BadMagic)? != MAGIC[..] {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let flags = r.u8("flags")?;
    if flags & !0b11 != 0 {
        return Err(DecodeError::Invalid("flags"));
    }
    let status =
        StatusCode::from_u16(r.u16("status")?).map_err(|_| DecodeError::Invalid("status"))?;
    let stored_unix_ms = r.u64("stored time")?;
    let initial_age = Duration::from_millis(r.u64("initial age")?);
    let lifetimes = Lifetimes {
        ttl: Duration::from_millis(r.u64("ttl")?),
        grace: Duration::from_millis(r.u64("grace")?),
        keep: Duration::from_millis(r.u64("keep")?),
        stale_if_error: Duration::from_millis(r.u64("stale_if_error")?),
        must_revalidate: flags & 1 != 0,
        no_cache: flags & 2 != 0,
    };
    let vary_count = r.u16("vary count")?;
    let mut vary = Vec::new();
    for _ in 0..vary_count {
        let len = r.u32("vary value length")? as usize;
        let value = r.take(len, "vary value")?;
        let value =
            String::from_utf8(value.to_vec()).map_err(|_| DecodeError::Invalid("vary value"))?;
        vary.push(value);
    }
    let header_count = r.u32("header count")?;
    let mut headers = HeaderMap::new();
    for _ in 0..header_count {
        let len = usize::from(r.u16("header name length")?);
        let name = HeaderName::from_bytes(&r.take(len, "header name")?)
            .map_err(|_| DecodeError::Invalid("header name"))?;
        let len = r.u32("header value length")? as usize;
        let value = HeaderValue::from_maybe_shared(r.take(len, "header value")?)
            .map_err(|_| DecodeError::Invalid("header value"))?;
        headers.append(name, value);
    }
    let body_len = r.len_u64("body length")?;
    let body = r.take(body_len, "body")?;
    if r.at != r.bytes.len() {
        return Err(DecodeError::Trailing);
    }
    // Time spent in L2 (0 when the writer's clock is ahead of ours).
    let in_l2 = Duration::from_millis(unix_ms(wall).saturating_sub(stored_unix_ms));
    let mut object = CachedObject::new(status, headers, body, initial_age + in_l2, lifetimes);
    object.stored_at = now;
    Ok(Decoded {
        object,
        stored_unix_ms,
        vary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> CachedObject {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("surrogate-key", HeaderValue::from_static("a b"));
        headers.append("surrogate-key", HeaderValue::from_static("c"));
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        CachedObject::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"hello body"),
            Duration::from_secs(3),
            Lifetimes {
                ttl: Duration::from_secs(60),
                grace: Duration::from_secs(10),
                keep: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(15),
                must_revalidate: true,
                no_cache: false,
            },
        )
    }

    #[test]
    fn round_trip_keeps_everything_and_adds_time_in_l2() {
        let original = object();
        let now = Instant::now();
        let wall = SystemTime::now();
        let bytes = encode(&original, &["gzip".into()], now, wall);
        let later = wall + Duration::from_secs(2);
        let decoded = decode(Bytes::from(bytes), now, later).expect("decodes");
        let o = &decoded.object;
        assert_eq!(o.status, original.status);
        assert_eq!(o.headers, original.headers);
        assert_eq!(o.body, original.body);
        assert_eq!(o.lifetimes, original.lifetimes);
        assert_eq!(decoded.vary, vec!["gzip".to_string()]);
        let age = o.age(now);
        assert!(
            age >= Duration::from_secs(5) && age < Duration::from_millis(5100),
            "{age:?}"
        );
        assert_eq!(decoded.stored_unix_ms / 1000, unix_ms(wall) / 1000);
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let bytes = encode(&object(), &[], Instant::now(), SystemTime::now());
        for n in 0..bytes.len() {
            let result = decode(
                Bytes::copy_from_slice(&bytes[..n]),
                Instant::now(),
                SystemTime::now(),
            );
            assert!(result.is_err(), "a record cut at {n} bytes decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode(Bytes::from(longer), Instant::now(), SystemTime::now()).err(),
            Some(DecodeError::Trailing)
        );
    }

    #[test]
    fn garbage_and_other_versions_are_refused() {
        let now = Instant::now();
        let wall = SystemTime::now();
        assert_eq!(
            decode(Bytes::from_static(b"GIF89a garbage"), now, wall).err(),
            Some(DecodeError::BadMagic)
        );
        let mut bytes = encode(&object(), &[], now, wall);
        bytes[4] = 9;
        assert_eq!(
            decode(Bytes::from(bytes), now, wall).err(),
            Some(DecodeError::Version(9))
        );
        // Random bytes, with and without a valid prefix: never a panic.
        let valid = encode(&object(), &["x".into()], now, wall);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..2000 {
            let len = (seed % 300) as usize;
            let mut junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if round % 2 == 0 {
                let keep = (seed as usize) % valid.len();
                junk.splice(0..0, valid[..keep].iter().copied());
            }
            let _ = decode(Bytes::from(junk), now, wall);
        }
    }

    #[test]
    fn huge_announced_lengths_do_not_allocate() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut bytes = encode(&object(), &[], now, wall);
        let body_len_at = bytes.len() - b"hello body".len() - 8;
        bytes[body_len_at..body_len_at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            decode(Bytes::from(bytes), now, wall),
            Err(DecodeError::Truncated(_))
        ));
    }
}
