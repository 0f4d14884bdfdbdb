//! Header handling between client, cache and backend: hop-by-hop headers
//! (RFC 9110 §7.6.1), `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `Forwarded` (RFC 7239), `Via`, and the cache's own
//! `Age` / `X-Cache` / `Cache-Status`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// `Proxy-Connection`, which old clients still send; hop-by-hop like the
/// headers RFC 9110 §7.6.1 lists (see [`remove_hop_by_hop`]).
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// `X-Cache`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// `Cache-Status` (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `X-Shellac-Retries`: how many times the fetch was retried (when not zero).
pub const X_SHELLAC_RETRIES: HeaderName = HeaderName::from_static("x-shellac-retries");
/// On a request from one `[cluster]` peer to another: the receiver is the
/// key's owner and fetches from the origin itself (no second hop).
pub const X_SHELLAC_PEER: HeaderName = HeaderName::from_static("x-shellac-peer");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: `https` or `http`, how the client reached us.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes hop-by-hop headers, including every header the `Connection`
/// header names.
///
/// One pass over the names first: a typical message has no hop-by-hop
/// field but `Connection: keep-alive`, and seven hashed removals of absent
/// names cost more than the scan.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut present: [Option<&'static HeaderName>; 7] = [None; 7];
    let mut found = 0;
    for name in headers.keys() {
        if let Some(hop) = hop_by_hop(name) {
            present[found] = Some(hop);
            found += 1;
            if found == present.len() {
                break;
            }
        }
    }
    if found == 0 {
        return;
    }
    if present.contains(&Some(&header::CONNECTION)) {
        // `keep-alive` and the other hop-by-hop names go below anyway; only
        // other options (`close`, `X-Secret`) need parsing as field names.
        let mut named = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for option in value.as_bytes().split(|&b| b == b',') {
                let option = option.trim_ascii();
                let already = hop_by_hop_bytes(option);
                if !already && !option.is_empty() {
                    if let Ok(name) = HeaderName::from_bytes(option) {
                        named.push(name);
                    }
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for name in present.into_iter().flatten() {
        headers.remove(name);
    }
}

/// Every hop-by-hop field name.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    PROXY_CONNECTION,
];

/// The hop-by-hop constant equal to `name`, if it is one. Every field of
/// every proxied head goes through here, so its length picks the one
/// candidate to compare with (names are stored lower-case).
fn hop_by_hop(name: &HeaderName) -> Option<&'static HeaderName> {
    let text = name.as_str();
    let [connection, te, trailer, transfer_encoding, upgrade, keep_alive, proxy_connection] =
        &HOP_BY_HOP;
    let candidate = match text.len() {
        2 => te,
        7 if text == "trailer" => trailer,
        7 => upgrade,
        10 if text == "connection" => connection,
        10 => keep_alive,
        16 => proxy_connection,
        17 => transfer_encoding,
        _ => return None,
    };
    (candidate.as_str() == text).then_some(candidate)
}

/// Whether a `Connection` option names a hop-by-hop field (any case).
fn hop_by_hop_bytes(option: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|hop| hop.as_str().as_bytes().eq_ignore_ascii_case(option))
}

/// The client's address as Shellac believes it: the peer, unless the peer
/// is a trusted proxy, in which case the right-most address of
/// `X-Forwarded-For` that is not itself a trusted proxy (the left part of
/// the header is whatever the client wrote, so it is never believed).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    // An IPv4 client on a `[::]` listener arrives as `::ffff:a.b.c.d`; ACLs
    // and logs are written with the IPv4 form.
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    let mut believed = peer;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(value) = value.to_str() else {
            return believed;
        };
        for hop in value.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                return believed;
            };
            believed = ip;
            if !trusted.iter().any(|net| net.contains(&ip)) {
                return ip;
            }
        }
    }
    believed
}

