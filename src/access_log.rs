//! The access log (`[log] access`): one line per request, written by a
//! background task so that a slow disk never blocks a request. Lines go
//! through a bounded channel; when it is full the line is dropped and
//! counted (`shellac_access_log_dropped_total`).

use std::io::Write;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::config::{AccessLog, LogConfig, LogFormat};

/// Lines that may wait for the writer before new ones are dropped.
const BACKLOG: usize = 16 * 1024;

/// A handle to the access-log writer (cheap to clone).
#[derive(Clone)]
pub struct AccessLogger {
    sender: Option<mpsc::Sender<String>>,
    format: LogFormat,
    dropped: Counter,
}

impl AccessLogger {
    /// Starts the writer for `config` (nothing when the log is off).
    pub fn start(config: &LogConfig, dropped: Counter) -> std::io::Result<AccessLogger> {
        let sink: Box<dyn Write + Send> = match &config.access {
            AccessLog::Off => {
                return Ok(AccessLogger {
                    sender: None,
                    format: config.format,
                    dropped,
                })
            }
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (sender, receiver) = mpsc::channel(BACKLOG);
        std::thread::Builder::new()
            .name("shellac-access-log".into())
            .spawn(move || write_lines(receiver, sink))?;
        Ok(AccessLogger {
            sender: Some(sender),
            format: config.format,
            dropped,
        })
    }

    /// A logger that logs nothing.
    pub fn off() -> AccessLogger {
        AccessLogger {
            sender: None,
            format: LogFormat::Combined,
            dropped: Counter::default(),
        }
    }

    /// Whether lines are wanted at all (skip building them when not).
    pub fn is_on(&self) -> bool {
        self.sender.is_some()
    }

    /// The configured format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Queues a line; never waits.
    pub fn log(&self, line: String) {
        if let Some(sender) = &self.sender {
            if sender.try_send(line).is_err() {
                self.dropped.inc();
            }
        }
    }
}

/// The writer: a plain thread, so file writes never occupy a runtime worker.
fn write_lines(mut receiver: mpsc::Receiver<String>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(sink);
    while let Some(line) = receiver.blocking_recv() {
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        // Flush when nothing else is waiting, so lines appear promptly.
        if receiver.is_empty() {
            let _ = out.flush();
        }
    }
    let _ = out.flush();
}
