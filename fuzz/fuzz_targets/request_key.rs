//! Request head → `limits::check` → cache key: a raw head is parsed with
//! httparse (as hyper does), turned into an `http::Request`, checked, and
//! keyed the way the pipeline keys it. Never panics; a request that passes
//! the checks always has a key that starts with its scheme and host.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shellac::cache::CacheKey;

fn config() -> &'static shellac::Config {
    static CONFIG: OnceLock<shellac::Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        shellac::Config::parse(
            std::path::Path::new("fuzz.toml"),
            "[server]\nmax_request_body = \"1KiB\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n",
        )
        .expect("fuzz config")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return;
    };
    let (Some(method), Some(path), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return;
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .version(if version == 0 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        });
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    if shellac::limits::check(&request, None, &config().server).is_err() {
        return;
    }
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let key = CacheKey::new("http", &host, target);
    assert!(key.as_str().starts_with("http://"));
    assert!(key.as_str()[7..].starts_with(&host));
});
