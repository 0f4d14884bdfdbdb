//! A fetch independent of its client (issue 15 items 8 and 9), through
//! real sockets: a miss whose client goes away is still stored; a client
//! that stops reading stalls no one else, because the fetch runs at the
//! backend's speed into a busy object that every waiter reads at its own
//! pace; the bytes of fetches in progress are bounded; and a fetch that
//! breaks mid-body ends every reader's body with an error, stores nothing.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use support::{config, get, try_send, Origin, Reply, Shellac, ShellacProcess};

const MIB: usize = 1024 * 1024;

// === helpers ===

/// What a scripted origin does with one request: given the request's
/// number (0 for the first), its head and the connection, answer, and hand
/// the connection back to keep it alive (or `None` to close it).
type Script = Arc<
    dyn Fn(
            usize,
            String,
            TcpStream,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<TcpStream>> + Send>>
        + Send
        + Sync,
>;

/// A raw-TCP origin that counts requests and plays `script` for each.
struct Scripted {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = script.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut stream = stream;
                    loop {
                        let Some(head) = read_head(&mut stream).await else {
                            return;
                        };
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        match script(n, head, stream).await {
                            Some(s) => stream = s,
                            None => return,
                        }
                    }
                });
            }
        });
        Scripted { addr, count }
    }

    fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Reads one head (up to the blank line); `None` when the peer closed.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => head.push(byte[0]),
        }
    }
    Some(String::from_utf8_lossy(&head).to_string())
}

/// Writes `total` bytes of `b'x'` in pieces of `piece`, pausing `pause`
/// between pieces; false when the peer went away.
async fn write_fill(stream: &mut TcpStream, total: usize, piece: usize, pause: Duration) -> bool {
    let block = vec![b'x'; piece];
    let mut left = total;
    while left > 0 {
        let n = left.min(piece);
        if stream.write_all(&block[..n]).await.is_err() {
            return false;
        }
        left -= n;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    true
}

fn head(len: usize) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\ncache-control: max-age=60\r\n\r\n")
        .into_bytes()
}

/// A raw client that sends `GET path` and reads up to the end of the
/// response head (and whatever body bytes came with it), then reads
/// nothing more: the socket stays open.
async fn stall_after_head(addr: SocketAddr, path: &str) -> (TcpStream, String, usize) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stall_on(stream, path).await
}

/// The same with a 4 MiB receive buffer, like a client on a fast link:
/// the kernel takes several MiB of the body before the client's stall
/// pushes back on Shellac.
async fn stall_with_big_window(addr: SocketAddr, path: &str) -> (TcpStream, String, usize) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4 * MIB as u32)
        .expect("receive buffer");
    let stream = socket.connect(addr).await.expect("connect");
    stall_on(stream, path).await
}

async fn stall_on(mut stream: TcpStream, path: &str) -> (TcpStream, String, usize) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test.example\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a response head within 5 s")
            .expect("read");
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    (stream, head, got.len() - end)
}

/// Closes `stream` with a TCP reset (zero linger: the close sends RST at
/// once, so nothing blocks on drop, which is what the deprecation is about).
#[allow(deprecated)]
fn close_with_reset(stream: TcpStream) {
    stream.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(stream);
}

/// The resident memory of a process in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A client on its own connection that has the response head and holds
/// the body unread.
async fn open(addr: SocketAddr, path: &str) -> http::Response<hyper::body::Incoming> {
    open_with(addr, path, &[]).await
}

async fn open_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "test.example");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("a head within 5 s")
        .expect("head")
}

