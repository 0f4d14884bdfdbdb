//! The configuration's unit tests: TOML strings in, a [`Config`] or a
//! located [`ConfigError`] out. They go through [`Config::parse`] rather than
//! the build functions one by one, because what an operator sees (the file,
//! line, key and message) is made along the whole way.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), text)
}

#[test]
fn minimal_file_gets_varnish_defaults() {
    let c = parse("[[backend]]\naddress = \"127.0.0.1:8080\"\n").expect("valid");
    assert_eq!(
        c.server.listen,
        vec![super::Listen::plain("127.0.0.1:6081".parse().unwrap())]
    );
    assert_eq!(c.backends[0].name, "backend0");
    assert_eq!(c.backends[0].connect_timeout, Duration::from_millis(3500));
    assert_eq!(c.backends[0].first_byte_timeout, Duration::from_secs(60));
    assert_eq!(c.cache.default_ttl, Duration::from_secs(120));
    assert_eq!(c.server.http_req_hdr_len, 8192);
    assert_eq!(c.pools[0].name, "default");
    assert_eq!(c.routes.len(), 1);
}

#[test]
fn workers_default_to_one_per_cpu_and_are_bounded() {
    let backend = "[[backend]]\naddress = \"127.0.0.1:1\"\n";
    assert_eq!(parse(backend).expect("valid").server.workers, 0);
    let two = parse(&format!("[server]\nworkers = 2\n{backend}")).expect("valid");
    assert_eq!(two.server.workers, 2);
    let err = parse(&format!("[server]\nworkers = -1\n{backend}")).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    assert_eq!(err.key(), Some("server.workers"), "{err}");
    assert!(err.to_string().contains("worker threads"), "{err}");
}

#[test]
fn backend_overrides_defaults() {
    let c = parse(
        "[defaults]\nfirst_byte_timeout = \"5s\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n[[backend]]\naddress = \"127.0.0.1:2\"\nfirst_byte_timeout = \"250ms\"\n",
    )
    .expect("valid");
    assert_eq!(c.backends[0].first_byte_timeout, Duration::from_secs(5));
    assert_eq!(c.backends[1].first_byte_timeout, Duration::from_millis(250));
}

#[test]
fn unknown_key_names_line_and_key() {
    let err = parse(
        "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n[[backend]]\naddress = \"127.0.0.1:1\"\n",
    )
    .unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
    assert_eq!(err.key(), Some("server.lisen"), "{err}");
    assert!(err.to_string().contains("test.toml:3"), "{err}");
}

#[test]
fn bad_duration_names_key_and_expectation() {
    let err =
        parse("[[backend]]\naddress = \"127.0.0.1:1\"\nconnect_timeout = \"soon\"\n").unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
    assert_eq!(err.key(), Some("backend[0].connect_timeout"), "{err}");
    assert!(err.to_string().contains("expected a duration"), "{err}");
}

#[test]
fn pool_with_unknown_backend_is_refused() {
    let err = parse("[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[pool]]\nname = \"default\"\nbackends = [\"b\"]\n")
        .unwrap_err();
    assert_eq!(err.line(), Some(6), "{err}");
    assert!(err.to_string().contains("\"b\""), "{err}");
}

