//! Retries and the backend connection (issue 15, items 5–7), through real
//! sockets:
//!
//! - a pooled connection the backend closed is retried once, transparently,
//!   when the request can be sent again (its body complete and kept);
//! - a request that reached the backend (a slow answer, a 5xx) is never
//!   asked of the same backend again, and `[retry] deadline` bounds the
//!   whole wait;
//! - the first-byte timer starts when the request body has been sent, and a
//!   client that stalls its upload gets a 408 of its own.
//!
//! Passive ejection is turned off (`consecutive_failures = 0`) wherever a
//! test fails on purpose, so that only the retry rules are measured.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{get, Origin, Reply, Shellac};

/// `[[backend]]` tables `b0`, `b1`, … with `per_backend`, in one
/// round-robin pool, after `extra` (other sections).
fn backends(addrs: &[SocketAddr], per_backend: &str, extra: &str) -> String {
    let mut text = format!("[server]\nlisten = \"127.0.0.1:0\"\ndebug_headers = true\n{extra}\n");
    for (i, addr) in addrs.iter().enumerate() {
        text.push_str(&format!(
            "[[backend]]\nname = \"b{i}\"\naddress = \"{addr}\"\n{per_backend}\n"
        ));
    }
    text
}

// === 6. a slow answer, a 5xx answer, the deadline ===

/// Issue 15 item 6: a 1.5 s job behind `first_byte_timeout = "1s"`. Before:
/// the origin was asked 5 times and the client got its 503 after 5.6 s.
#[tokio::test]
async fn a_slow_answer_is_requested_once() {
    let origin = Origin::fixed(Reply::ok("late").delay(Duration::from_millis(1500))).await;
    let shellac = Shellac::start(&backends(
        &[origin.addr],
        "first_byte_timeout = \"1s\"\nconsecutive_failures = 0\n",
        "",
    ))
    .await;
    let started = Instant::now();
    let got = get(shellac.addr, "/job").await;
    let took = started.elapsed();
    eprintln!(
        "MEASURED 503 after {took:?}, origin asked {} times",
        origin.requests()
    );
    assert_eq!(got.status, 503);
    assert_eq!(got.header("x-shellac-error"), Some("first_byte_timeout"));
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(origin.requests(), 1);

    // Enabled by hand, a timed-out request still never goes back to the
    // backend that timed out: with one backend, nothing is retried.
    let shellac = Shellac::start(&backends(
        &[origin.addr],
        "first_byte_timeout = \"1s\"\nconsecutive_failures = 0\n",
        "[retry]\nretry_on = [\"connect\", \"first_byte_timeout\"]\n",
    ))
    .await;
    let got = get(shellac.addr, "/job2").await;
    assert_eq!(got.status, 503);
    assert_eq!(origin.requests(), 2, "one more request, not five");
}

/// Issue 15 item 6: a backend's 5xx answer is retried only on another
/// backend. Before: one GET to a failing URL cost 4 origin requests.
#[tokio::test]
async fn a_5xx_answer_is_passed_on_with_one_backend_and_retried_elsewhere_with_two() {
    let failing = Origin::fixed(Reply::ok("origin says 503").status(503)).await;
    let shellac =
        Shellac::start(&backends(&[failing.addr], "consecutive_failures = 0\n", "")).await;
    for i in 0..3 {
        let got = get(shellac.addr, &format!("/fail/{i}")).await;
        assert_eq!(got.status, 503);
        assert_eq!(got.text(), "origin says 503", "the origin's own answer");
        assert_eq!(got.header("x-shellac-retries"), None);
    }
    eprintln!("MEASURED {} origin requests for 3 GETs", failing.requests());
    assert_eq!(failing.requests(), 3, "one origin request per GET");

    // Two failing backends: each GET asks each once, and the client gets
    // the last answer.
    let other = Origin::fixed(Reply::ok("other says 503").status(503)).await;
    let shellac = Shellac::start(&backends(
        &[failing.addr, other.addr],
        "consecutive_failures = 0\n",
        "[retry]\nbudget_percent = 100\n",
    ))
    .await;
    let before = failing.requests();
    for i in 0..6 {
        let got = get(shellac.addr, &format!("/both/{i}")).await;
        assert_eq!(got.status, 503);
        assert_eq!(got.header("x-shellac-retries"), Some("1"));
    }
    assert_eq!(failing.requests() - before, 6);
    assert_eq!(other.requests(), 6);

    // One failing and one good backend: the retry goes to the good one.
    let good = Origin::fixed(Reply::ok("good").header("cache-control", "no-store")).await;
    let shellac = Shellac::start(&backends(
        &[failing.addr, good.addr],
        "consecutive_failures = 0\n",
        "[retry]\nbudget_percent = 100\n",
    ))
    .await;
    let before = failing.requests();
    for i in 0..6 {
        let got = get(shellac.addr, &format!("/mixed/{i}")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "good");
    }
    assert!(failing.requests() - before <= 6);
    assert_eq!(good.requests(), 6);
}

/// `[retry] deadline` bounds the total wait: two slow backends, the
/// first-byte timeout retried on purpose; the second attempt gets only the
/// time left.
#[tokio::test]
async fn the_deadline_bounds_the_whole_wait() {
    let a = Origin::fixed(Reply::ok("a").delay(Duration::from_secs(3))).await;
    let b = Origin::fixed(Reply::ok("b").delay(Duration::from_secs(3))).await;
    let shellac = Shellac::start(&backends(
        &[a.addr, b.addr],
        "first_byte_timeout = \"700ms\"\nconsecutive_failures = 0\n",
        "[retry]\nretry_on = [\"connect\", \"first_byte_timeout\"]\ndeadline = \"1s\"\n",
    ))
    .await;
    let started = Instant::now();
    let got = get(shellac.addr, "/slow").await;
    let took = started.elapsed();
    eprintln!("MEASURED answer after {took:?}");
    assert_eq!(got.status, 503);
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(a.requests() + b.requests(), 2, "each backend once");
    assert_eq!(a.requests(), 1);
}