// === item 9: a miss abandoned by its client is still stored ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_abandoned_by_its_client_is_still_stored() {
    let finished = Arc::new(Notify::new());
    let done = finished.clone();
    let origin = Scripted::start(Arc::new(move |_, _, mut stream| {
        let done = done.clone();
        Box::pin(async move {
            let _ = stream.write_all(&head(MIB)).await;
            // 1 MiB in 64 KiB pieces over ~100 ms, so that the client is
            // gone while the body is still arriving.
            let whole = write_fill(&mut stream, MIB, 64 * 1024, Duration::from_millis(6)).await;
            done.notify_one();
            whole.then_some(stream)
        })
    }))
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;

    // The client reads the head, then resets its connection.
    let (stream, head, _) = stall_after_head(shellac.addr, "/abandoned").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    close_with_reset(stream);

    tokio::time::timeout(Duration::from_secs(5), finished.notified())
        .await
        .expect("the origin finished within 5 s");
    // The fetch may still be reading what the origin sent: until it is
    // stored, a request streams from it (a collapsed MISS, no new fetch).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(shellac.addr, "/abandoned").await;
        assert_eq!(got.body.len(), MIB);
        assert_eq!(
            origin.requests(),
            1,
            "the origin was asked again (X-Cache: {:?}): the abandoned miss was not stored",
            got.header("x-cache")
        );
        if got.header("x-cache") == Some("HIT") {
            break;
        }
        assert!(Instant::now() < deadline, "no HIT within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === item 8: a slow reader does not stall the others ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stalls_no_one_else() {
    let body = Bytes::from(vec![b'y'; 16 * MIB]);
    let origin = Origin::fixed(Reply::ok(body).header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;

    // A reads the head of the 16 MiB miss, then nothing.
    let (mut slow, head, mut slow_got) = stall_after_head(shellac.addr, "/big").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // B asks for the same URL and gets all of it at once.
    let started = Instant::now();
    let b = tokio::time::timeout(Duration::from_secs(5), get(shellac.addr, "/big"))
        .await
        .unwrap_or_else(|_| {
            panic!("B did not receive the 16 MiB within 5 s: A's stall holds it up")
        });
    let took = started.elapsed();
    assert_eq!(b.body.len(), 16 * MIB);
    assert!(b.body.iter().all(|&c| c == b'y'));
    eprintln!(
        "B received 16 MiB in {took:?}, X-Cache {:?}",
        b.header("x-cache")
    );
    assert_eq!(origin.requests(), 1, "one fetch for both clients");

    // A, the slow one, still gets its whole body when it reads again.
    let mut chunk = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow_got < 16 * MIB {
        let n = tokio::time::timeout_at(deadline.into(), slow.read(&mut chunk))
            .await
            .expect("A's body within 5 s")
            .expect("read");
        assert!(n > 0, "A's body ended after {slow_got} bytes");
        slow_got += n;
    }
    assert_eq!(slow_got, 16 * MIB);
}

// === item 8: fetches in progress are bounded ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_on_big_misses_do_not_buffer_them() {
    let body = Bytes::from(vec![b'z'; 16 * MIB]);
    let origin = Origin::fixed(Reply::ok(body).header("cache-control", "max-age=60")).await;
    let shellac = ShellacProcess::spawn(&config(origin.addr, "[cache]\ncapacity = \"16MiB\"\n"));
    // Warm up (threads, pools), then take the baseline.
    let warm = get(shellac.addr, "/warm").await;
    assert_eq!(warm.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(shellac.pid());

    let mut stalled = Vec::new();
    for i in 0..12 {
        let (stream, head, _) = stall_with_big_window(shellac.addr, &format!("/big/{i}")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        stalled.push(stream);
    }
    // Each fetch runs (or is held back) now; watch the memory for 2 s.
    let mut peak = before;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        peak = peak.max(rss_kib(shellac.pid()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("RSS {before} KiB before, peak {peak} KiB: +{growth_mib:.1} MiB with 12 stalled 16 MiB misses");
    assert!(
        growth_mib < 64.0,
        "12 stalled clients on 16 MiB misses grew RSS by {growth_mib:.1} MiB"
    );
    drop(stalled);
}

// === a fetch that breaks mid-body ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reset_mid_body_fails_every_reader_and_stores_nothing() {
    let reset = Arc::new(Notify::new());
    let was_reset = Arc::new(AtomicBool::new(false));
    let (trigger, flag) = (reset.clone(), was_reset.clone());
    let origin = Scripted::start(Arc::new(move |n, _, mut stream| {
        let (trigger, flag) = (trigger.clone(), flag.clone());
        Box::pin(async move {
            let _ = stream.write_all(&head(MIB)).await;
            if n > 0 {
                // Later requests get the whole body.
                return write_fill(&mut stream, MIB, 64 * 1024, Duration::ZERO)
                    .await
                    .then_some(stream);
            }
            // The first: a quarter, then a reset when the test says so.
            write_fill(&mut stream, MIB / 4, 64 * 1024, Duration::ZERO).await;
            trigger.notified().await;
            flag.store(true, Ordering::SeqCst);
            close_with_reset(stream);
            None
        })
    }))
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;

    // The writer's client, then two more readers of the same busy fetch.
    let writer = open(shellac.addr, "/broken").await;
    let mut readers = vec![tokio::spawn(writer.into_body().collect())];
    let mut heads_before_reset = 0;
    for _ in 0..2 {
        let addr = shellac.addr;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let flag = was_reset.clone();
        readers.push(tokio::spawn(async move {
            let response = open(addr, "/broken").await;
            let _ = tx.send(!flag.load(Ordering::SeqCst));
            response.into_body().collect().await
        }));
        // Up to 2 s for the head to come while the fetch is still busy.
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), rx).await {
            heads_before_reset += 1;
        }
    }
    reset.notify_one();
    let mut failed = 0;
    for reader in readers {
        let body = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("every body ends within 5 s")
            .expect("reader task");
        match body {
            Err(_) => failed += 1,
            Ok(collected) => {
                let len = collected.to_bytes().len();
                assert_eq!(
                    len, MIB,
                    "a truncated body ({len} bytes) was presented as complete"
                );
            }
        }
    }
    assert_eq!(
        (heads_before_reset, failed),
        (2, 3),
        "both later readers stream the busy fetch, and all three see its failure"
    );
    assert_eq!(
        origin.requests(),
        1,
        "no second fetch while the first was busy"
    );

    // Nothing was stored: the next request is a miss and fetches again.
    let next = try_send(shellac.addr, "GET", "/broken", &[])
        .await
        .expect("the next request is answered");
    assert_eq!(next.header("x-cache"), Some("MISS"));
    assert_eq!(next.body.len(), MIB);
    assert_eq!(origin.requests(), 2);
}

// === waiters read the busy object ===

/// Waiters that arrive while a fetch is busy are answered at once from it
/// (the writer's own client reading nothing meanwhile), each as the stored
/// object would answer it: another `Vary` variant gets its own fetch, and a
/// `Range` is answered from the object once stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_stream_the_busy_object_as_it_arrives() {
    const LEN: usize = 512 * 1024;
    let finished = Arc::new(AtomicUsize::new(0));
    let done = finished.clone();
    let origin = Scripted::start(Arc::new(move |_, head, mut stream| {
        let done = done.clone();
        Box::pin(async move {
            let letter = if head.to_ascii_lowercase().contains("accept-encoding: br") {
                b'b'
            } else {
                b'g'
            };
            let start = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {LEN}\r\ncache-control: max-age=60\r\nvary: accept-encoding\r\n\r\n"
            );
            let _ = stream.write_all(start.as_bytes()).await;
            // Four pieces, 200 ms apart.
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if stream.write_all(&vec![letter; LEN / 4]).await.is_err() {
                    return None;
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
            Some(stream)
        })
    }))
    .await;
    // Variants by `Accept-Encoding` need `[compression] gzip_support` off
    // (on, every encoding is served from one object: tests/compression.rs).
    let toml = config(origin.addr, "[compression]\ngzip_support = false\n");
    let shellac = Shellac::start(&toml).await;
    let gzip = [("accept-encoding", "gzip")];

    let writer = open_with(shellac.addr, "/busy", &gzip).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiter = open_with(shellac.addr, "/busy", &gzip).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the waiter's head waited for the end of the fetch"
    );
    assert_eq!(waiter.headers()["x-cache"], "MISS");
    assert!(waiter.headers()["cache-status"]
        .to_str()
        .is_ok_and(|s| s.contains("collapsed")));
    let range = tokio::spawn({
        let addr = shellac.addr;
        async move {
            let headers = [("accept-encoding", "gzip"), ("range", "bytes=0-9")];
            let response = open_with(addr, "/busy", &headers).await;
            let status = response.status();
            let body = response.into_body().collect().await.expect("range body");
            (status, body.to_bytes())
        }
    });
    let other = tokio::spawn(try_send(
        shellac.addr,
        "GET",
        "/busy",
        &[("accept-encoding", "br")],
    ));

    let body = tokio::time::timeout(Duration::from_secs(5), waiter.into_body().collect())
        .await
        .expect("the waiter's body within 5 s")
        .expect("the waiter's body")
        .to_bytes();
    assert_eq!(body.len(), LEN);
    assert!(body.iter().all(|&c| c == b'g'));
    let (status, part) = range.await.expect("range task");
    assert_eq!((status.as_u16(), &part[..]), (206, &b"gggggggggg"[..]));
    let other = other.await.expect("task").expect("the other variant");
    assert_eq!(other.body.len(), LEN);
    assert!(
        other.body.iter().all(|&c| c == b'b'),
        "another variant's body"
    );
    // The writer's client, which read nothing so far, gets all of it.
    let body = writer
        .into_body()
        .collect()
        .await
        .expect("writer body")
        .to_bytes();
    assert_eq!(body.len(), LEN);
    assert_eq!(origin.requests(), 2, "one fetch per variant");
}