#[test]
fn routes_sorted_most_specific_first() {
    let c = parse(
        "[[backend]]\nname=\"a\"\naddress = \"127.0.0.1:1\"\n[[pool]]\nname=\"default\"\nbackends=[\"a\"]\n[[pool]]\nname=\"slow\"\nbackends=[\"a\"]\n[[route]]\npath_prefix=\"/\"\npool=\"default\"\n[[route]]\nhost=\"API.example.com:8080\"\npath_prefix=\"/slow\"\npool=\"slow\"\n",
    )
    .expect("valid");
    assert_eq!(c.routes[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(c.routes[0].pool, 1);
    assert_eq!(c.routes.last().map(|r| r.pool), Some(0));
}

#[test]
fn hardening_limits_have_defaults_and_are_checked() {
    let c = parse("[[backend]]\naddress = \"127.0.0.1:1\"\n").expect("valid");
    assert_eq!(c.server.send_timeout, Duration::from_secs(600));
    assert_eq!(c.server.max_connections, 0);
    assert_eq!(c.server.max_request_body, 100 * 1024 * 1024);
    let err = parse("[server]\nsend_timeout = \"0s\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n")
        .unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    assert_eq!(err.key(), Some("server.send_timeout"), "{err}");
    let err = parse("[server]\nmax_connections = -1\n[[backend]]\naddress = \"127.0.0.1:1\"\n")
        .unwrap_err();
    assert_eq!(err.key(), Some("server.max_connections"), "{err}");
    let err =
        parse("[server]\nmax_request_body = \"0B\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n")
            .unwrap_err();
    assert_eq!(err.key(), Some("server.max_request_body"), "{err}");
}

#[test]
fn missing_backend_is_an_error() {
    let err = parse("[server]\n").unwrap_err();
    assert!(err.to_string().contains("[[backend]]"), "{err}");
}

const TWO: &str = "[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n";

#[test]
fn backend_resilience_defaults_are_varnish_like() {
    let c = parse(TWO).expect("valid");
    let b = &c.backends[0];
    assert_eq!(b.weight, 1);
    assert_eq!(b.max_connections, 0);
    assert_eq!(b.queue_length, 100);
    assert_eq!(b.queue_timeout, Duration::from_secs(5));
    assert_eq!(b.consecutive_failures, 5);
    assert_eq!(b.ejection_time, Duration::from_secs(10));
    assert_eq!(b.probe, None);
    assert_eq!(c.retry.max_retries, 4);
    assert_eq!(c.retry.backoff_base, Duration::from_millis(50));
    assert_eq!(c.retry.backoff_max, Duration::from_secs(2));
    assert_eq!(c.retry.budget_percent, 20);
    // Not first_byte_timeout: that request reached the backend (issue 15).
    assert!(c.retry.retry_on.connect && !c.retry.retry_on.first_byte_timeout);
    assert_eq!(c.retry.retry_on.statuses, vec![503, 502, 504]);
    assert_eq!(c.retry.deadline, None);
    assert!(!c.server.debug_headers);
    assert!(c.server.synthetic_template.is_none());
}

#[test]
fn probe_defaults_merge_with_backend_probe() {
    let text = format!(
        "[defaults.probe]\nurl = \"/health\"\ninterval = \"1s\"\nwindow = 5\n{TWO}[backend.probe]\nthreshold = 4\n"
    );
    let c = parse(&text).expect("valid");
    let a = c.backends[0]
        .probe
        .as_ref()
        .expect("a has the default probe");
    assert_eq!(a.interval, Duration::from_secs(1));
    assert_eq!((a.window, a.threshold, a.initial), (5, 3, 2));
    assert_eq!(a.timeout, Duration::from_secs(2));
    assert_eq!(a.expected_status, 200);
    assert!(a
        .request
        .starts_with("GET /health HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
    let b = c.backends[1].probe.as_ref().expect("b has its own probe");
    assert_eq!((b.window, b.threshold, b.initial), (5, 4, 3));
}

#[test]
fn probe_errors_name_line_and_key() {
    let text = format!("{TWO}[backend.probe]\nwindow = 4\nthreshold = 5\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.line(), Some(9), "{err}");
    assert_eq!(err.key(), Some("backend[1].probe.threshold"), "{err}");
    let text = format!("{TWO}[backend.probe]\nurl = \"/a b\"\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key(), Some("backend[1].probe.url"), "{err}");
    let text = format!("{TWO}[backend.probe]\nrequest = \"GET / HTTP/1.1\"\n");
    let err = parse(&text).unwrap_err();
    assert!(err.to_string().contains("empty line"), "{err}");
    let text = format!("[defaults.probe]\nwindow = 0\n{TWO}");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key(), Some("defaults.probe.window"), "{err}");
}

#[test]
fn pools_routes_and_retry_keys() {
    let text = format!(
        "{TWO}weight = 3\nmax_connections = 2\nqueue_length = 0\n[[pool]]\nname = \"default\"\npolicy = \"hash\"\nbackends = [\"a\", \"b\"]\n[[route]]\npath_prefix = \"/x\"\nmethods = [\"POST\"]\npriority = 9\nfirst_byte_timeout = \"90s\"\npass = true\nttl = \"1h\"\ngrace = \"10s\"\n[retry]\nmax_retries = 2\nretry_on = [\"connect\", \"429\"]\ndeadline = \"2.5s\"\n"
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.backends[1].weight, 3);
    assert_eq!(c.backends[1].max_connections, 2);
    assert_eq!(c.backends[1].queue_length, 0);
    assert_eq!(c.pools[0].policy, Policy::Hash);
    let r = &c.routes[0];
    assert_eq!(r.methods.as_deref(), Some(&[Method::POST][..]));
    assert_eq!(r.priority, 9);
    assert_eq!(r.first_byte_timeout, Some(Duration::from_secs(90)));
    assert!(r.pass);
    assert_eq!(r.ttl, Some(Duration::from_secs(3600)));
    assert_eq!(r.grace, Some(Duration::from_secs(10)));
    assert_eq!(c.routes[1].priority, 5, "the implicit catch-all");
    assert_eq!(c.retry.max_retries, 2);
    assert_eq!(c.retry.retry_on.statuses, vec![429]);
    assert!(!c.retry.retry_on.first_byte_timeout);
    assert_eq!(c.retry.deadline, Some(Duration::from_millis(2500)));
    // "0s" turns the deadline off, as leaving it out does.
    let off = parse(&format!("{TWO}[retry]\ndeadline = \"0s\"\n")).expect("valid");
    assert_eq!(off.retry.deadline, None);
}

#[test]
fn bad_policy_priority_and_retry_on_are_refused() {
    let err = parse(&format!(
        "{TWO}[[pool]]\nname = \"default\"\npolicy = \"fastest\"\nbackends = [\"a\"]\n"
    ))
    .unwrap_err();
    assert_eq!(err.key(), Some("pool[0].policy"), "{err}");
    assert!(err.to_string().contains("least_busy"), "{err}");
    let err = parse(&format!("{TWO}[[route]]\npriority = 10\n")).unwrap_err();
    assert_eq!(err.key(), Some("route[0].priority"), "{err}");
    let err = parse(&format!(
        "{TWO}[retry]\nretry_on = [\"connect\", \"often\"]\n"
    ))
    .unwrap_err();
    assert_eq!(err.key(), Some("retry.retry_on"), "{err}");
    assert_eq!(err.line(), Some(8), "{err}");
    let err = parse(&format!(
        "{TWO}[retry]\nbackoff_base = \"1s\"\nbackoff_max = \"10ms\"\n"
    ))
    .unwrap_err();
    assert_eq!(err.key(), Some("retry.backoff_max"), "{err}");
    let err = parse(&format!("{TWO}weight = 0\n")).unwrap_err();
    assert_eq!(err.key(), Some("backend[1].weight"), "{err}");
    let err = parse(&format!("{TWO}[[route]]\nmethods = [\"get\"]\n")).unwrap_err();
    assert_eq!(err.key(), Some("route[0].methods"), "{err}");
}

#[test]
fn synthetic_template_is_read_at_load_and_must_exist() {
    let dir = std::env::temp_dir().join(format!("shellac-tpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("page.html"), "<p>{{status}} {{reason}}</p>").expect("write");
    let text = format!("[server]\nsynthetic_template = \"page.html\"\ndebug_headers = true\n{TWO}");
    let c = Config::parse(&dir.join("shellac.toml"), &text).expect("valid");
    assert_eq!(
        c.server.synthetic_template.as_deref(),
        Some("<p>{{status}} {{reason}}</p>")
    );
    assert!(c.server.debug_headers);
    let text = format!("[server]\nsynthetic_template = \"missing.html\"\n{TWO}");
    let err = Config::parse(&dir.join("shellac.toml"), &text).unwrap_err();
    assert_eq!(err.key(), Some("server.synthetic_template"), "{err}");
    assert_eq!(err.line(), Some(2), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn l2_defaults_and_cluster_seeds() {
    let c = parse(&format!(
        "[cache.l2]\nurl = \"redis://127.0.0.1:6379\"\n{TWO}"
    ))
    .expect("valid");
    let l2 = c.cache.l2.expect("l2 on");
    assert_eq!(
        l2.endpoint,
        L2Endpoint::Standalone("redis://127.0.0.1:6379".into())
    );
    assert_eq!(l2.prefix, "shellac:");
    assert_eq!(l2.timeout, Duration::from_millis(50));
    assert_eq!(l2.max_object_size, 1024 * 1024);
    let c = parse(&format!(
        "[cache.l2]\nurl = \"redis+cluster://10.0.0.1:7000, 10.0.0.2:7000\"\nprefix = \"edge:\"\ntimeout = \"20ms\"\nmax_object_size = \"256KiB\"\n{TWO}"
    ))
    .expect("valid");
    let l2 = c.cache.l2.expect("l2 on");
    assert_eq!(
        l2.endpoint,
        L2Endpoint::Cluster(vec![
            "redis://10.0.0.1:7000".into(),
            "redis://10.0.0.2:7000".into()
        ])
    );
    assert_eq!(
        (l2.prefix.as_str(), l2.timeout, l2.max_object_size),
        ("edge:", Duration::from_millis(20), 256 * 1024)
    );
    assert!(parse(TWO).expect("valid").cache.l2.is_none());
}

#[test]
fn cluster_peers_and_self() {
    let c = parse(&format!(
        "[cluster]\npeers = [\"127.0.0.1:6081\", \"127.0.0.1:6082\"]\nself = \"127.0.0.1:6082\"\n{TWO}"
    ))
    .expect("valid");
    let cluster = c.cluster.expect("cluster on");
    assert_eq!(cluster.self_index, 1);
    assert_eq!(cluster.peers[0].name, "peer:127.0.0.1:6081");
    let err = parse(&format!(
        "[cluster]\npeers = [\"127.0.0.1:6081\"]\nself = \"127.0.0.1:9\"\n{TWO}"
    ))
    .unwrap_err();
    assert_eq!(
        (err.line(), err.key()),
        (Some(3), Some("cluster.self")),
        "{err}"
    );
    let err = parse(&format!("[cluster]\npeers = []\nself = \"x\"\n{TWO}")).unwrap_err();
    assert_eq!(err.key(), Some("cluster.peers"), "{err}");
}

#[test]
fn l2_errors_name_line_and_key() {
    let err = parse(&format!("[cache.l2]\nurl = \"http://x:1\"\n{TWO}")).unwrap_err();
    assert_eq!(
        (err.line(), err.key()),
        (Some(2), Some("cache.l2.url")),
        "{err}"
    );
    assert!(err.to_string().contains("redis+cluster://"), "{err}");
    let err = parse(&format!("[cache.l2]\nurl = \"rediss://x:1\"\n{TWO}")).unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    let err = parse(&format!("[cache.l2]\nurl = \"redis+cluster://\"\n{TWO}")).unwrap_err();
    assert_eq!(err.key(), Some("cache.l2.url"), "{err}");
    let err = parse(&format!(
        "[cache.l2]\nurl = \"redis://x:1\"\ntimeout = \"0s\"\n{TWO}"
    ))
    .unwrap_err();
    assert_eq!(
        (err.line(), err.key()),
        (Some(3), Some("cache.l2.timeout")),
        "{err}"
    );
    let err = parse(&format!(
        "[cache.l2]\nurl = \"redis://x:1\"\nprefix = \"a b\"\n{TWO}"
    ))
    .unwrap_err();
    assert_eq!(err.key(), Some("cache.l2.prefix"), "{err}");
    let err = parse(&format!(
        "[cache.l2]\nurl = \"redis://x:1\"\nmax_object_size = 0\n{TWO}"
    ))
    .unwrap_err();
    assert_eq!(err.key(), Some("cache.l2.max_object_size"), "{err}");
    let err = parse(&format!(
        "[cache.l2]\nurl = \"redis://x:1\"\nttl = \"1s\"\n{TWO}"
    ))
    .unwrap_err();
    assert_eq!(
        (err.line(), err.key()),
        (Some(3), Some("cache.l2.ttl")),
        "{err}"
    );
    let err = parse(&format!("[cache.l2]\nprefix = \"a:\"\n{TWO}")).unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
}

#[test]
fn max_ejection_percent_defaults_to_half_and_is_a_percentage() {
    let implicit = parse(TWO).expect("valid");
    assert_eq!(implicit.pools[0].max_ejection_percent, 50);
    let declared = parse(&format!(
        "{TWO}[[pool]]\nname = \"default\"\nbackends = [\"a\", \"b\"]\n[[pool]]\nname = \"all\"\nbackends = [\"a\", \"b\"]\nmax_ejection_percent = 100\n"
    ))
    .expect("valid");
    assert_eq!(declared.pools[0].max_ejection_percent, 50);
    assert_eq!(declared.pools[1].max_ejection_percent, 100);
    let err = parse(&format!(
        "{TWO}[[pool]]\nname = \"default\"\nbackends = [\"a\"]\nmax_ejection_percent = 101\n"
    ))
    .unwrap_err();
    assert_eq!(err.key(), Some("pool[0].max_ejection_percent"), "{err}");
    assert!(err.to_string().contains("0 to 100"), "{err}");
}

#[test]
fn pipe_timeout_defaults_to_60s_and_follows_defaults_then_the_backend() {
    let c = parse(
        "[defaults]\npipe_timeout = \"5m\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n[[backend]]\naddress = \"127.0.0.1:2\"\npipe_timeout = \"300ms\"\n",
    )
    .expect("valid");
    assert_eq!(c.backends[0].pipe_timeout, Duration::from_secs(300));
    assert_eq!(c.backends[1].pipe_timeout, Duration::from_millis(300));
    let c = parse("[[backend]]\naddress = \"127.0.0.1:1\"\n").expect("valid");
    assert_eq!(c.backends[0].pipe_timeout, Duration::from_secs(60));
    let err = parse("[[backend]]\naddress = \"127.0.0.1:1\"\npipe_timeout = \"0s\"\n").unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
    assert_eq!(err.key(), Some("backend[0].pipe_timeout"), "{err}");
}
