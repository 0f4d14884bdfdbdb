//! Active health probes, as Varnish does them: one tokio task per probed
//! backend sends the probe request every `interval`, remembers the last
//! `window` results as bits, and calls the backend healthy while at least
//! `threshold` of them succeeded. At start `initial` successes are assumed
//! (by default `threshold - 1`: sick until the first good probe, which is
//! sent at once). Every healthy↔sick change is logged. A good probe also
//! ends a passive ejection at once (`outlier.rs`): the backend answers.
//!
//! A probe connects as the backend's traffic does (`client.rs`'s `dial`):
//! over its Unix socket, to the latest answer of its host name, over TLS
//! with the same server name and roots for an HTTPS backend; with
//! `proxy_protocol`, its PROXY header names nobody (v1 `UNKNOWN`, v2
//! `LOCAL`: the receiver's own health check, as HAProxy's `check-send-proxy`
//! sends). The probe's `Host` is the backend's `host_header` when set
//! (built into the request at load), else the address, `localhost` for a
//! Unix socket.
//!
//! The task holds only a `Weak` reference to its backend and ends when the
//! backends are dropped (a new configuration, or shutdown).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::client::Dial;
use super::{Backend, BackendClient, FetchError, RequestBody};
use crate::config::ProbeConfig;

/// The probe verdict of one backend. Only its probe task writes it.
pub(super) struct Health {
    config: ProbeConfig,
    healthy: AtomicBool,
    /// The last `window` results, newest in bit 0.
    bits: AtomicU64,
    /// When the next probe is due, in ms of the backend's clock (0: unknown).
    next_probe_ms: AtomicU64,
}

fn mask(window: u32) -> u64 {
    if window >= 64 {
        u64::MAX
    } else {
        (1u64 << window) - 1
    }
}

