//! A real `redis-server` for a test, on a free loopback port, with no
//! persistence. redis-server cannot listen on port 0, so the port is found
//! by binding a std listener to `127.0.0.1:0`, reading it and dropping it.
//!
//! [`RedisServer::start`] returns `None` (after a loud `!!! SKIPPED` line)
//! only when `redis-server` is not installed; any other failure to start
//! panics, so a broken setup is never mistaken for a skip.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process; killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// Whether `redis-server` can be run at all.
fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind for a free port");
    listener.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts redis-server on a free port; `None` when it is not installed.
    pub fn start(test: &str) -> Option<RedisServer> {
        if !installed() {
            eprintln!(
                "!!! SKIPPED {test}: redis-server is not installed (apt-get install redis-server)"
            );
            return None;
        }
        let mut server = RedisServer {
            port: 0,
            child: None,
            dir: tempfile::tempdir().expect("tempdir for redis"),
        };
        // Another process may take the port between the probe and redis'
        // bind (redis then exits): try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("redis-server is installed but did not start on any of 5 free ports");
    }

    /// Starts the process on `self.port`; true when it answers PING.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: as a crash, not a clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// A fresh async connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real 3-master Redis Cluster on loopback (no replicas, no persistence):
/// three `redis-server --cluster-enabled yes` processes on free ports, joined
/// with `redis-cli --cluster create`; all three are killed when dropped.
///
/// [`RedisCluster::start`] returns `None` (after a loud `!!! SKIPPED` line)
/// only when `redis-server` or `redis-cli` is not installed; any other
/// failure panics.
pub struct RedisCluster {
    /// The masters' client ports, in the order given to `--cluster create`
    /// (so the first one holds slots 0–5460).
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

/// Whether `redis-cli` can be run at all.
fn cli_installed() -> bool {
    Command::new("redis-cli")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Answers `+PONG` to a PING on `addr`.
fn ping_addr(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl RedisCluster {
    /// Starts the three masters, creates the cluster and waits until every
    /// master reports `cluster_state:ok`; `None` when redis is not installed.
    pub fn start(test: &str) -> Option<RedisCluster> {
        if !installed() || !cli_installed() {
            eprintln!(
                "!!! SKIPPED {test}: redis-server or redis-cli is not installed (apt-get install redis-server redis-tools)"
            );
            return None;
        }
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir for the redis cluster"),
        };
        for _ in 0..3 {
            // As for RedisServer: a probed port may be taken before redis
            // binds it (the client port or the bus port): try a few.
            let started = (0..5).any(|_| cluster.spawn_node(free_port(), free_port()));
            assert!(
                started,
                "redis-server --cluster-enabled yes did not start on any of 5 free ports"
            );
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in cluster.ports.clone() {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                    .args(["cluster", "info"])
                    .stdin(Stdio::null())
                    .output()
                    .expect("run redis-cli cluster info");
                let info = String::from_utf8_lossy(&info.stdout).into_owned();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the redis cluster did not reach cluster_state:ok on port {port}: {info}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(cluster)
    }

    /// Starts one cluster-enabled server on `port` (cluster bus on `bus`);
    /// true when it answers PING.
    fn spawn_node(&mut self, port: u16, bus: u16) -> bool {
        if port == bus {
            return false;
        }
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &bus.to_string()])
            .arg("--cluster-config-file")
            .arg(self.dir.path().join(format!("nodes-{port}.conf")))
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping_addr(addr) {
                self.ports.push(port);
                self.children.push(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// `redis+cluster://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C` (Shellac's
    /// `[cache.l2] url`).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// A cluster connection (follows slots) for the test's own commands.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        redis::cluster::ClusterClient::new(seeds)
            .expect("cluster seeds")
            .get_async_connection()
            .await
            .expect("connect to the test redis cluster")
    }

    /// A plain connection to one master (e.g. `DBSIZE` of that node only).
    pub async fn node_connection(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a cluster node")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
