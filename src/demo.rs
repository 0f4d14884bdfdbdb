//! The `--demo` origin: a small app on a free loopback port that shows what
//! Shellac does, so a newcomer sees a MISS, then a HIT, with no setup.
//!
//! | path | behaviour |
//! |---|---|
//! | `/` | cacheable for 60 s; the body says when it was made |
//! | `/slow` | answers after 2 s; cacheable, so only the first request waits |
//! | `/uncacheable` | `Cache-Control: no-store`: every request reaches the origin |
//! | `/fail` | closes the connection without answering: Shellac's 503 page |
//! | `/health` | 200 |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Starts the demo origin on `127.0.0.1:0` and returns its address.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, served.clone()));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(
    req: Request<Incoming>,
    served: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let n = served.fetch_add(1, Ordering::Relaxed) + 1;
    let made = httpdate::fmt_http_date(std::time::SystemTime::now());
    let (status, cache_control, body) = match req.uri().path() {
        "/" => (
            StatusCode::OK,
            "public, max-age=60",
            format!("Hello from the Shellac demo origin.\nThis page was made at {made} (origin request #{n}).\nAsk again: X-Cache says HIT and the time above stays the same for 60 s.\n"),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (
                StatusCode::OK,
                "public, max-age=60",
                format!("This answer took the origin 2 s to make, at {made}. The next one comes from the cache at once.\n"),
            )
        }
        "/uncacheable" => (
            StatusCode::OK,
            "no-store",
            format!("Uncacheable: every request reaches the origin (this was request #{n}).\n"),
        ),
        "/fail" => {
            // Dropping the connection without a response is what a crashing
            // app looks like from the proxy.
            return Err(std::io::Error::other("the demo origin fails on purpose"));
        }
        "/health" => (StatusCode::OK, "no-store", String::from("ok\n")),
        _ => (StatusCode::NOT_FOUND, "public, max-age=10", String::from("Not found on the demo origin.\n")),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok::<_, std::io::Error>(response)
}

/// What to try once the demo is up, printed by `shellac --demo`.
pub fn instructions(proxy: SocketAddr) -> String {
    format!(
        "Shellac demo: proxy on http://{proxy}/ in front of a built-in demo origin.\n\
         Try:\n  curl -si http://{proxy}/ | grep -i -e x-cache -e age   # MISS, then HIT on the second run\n  \
         curl -si http://{proxy}/slow             # 2 s the first time, then instant\n  \
         curl -si http://{proxy}/uncacheable      # always a MISS\n  \
         curl -si http://{proxy}/fail             # the synthetic \"503 Backend fetch failed\" page\n"
    )
}
