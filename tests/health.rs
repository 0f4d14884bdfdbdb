//! Backend health that fails well (issue 15): client faults never count
//! against a backend. Real sockets, shipped defaults unless a test says
//! otherwise, bounded wait-until loops.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::{get, raw, Origin, Reply, Shellac};

// === helpers ===

/// `[[backend]]` tables `b0`, `b1`, … in one pool `default`; `pool_extra`
/// goes into the `[[pool]]` table, `extra` after `[server]`. With an admin
/// listener, so tests can read `/backends` and `/metrics`.
fn pool_config(addrs: &[SocketAddr], pool_extra: &str, extra: &str) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\"]\n"
    );
    for (i, addr) in addrs.iter().enumerate() {
        text.push_str(&format!(
            "[[backend]]\nname = \"b{i}\"\naddress = \"{addr}\"\n"
        ));
    }
    let names: Vec<String> = (0..addrs.len()).map(|i| format!("\"b{i}\"")).collect();
    text.push_str(&format!(
        "[[pool]]\nname = \"default\"\nbackends = [{}]\n{pool_extra}\n",
        names.join(", ")
    ));
    text
}

/// The admin's `/backends` list.
async fn backends_json(admin: SocketAddr) -> Vec<serde_json::Value> {
    let got = get(admin, "/backends").await;
    let json: serde_json::Value = serde_json::from_slice(&got.body).expect("backends json");
    json.as_array()
        .or_else(|| json["backends"].as_array())
        .cloned()
        .unwrap_or_else(|| panic!("no backend list in {json}"))
}

/// An origin answering `name` with `no-store` on every path.
async fn named(name: &'static str) -> Origin {
    Origin::fixed(Reply::ok(name).header("cache-control", "no-store")).await
}

// === 1. client faults never count against a backend ===

/// Five uploads with a malformed chunk size and five abandoned mid-body get
/// their 400 (or the closed connection), and nothing is held against the
/// backends: the next GET is a 200, and neither backend was ejected (with
/// two, the pool's share would allow one to be). Before: `503
/// no_healthy_backend` (the ten client faults ejected both).
#[tokio::test]
async fn client_body_faults_never_count_against_the_backend() {
    let (a, b) = (named("ok").await, named("ok").await);
    let shellac = Shellac::start(&pool_config(&[a.addr, b.addr], "", "debug_headers = true")).await;
    let admin = shellac.admin.expect("admin");
    for i in 0..5 {
        let request = format!(
            "POST /upload/{i} HTTP/1.1\r\nHost: test.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\nbad\r\n0\r\n\r\n"
        );
        let answer = raw(shellac.addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "malformed upload {i}: {answer}"
        );
    }
    for i in 0..5 {
        let mut stream = TcpStream::connect(shellac.addr).await.expect("connect");
        let head = format!(
            "POST /abandon/{i} HTTP/1.1\r\nHost: test.example\r\nContent-Length: 100000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(&[b'x'; 1000]).await.expect("some body");
        // Give the proxy time to start forwarding, then walk away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream);
    }
    // The abandoned uploads end as the proxy notices the closed connections.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = get(shellac.addr, "/ok").await;
    assert_eq!(
        got.status,
        200,
        "after ten client faults: {:?} {}",
        got.header("x-shellac-error"),
        got.text()
    );
    let backends = backends_json(admin).await;
    for backend in &backends {
        assert_eq!(backend["ejected"], false, "{backends:?}");
        assert_eq!(backend["healthy"], true, "{backends:?}");
    }
}
