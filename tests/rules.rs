//! `[[rule]]` through real sockets: every action and match key as a client
//! and the origin see it — cookies, query parameters, key extras, header
//! edits, redirects, fixed answers, lifetimes and pass, the order rules
//! apply in, reload — and the configuration errors `--check` gives.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::{config, get, send, send_body, Origin, Reply, Shellac};

/// An origin answering every request with `body`, fresh for a minute.
async fn cacheable(body: &'static str) -> Origin {
    Origin::fixed(Reply::ok(body).header("cache-control", "max-age=60")).await
}

/// The `Cookie` the origin saw on its `n`th request (none: `None`).
fn cookie_seen(origin: &Origin, n: usize) -> Option<String> {
    origin.seen()[n]
        .headers
        .get("cookie")
        .map(|v| v.to_str().expect("ascii").to_string())
}

#[tokio::test]
async fn cookies_strip_makes_a_static_file_cacheable() {
    let origin = Origin::fixed(
        Reply::ok("body{}")
            .header("cache-control", "max-age=60")
            .header("set-cookie", "tracking=1"),
    )
    .await;
    let rules = r#"
[[rule]]
path_regex = '\.(css|js|png)$'
cookies = "strip"
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    let cookie = [("cookie", "_ga=GA1.2.3; _gid=x")];
    let first = send(shellac.addr, "GET", "/site.css?v=3", &cookie).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("set-cookie"), None, "Set-Cookie is removed");
    let second = send(shellac.addr, "GET", "/site.css?v=3", &cookie).await;
    assert_eq!(
        second.header("x-cache"),
        Some("HIT"),
        "stored despite the cookies"
    );
    assert_eq!(second.header("set-cookie"), None);
    assert_eq!(second.text(), "body{}");
    assert_eq!(origin.requests(), 1);
    assert_eq!(cookie_seen(&origin, 0), None, "the origin saw no Cookie");

    // A page the rule does not match keeps its cookies and passes.
    let page = send(shellac.addr, "GET", "/page", &cookie).await;
    assert_eq!(page.header("x-cache"), Some("PASS"));
    assert_eq!(page.header("set-cookie"), Some("tracking=1"));
    assert_eq!(
        cookie_seen(&origin, 1).as_deref(),
        Some("_ga=GA1.2.3; _gid=x")
    );
}

#[tokio::test]
async fn cookies_keep_leaves_exactly_the_named_cookies() {
    let origin = cacheable("page").await;
    let rules = r#"
[[rule]]
cookies_keep = ["sessionid", "wp-*"]
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;

    // A session cookie remains: the request passes, with only that cookie.
    for _ in 0..2 {
        let got = send(
            shellac.addr,
            "GET",
            "/a",
            &[("cookie", "sessionid=1; _ga=x")],
        )
        .await;
        assert_eq!(got.header("x-cache"), Some("PASS"));
    }
    assert_eq!(origin.requests(), 2);
    assert_eq!(cookie_seen(&origin, 0).as_deref(), Some("sessionid=1"));

    // Only analytics cookies: none left, cacheable like a cookieless request.
    let first = send(shellac.addr, "GET", "/b", &[("cookie", "_ga=x; _gid=y")]).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(cookie_seen(&origin, 2), None, "no Cookie header at all");
    let second = send(shellac.addr, "GET", "/b", &[("cookie", "_fbp=z")]).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 3);

    // Glob edges: `wp-*` keeps `wp-settings-1`, not `xwp-settings`.
    send(
        shellac.addr,
        "GET",
        "/c",
        &[("cookie", "xwp-settings=1; wp-settings-1=a")],
    )
    .await;
    assert_eq!(cookie_seen(&origin, 3).as_deref(), Some("wp-settings-1=a"));
}

