//! The PROXY protocol header a `proxy_protocol = 1 | 2` backend gets at
//! the start of each new connection (Varnish's `.proxy_header`, HAProxy's
//! `send-proxy` / `send-proxy-v2`), built with the `ppp` crate.
//!
//! The source is the client's address; the destination is the address
//! the client connected to when the request carries it ([`ClientEnds`]),
//! else Shellac's own address on the backend connection. A client that
//! has no IP address (a Unix listener), and the probes, send a header
//! that names nobody: v1 `PROXY UNKNOWN`, v2 `LOCAL` (which HAProxy,
//! nginx and Shellac's own listeners treat as the balancer's own
//! connection, such as a health check).

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2};

/// The two ends of the client's connection, put on the backend request
/// (as an extension) by the proxy, for the PROXY header: `client` is its
/// source, `server` the address it connected to, each `None` when not an
/// IP address or not known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientEnds {
    /// The client's address (after a PROXY header on the listener).
    pub client: Option<SocketAddr>,
    /// The address the client connected to.
    pub server: Option<SocketAddr>,
}

/// The header for a request's connection: `ends` as far as known, with
/// `local` (Shellac's address on the backend connection) standing in for
/// an unknown destination, and the unspecified address (`0.0.0.0:0`) when
/// there is none either (a Unix socket backend): the client's address is
/// what the backend wants from the header.
pub(super) fn header(version: u8, ends: Option<&ClientEnds>, local: Option<SocketAddr>) -> Vec<u8> {
    let Some(source) = ends.and_then(|e| e.client) else {
        return self::local(version);
    };
    let destination = ends
        .and_then(|e| e.server)
        .or(local)
        .unwrap_or_else(|| match source {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        });
    let (source, destination) = same_family(source, destination);
    match version {
        1 => v1::Addresses::from((source, destination))
            .to_string()
            .into_bytes(),
        _ => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        .unwrap_or_else(|_| self::local(version)),
    }
}

/// The header that names nobody: v1 `PROXY UNKNOWN`, v2 `LOCAL`.
pub(super) fn local(version: u8) -> Vec<u8> {
    match version {
        1 => v1::Addresses::Unknown.to_string().into_bytes(),
        _ => v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap_or_else(|_| {
            // The fixed 16 bytes: signature, version 2 LOCAL, UNSPEC, length 0.
            let mut bytes = v2::PROTOCOL_PREFIX.to_vec();
            bytes.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            bytes
        }),
    }
}

/// Both addresses in one family, as the header has one: an IPv4 client
/// behind an IPv6 socket is written as its IPv4-mapped IPv6 address.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (source, destination)
        }
        _ => (v6(source), v6(destination)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(client: &str, server: &str) -> ClientEnds {
        ClientEnds {
            client: client.parse().ok(),
            server: server.parse().ok(),
        }
    }

    #[test]
    fn v1_names_the_client_and_the_address_it_connected_to() {
        let e = ends("192.0.2.7:5555", "198.51.100.1:80");
        assert_eq!(
            header(1, Some(&e), None),
            b"PROXY TCP4 192.0.2.7 198.51.100.1 5555 80\r\n"
        );
        let local = "127.0.0.1:40000".parse().ok();
        let e = ends("192.0.2.7:5555", "-");
        assert_eq!(
            header(1, Some(&e), local),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 40000\r\n"
        );
        let mixed = ends("192.0.2.7:5555", "[::1]:80");
        let text = String::from_utf8(header(1, Some(&mixed), None)).expect("text");
        assert_eq!(text, "PROXY TCP6 ::ffff:192.0.2.7 ::1 5555 80\r\n");
        assert_eq!(header(1, None, local), b"PROXY UNKNOWN\r\n");
        // A Unix socket backend: no address of Shellac's on that connection.
        let e = ends("192.0.2.7:5555", "-");
        assert_eq!(
            header(1, Some(&e), None),
            b"PROXY TCP4 192.0.2.7 0.0.0.0 5555 0\r\n"
        );
    }

    #[test]
    fn v2_is_parsed_back_by_ppp_and_local_names_nobody() {
        let e = ends("192.0.2.7:5555", "198.51.100.1:80");
        let bytes = header(2, Some(&e), None);
        let parsed = v2::Header::try_from(bytes.as_slice()).expect("a v2 header");
        assert_eq!(parsed.command, v2::Command::Proxy);
        assert_eq!(
            parsed.addresses,
            v2::Addresses::from((
                "192.0.2.7:5555".parse::<SocketAddr>().expect("addr"),
                "198.51.100.1:80".parse::<SocketAddr>().expect("addr"),
            ))
        );
        let bytes = local(2);
        assert_eq!(bytes.len(), 16);
        let parsed = v2::Header::try_from(bytes.as_slice()).expect("a v2 header");
        assert_eq!(parsed.command, v2::Command::Local);
    }
}
