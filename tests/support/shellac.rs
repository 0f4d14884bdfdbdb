//! Starting Shellac for a test: in-process from a TOML string
//! ([`Shellac::start`]), or as the real binary ([`ShellacProcess::spawn`])
//! when the test needs its logs, its exit code or its memory use.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Shellac running inside the test process.
pub struct Shellac {
    /// The first TCP listener (`0.0.0.0:0` when there is none).
    pub addr: SocketAddr,
    /// Every listener, in the order of `[server] listen`.
    pub bound: Vec<shellac::server::Bound>,
    /// The admin listener, when the config has `[admin] listen`.
    pub admin: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Shellac {
    /// Starts Shellac with `toml` (its `[server] listen` is replaced by port 0).
    pub async fn start(toml: &str) -> Shellac {
        let mut config = shellac::Config::parse(Path::new("test.toml"), toml)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        config.server.listen = vec![shellac::config::Listen::plain(
            "127.0.0.1:0".parse().expect("addr"),
        )];
        Shellac::launch(config).await
    }

    /// Starts Shellac with `toml` keeping its `[server] listen` as written
    /// (port-0 TCP addresses, Unix sockets, `proxy_protocol` and `":port"`
    /// listeners); [`Shellac::bound`] says where each one is.
    pub async fn start_as_configured(toml: &str) -> Shellac {
        let config = shellac::Config::parse(Path::new("test.toml"), toml)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        Shellac::launch(config).await
    }

    async fn launch(config: shellac::Config) -> Shellac {
        let listeners = shellac::bind(&config).await.expect("bind shellac");
        let bound = listeners.iter().filter_map(|l| l.bound()).collect();
        let addr = shellac::local_addrs(&listeners)
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let admin_listener = shellac::bind_admin(&config).await.expect("bind admin");
        let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let launch = shellac::Launch {
            admin: admin_listener,
            demo_origin: None,
            ..shellac::Launch::default()
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(shellac::run_with(config, listeners, launch, async move {
            let _ = rx.await;
        }));
        Shellac {
            addr,
            bound,
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops accepting, drains, and re-raises any panic from Shellac's task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }
}

impl Drop for Shellac {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The `shellac` binary, run on a config file written for the test.
pub struct ShellacProcess {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl ShellacProcess {
    /// Writes `toml` (which should listen on `127.0.0.1:0`) and starts the
    /// binary on it; waits for the "listening" log line.
    pub fn spawn(toml: &str) -> ShellacProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shellac.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shellac"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shellac");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("shellac listening") {
                    if let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = addr_tx.send(addr);
                    }
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "shellac did not start; log:\n{}",
                    log.lock().expect("log lock")
                );
            }
        };
        ShellacProcess {
            addr,
            child,
            log,
            _dir: dir,
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the log contains `needle` (or `within` passes).
    pub async fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The admin listener's address, from its "admin listening" log line
    /// (the config should set `[admin] listen = "127.0.0.1:0"`).
    pub async fn admin_addr(&self) -> Option<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let found = self
                .log()
                .lines()
                .filter(|l| l.contains("admin listening"))
                .find_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                });
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for ShellacProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