#[tokio::test]
async fn a_kept_cookie_in_the_key_is_cacheable_per_value() {
    let origin = cacheable("session page").await;
    let rules = r#"
[[rule]]
cookies_keep = ["sessionid"]
key_cookies = ["sessionid"]
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    let one = [("cookie", "sessionid=1; _ga=x")];
    assert_eq!(
        send(shellac.addr, "GET", "/", &one).await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        send(shellac.addr, "GET", "/", &one).await.header("x-cache"),
        Some("HIT")
    );
    let two = [("cookie", "_gid=y; sessionid=2")];
    assert_eq!(
        send(shellac.addr, "GET", "/", &two).await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(origin.requests(), 2);
    assert_eq!(cookie_seen(&origin, 0).as_deref(), Some("sessionid=1"));
    assert_eq!(cookie_seen(&origin, 1).as_deref(), Some("sessionid=2"));
    // No session cookie at all is a third object, cacheable too.
    assert_eq!(get(shellac.addr, "/").await.header("x-cache"), Some("MISS"));
    assert_eq!(get(shellac.addr, "/").await.header("x-cache"), Some("HIT"));
}

#[tokio::test]
async fn marketing_parameters_and_their_order_make_one_object() {
    let origin = cacheable("product").await;
    let rules = r#"
[[rule]]
query_drop = ["utm_*", "gclid", "fbclid"]
query_sort = true
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    for target in [
        "/p?id=1",
        "/p?id=1&utm_source=x",
        "/p?utm_campaign=y&id=1&gclid=z",
    ] {
        assert_eq!(get(shellac.addr, target).await.text(), "product");
    }
    assert_eq!(origin.requests(), 1, "one origin fetch for the three URLs");
    assert_eq!(origin.seen()[0].target, "/p?id=1");

    assert_eq!(
        get(shellac.addr, "/q?b=2&a=1").await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        get(shellac.addr, "/q?a=1&b=2").await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(origin.seen()[1].target, "/q?a=1&b=2");

    // Only marketing parameters: no query left, not even the `?`.
    get(shellac.addr, "/r?utm_medium=mail").await;
    assert_eq!(origin.seen()[2].target, "/r");
}

#[tokio::test]
async fn a_lone_star_drops_every_parameter() {
    let origin = cacheable("x").await;
    let rules = "[[rule]]\npath_prefix = \"/static/\"\nquery_drop = [\"*\"]\n";
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    get(shellac.addr, "/static/a.js?v=1&x").await;
    get(shellac.addr, "/static/a.js?v=2").await;
    assert_eq!(origin.requests(), 1);
    assert_eq!(origin.seen()[0].target, "/static/a.js");
    get(shellac.addr, "/other?v=2").await;
    assert_eq!(
        origin.seen()[1].target,
        "/other?v=2",
        "only under the prefix"
    );
}

#[tokio::test]
async fn key_headers_make_one_object_per_value() {
    let origin = Origin::start(|seen| async move {
        let device = seen
            .headers
            .get("x-device")
            .map_or("none".to_string(), |v| {
                v.to_str().expect("ascii").to_string()
            });
        Reply::ok(device).header("cache-control", "max-age=60")
    })
    .await;
    let rules = "[[rule]]\nkey_headers = [\"X-Device\"]\n";
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    let mobile = [("x-device", "mobile")];
    let desktop = [("x-device", "desktop")];
    assert_eq!(
        send(shellac.addr, "GET", "/", &mobile).await.text(),
        "mobile"
    );
    assert_eq!(
        send(shellac.addr, "GET", "/", &desktop).await.text(),
        "desktop"
    );
    let again = send(shellac.addr, "GET", "/", &mobile).await;
    assert_eq!(
        (again.header("x-cache"), again.text().as_str()),
        (Some("HIT"), "mobile")
    );
    let again = send(shellac.addr, "GET", "/", &desktop).await;
    assert_eq!(
        (again.header("x-cache"), again.text().as_str()),
        (Some("HIT"), "desktop")
    );
    assert_eq!(get(shellac.addr, "/").await.text(), "none");
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn key_cookies_make_one_object_per_value_and_still_reach_the_origin() {
    let origin = Origin::start(|seen| async move {
        let cookie = seen
            .headers
            .get("cookie")
            .map_or(String::new(), |v| v.to_str().expect("ascii").to_string());
        Reply::ok(cookie).header("cache-control", "max-age=60")
    })
    .await;
    let rules = "[[rule]]\nkey_cookies = [\"currency\"]\n";
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    let eur = [("cookie", "currency=EUR")];
    let usd = [("cookie", "currency=USD")];
    assert_eq!(
        send(shellac.addr, "GET", "/price", &eur).await.text(),
        "currency=EUR"
    );
    assert_eq!(
        send(shellac.addr, "GET", "/price", &usd).await.text(),
        "currency=USD"
    );
    let hit = send(shellac.addr, "GET", "/price", &eur).await;
    assert_eq!(
        (hit.header("x-cache"), hit.text().as_str()),
        (Some("HIT"), "currency=EUR")
    );
    assert_eq!(origin.requests(), 2);
    // Another cookie besides it: not all cookies are keyed, so it passes.
    let other = send(
        shellac.addr,
        "GET",
        "/price",
        &[("cookie", "currency=EUR; sid=1")],
    )
    .await;
    assert_eq!(other.header("x-cache"), Some("PASS"));
}

#[tokio::test]
async fn request_headers_are_set_and_removed_for_the_origin() {
    let origin = cacheable("ok").await;
    let rules = r#"
[[rule]]
request_headers = { set = { "X-Forwarded-Port" = "443" }, remove = ["X-Debug"] }
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    send(
        shellac.addr,
        "GET",
        "/",
        &[("x-debug", "1"), ("x-forwarded-port", "80")],
    )
    .await;
    let seen = &origin.seen()[0].headers;
    assert_eq!(seen.get_all("x-forwarded-port").iter().count(), 1);
    assert_eq!(seen["x-forwarded-port"], "443");
    assert!(!seen.contains_key("x-debug"));
}

/// Shellac running from a file, with an admin listener, so that a test can
/// rewrite the file and reload.
struct FromFile {
    addr: SocketAddr,
    admin: SocketAddr,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FromFile {
    fn text(backend: SocketAddr, rules: &str) -> String {
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"admin.test\"]\n{rules}\n[[backend]]\nname = \"app\"\naddress = \"{backend}\"\n")
    }

    async fn start(backend: SocketAddr, rules: &str) -> FromFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("shellac.toml");
        std::fs::write(&file, FromFile::text(backend, rules)).expect("write config");
        let config = shellac::Config::load(&file).expect("valid");
        let listeners = shellac::bind(&config).await.expect("bind");
        let addr = shellac::local_addrs(&listeners)[0];
        let admin_listener = shellac::bind_admin(&config).await.expect("bind admin");
        let admin = admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .expect("admin");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let launch = shellac::Launch {
            admin: admin_listener,
            demo_origin: None,
            ..shellac::Launch::default()
        };
        let task = tokio::spawn(shellac::run_with(config, listeners, launch, async move {
            let _ = stopped.await;
        }));
        FromFile {
            addr,
            admin,
            file,
            _dir: dir,
            stop: Some(stop),
            task,
        }
    }

    async fn reload(&self, backend: SocketAddr, rules: &str) {
        std::fs::write(&self.file, FromFile::text(backend, rules)).expect("write config");
        let reloaded = send_body(self.admin, "POST", "/reload", &[], "").await;
        assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn response_headers_edit_what_the_client_gets_not_what_is_stored() {
    let origin = Origin::fixed(
        Reply::ok("page")
            .header("cache-control", "max-age=60")
            .header("server", "BaseHTTP/0.6 Python/3.11.7")
            .header("x-powered-by", "PHP/8"),
    )
    .await;
    let rules = r#"
[[rule]]
response_headers = { set = { "X-Frame-Options" = "SAMEORIGIN", "Strict-Transport-Security" = "max-age=31536000" }, remove = ["Server", "X-Powered-By"] }
"#;
    let shellac = FromFile::start(origin.addr, rules).await;
    for expected in ["MISS", "HIT"] {
        let got = get(shellac.addr, "/").await;
        assert_eq!(got.header("x-cache"), Some(expected));
        assert_eq!(got.header("server"), None, "{expected}");
        assert_eq!(got.header("x-powered-by"), None, "{expected}");
        assert_eq!(
            got.header("x-frame-options"),
            Some("SAMEORIGIN"),
            "{expected}"
        );
        assert_eq!(
            got.header("strict-transport-security"),
            Some("max-age=31536000")
        );
    }
    // Rules survive into the next generation; without the rule, the same
    // stored object shows the backend's headers again.
    shellac.reload(origin.addr, "").await;
    let hit = get(shellac.addr, "/").await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("server"), Some("BaseHTTP/0.6 Python/3.11.7"));
    assert_eq!(hit.header("x-frame-options"), None);
    assert_eq!(origin.requests(), 1);
    shellac.stop().await;
}

#[tokio::test]
async fn a_reload_brings_new_rules() {
    let origin = cacheable("from origin").await;
    let shellac = FromFile::start(origin.addr, "").await;
    assert_eq!(get(shellac.addr, "/robots.txt").await.text(), "from origin");
    let rules = r#"
[[rule]]
path_prefix = "/robots.txt"
respond = { status = 200, content_type = "text/plain", body = "User-agent: *\nDisallow:\n" }
"#;
    shellac.reload(origin.addr, rules).await;
    let got = get(shellac.addr, "/robots.txt").await;
    assert_eq!(got.text(), "User-agent: *\nDisallow:\n");
    assert_eq!(origin.requests(), 1);

    // A broken rule is refused and the running rules stay.
    std::fs::write(
        &shellac.file,
        FromFile::text(origin.addr, "[[rule]]\npath_regex = \"(\"\n"),
    )
    .expect("write");
    let refused = send_body(shellac.admin, "POST", "/reload", &[], "").await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.text().contains("rule[0].path_regex"),
        "{}",
        refused.text()
    );
    assert_eq!(
        get(shellac.addr, "/robots.txt").await.text(),
        "User-agent: *\nDisallow:\n"
    );
    shellac.stop().await;
}

#[tokio::test]
async fn redirect_fills_its_placeholders_without_the_origin() {
    let origin = cacheable("apex").await;
    let rules = r#"
[[rule]]
host = "www.example.com"
redirect = { status = 301, location = "https://example.com{path}{query}" }

[[rule]]
host = "old.example.com"
redirect = { location = "https://{host}/moved{path}" }
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    let www = [("host", "WWW.example.com:8080")];
    let got = send(shellac.addr, "GET", "/a/b?x=1&y=2", &www).await;
    assert_eq!(got.status, 301);
    assert_eq!(
        got.header("location"),
        Some("https://example.com/a/b?x=1&y=2")
    );
    let got = send(shellac.addr, "GET", "/a/b", &www).await;
    assert_eq!(
        got.header("location"),
        Some("https://example.com/a/b"),
        "no `?`"
    );
    let got = send(shellac.addr, "GET", "/c?q", &[("host", "old.example.com")]).await;
    assert_eq!(got.status, 302, "the default status");
    assert_eq!(
        got.header("location"),
        Some("https://old.example.com/moved/c")
    );
    assert_eq!(origin.requests(), 0);
    let apex = send(shellac.addr, "GET", "/", &[("host", "example.com")]).await;
    assert_eq!(apex.text(), "apex");
}

#[tokio::test]
async fn respond_answers_without_the_origin_or_the_cache() {
    let origin = cacheable("origin").await;
    let rules = r#"
[[rule]]
path_prefix = "/robots.txt"
respond = { status = 200, content_type = "text/plain", body = "User-agent: *\nDisallow:\n" }
response_headers = { set = { "X-Not" = "applied" } }

[[rule]]
path_prefix = "/gone"
respond = { status = 410, body = "gone" }

[[rule]]
path_prefix = "/gone"
respond = { status = 404, body = "never: the first answer wins" }
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    let got = get(shellac.addr, "/robots.txt").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.text(), "User-agent: *\nDisallow:\n");
    assert_eq!(got.header("x-cache"), Some("SYNTH"));
    assert_eq!(
        got.header("x-not"),
        None,
        "Shellac's own answers keep their headers"
    );
    let gone = get(shellac.addr, "/gone/x").await;
    assert_eq!((gone.status.as_u16(), gone.text().as_str()), (410, "gone"));
    assert_eq!(
        gone.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let head = send(shellac.addr, "HEAD", "/robots.txt", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(origin.requests(), 0);
}

#[tokio::test]
async fn later_rules_override_pass_and_lifetimes() {
    // The origin says five seconds; the rules say one second, or an hour.
    // (As `[[route]] ttl`, a rule's ttl does not make a response storable
    // that is not: `no-store`, `private`, never fresh without a validator.)
    let origin = Origin::fixed(Reply::ok("page").header("cache-control", "max-age=5")).await;
    let rules = r#"
[[rule]]
path_prefix = "/"
pass = true
ttl = "1s"
grace = "0s"

[[rule]]
path_prefix = "/cached/"
pass = false

[[rule]]
path_prefix = "/cached/long/"
ttl = "1h"
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    assert_eq!(
        get(shellac.addr, "/x").await.header("x-cache"),
        Some("PASS")
    );
    assert_eq!(
        get(shellac.addr, "/x").await.header("x-cache"),
        Some("PASS")
    );
    assert_eq!(origin.requests(), 2);

    assert_eq!(
        get(shellac.addr, "/cached/a").await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        get(shellac.addr, "/cached/a").await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(
        get(shellac.addr, "/cached/long/a").await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(origin.requests(), 4);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // One second of freshness, no grace: fetched again; an hour: a hit.
    assert_eq!(
        get(shellac.addr, "/cached/a").await.header("x-cache"),
        Some("MISS")
    );
    let long = get(shellac.addr, "/cached/long/a").await;
    assert_eq!(long.header("x-cache"), Some("HIT"));
    assert!(
        long.header("cache-status")
            .is_some_and(|s| s.contains("ttl=359")),
        "{:?}",
        long.header("cache-status")
    );
    assert_eq!(origin.requests(), 5);
}

#[tokio::test]
async fn keep_holds_a_stale_object_for_revalidation() {
    let origin = Origin::start(|seen| async move {
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Reply::ok("").status(304).header("etag", "\"v1\"");
        }
        Reply::ok("versioned")
            .header("cache-control", "max-age=1")
            .header("etag", "\"v1\"")
    })
    .await;
    let rules = r#"
[cache]
default_grace = "0s"

[[rule]]
path_prefix = "/kept/"
keep = "1h"
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    get(shellac.addr, "/kept/a").await;
    get(shellac.addr, "/gone/a").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let kept = get(shellac.addr, "/kept/a").await;
    assert_eq!(kept.text(), "versioned");
    assert!(
        kept.header("cache-status")
            .is_some_and(|s| s.contains("fwd=stale")),
        "revalidated: {:?}",
        kept.header("cache-status")
    );
    get(shellac.addr, "/gone/a").await;
    let seen = origin.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2].target, "/kept/a");
    assert!(seen[2].headers.contains_key("if-none-match"), "conditional");
    assert!(
        !seen[3].headers.contains_key("if-none-match"),
        "nothing kept"
    );
}

#[tokio::test]
async fn host_patterns_match_exactly_or_below_a_domain() {
    let origin = cacheable("origin").await;
    let rules = r#"
[[rule]]
host = "*.example.com"
respond = { body = "below" }

[[rule]]
host = "Exact.test"
respond = { body = "exact" }
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    let body = |host: &'static str| async move {
        send(shellac.addr, "GET", "/", &[("host", host)])
            .await
            .text()
    };
    assert_eq!(body("a.example.com").await, "below");
    assert_eq!(body("a.b.EXAMPLE.com:8080").await, "below");
    assert_eq!(body("example.com").await, "origin", "not the domain itself");
    assert_eq!(body("badexample.com").await, "origin");
    assert_eq!(body("EXACT.test:8080").await, "exact");
    assert_eq!(body("www.exact.test").await, "origin");
}

#[tokio::test]
async fn path_regex_sees_the_path_without_the_query_and_methods_restrict() {
    let origin = cacheable("origin").await;
    let rules = r#"
[[rule]]
path_regex = '\.css$'
respond = { body = "css" }

[[rule]]
methods = ["POST", "PUT"]
respond = { status = 405, body = "read-only" }
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    assert_eq!(get(shellac.addr, "/a.css?v=1").await.text(), "css");
    assert_eq!(get(shellac.addr, "/a.cssx").await.text(), "origin");
    assert_eq!(get(shellac.addr, "/page?file=a.css").await.text(), "origin");
    let post = send_body(shellac.addr, "POST", "/form", &[], "x=1").await;
    assert_eq!(
        (post.status.as_u16(), post.text().as_str()),
        (405, "read-only")
    );
    assert_eq!(get(shellac.addr, "/form").await.text(), "origin");
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn every_matching_rule_applies_in_file_order() {
    let origin = cacheable("ok").await;
    let rules = r#"
[[rule]]
path_prefix = "/"
request_headers = { set = { "X-Site" = "all", "X-Section" = "none" } }
response_headers = { set = { "X-Order" = "first", "X-First" = "1" } }

[[rule]]
path_prefix = "/shop/"
request_headers = { set = { "X-Section" = "shop" } }
response_headers = { set = { "X-Order" = "second" }, remove = ["X-First"] }

[[rule]]
host = "nomatch.example"
response_headers = { set = { "X-Order" = "never" } }
"#;
    let shellac = Shellac::start(&config(origin.addr, rules)).await;
    let shop = get(shellac.addr, "/shop/cart").await;
    assert_eq!(shop.header("x-order"), Some("second"));
    assert_eq!(
        shop.header("x-first"),
        None,
        "a later rule removes an earlier one's header"
    );
    let home = get(shellac.addr, "/").await;
    assert_eq!(home.header("x-order"), Some("first"));
    assert_eq!(home.header("x-first"), Some("1"));
    let seen = origin.seen();
    assert_eq!(seen[0].headers["x-site"], "all");
    assert_eq!(seen[0].headers["x-section"], "shop");
    assert_eq!(seen[1].headers["x-section"], "none");
}

/// The error `text` gets at load, as `--check` prints it.
fn refused(text: &str) -> String {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\naddress = \"127.0.0.1:9\"\n{text}"
    );
    match shellac::Config::parse(Path::new("rules.toml"), &text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_rules_are_refused_with_file_line_and_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "[[rule]]\npath_regex = '(unclosed'\n",
            "rules.toml:6: key `rule[0].path_regex`",
            &["regular expression"],
        ),
        (
            "[[rule]]\npath_prefix = \"/\"\n[[rule]]\ncookies_keep = [\"ok\", \"\"]\n",
            "rules.toml:8: key `rule[1].cookies_keep`",
            &["empty"],
        ),
        (
            "[[rule]]\nquery_drop = [\"utm_?\"]\n",
            "rules.toml:6: key `rule[0].query_drop`",
            &["only \"*\" is a wildcard"],
        ),
        (
            "[[rule]]\nredirect = { status = 200, location = \"/\" }\n",
            "rules.toml:6: key `rule[0].redirect`",
            &["301, 302, 303, 307 or 308", "200"],
        ),
        (
            "[[rule]]\nrespond = { status = 700 }\n",
            "rules.toml:6: key `rule[0].respond`",
            &["200 to 599", "700"],
        ),
        (
            "[[rule]]\nresponse_headers = { set = { \"Content-Length\" = \"5\" } }\n",
            "rules.toml:6: key `rule[0].response_headers`",
            &["content-length may not be set"],
        ),
        (
            "[[rule]]\nrequest_headers = { remove = [\"Transfer-Encoding\"] }\n",
            "rules.toml:6: key `rule[0].request_headers`",
            &["transfer-encoding may not be removed"],
        ),
        (
            "[[rule]]\nresponse_headers = { remove = [\"Host\"] }\n",
            "rules.toml:6: key `rule[0].response_headers`",
            &["host may not be removed"],
        ),
        (
            "[[rule]]\nresponse_headers = { set = { \"X-A\" = \"a\\nb\" } }\n",
            "rules.toml:6: key `rule[0].response_headers`",
            &["header value"],
        ),
        (
            "[[rule]]\npath_prefix = \"/\"\ncookie_strip = true\n",
            "rules.toml:7: key `rule[0].cookie_strip`",
            &["unknown field `cookie_strip`"],
        ),
        (
            "[[rule]]\ncookies = \"keep\"\n",
            "rules.toml:6: key `rule[0].cookies`",
            &["\"strip\""],
        ),
        (
            "[[rule]]\nredirect = { location = \"https://{hostname}/\" }\n",
            "rules.toml:6: key `rule[0].redirect`",
            &["{host}, {path} and {query}"],
        ),
        (
            "[[rule]]\nhost = \"*example.com\"\n",
            "rules.toml:6: key `rule[0].host`",
            &["*.example.com"],
        ),
        (
            "[[rule]]\nkey_cookies = [\"sess*\"]\n",
            "rules.toml:6: key `rule[0].key_cookies`",
            &["cookie name"],
        ),
        (
            "[[rule]]\nredirect = { location = \"/a\" }\nrespond = { body = \"b\" }\n",
            "rules.toml:7: key `rule[0].respond`",
            &["not both"],
        ),
    ];
    for (text, place, words) in cases {
        let message = refused(text);
        assert!(message.starts_with(place), "{text}\n→ {message}");
        for word in *words {
            assert!(message.contains(word), "{text}\n→ {message}");
        }
    }
}

#[test]
fn the_shipped_example_rules_load_uncommented() {
    let shipped = std::fs::read_to_string("config/shellac.toml").expect("config/shellac.toml");
    let mut uncommented = String::new();
    let mut in_rules = false;
    for line in shipped.lines() {
        // The commented `[[rule]]` block: from its first table to the
        // first line that is not a comment.
        if line.starts_with("# [[rule]]") {
            in_rules = true;
        }
        if in_rules && !line.starts_with('#') {
            in_rules = false;
        }
        match line.strip_prefix("# ") {
            Some(rest) if in_rules => uncommented.push_str(rest),
            _ => uncommented.push_str(line),
        }
        uncommented.push('\n');
    }
    assert!(
        uncommented.contains("\n[[rule]]\n"),
        "the example rules are there"
    );
    let config = shellac::Config::parse(Path::new("config/shellac.toml"), &uncommented)
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(config.rules.len(), 3);
    let shipped = shellac::Config::parse(Path::new("config/shellac.toml"), &shipped)
        .expect("the shipped file loads");
    assert!(
        shipped.rules.is_empty(),
        "shipped commented: the default behaviour is unchanged"
    );
}
