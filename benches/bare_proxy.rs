//! A bare hyper reverse proxy: the floor under Shellac's pass path.
//!
//! **What:** the smallest proxy one can build from the same crates Shellac
//! uses (tokio's multi-thread runtime, hyper's HTTP/1 server, hyper-util's
//! pooled keep-alive client): every request is forwarded as it came, the
//! response streamed back as it came. No cache, no header rewriting, no
//! timeouts, no limits, no metrics.
//!
//! **Why:** the load harness's `pass` scenario (every request fetched from
//! the origin) compares Shellac with nginx. Run next to them, this tells
//! how much of Shellac's cost per proxied request is Shellac's own and how
//! much is the floor of a tokio + hyper proxy on this machine; see
//! `docs/performance.md`, "Pass-path floor".
//!
//! **Run:** it is a server, not a measurement, so `cargo bench` only starts
//! and ends it. `benches/load/load.sh` builds it and runs it as
//! `bare_proxy --listen 127.0.0.1:7281 --backend 127.0.0.1:8080`.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut backend: Option<SocketAddr> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()),
            "--backend" => backend = args.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    let (Some(listen), Some(backend)) = (listen, backend) else {
        // `cargo bench` runs every bench target with `--bench`: nothing to do.
        println!("bare_proxy: a reference server for benches/load; run it with --listen ADDR --backend ADDR");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(error) = runtime.block_on(serve(listen, backend)) {
        eprintln!("bare_proxy: {error}");
        std::process::exit(1);
    }
}

async fn serve(listen: SocketAddr, backend: SocketAddr) -> std::io::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    let uri: Uri = format!("http://{backend}{target}")
                        .parse()
                        .unwrap_or_else(|_| Uri::from_static("/"));
                    *req.uri_mut() = uri;
                    client.request(req).await
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