/// Appends the client's address to `X-Forwarded-For`, as Varnish does.
/// Written into one buffer without `format!`: this runs on every request
/// that goes to a backend.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let existing = headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes);
    let mut joined = Vec::with_capacity(existing.map_or(0, |e| e.len() + 2) + 39);
    if let Some(existing) = existing {
        joined.extend_from_slice(existing);
        joined.extend_from_slice(b", ");
    }
    match client {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    joined.push(b'.');
                }
                push_decimal(&mut joined, octet);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(joined, "{v6}");
        }
    }
    // An exact-size buffer becomes the value without another allocation.
    joined.shrink_to_fit();
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// `X-Forwarded-Proto` and RFC 7239 `Forwarded` for the backend: how the
/// client reached us (`tls`), from where (`peer`) and for which `Host`.
///
/// What the client sent is believed only from a `trusted` peer (a load
/// balancer in `trusted_proxies`): its `X-Forwarded-Proto` is kept and our
/// `Forwarded` element is appended to its own. From anyone else both are
/// replaced, so a client cannot make a backend believe it came over HTTPS
/// (a backend that redirects plain HTTP would then serve it, and cache
/// keys it cannot see would differ from what it thinks).
pub fn set_forwarded_proto(headers: &mut HeaderMap, peer: IpAddr, tls: bool, trusted: bool) {
    let proto = if tls { "https" } else { "http" };
    if !trusted || !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    match peer.to_canonical() {
        // A Unix-socket client (`peer::UNIX_IP`): RFC 7239 §6.3's "unknown".
        IpAddr::V4(v4) if v4.is_unspecified() => element.push_str("unknown"),
        IpAddr::V4(v4) => {
            use std::fmt::Write as _;
            let _ = write!(element, "{v4}");
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            // RFC 7239 §6: an IPv6 node is bracketed, hence quoted.
            let _ = write!(element, "\"[{v6}]\"");
        }
    }
    element.push_str(";proto=");
    element.push_str(proto);
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        // Quoted always (a port's `:` is not a token character); a host
        // that would need escaping is left out rather than escaped.
        if !host.is_empty() && !host.contains(['"', '\\']) {
            element.push_str(";host=\"");
            element.push_str(host);
            element.push('"');
        }
    }
    let joined = if trusted {
        let earlier: Vec<&str> = headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if earlier.is_empty() {
            element
        } else {
            format!("{}, {element}", earlier.join(", "))
        }
    } else {
        element
    };
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(header::FORWARDED, value);
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + (n / 10) % 10);
    }
    out.push(b'0' + n % 10);
}

/// Appends Shellac to `Via` (RFC 9110 §7.6.3) with the protocol version the
/// message was received with.
pub fn append_via(headers: &mut HeaderMap, received: Version) {
    let ours = match received {
        Version::HTTP_10 => "1.0 shellac",
        Version::HTTP_2 => "2 shellac",
        _ => "1.1 shellac",
    };
    match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(existing) => {
            if let Ok(value) = HeaderValue::from_str(&format!("{existing}, {ours}")) {
                headers.insert(header::VIA, value);
            }
        }
        None => {
            headers.insert(header::VIA, HeaderValue::from_static(ours));
        }
    }
}

/// An `Age` value. Ages under [`STATIC_AGES`] seconds are slices of one
/// table built once, so a hit allocates nothing for its `Age` (and cloning
/// a static value touches no reference count).
pub fn age_value(seconds: u64) -> HeaderValue {
    static DIGITS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if seconds >= STATIC_AGES {
        return HeaderValue::from(seconds);
    }
    let digits = DIGITS.get_or_init(|| {
        let mut all = String::with_capacity(38_890);
        for n in 0..STATIC_AGES {
            all.push_str(&n.to_string());
        }
        all
    });
    // Where `seconds` starts in the table: all shorter numbers come first
    // (10 of one digit, 90 of two, 900 of three).
    let (shorter, first, width) = match seconds {
        0..=9 => (0, 0, 1),
        10..=99 => (10, 10, 2),
        100..=999 => (190, 100, 3),
        _ => (2_890, 1_000, 4),
    };
    let start = (shorter + (seconds - first) * width) as usize;
    match digits.get(start..start + width as usize) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(seconds),
    }
}

