//! Binding `[server] listen` entries: TCP addresses, `":port"` (every
//! interface) and Unix sockets, and accepting from them.
//!
//! # `":port"`
//!
//! One socket on `[::]:port` with `IPV6_V6ONLY` off, which takes IPv4
//! clients too (as `::ffff:a.b.c.d`, shown everywhere in their IPv4 form);
//! where the host has no IPv6 (the socket cannot be made or bound), one on
//! `0.0.0.0:port`. One socket rather than two keeps a listener one accept
//! loop, one entry to follow on reload.
//!
//! # Unix sockets
//!
//! At bind, a file at the path that is a socket is a stale one, left by a
//! process that did not remove it, and is replaced — unless something
//! answers on it, which is another process serving: then binding fails, as
//! a TCP port in use does. Anything else at the path (a regular file, a
//! directory) is refused, never removed. `mode` is applied right after
//! bind (a client that connects in between sees the umask's bits). When the
//! listener closes (shutdown, or a reload that drops it) its file is
//! removed, if it is still the one it created: a newer process may have
//! replaced it.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::{Listen, ListenAddr};

/// The accept queue's length (what `TcpListener::bind` uses too); the
/// kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

/// A bound client listener.
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix socket, with the file it made.
    Unix(UnixSocket),
}

/// A Unix listener and its socket file, removed when it is dropped.
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The file's (device, inode) as bound: removed only if still that one.
    identity: Option<(u64, u64)>,
}

/// What a listener is bound to, port 0 resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Bound {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Tcp(addr) => addr.fmt(f),
            Bound::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Bound {
    /// Whether this is what `configured` was bound to: the same address,
    /// or for port 0 the same IP; `":port"` is the unspecified address.
    pub(super) fn is_from(&self, configured: &ListenAddr) -> bool {
        match (configured, self) {
            (ListenAddr::Tcp(want), Bound::Tcp(got)) => {
                want == got || (want.port() == 0 && want.ip() == got.ip())
            }
            (ListenAddr::AllInterfaces(port), Bound::Tcp(got)) => {
                got.ip().is_unspecified() && (*port == 0 || got.port() == *port)
            }
            (ListenAddr::Unix(want), Bound::Unix(got)) => want == got,
            _ => false,
        }
    }
}

/// A connection just accepted.
pub(super) enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Listener {
    /// What it is bound to.
    pub fn bound(&self) -> Option<Bound> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok().map(Bound::Tcp),
            Listener::Unix(socket) => Some(Bound::Unix(socket.path.clone())),
        }
    }

    /// The TCP address it is bound to; none for a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    pub(super) async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, addr) = listener.accept().await?;
                Ok(Accepted::Tcp(stream, addr))
            }
            Listener::Unix(socket) => {
                let (stream, _) = socket.listener.accept().await?;
                Ok(Accepted::Unix(stream))
            }
        }
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| Some((m.dev(), m.ino())) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds one `listen` entry. The error names the address.
pub async fn bind(listen: &Listen) -> io::Result<Listener> {
    let named =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", listen.addr));
    match &listen.addr {
        ListenAddr::Tcp(addr) => tcp(*addr, false).map(Listener::Tcp).map_err(named),
        ListenAddr::AllInterfaces(port) => {
            let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port));
            match tcp(any6, true) {
                Ok(listener) => Ok(Listener::Tcp(listener)),
                Err(e) if no_ipv6(&e) => {
                    tracing::info!(port, "no IPv6 on this host: listening on IPv4 only");
                    tcp(SocketAddr::from(([0, 0, 0, 0], *port)), false)
                        .map(Listener::Tcp)
                        .map_err(named)
                }
                Err(e) => Err(named(e)),
            }
        }
        ListenAddr::Unix(path) => unix(path, listen.mode)
            .await
            .map(Listener::Unix)
            .map_err(named),
    }
}

/// The errors that mean "this host has no IPv6", not "the port is taken".
fn no_ipv6(error: &io::Error) -> bool {
    /// Linux's `EAFNOSUPPORT`: the kernel has no IPv6.
    const EAFNOSUPPORT: i32 = 97;
    error.raw_os_error() == Some(EAFNOSUPPORT)
        || error.kind() == io::ErrorKind::AddrNotAvailable
        || error.kind() == io::ErrorKind::Unsupported
}

/// Binds a TCP listener. `TCP_NODELAY` is set on the listening socket:
/// Linux copies it to every accepted connection, which saves a
/// `setsockopt` per connection (small heads must never wait for Nagle).
/// `dual_stack`: an IPv6 socket that takes IPv4 clients too.
fn tcp(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if dual_stack {
        socket2::SockRef::from(&socket).set_only_v6(false)?;
    }
    // As `TcpListener::bind`: a restart may bind while old connections
    // are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds a Unix listener at `path` (see the module comment for what may
/// already be there) and applies `mode`.
async fn unix(path: &Path, mode: Option<u32>) -> io::Result<UnixSocket> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is serving on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(meta) => {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "a file that is not a socket"
            };
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is {what}; refusing to replace it", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    let identity = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    Ok(UnixSocket {
        listener,
        path: path.to_path_buf(),
        identity,
    })
}

/// A client stream the connection code can serve: TCP or Unix.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The first byte waiting in the socket, left there, for TLS listeners
    /// to tell plain HTTP by; none when it cannot be known (end of stream,
    /// or a stream that cannot peek).
    fn peek_first(&self) -> impl Future<Output = io::Result<Option<u8>>> + Send;
}

impl Stream for TcpStream {
    async fn peek_first(&self) -> io::Result<Option<u8>> {
        let mut first = [0u8; 1];
        Ok((self.peek(&mut first).await? == 1).then_some(first[0]))
    }
}

impl Stream for UnixStream {
    /// Not known: tokio cannot peek a Unix stream without `unsafe` (std's
    /// `peek` is unstable), so a TLS listener on a Unix socket goes straight
    /// to the handshake; its clients are local programs set up for it, and
    /// plain HTTP fails the handshake and is closed.
    async fn peek_first(&self) -> io::Result<Option<u8>> {
        Ok(None)
    }
}
