//! `[cache] invalidation`: the purge protocols of the applications that ship
//! a Varnish integration (Magento 2, WordPress, Drupal, vmod_xkey), each
//! tested with the request the application itself sends, against objects
//! that must and must not go.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::redis::RedisServer;
use support::{config, send, Got, Origin, Reply, Shellac};

/// An origin whose every page is cacheable for a minute, carries the
/// headers `headers_for(path)` gives, and says in its body how many
/// requests the origin has had (so a refetch shows as a new body).
async fn site(headers_for: fn(&str) -> Vec<(&'static str, &'static str)>) -> Origin {
    let n = Arc::new(AtomicUsize::new(0));
    Origin::start(move |seen| {
        let v = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut reply =
            Reply::ok(format!("{} #{v}", seen.target)).header("cache-control", "max-age=60");
        for (name, value) in headers_for(&seen.target) {
            reply = reply.header(name, value);
        }
        async move { reply }
    })
    .await
}

fn shellac_config(origin: SocketAddr, protocols: &str) -> String {
    config(
        origin,
        &format!("[cache]\npurge_allow = [\"127.0.0.1/32\"]\ninvalidation = [{protocols}]\n"),
    )
}

async fn get_on(addr: SocketAddr, host: &str, path: &str) -> Got {
    send(addr, "GET", path, &[("host", host)]).await
}

/// GETs `path` twice (filling the cache) and returns the cached body.
async fn cached(addr: SocketAddr, path: &str) -> String {
    let first = support::get(addr, path).await;
    assert_eq!(first.status.as_u16(), 200, "{path}");
    let again = support::get(addr, path).await;
    assert_eq!(again.text(), first.text(), "{path} was not cached");
    again.text()
}

/// Like [`cached`], retrying until two GETs in a row give the same body.
async fn cached_eventually(addr: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = support::get(addr, path).await.text();
    loop {
        let again = support::get(addr, path).await.text();
        if again == last {
            return again;
        }
        assert!(Instant::now() < deadline, "{path} never stayed cached");
        last = again;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `path` is still the cached `body` (a HIT) or was fetched again.
async fn still_cached(addr: SocketAddr, path: &str, body: &str) -> bool {
    support::get(addr, path).await.text() == body
}

fn magento_pages(path: &str) -> Vec<(&'static str, &'static str)> {
    match path {
        "/p1" => vec![("x-magento-tags", "cat_p_1,cat_c_2,store")],
        "/p2" => vec![("x-magento-tags", "cat_p_11,cat_c_3,store")],
        "/deploy" => vec![("x-pool", "pool_a"), ("x-magento-debug", "1")],
        _ => vec![],
    }
}

#[tokio::test]
async fn magento2_tag_pattern_bans_only_the_pages_with_a_matching_tag() {
    let origin = site(magento_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "\"magento2\"")).await;
    let p1 = cached(shellac.addr, "/p1").await;
    let p2 = cached(shellac.addr, "/p2").await;
    let plain = cached(shellac.addr, "/static.css").await;

    // Magento\CacheInvalidate\Model\PurgeCache: one PURGE to "/", its host
    // the configured http-cache-host, the pattern of the cleaned tags.
    let purged = send(
        shellac.addr,
        "PURGE",
        "/",
        &[(
            "x-magento-tags-pattern",
            "((^|,)cat_p_1(,|$))|((^|,)cat_c_9(,|$))",
        )],
    )
    .await;
    assert_eq!(purged.status.as_u16(), 200);
    assert_eq!(purged.text().trim(), "Purged");
    assert!(
        !still_cached(shellac.addr, "/p1", &p1).await,
        "tagged cat_p_1: must go"
    );
    assert!(
        still_cached(shellac.addr, "/p2", &p2).await,
        "cat_p_11 is not cat_p_1"
    );
    assert!(still_cached(shellac.addr, "/static.css", &plain).await);

    // "Flush Magento Cache": everything, tagged or not.
    let flushed = send(
        shellac.addr,
        "PURGE",
        "/",
        &[("x-magento-tags-pattern", ".*")],
    )
    .await;
    assert_eq!(flushed.status.as_u16(), 200);
    assert!(!still_cached(shellac.addr, "/p2", &p2).await);
    assert!(!still_cached(shellac.addr, "/static.css", &plain).await);
    shellac.stop().await;
}

#[tokio::test]
async fn magento2_x_pool_bans_the_pool_and_hides_magento_headers() {
    let origin = site(magento_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "\"magento2\"")).await;
    let first = support::get(shellac.addr, "/p1").await;
    assert_eq!(
        first.header("x-magento-tags"),
        None,
        "miss: {:?}",
        first.headers
    );
    let hit = support::get(shellac.addr, "/p1").await;
    assert_eq!(hit.header("x-magento-tags"), None, "hit: {:?}", hit.headers);
    let deploy = cached(shellac.addr, "/deploy").await;
    let debug = support::get(shellac.addr, "/deploy").await;
    assert_eq!(debug.header("x-magento-debug"), None);

    // capistrano-magento2 purges the old pool on deploy.
    let purged = send(shellac.addr, "PURGE", "/", &[("x-pool", "pool_a")]).await;
    assert_eq!(purged.status.as_u16(), 200);
    assert!(!still_cached(shellac.addr, "/deploy", &deploy).await);
    assert!(still_cached(shellac.addr, "/p1", &hit.text()).await);
    shellac.stop().await;
}