// === a body of unknown length that outgrows the limit ===

/// A chunked cacheable body that grows past `max_object_size` stops being
/// buffered: its client gets the rest straight from the backend (a pass),
/// every byte in order, and nothing is stored (the key is hit-for-miss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_max_object_size_goes_on_as_a_pass() {
    const PIECES: usize = 128;
    const PIECE: usize = 64 * 1024;
    let origin = Scripted::start(Arc::new(move |_, _, mut stream| {
        Box::pin(async move {
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncache-control: max-age=60\r\n\r\n";
            stream.write_all(head.as_bytes()).await.ok()?;
            for i in 0..PIECES {
                let mut chunk = format!("{PIECE:x}\r\n").into_bytes();
                chunk.extend(std::iter::repeat_n((i % 251) as u8, PIECE));
                chunk.extend_from_slice(b"\r\n");
                stream.write_all(&chunk).await.ok()?;
            }
            stream.write_all(b"0\r\n\r\n").await.ok()?;
            Some(stream)
        })
    }))
    .await;
    let shellac = Shellac::start(&config(
        origin.addr,
        "[cache]\nmax_object_size = \"1MiB\"\n",
    ))
    .await;
    for round in 0..2 {
        let got = try_send(shellac.addr, "GET", "/chunked", &[])
            .await
            .expect("the whole body");
        assert_eq!(got.body.len(), PIECES * PIECE, "round {round}");
        for (i, piece) in got.body.chunks(PIECE).enumerate() {
            assert!(
                piece.iter().all(|&b| b == (i % 251) as u8),
                "piece {i} out of order"
            );
        }
        assert_eq!(got.header("x-cache"), Some("MISS"));
    }
    assert_eq!(origin.requests(), 2, "not stored");
}