impl Health {
    pub(super) fn new(config: &ProbeConfig) -> Health {
        let bits = mask(config.initial.min(config.window));
        Health {
            config: config.clone(),
            healthy: AtomicBool::new(config.initial >= config.threshold),
            bits: AtomicU64::new(bits),
            next_probe_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Adds one probe result; returns the new verdict when it changed.
    fn record(&self, ok: bool) -> Option<bool> {
        let bits =
            ((self.bits.load(Ordering::Acquire) << 1) | u64::from(ok)) & mask(self.config.window);
        self.bits.store(bits, Ordering::Release);
        let healthy = bits.count_ones() >= self.config.threshold;
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        (was != healthy).then_some(healthy)
    }

    /// The window as Varnish's bit string: oldest first, `H` for a good
    /// probe and `-` for a bad one (`backend.list -p`).
    pub(super) fn window_bits(&self) -> String {
        let bits = self.bits.load(Ordering::Acquire);
        (0..self.config.window)
            .rev()
            .map(|i| if bits >> i & 1 == 1 { 'H' } else { '-' })
            .collect()
    }

    fn good(&self) -> u32 {
        self.bits.load(Ordering::Acquire).count_ones()
    }

    /// The earliest time (ms of the backend's clock) at which enough good
    /// probes in a row could make a sick backend healthy; `None` when healthy
    /// or when the next probe time is not known yet.
    pub(super) fn healthy_at_ms(&self) -> Option<u64> {
        if self.is_healthy() {
            return None;
        }
        let next = self.next_probe_ms.load(Ordering::Acquire);
        if next == 0 {
            return None;
        }
        let needed = successes_needed(
            self.bits.load(Ordering::Acquire),
            self.config.window,
            self.config.threshold,
        );
        let interval = self.config.interval.as_millis() as u64;
        Some(next + u64::from(needed.saturating_sub(1)) * interval)
    }
}

/// How many good probes in a row bring `bits` to `threshold` (old results
/// slide out of the window as new ones come in).
fn successes_needed(bits: u64, window: u32, threshold: u32) -> u32 {
    let mut bits = bits;
    for k in 1..=window {
        bits = ((bits << 1) | 1) & mask(window);
        if bits.count_ones() >= threshold {
            return k;
        }
    }
    window
}

/// Starts the probe task of `backend` (when inside a tokio runtime).
pub(super) fn spawn<B: RequestBody>(backend: Weak<Backend<B>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime: health probes not started");
        return;
    };
    runtime.spawn(run(backend));
}

async fn run<B: RequestBody>(weak: Weak<Backend<B>>) {
    loop {
        let Some(backend) = weak.upgrade() else {
            return;
        };
        let Some(health) = backend.health.as_ref() else {
            return;
        };
        let config = &health.config;
        let started = Instant::now();
        let result = probe_once(
            &backend.client,
            &config.request,
            config.timeout,
            config.expected_status,
        )
        .await;
        let ok = result.is_ok();
        if ok {
            // The backend answers again: a passive ejection ends now, not
            // when its timer runs out (a restarted backend is used at once).
            backend.probe_passed();
        }
        if let Some(healthy) = health.record(ok) {
            let good = health.good();
            if healthy {
                tracing::info!(
                    backend = %backend.name(),
                    good, window = config.window, threshold = config.threshold,
                    "backend is healthy (probe)"
                );
            } else {
                tracing::warn!(
                    backend = %backend.name(),
                    good, window = config.window, threshold = config.threshold,
                    error = result.as_ref().err().map_or("-", String::as_str),
                    "backend went sick (probe)"
                );
            }
        } else if let Err(error) = &result {
            tracing::debug!(backend = %backend.name(), %error, "probe failed");
        }
        let pause = config.interval.saturating_sub(started.elapsed());
        health.next_probe_ms.store(
            backend.now_ms() + pause.as_millis() as u64,
            Ordering::Release,
        );
        // Hold no strong reference while sleeping, so dropping the backends
        // ends this task.
        drop(backend);
        tokio::time::sleep(pause).await;
    }
}

/// Sends the probe request on a fresh connection, made as the requests'
/// are (TCP or Unix socket, the PROXY header, TLS: see
/// [`BackendClient::dial`]), and reads the status line, all within `timeout`.
async fn probe_once<B: RequestBody>(
    client: &BackendClient<B>,
    request: &str,
    timeout: Duration,
    expected: u16,
) -> Result<(), String> {
    let attempt = async {
        let stream = client.dial(Dial::Probe).await.map_err(|e| match e {
            FetchError::Tls { detail, .. } => format!("TLS {detail}"),
            FetchError::Connect { source, .. } => format!("connect: {source}"),
            other => other.to_string(),
        })?;
        exchange(stream, request, expected).await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no answer within probe timeout {timeout:?}"))?
}

/// Writes the probe request on `stream` and checks the status it gets.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
    expected: u16,
) -> Result<(), String> {
    {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut head = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        let status = parse_status(&head).ok_or("no HTTP status line")?;
        if status == expected {
            Ok(())
        } else {
            Err(format!("status {status}, expected {expected}"))
        }
    }
}

/// The status of `HTTP/1.x NNN ...`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: u32, threshold: u32, initial: u32) -> ProbeConfig {
        ProbeConfig {
            request: String::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            window,
            threshold,
            initial,
            expected_status: 200,
        }
    }

    #[test]
    fn starts_sick_and_one_good_probe_heals_with_default_initial() {
        let h = Health::new(&config(8, 3, 2));
        assert!(!h.is_healthy());
        assert_eq!(h.record(true), Some(true));
        assert_eq!(h.record(true), None);
    }

    #[test]
    fn turns_sick_after_window_minus_threshold_plus_one_failures() {
        let h = Health::new(&config(8, 3, 8));
        assert!(h.is_healthy());
        for _ in 0..5 {
            assert_eq!(h.record(false), None);
        }
        assert_eq!(h.record(false), Some(false), "the 6th failure (8 - 3 + 1)");
    }

    #[test]
    fn successes_needed_counts_sliding_window() {
        assert_eq!(successes_needed(0, 8, 3), 3);
        assert_eq!(successes_needed(0b11, 8, 3), 1);
        // The two good results are about to slide out of a window of 3.
        assert_eq!(successes_needed(0b110, 3, 3), 3);
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 x\r\n"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
    }
}