#[tokio::test]
async fn magento2_purge_without_its_headers_is_400() {
    let origin = site(magento_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "\"magento2\"")).await;
    let p1 = cached(shellac.addr, "/p1").await;
    let refused = send(shellac.addr, "PURGE", "/p1", &[]).await;
    assert_eq!(refused.status.as_u16(), 400);
    let bad_regex = send(
        shellac.addr,
        "PURGE",
        "/",
        &[("x-magento-tags-pattern", "((")],
    )
    .await;
    assert_eq!(bad_regex.status.as_u16(), 400);
    assert!(still_cached(shellac.addr, "/p1", &p1).await);
    shellac.stop().await;
}

#[tokio::test]
async fn without_magento2_its_purge_is_a_plain_purge_and_its_headers_pass() {
    let origin = site(magento_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "")).await;
    let p1 = cached(shellac.addr, "/p1").await;
    let hit = support::get(shellac.addr, "/p1").await;
    assert_eq!(hit.header("x-magento-tags"), Some("cat_p_1,cat_c_2,store"));
    // As today: PURGE removes the URL it names ("/"), nothing else.
    let purged = send(
        shellac.addr,
        "PURGE",
        "/",
        &[("x-magento-tags-pattern", ".*")],
    )
    .await;
    assert_eq!(purged.status.as_u16(), 200);
    assert!(still_cached(shellac.addr, "/p1", &p1).await);
    shellac.stop().await;
}

fn wordpress_pages(path: &str) -> Vec<(&'static str, &'static str)> {
    if path.starts_with("/20") {
        vec![("vary", "accept-language")]
    } else {
        vec![]
    }
}

#[tokio::test]
async fn wordpress_purges_a_url_with_all_its_variants_and_bans_a_regex_on_its_host() {
    let origin = site(wordpress_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "\"wordpress\"")).await;
    let lang = |l: &'static str| [("accept-language", l)];
    let en = send(shellac.addr, "GET", "/2026/hello/", &lang("en"))
        .await
        .text();
    let fr = send(shellac.addr, "GET", "/2026/hello/", &lang("fr"))
        .await
        .text();
    assert_ne!(en, fr);
    assert_eq!(
        send(shellac.addr, "GET", "/2026/hello/", &lang("fr"))
            .await
            .text(),
        fr
    );
    let other = cached(shellac.addr, "/2026/other/").await;

    // Proxy Cache Purge (varnish-http-purge): PURGE the URL, Host the
    // site's, X-Purge-Method "default" for one URL.
    let headers = [("host", "test.example"), ("x-purge-method", "default")];
    let purged = send(shellac.addr, "PURGE", "/2026/hello/", &headers).await;
    assert_eq!(purged.status.as_u16(), 200);
    assert_eq!(purged.text().trim(), "Purged");
    assert_ne!(
        send(shellac.addr, "GET", "/2026/hello/", &lang("en"))
            .await
            .text(),
        en
    );
    assert_ne!(
        send(shellac.addr, "GET", "/2026/hello/", &lang("fr"))
            .await
            .text(),
        fr
    );
    assert!(still_cached(shellac.addr, "/2026/other/", &other).await);

    // A wildcard: the path is a regex, on this host only.
    let cat_a = cached(shellac.addr, "/category/a/").await;
    let elsewhere = get_on(shellac.addr, "other.example", "/category/a/")
        .await
        .text();
    assert_eq!(
        get_on(shellac.addr, "other.example", "/category/a/")
            .await
            .text(),
        elsewhere
    );
    let headers = [("host", "test.example"), ("x-purge-method", "regex")];
    let banned = send(shellac.addr, "PURGE", "/category/.*", &headers).await;
    assert_eq!(banned.status.as_u16(), 200);
    assert!(!still_cached(shellac.addr, "/category/a/", &cat_a).await);
    assert!(still_cached(shellac.addr, "/2026/other/", &other).await);
    assert_eq!(
        get_on(shellac.addr, "other.example", "/category/a/")
            .await
            .text(),
        elsewhere
    );

    // "Purge cache" (everything): PURGE /.* with regex.
    let flushed = send(shellac.addr, "PURGE", "/.*", &headers).await;
    assert_eq!(flushed.status.as_u16(), 200);
    assert!(!still_cached(shellac.addr, "/2026/other/", &other).await);
    assert_eq!(
        get_on(shellac.addr, "other.example", "/category/a/")
            .await
            .text(),
        elsewhere
    );
    shellac.stop().await;
}

