//! Several Shellac nodes sharing a Redis second tier (`[cache.l2]`) and
//! invalidation fan-out, against a real `redis-server` the tests start
//! themselves (tests/support/redis.rs), with Shellac as real processes.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::redis::{RedisCluster, RedisServer};
use support::{config, get, send, send_body, try_send, Origin, Reply, Shellac, ShellacProcess};

/// An origin whose cacheable answers say how many requests it has had.
async fn counting_origin() -> Origin {
    let n = Arc::new(AtomicUsize::new(0));
    Origin::start(move |_| {
        let v = n.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Reply::ok(format!("v{v}")).header("cache-control", "max-age=60") }
    })
    .await
}

fn node_config(origin: SocketAddr, redis: &RedisServer) -> String {
    config(
        origin,
        &format!(
            "[cache]\npurge_allow = [\"127.0.0.1\"]\n[cache.l2]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\", \"admin.test\"]\n",
            redis.url()
        ),
    )
}

/// Three nodes on one Redis, each connected and subscribed.
async fn three_nodes(origin: SocketAddr, redis: &RedisServer) -> Vec<ShellacProcess> {
    let nodes: Vec<ShellacProcess> = (0..3)
        .map(|_| ShellacProcess::spawn(&node_config(origin, redis)))
        .collect();
    for node in &nodes {
        assert!(
            node.wait_for_log("L2 connected", Duration::from_secs(10))
                .await,
            "{}",
            node.log()
        );
        assert!(
            node.wait_for_log("fan-out subscribed", Duration::from_secs(10))
                .await,
            "{}",
            node.log()
        );
    }
    nodes
}

