//! The client's address as the connection gives it: an IP and port (a TCP
//! peer, or the source a PROXY protocol header names), or a Unix-socket
//! peer, which has no address at all.
//!
//! A leaf: `server` makes one per connection and `proxy` reads it, so it
//! lives below both. It is `Copy` and holds no path: nothing is allocated
//! per connection or request.
//!
//! What a Unix-socket client is where an IP is needed, as in Varnish
//! (whose `client.ip` is `0.0.0.0` for such clients): [`UNIX_IP`] in
//! `X-Forwarded-For`, rate-limit keys and `purge_allow`; `for=unknown` in
//! `Forwarded` (RFC 7239 §6.3); `unix:` in the access log, as nginx writes
//! `$remote_addr`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The IP a Unix-socket client stands for where an IP is needed.
pub const UNIX_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Where a client connection comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAddr {
    /// A TCP peer, or the source of a PROXY protocol header.
    Ip(SocketAddr),
    /// A peer on a Unix-socket listener without a PROXY header.
    Unix,
}

impl ClientAddr {
    /// The IP for address-keyed rules: the peer's, [`UNIX_IP`] for a
    /// Unix-socket peer. An IPv4 client on a `[::]` listener arrives as
    /// `::ffff:a.b.c.d`; it is given in its IPv4 form, the one ACLs and
    /// logs are written with.
    pub fn ip(self) -> IpAddr {
        match self {
            ClientAddr::Ip(addr) => addr.ip().to_canonical(),
            ClientAddr::Unix => UNIX_IP,
        }
    }

    /// It came over a Unix socket with no PROXY header.
    pub fn is_unix(self) -> bool {
        self == ClientAddr::Unix
    }
}

impl From<SocketAddr> for ClientAddr {
    fn from(addr: SocketAddr) -> ClientAddr {
        ClientAddr::Ip(addr)
    }
}

/// `1.2.3.4:5678`, `[::1]:5678` or `unix:`, for diagnostic logs.
impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Ip(addr) => addr.fmt(f),
            ClientAddr::Unix => f.write_str("unix:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_peer_is_the_unspecified_ipv4_address_and_shows_as_unix() {
        assert_eq!(ClientAddr::Unix.ip(), IpAddr::from([0, 0, 0, 0]));
        assert_eq!(ClientAddr::Unix.to_string(), "unix:");
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().expect("addr");
        assert_eq!(ClientAddr::from(mapped).ip(), IpAddr::from([10, 1, 2, 3]));
    }
}