fn drupal_pages(path: &str) -> Vec<(&'static str, &'static str)> {
    match path {
        "/node/1" => vec![("purge-cache-tags", "node:1 node_list config:system.site")],
        "/node/10" => vec![("purge-cache-tags", "node:10 node_list config:system.site")],
        "/user/3" => vec![("cache-tags", "user:3")],
        _ => vec![],
    }
}

#[tokio::test]
async fn drupal_ban_by_cache_tags_removes_only_the_tagged_pages() {
    let origin = site(drupal_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "\"drupal\"")).await;
    let n1 = cached(shellac.addr, "/node/1").await;
    let n10 = cached(shellac.addr, "/node/10").await;
    let u3 = cached(shellac.addr, "/user/3").await;

    // varnish_purger's "tags" purger: BAN to the site root with the tags.
    let banned = send(shellac.addr, "BAN", "/", &[("purge-cache-tags", "node:1")]).await;
    assert_eq!(banned.status.as_u16(), 200);
    assert_eq!(banned.text().trim(), "Ban added.");
    assert!(!still_cached(shellac.addr, "/node/1", &n1).await);
    assert!(
        still_cached(shellac.addr, "/node/10", &n10).await,
        "node:10 is not node:1"
    );
    assert!(still_cached(shellac.addr, "/user/3", &u3).await);

    // The same with Cache-Tags, several tags (space- or pipe-separated).
    let banned = send(
        shellac.addr,
        "BAN",
        "/",
        &[("cache-tags", "user:3|node:10")],
    )
    .await;
    assert_eq!(banned.status.as_u16(), 200);
    assert!(!still_cached(shellac.addr, "/node/10", &n10).await);
    assert!(!still_cached(shellac.addr, "/user/3", &u3).await);
    shellac.stop().await;
}

#[tokio::test]
async fn without_drupal_ban_is_an_unknown_method_as_before() {
    let origin = site(drupal_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "\"magento2\"")).await;
    let n1 = cached(shellac.addr, "/node/1").await;
    let refused = send(shellac.addr, "BAN", "/", &[("purge-cache-tags", "node:1")]).await;
    assert_eq!(refused.status.as_u16(), 501);
    assert!(still_cached(shellac.addr, "/node/1", &n1).await);
    shellac.stop().await;
}

fn xkey_pages(path: &str) -> Vec<(&'static str, &'static str)> {
    match path {
        "/product/1" => vec![("xkey", "product-1 category-2")],
        "/product/10" => vec![("xkey", "product-10 category-2")],
        _ => vec![],
    }
}

#[tokio::test]
async fn xkey_purge_removes_the_objects_listing_a_key() {
    let origin = site(xkey_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "\"xkey\"")).await;
    let p1 = cached(shellac.addr, "/product/1").await;
    let p10 = cached(shellac.addr, "/product/10").await;
    let purged = send(
        shellac.addr,
        "PURGE",
        "/",
        &[("xkey-purge", "product-1 product-7")],
    )
    .await;
    assert_eq!(purged.status.as_u16(), 200);
    assert!(!still_cached(shellac.addr, "/product/1", &p1).await);
    assert!(still_cached(shellac.addr, "/product/10", &p10).await);
    shellac.stop().await;
}