/// Ages below this come from [`age_value`]'s static table (2 h 46 min).
pub const STATIC_AGES: u64 = 10_000;

/// `Cache-Status` of a fresh hit, `shellac; hit; ttl=N`, written without
/// `format!` into a buffer of exactly its length, which becomes the header
/// value without a copy: this runs on every hit.
pub fn hit_status(ttl: i64) -> HeaderValue {
    const PREFIX: &[u8] = b"shellac; hit; ttl=";
    let mut digits = [0u8; 20];
    let mut n = ttl.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let sign: &[u8] = if ttl < 0 { b"-" } else { b"" };
    let mut text = Vec::with_capacity(PREFIX.len() + sign.len() + digits.len() - at);
    text.extend_from_slice(PREFIX);
    text.extend_from_slice(sign);
    text.extend_from_slice(&digits[at..]);
    status_value(text)
}

/// A `Cache-Status` (or other computed) value from text Shellac wrote; the
/// buffer becomes the value without a copy.
pub fn status_value(text: impl Into<Vec<u8>>) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text.into()))
        .unwrap_or_else(|_| HeaderValue::from_static("shellac"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_go_too() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn age_values_match_their_numbers() {
        for n in (0..STATIC_AGES + 20).chain([u64::MAX]) {
            assert_eq!(age_value(n), n.to_string().as_str(), "{n}");
        }
    }

    #[test]
    fn hit_status_matches_format() {
        for ttl in [0, 7, 10, 3599, -1, -42, i64::MAX, i64::MIN] {
            assert_eq!(hit_status(ttl), format!("shellac; hit; ttl={ttl}").as_str());
        }
    }

    #[test]
    fn forwarded_for_and_via_append() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 cdn"));
        append_forwarded_for(&mut h, "127.0.0.1".parse().expect("ip"));
        append_via(&mut h, Version::HTTP_11);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[header::VIA], "1.1 cdn, 1.1 shellac");
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let mut h = HeaderMap::new();
            append_forwarded_for(&mut h, ip.parse().expect("ip"));
            assert_eq!(h[X_FORWARDED_FOR], ip);
        }
    }

    #[test]
    fn forwarded_proto_is_replaced_unless_the_peer_is_trusted() {
        let spoofed = || {
            let mut h = HeaderMap::new();
            h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            h.insert(
                header::FORWARDED,
                HeaderValue::from_static("for=1.2.3.4;proto=https"),
            );
            h.insert(header::HOST, HeaderValue::from_static("example.com:8080"));
            h
        };
        let mut h = spoofed();
        set_forwarded_proto(&mut h, "10.0.0.9".parse().expect("ip"), false, false);
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.0.0.9;proto=http;host=\"example.com:8080\""
        );
        let mut h = spoofed();
        set_forwarded_proto(&mut h, "::1".parse().expect("ip"), false, true);
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(
            h[header::FORWARDED],
            "for=1.2.3.4;proto=https, for=\"[::1]\";proto=http;host=\"example.com:8080\""
        );
        let mut h = HeaderMap::new();
        set_forwarded_proto(&mut h, "::ffff:10.1.2.3".parse().expect("ip"), true, true);
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[header::FORWARDED], "for=10.1.2.3;proto=https");
    }

    #[test]
    fn only_hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("close"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::TRAILER, HeaderValue::from_static("x"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["cache-control"]);
        let mut plain = HeaderMap::new();
        plain.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        remove_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
        // Names as long as a hop-by-hop one (the lookup goes by length) stay.
        let mut same_length = HeaderMap::new();
        for name in [
            "tk",
            "expires",
            "x-trailer",
            "set-cookie",
            "content-location",
            "x-transfer-encode",
        ] {
            same_length.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        remove_hop_by_hop(&mut same_length);
        assert_eq!(same_length.len(), 6);
    }
}