/// Waits until Redis holds the object for `path` (writes are asynchronous).
async fn wait_in_l2(redis: &RedisServer, path: &str) -> bool {
    let mut conn = redis.connection().await;
    let key = format!("shellac:http://test.example{path}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap_or(0);
        if exists == 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Waits until Redis has `n` clients besides the test's own connection
/// (each node holds one for data and one for pub/sub).
async fn wait_clients(redis: &RedisServer, n: usize) {
    let mut conn = redis.connection().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if list.lines().count() > n || Instant::now() > deadline {
            assert!(list.lines().count() > n, "Redis clients: {list}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GETs `path` on `node` until the body is no longer `old` (an invalidation
/// message is on its way), for at most 5 s; returns the new body.
async fn until_changed(node: SocketAddr, path: &str, old: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = get(node, path).await.text();
        if body != old || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One sample of a Prometheus scrape, by its full series text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

fn is_l2_hit(got: &support::Got) -> bool {
    got.header("x-cache") == Some("HIT")
        && got
            .header("cache-status")
            .is_some_and(|s| s.contains("detail=l2"))
}

#[tokio::test]
async fn a_miss_on_one_node_is_a_hit_on_the_others() {
    let Some(redis) = RedisServer::start("a_miss_on_one_node_is_a_hit_on_the_others") else {
        return;
    };
    let origin = counting_origin().await;
    let nodes = three_nodes(origin.addr, &redis).await;
    let a = get(nodes[0].addr, "/shared").await;
    assert_eq!(
        (a.status.as_u16(), a.header("x-cache")),
        (200, Some("MISS"))
    );
    assert!(wait_in_l2(&redis, "/shared").await, "A wrote it to L2");
    let b = get(nodes[1].addr, "/shared").await;
    assert!(is_l2_hit(&b), "{:?}", b.headers);
    assert_eq!(b.text(), "v1");
    let c = get(nodes[2].addr, "/shared").await;
    assert!(is_l2_hit(&c), "{:?}", c.headers);
    // Now in B's own memory: a plain hit.
    let b = get(nodes[1].addr, "/shared").await;
    assert_eq!(b.header("x-cache"), Some("HIT"));
    assert!(!is_l2_hit(&b), "{:?}", b.headers);
    assert_eq!(origin.requests(), 1, "one origin request for the cluster");
}

#[tokio::test]
async fn purge_on_one_node_removes_the_object_everywhere() {
    let Some(redis) = RedisServer::start("purge_on_one_node_removes_the_object_everywhere") else {
        return;
    };
    let origin = counting_origin().await;
    let nodes = three_nodes(origin.addr, &redis).await;
    assert_eq!(get(nodes[0].addr, "/p").await.text(), "v1");
    assert!(wait_in_l2(&redis, "/p").await);
    assert_eq!(get(nodes[2].addr, "/p").await.text(), "v1");
    assert_eq!(get(nodes[1].addr, "/p").await.text(), "v1");
    assert_eq!(origin.requests(), 1);

    let purged = send(nodes[1].addr, "PURGE", "/p", &[]).await;
    assert_eq!(purged.status.as_u16(), 200);
    // The message reaches A and C within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = redis.connection().await;
        let exists: i64 = redis::cmd("EXISTS")
            .arg("shellac:http://test.example/p")
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        if exists == 0 || Instant::now() > deadline {
            assert_eq!(exists, 0, "PURGE deleted the L2 key");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        until_changed(nodes[0].addr, "/p", "v1").await,
        "v2",
        "A lost its copy"
    );
    assert!(wait_in_l2(&redis, "/p").await);
    assert_eq!(
        until_changed(nodes[2].addr, "/p", "v1").await,
        "v2",
        "C lost its copy"
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn a_ban_on_one_node_hides_older_objects_in_every_l1_and_in_l2() {
    let Some(redis) = RedisServer::start("a_ban_hides_older_objects") else {
        return;
    };
    let origin = counting_origin().await;
    let nodes = three_nodes(origin.addr, &redis).await;
    assert_eq!(get(nodes[0].addr, "/news/1").await.text(), "v1");
    assert!(wait_in_l2(&redis, "/news/1").await);
    assert_eq!(get(nodes[1].addr, "/news/1").await.text(), "v1");
    // Only in L2 (and A's L1): for a node that starts after the ban.
    let old_two = get(nodes[0].addr, "/news/2").await.text();
    assert!(wait_in_l2(&redis, "/news/2").await);
    let admin = nodes[0].admin_addr().await.expect("admin of A");
    let banned = send_body(admin, "POST", "/ban", &[], r#"{"path_prefix": "/news/"}"#).await;
    assert_eq!(banned.status.as_u16(), 200, "{}", banned.text());
    // B had it in L1; C never did, and must not take the old one from L2.
    assert_ne!(
        until_changed(nodes[2].addr, "/news/1", "v1").await,
        "v1",
        "C"
    );
    assert_ne!(
        until_changed(nodes[1].addr, "/news/1", "v1").await,
        "v1",
        "B"
    );
    // A node started after the ban learns it from Redis.
    let late = ShellacProcess::spawn(&node_config(origin.addr, &redis));
    assert!(
        late.wait_for_log("L2 connected", Duration::from_secs(10))
            .await,
        "{}",
        late.log()
    );
    let two = get(late.addr, "/news/2").await;
    assert_ne!(
        two.text(),
        old_two,
        "the late node served a banned object: {:?}",
        two.headers
    );
}

#[tokio::test]
async fn garbage_in_l2_is_ignored_and_counted() {
    let Some(redis) = RedisServer::start("garbage_in_l2_is_ignored_and_counted") else {
        return;
    };
    let origin = counting_origin().await;
    let node = ShellacProcess::spawn(&node_config(origin.addr, &redis));
    assert!(
        node.wait_for_log("L2 connected", Duration::from_secs(10))
            .await
    );
    let mut conn = redis.connection().await;
    for (path, junk) in [
        ("/junk", &b"definitely not a record"[..]),
        ("/junk2", &b"SHL2\x01\x00\x00"[..]),
    ] {
        let _: () = redis::cmd("SET")
            .arg(format!("shellac:http://test.example{path}"))
            .arg(junk)
            .query_async(&mut conn)
            .await
            .expect("SET garbage");
        let got = get(node.addr, path).await;
        assert_eq!(
            (got.status.as_u16(), got.header("x-cache")),
            (200, Some("MISS"))
        );
        assert_eq!(got.text().chars().next(), Some('v'));
    }
    let admin = node.admin_addr().await.expect("admin");
    let metrics = get(admin, "/metrics").await.text();
    assert_eq!(
        sample(&metrics, "shellac_l2_errors_total{kind=\"decode\"}"),
        2.0,
        "{metrics}"
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn redis_dying_costs_no_client_errors_and_l2_comes_back() {
    let Some(mut redis) = RedisServer::start("redis_dying_costs_no_client_errors") else {
        return;
    };
    let origin = counting_origin().await;
    let nodes = three_nodes(origin.addr, &redis).await;
    for i in 0..5 {
        get(nodes[0].addr, &format!("/warm/{i}")).await;
        assert!(wait_in_l2(&redis, &format!("/warm/{i}")).await);
        for node in &nodes[1..] {
            assert!(is_l2_hit(&get(node.addr, &format!("/warm/{i}")).await));
        }
    }
    redis.kill();
    let mut errors = Vec::new();
    let mut slowest = Duration::ZERO;
    for round in 0..40 {
        for (n, node) in nodes.iter().enumerate() {
            for path in [format!("/warm/{}", round % 5), format!("/down/{n}/{round}")] {
                let started = Instant::now();
                match try_send(node.addr, "GET", &path, &[]).await {
                    Ok(got) if got.status.as_u16() == 200 => {}
                    Ok(got) => errors.push(format!("{path}: {}", got.status)),
                    Err(e) => errors.push(format!("{path}: {e}")),
                }
                slowest = slowest.max(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        errors.is_empty(),
        "client errors while Redis was down: {errors:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    for node in &nodes {
        let admin = node.admin_addr().await.expect("admin");
        let metrics = get(admin, "/metrics").await.text();
        assert_eq!(
            sample(&metrics, "shellac_l2_breaker_open"),
            1.0,
            "{metrics}"
        );
    }

    redis.restart();
    // After the breaker's pause a trial reconnects; then objects flow again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resumed = false;
    let mut i = 0;
    while Instant::now() < deadline && !resumed {
        i += 1;
        let path = format!("/after/{i}");
        assert_eq!(get(nodes[0].addr, &path).await.status.as_u16(), 200);
        let mut conn = redis.connection().await;
        let exists: i64 = redis::cmd("EXISTS")
            .arg(format!("shellac:http://test.example{path}"))
            .query_async(&mut conn)
            .await
            .unwrap_or(0);
        // B may still be in its breaker pause: then it fetches the key
        // itself, and the next round tries a fresh one.
        if exists == 1 && is_l2_hit(&get(nodes[1].addr, &path).await) {
            resumed = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(resumed, "L2 was not used again after Redis came back");
}

/// The figure in docs/cluster.md: origin requests for one fixed workload
/// (60 URLs, each requested once on each of three nodes, in three rounds).
#[tokio::test]
async fn origin_requests_for_a_fixed_workload() {
    let Some(redis) = RedisServer::start("origin_requests_for_a_fixed_workload") else {
        return;
    };
    const URLS: usize = 60;
    async fn run(nodes: &[Shellac], origin: &Origin, redis: Option<&RedisServer>) -> usize {
        for round in 0..3 {
            let node = &nodes[round % nodes.len()];
            for u in 0..URLS {
                let got = get(node.addr, &format!("/w/{u}")).await;
                assert_eq!(got.status.as_u16(), 200);
            }
            if let Some(redis) = redis {
                for u in 0..URLS {
                    assert!(wait_in_l2(redis, &format!("/w/{u}")).await);
                }
            }
        }
        origin.requests()
    }
    let origin = counting_origin().await;
    let one = run(
        &[Shellac::start(&config(origin.addr, "")).await],
        &origin,
        None,
    )
    .await;

    let origin = counting_origin().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Shellac::start(&config(origin.addr, "")).await);
    }
    let three = run(&nodes, &origin, None).await;

    let origin = counting_origin().await;
    let l2 = format!("[cache.l2]\nurl = \"{}\"\n", redis.url());
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Shellac::start(&config(origin.addr, &l2)).await);
    }
    wait_clients(&redis, 6).await;
    // Connected, then the ban list is read before the first lookup.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let three_l2 = run(&nodes, &origin, Some(&redis)).await;
    eprintln!(
        "FIGURE origin requests for {} requests ({URLS} URLs x 3): 1 node {one}, 3 nodes without L2 {three}, 3 nodes with L2 {three_l2}",
        URLS * 3
    );
    assert_eq!((one, three, three_l2), (URLS, 3 * URLS, URLS));
}

/// Concurrent misses on one node share one trip: L1 miss → L2 → backend.
#[tokio::test]
async fn coalescing_covers_the_l2_lookup() {
    let Some(redis) = RedisServer::start("coalescing_covers_the_l2_lookup") else {
        return;
    };
    let origin = Origin::fixed(
        Reply::ok("slow")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300)),
    )
    .await;
    let l2 = format!("[cache.l2]\nurl = \"{}\"\n", redis.url());
    let a = Shellac::start(&config(origin.addr, &l2)).await;
    let b = Shellac::start(&config(origin.addr, &l2)).await;
    wait_clients(&redis, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let burst = |addr: SocketAddr| async move {
        let tasks: Vec<_> = (0..10)
            .map(|_| tokio::spawn(async move { get(addr, "/c").await }))
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("task").status.as_u16(), 200);
        }
    };
    burst(a.addr).await;
    assert_eq!(origin.requests(), 1);
    assert!(wait_in_l2(&redis, "/c").await);
    burst(b.addr).await;
    assert_eq!(origin.requests(), 1, "B's ten misses were one L2 read");
}

/// A Redis that stops answering (CLIENT PAUSE) delays a miss by at most
/// about `timeout`, once; then the breaker skips it.
#[tokio::test]
async fn a_stalled_redis_delays_misses_by_at_most_the_timeout() {
    let Some(redis) = RedisServer::start("a_stalled_redis_delays_misses") else {
        return;
    };
    let origin = counting_origin().await;
    let node = ShellacProcess::spawn(&node_config(origin.addr, &redis));
    assert!(
        node.wait_for_log("L2 connected", Duration::from_secs(10))
            .await
    );
    get(node.addr, "/before").await;
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .expect("CLIENT PAUSE");
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let got = get(node.addr, &format!("/stalled/{i}")).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(got.status.as_u16(), 200);
    }
    // 50 ms of L2 timeout plus a local origin, far below the 4 s pause;
    // generous for a busy shared machine.
    assert!(
        slowest < Duration::from_millis(1500),
        "slowest miss {slowest:?}"
    );
    let admin = node.admin_addr().await.expect("admin");
    let metrics = get(admin, "/metrics").await.text();
    assert!(
        sample(&metrics, "shellac_l2_errors_total{kind=\"timeout\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "shellac_l2_skipped_total") >= 15.0,
        "{metrics}"
    );
}

/// `[cluster]` peering: 300 requests for 100 keys spread over three nodes
/// (each key once on each node) → each key fetched from the origin once,
/// without any L2.
#[tokio::test]
async fn peering_fetches_each_key_from_the_origin_once() {
    let origin = counting_origin().await;
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        })
        .collect();
    let peers: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let nodes: Vec<ShellacProcess> = ports
        .iter()
        .map(|port| {
            ShellacProcess::spawn(&format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[cluster]\npeers = [{}]\nself = \"127.0.0.1:{port}\"\n[[backend]]\nname = \"origin\"\naddress = \"{}\"\n",
                peers.join(", "),
                origin.addr
            ))
        })
        .collect();
    for i in 0..300 {
        let node = &nodes[i % 3];
        let got = get(node.addr, &format!("/peer/{}", i % 100)).await;
        assert_eq!(got.status.as_u16(), 200, "{:?}", got.headers);
    }
    assert_eq!(origin.requests(), 100, "each key from the origin once");
    eprintln!(
        "FIGURE peering: 300 requests (100 URLs x 3 nodes) -> {} origin requests",
        origin.requests()
    );

    // A dead peer's keys move on: no client errors.
    let mut nodes = nodes;
    drop(nodes.pop());
    for i in 0..60 {
        let got = try_send(nodes[i % 2].addr, "GET", &format!("/after-death/{i}"), &[]).await;
        assert_eq!(got.map(|g| g.status.as_u16()), Ok(200), "request {i}");
    }
}

/// A peer that never answers: its keys come from the origin, no errors.
#[tokio::test]
async fn peering_with_a_dead_peer_falls_back_to_the_origin() {
    let origin = counting_origin().await;
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (live, dead) = (free(), free());
    let node = ShellacProcess::spawn(&format!(
        "[server]\nlisten = \"127.0.0.1:{live}\"\n[cluster]\npeers = [\"127.0.0.1:{live}\", \"127.0.0.1:{dead}\"]\nself = \"127.0.0.1:{live}\"\n[[backend]]\nname = \"origin\"\naddress = \"{}\"\n",
        origin.addr
    ));
    for i in 0..20 {
        let got = try_send(node.addr, "GET", &format!("/d/{i}"), &[]).await;
        assert_eq!(got.map(|g| g.status.as_u16()), Ok(200), "request {i}");
    }
    assert_eq!(origin.requests(), 20);
}

/// `redis+cluster://` against a real 3-master Redis Cluster: objects a node
/// stores land on several masters (by hash slot) and are hits for the other
/// node; a PURGE reaches the other node through pub/sub (the nodes subscribe
/// on the first seed, while PUBLISH goes to the master of the channel's
/// slot, 13265 for `shellac:invalidate`, i.e. the third master: the cluster
/// bus carries it across).
#[tokio::test]
async fn redis_cluster_shares_objects_and_purges_between_nodes() {
    let Some(cluster) =
        RedisCluster::start("redis_cluster_shares_objects_and_purges_between_nodes")
    else {
        return;
    };
    let origin = counting_origin().await;
    let toml = config(
        origin.addr,
        &format!(
            "[cache]\npurge_allow = [\"127.0.0.1\"]\n[cache.l2]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\", \"admin.test\"]\n",
            cluster.url()
        ),
    );
    let nodes: Vec<ShellacProcess> = (0..2).map(|_| ShellacProcess::spawn(&toml)).collect();
    for node in &nodes {
        for line in ["L2 connected", "fan-out subscribed"] {
            assert!(
                node.wait_for_log(line, Duration::from_secs(10)).await,
                "{line}: {}",
                node.log()
            );
        }
    }

    // Slots 14511, 10382, 6381, 2252, 14379, 10250: every master holds some.
    let paths: Vec<String> = (0..6).map(|i| format!("/spread/{i}")).collect();
    let mut conn = cluster.connection().await;
    let mut first = Vec::new();
    for path in &paths {
        let got = get(nodes[0].addr, path).await;
        assert_eq!(
            (got.status.as_u16(), got.header("x-cache")),
            (200, Some("MISS")),
            "{path}"
        );
        first.push(got.text());
        let key = format!("shellac:http://test.example{path}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("EXISTS on the cluster");
            if exists == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{key} never reached the cluster");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for &port in &cluster.ports {
        let keys: i64 = redis::cmd("DBSIZE")
            .query_async(&mut cluster.node_connection(port).await)
            .await
            .expect("DBSIZE");
        assert!(keys >= 1, "the master on port {port} holds no object");
    }
    for (path, body) in paths.iter().zip(&first) {
        let got = get(nodes[1].addr, path).await;
        assert!(is_l2_hit(&got), "{path}: {:?}", got.headers);
        assert_eq!(&got.text(), body, "{path}");
    }
    assert_eq!(
        origin.requests(),
        paths.len(),
        "each key from the origin once"
    );

    // PURGE on node 2: the key leaves the cluster, and node 1's L1 copy
    // goes too (fan-out), so node 1 fetches it again.
    let purged = send(nodes[1].addr, "PURGE", &paths[3], &[]).await;
    assert_eq!(purged.status.as_u16(), 200);
    let key = format!("shellac:http://test.example{}", paths[3]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("EXISTS on the cluster");
        if exists == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "PURGE did not delete {key}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = until_changed(nodes[0].addr, &paths[3], &first[3]).await;
    assert_ne!(again, first[3], "node 1 kept its purged copy");
    let admin = nodes[0].admin_addr().await.expect("admin of node 1");
    let metrics = get(admin, "/metrics").await.text();
    assert_eq!(
        sample(&metrics, "shellac_invalidations_received_total"),
        1.0,
        "{metrics}"
    );
    // The other keys are still node 1's hits.
    assert_eq!(get(nodes[0].addr, &paths[0]).await.text(), first[0]);
    assert_eq!(origin.requests(), paths.len() + 1);
}