/// `xkey-softpurge`: the objects turn stale, not gone: the next client
/// still gets the old copy at once (grace) while it is fetched again.
#[tokio::test]
async fn xkey_softpurge_makes_the_objects_stale_for_grace() {
    let origin = site(xkey_pages).await;
    let shellac = Shellac::start(&shellac_config(origin.addr, "\"xkey\"")).await;
    let p1 = cached(shellac.addr, "/product/1").await;
    let p10 = cached(shellac.addr, "/product/10").await;
    let other = cached(shellac.addr, "/about").await;
    let purged = send(
        shellac.addr,
        "PURGE",
        "/",
        &[("xkey-softpurge", "category-2")],
    )
    .await;
    assert_eq!(purged.status.as_u16(), 200);
    let stale = support::get(shellac.addr, "/product/10").await;
    assert_eq!(stale.text(), p10, "served from grace at once");
    assert_eq!(
        stale.header("x-cache"),
        Some("HIT-STALE"),
        "{:?}",
        stale.headers
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while still_cached(shellac.addr, "/product/10", &p10).await {
        assert!(
            Instant::now() < deadline,
            "never refetched after the soft purge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let also = support::get(shellac.addr, "/product/1").await;
    assert_eq!(
        also.header("x-cache"),
        Some("HIT-STALE"),
        "also tagged category-2"
    );
    assert_eq!(also.text(), p1);
    let about = support::get(shellac.addr, "/about").await;
    assert_eq!(about.header("x-cache"), Some("HIT"));
    assert_eq!(about.text(), other);
    shellac.stop().await;
}

const ALL: &str = "\"magento2\", \"wordpress\", \"drupal\", \"xkey\"";

#[tokio::test]
async fn every_protocol_is_refused_outside_purge_allow() {
    let origin = site(magento_pages).await;
    let toml = config(
        origin.addr,
        &format!(
            "trusted_proxies = [\"127.0.0.1/32\"]\n[cache]\npurge_allow = [\"127.0.0.1/32\"]\ninvalidation = [{ALL}]\n"
        ),
    );
    let shellac = Shellac::start(&toml).await;
    let p1 = cached(shellac.addr, "/p1").await;
    let outside = ("x-forwarded-for", "203.0.113.9");
    let requests: [(&str, &str, (&str, &str)); 5] = [
        ("PURGE", "/", ("x-magento-tags-pattern", ".*")),
        ("PURGE", "/.*", ("x-purge-method", "regex")),
        ("BAN", "/", ("purge-cache-tags", "store")),
        ("PURGE", "/", ("xkey-purge", "store")),
        ("PURGE", "/p1", ("x-purge-method", "default")),
    ];
    for (method, path, header) in requests {
        let refused = send(shellac.addr, method, path, &[header, outside]).await;
        assert_eq!(refused.status.as_u16(), 403, "{method} {path} {header:?}");
    }
    assert!(still_cached(shellac.addr, "/p1", &p1).await);
    shellac.stop().await;

    // No purge_allow: invalidation is off altogether (405), as for PURGE.
    let toml = config(origin.addr, &format!("[cache]\ninvalidation = [{ALL}]\n"));
    let shellac = Shellac::start(&toml).await;
    let refused = send(
        shellac.addr,
        "PURGE",
        "/",
        &[("x-magento-tags-pattern", ".*")],
    )
    .await;
    assert_eq!(refused.status.as_u16(), 405);
    let refused = send(shellac.addr, "BAN", "/", &[("cache-tags", "x")]).await;
    assert_eq!(refused.status.as_u16(), 405);
    shellac.stop().await;
}

#[tokio::test]
async fn invalidations_are_counted_by_protocol() {
    let origin = site(magento_pages).await;
    let toml = config(
        origin.addr,
        &format!(
            "[cache]\npurge_allow = [\"127.0.0.1/32\"]\ninvalidation = [{ALL}]\n[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\"]\n"
        ),
    );
    let shellac = Shellac::start(&toml).await;
    let sent: [(&str, &str, (&str, &str)); 5] = [
        ("PURGE", "/", ("x-magento-tags-pattern", "cat_p_1")),
        ("PURGE", "/", ("x-magento-tags-pattern", "cat_p_2")),
        ("PURGE", "/a", ("x-purge-method", "default")),
        ("BAN", "/", ("purge-cache-tags", "node:1")),
        ("PURGE", "/", ("xkey-purge", "k")),
    ];
    for (method, path, header) in sent {
        assert_eq!(
            send(shellac.addr, method, path, &[header])
                .await
                .status
                .as_u16(),
            200
        );
    }
    let admin = shellac.admin.expect("admin listener");
    let metrics = support::get(admin, "/metrics").await.text();
    for (protocol, n) in [
        ("magento2", 2),
        ("wordpress", 1),
        ("drupal", 1),
        ("xkey", 1),
        ("purge", 0),
    ] {
        let line = format!("shellac_invalidations_total{{protocol=\"{protocol}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    shellac.stop().await;
}

#[test]
fn an_unknown_protocol_is_a_config_error_naming_its_line() {
    let toml = "[cache]\npurge_allow = [\"127.0.0.1\"]\ninvalidation = [\"magento2\", \"joomla\"]\n[[backend]]\naddress = \"127.0.0.1:1\"\n";
    let err = shellac::Config::parse(std::path::Path::new("shellac.toml"), toml).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("shellac.toml") && text.contains("cache.invalidation"),
        "{text}"
    );
    assert!(
        text.contains("joomla") && text.contains("magento2"),
        "{text}"
    );
    assert_eq!(err.line(), Some(3), "{text}");
}

/// Magento's probe: `/health_check.php` answers 200 while the shop is up.
#[tokio::test]
async fn magento_health_check_php_works_as_the_probe_url() {
    let health = Arc::new(AtomicU16::new(200));
    let probe = health.clone();
    let origin = Origin::start(move |seen| {
        let status = if seen.target == "/health_check.php" {
            probe.load(Ordering::SeqCst)
        } else {
            200
        };
        async move {
            Reply::ok("shop")
                .status(status)
                .header("cache-control", "no-store")
        }
    })
    .await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\nname = \"magento\"\naddress = \"{}\"\n[backend.probe]\nurl = \"/health_check.php\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nwindow = 3\nthreshold = 2\n",
        origin.addr
    );
    let shellac = Shellac::start(&toml).await;
    let status_within = |want: u16| async move {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = support::get(shellac.addr, "/").await.status.as_u16();
            if status == want || Instant::now() > deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(status_within(200).await, 200);
    assert!(origin
        .seen()
        .iter()
        .any(|s| s.target == "/health_check.php"));
    health.store(503, Ordering::SeqCst);
    assert_eq!(
        status_within(503).await,
        503,
        "a failing health_check.php makes it sick"
    );
    health.store(200, Ordering::SeqCst);
    assert_eq!(status_within(200).await, 200);
    shellac.stop().await;
}

/// Two nodes on one Redis: a tag ban on one reaches the other's memory.
#[tokio::test]
async fn a_magento_ban_on_one_node_reaches_the_other_through_redis() {
    let Some(redis) =
        RedisServer::start("a_magento_ban_on_one_node_reaches_the_other_through_redis")
    else {
        return;
    };
    let origin = site(magento_pages).await;
    let toml = config(
        origin.addr,
        &format!(
            "[cache]\npurge_allow = [\"127.0.0.1/32\"]\ninvalidation = [\"magento2\"]\n[cache.l2]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\"]\n",
            redis.url()
        ),
    );
    let a = Shellac::start(&toml).await;
    let b = Shellac::start(&toml).await;
    for node in [&a, &b] {
        let admin = node.admin.expect("admin");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !support::get(admin, "/metrics")
            .await
            .text()
            .contains("shellac_l2_subscribed 1")
        {
            assert!(
                Instant::now() < deadline,
                "node never subscribed to the fan-out"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A node may flush its L1 once more as its subscription settles:
    // wait until b serves both pages from its cache.
    let on_b = cached_eventually(b.addr, "/p1").await;
    let p2_on_b = cached_eventually(b.addr, "/p2").await;
    let purged = send(
        a.addr,
        "PURGE",
        "/",
        &[("x-magento-tags-pattern", "((^|,)cat_p_1(,|$))")],
    )
    .await;
    assert_eq!(purged.status.as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while still_cached(b.addr, "/p1", &on_b).await {
        assert!(Instant::now() < deadline, "the ban never reached node b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(still_cached(b.addr, "/p2", &p2_on_b).await);
    a.stop().await;
    b.stop().await;
}
