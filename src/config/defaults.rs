//! Every default in one place, named after the Varnish parameter it mirrors
//! where Varnish has one. `docs/configuration.md` documents the same values;
//! change both together.

use std::time::Duration;

/// `[server] listen`: Varnish's default client port.
pub const LISTEN: &str = "127.0.0.1:6081";
/// `[tls] min_version`: TLS 1.2, which every client of the last decade
/// speaks (Mozilla's "intermediate" profile); 1.3 is offered too.
pub const TLS_MIN_VERSION: super::TlsVersion = super::TlsVersion::Tls12;
/// `[server] timeout_idle` (Varnish `timeout_idle`, 5 s): how long an idle
/// keep-alive client connection is kept.
pub const TIMEOUT_IDLE: Duration = Duration::from_secs(5);
/// `[server] header_timeout`: the whole request head must arrive within this
/// (a slowloris guard; Varnish bounds it by `timeout_req`/`timeout_idle`).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `[server] http_req_hdr_len` (Varnish, 8 KiB): the longest request header line.
pub const HTTP_REQ_HDR_LEN: u64 = 8 * 1024;
/// `[server] http_req_size` (Varnish, 32 KiB): the largest whole request head.
pub const HTTP_REQ_SIZE: u64 = 32 * 1024;
/// `[server] http_max_hdr` (Varnish, 64): the most header fields in a request.
pub const HTTP_MAX_HDR: usize = 64;
/// `[server] retry_after`: the `Retry-After` of a synthetic 503 when nothing
/// better is known.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// `[server] drain_timeout`: on shutdown, in-flight requests get this long to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `[cache] capacity` (Varnish's `-s malloc` default is unbounded; we bound
/// it): bytes of object data plus per-object overhead.
pub const CACHE_CAPACITY: u64 = 256 * 1024 * 1024;
/// `[cache] default_ttl` (Varnish `default_ttl`, 120 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);
/// `[cache] max_object_size`: larger responses stream through uncached.
pub const MAX_OBJECT_SIZE: u64 = 32 * 1024 * 1024;
/// `[cache] transit_capacity` when absent: this fraction (1/N) of
/// `capacity`. The bodies of storable misses are buffered while they arrive
/// (every client of the URL reads them from there, at its own pace); this
/// bounds that memory, which a burst of large misses would otherwise take
/// on top of the cache (measured before the bound: twelve stalled clients
/// on 16 MiB misses added 116 MiB of RSS with a 16 MiB cache).
pub const TRANSIT_CAPACITY_DIVISOR: u64 = 4;
/// `[cache] store_errors`: error responses (400, 413, 414, 431, 5xx) are
/// never stored unless this is true.
pub const STORE_ERRORS: bool = false;

/// `[cache] default_grace` (Varnish `default_grace`, 10 s): how long a stale
/// object is still served at once while one background fetch refreshes it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// `[cache] default_keep` (Varnish `default_keep`, 0 s): how long a stale
/// object is kept past grace, for revalidation and stale-if-error.
pub const DEFAULT_KEEP: Duration = Duration::ZERO;
/// `[cache] hit_for_miss` (Varnish's hit-for-miss objects, 120 s by builtin
/// VCL): how long a key whose response was uncacheable skips the waiting list.
pub const HIT_FOR_MISS: Duration = Duration::from_secs(120);
/// `[cache] heuristic_max`: the cap on heuristic freshness (10 % of the
/// `Last-Modified` age). Equal to Varnish's `default_ttl` so that heuristic
/// objects never live longer than Varnish would keep them.
pub const HEURISTIC_MAX: Duration = Duration::from_secs(120);
/// `[cache] strip_targeted`: remove `CDN-Cache-Control` and
/// `Shellac-Cache-Control` from responses to clients.
pub const STRIP_TARGETED: bool = false;
/// `[cache] honor_request_cache_control`: whether a client's
/// `Cache-Control` (`no-cache`, `max-age=0`, …) and `Pragma: no-cache` may
/// force a fetch. Off, as Varnish's builtin VCL: every browser reload would
/// otherwise reach the origin. `only-if-cached` is honoured either way.
pub const HONOR_REQUEST_CACHE_CONTROL: bool = false;

/// `[cache] tag_header`: the response header that tags objects for bans
/// (Fastly's and Varnish's xkey convention); stripped before responding.
pub const TAG_HEADER: &str = "surrogate-key";

/// `[defaults] connect_timeout` (Varnish, 3.5 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3500);
/// `[defaults] first_byte_timeout` (Varnish, 60 s): request sent → response head.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// `[defaults] between_bytes_timeout` (Varnish, 60 s): the longest pause
/// between two pieces of a backend response body.
pub const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(60);
/// `[defaults] pipe_timeout` (Varnish's `pipe_timeout`, 60 s): an Upgrade
/// tunnel (WebSocket) that moves no byte either way for this long is closed.
pub const PIPE_TIMEOUT: Duration = Duration::from_secs(60);
/// `[defaults] http_resp_hdr_len` (Varnish, 8 KiB): the longest backend
/// response header line.
pub const HTTP_RESP_HDR_LEN: u64 = 8 * 1024;
/// `[defaults] http_resp_size` (Varnish, 32 KiB): the largest whole backend
/// response head.
pub const HTTP_RESP_SIZE: u64 = 32 * 1024;
/// `[defaults] tls` (Varnish: none in open source; hitch or stunnel in
/// front, Varnish Enterprise `.ssl`): false, backends speak plain HTTP.
pub const BACKEND_TLS: bool = false;

/// `[defaults] tls_verify`: true, a backend's certificate chain and name
/// are verified; false accepts any certificate (warned at every load).
pub const BACKEND_TLS_VERIFY: bool = true;

/// `[defaults] resolve_interval` (Varnish: none, it resolves at VCL load
/// only; nginx `resolver ... valid=30s`): a backend's host name is looked up
/// again this often, so a container or instance that moved is followed
/// without a reload.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// `[defaults] backend_idle_timeout` (Varnish `backend_idle_timeout`, 60 s):
/// an unused pooled backend connection is closed after this.
pub const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pool every backend joins when the file declares no `[[pool]]`, and
/// the pool requests go to when no `[[route]]` matches.
pub const POOL_NAME: &str = "default";
/// Where `shellac` looks for its configuration when `--config` is not given.
pub const CONFIG_PATH: &str = "config/shellac.toml";

/// `[server] synthetic_template`: none, the built-in "Guru Meditation" page.
pub const SYNTHETIC_TEMPLATE: Option<&str> = None;
/// `[server] debug_headers`: off, so clients see no internal reason
/// (`X-Shellac-Error`) unless the operator asks for it.
pub const DEBUG_HEADERS: bool = false;
/// The bounds of a computed `Retry-After` on a synthetic 503: never "come
/// back now" (a stampede), never more than five minutes (clients give up).
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
/// See [`RETRY_AFTER_MIN`].
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// `[[backend]] weight`: relative share under the `random` and `hash` policies.
pub const WEIGHT: u32 = 1;
/// The largest accepted `weight`.
pub const WEIGHT_MAX: u32 = 10_000;
/// `[defaults] max_connections` (Varnish `.max_connections`, unlimited): 0
/// means no cap on in-flight requests to one backend.
pub const MAX_CONNECTIONS: usize = 0;
/// `[defaults] queue_length`: requests beyond `max_connections` wait in a
/// FIFO of at most this many; 0 refuses them at once. Varnish has no queue
/// (it fails at once); we queue a little to absorb bursts.
pub const QUEUE_LENGTH: usize = 100;
/// `[defaults] queue_timeout`: the longest wait in that queue.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// `[defaults] consecutive_failures`: this many backend-caused failures in
/// a row eject the backend (refused or timed-out connects count each;
/// 5xx answers, first-byte timeouts and invalid responses once per URL
/// path, see `backend/outlier.rs`); 0 disables passive ejection. Varnish
/// has no passive ejection; Envoy's `consecutive_5xx` is 5.
pub const CONSECUTIVE_FAILURES: u32 = 5;
/// `[defaults] ejection_time`: how long a backend ejected for failed
/// answers gets no traffic the first time; it doubles on each repeat
/// ejection (Envoy's `base_ejection_time` is 30 s; we prefer a faster first
/// retry). An unreachable backend is ejected for [`UNREACHABLE_EJECTION`].
pub const EJECTION_TIME: Duration = Duration::from_secs(10);
/// `[[pool]] max_ejection_percent` (Envoy's outlier detection default, 10 %,
/// is for large fleets; ours is for pools of two to five): passive ejection
/// never takes out more than this share of a pool's members (rounded down,
/// so a pool of one is never ejected from), nor the last usable one.
/// Varnish has no passive ejection, hence no equivalent.
pub const MAX_EJECTION_PERCENT: u32 = 50;
/// An ejection caused by failures to reach the backend (refused, failed or
/// timed-out connects) lasts this long, fixed: a restarted backend is tried
/// again this soon, and a failed try costs one connect, retried elsewhere.
pub const UNREACHABLE_EJECTION: Duration = Duration::from_millis(500);
/// A backend backs off after its own `503` + `Retry-After` only when, over
/// this window, it gave at least [`RETRY_AFTER_MIN_ANSWERS`] answers and a
/// majority of them were `503` + `Retry-After`.
pub const RETRY_AFTER_WINDOW: Duration = Duration::from_secs(10);
/// See [`RETRY_AFTER_WINDOW`].
pub const RETRY_AFTER_MIN_ANSWERS: u32 = 5;
/// The cap of the doubling ejection time (Envoy's `max_ejection_time`, 300 s),
/// or `ejection_time` itself when that is larger.
pub const EJECTION_TIME_MAX: Duration = Duration::from_secs(300);

/// `probe.interval` (Varnish, 5 s): time between two probes of a backend.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// `probe.timeout` (Varnish, 2 s): a probe not answered within this failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// `probe.window` (Varnish, 8): how many recent probes are remembered.
pub const PROBE_WINDOW: u32 = 8;
/// The largest `probe.window` (Varnish's limit, 64: one bit per probe).
pub const PROBE_WINDOW_MAX: u32 = 64;
/// `probe.threshold` (Varnish, 3): healthy when at least this many of the
/// window succeeded.
pub const PROBE_THRESHOLD: u32 = 3;
/// `probe.expected_status` (Varnish, 200).
pub const PROBE_EXPECTED_STATUS: u16 = 200;
/// `probe.url` (Varnish, "/"), used when neither `url` nor `request` is set.
pub const PROBE_URL: &str = "/";
// `probe.initial` defaults to `threshold - 1` (Varnish): the backend starts
// sick and the first good probe makes it healthy.

/// `[retry] max_retries` (Varnish `max_retries`, 4).
pub const MAX_RETRIES: u32 = 4;
/// `[retry] backoff_base`: the sleep before retry n is random in
/// `[0, min(backoff_max, backoff_base × 2^n)]` (full jitter).
pub const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// `[retry] backoff_max`: the cap of that sleep.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// `[retry] budget_percent` (Linkerd's retry budget, 20 %): retries may add
/// at most this share to the backend requests of the last
/// [`RETRY_BUDGET_WINDOW`].
pub const BUDGET_PERCENT: u32 = 20;
/// The sliding window of the retry budget.
pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Retries per second always allowed, whatever the budget says (Linkerd's
/// `min_retries_per_second`, 10; ours is lower for small sites).
pub const RETRY_MIN_PER_SECOND: u32 = 3;
/// `[retry] retry_on`: which failures may be retried. Not
/// `first_byte_timeout`: that request reached the backend, which is still
/// working on it (Varnish and nginx do not resend it); enabled, it is
/// retried only on another backend, as a 5xx answer is.
pub const RETRY_ON: &[&str] = &["connect", "503", "502", "504"];
/// `[retry] deadline`: off. When set, the longest a client waits across
/// every attempt and backoff (Envoy's route timeout, 15 s by default there;
/// here each attempt's own timeouts are the only bound unless one is set).
pub const RETRY_DEADLINE: Option<Duration> = None;
/// A backend's own `Retry-After` is honoured up to this long.
pub const BACKEND_RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// `[[rule]] redirect.status` when not given: 302, temporary, since a
/// browser keeps a 301 forever and a mistake in `location` should not be.
pub const RULE_REDIRECT_STATUS: u16 = 302;

/// `[[rule]] respond.status` when not given.
pub const RULE_RESPOND_STATUS: u16 = 200;

/// `[[rule]] respond.content_type` when not given.
pub const RULE_RESPOND_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// `[[route]] priority`: order in a backend's queue, 0 (last) to 9 (first).
pub const ROUTE_PRIORITY: u8 = 5;
/// The highest route priority.
pub const ROUTE_PRIORITY_MAX: u8 = 9;
/// `[server] send_timeout` (Varnish `send_timeout`, 600 s): a write to a
/// client that has made no progress for this long fails and the connection
/// is closed, so a client that never reads cannot hold a response (and the
/// backend connection feeding it) forever.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(600);
/// `[server] workers` (nginx `worker_processes auto`): 0, one runtime
/// worker thread per CPU the process may run on when it starts.
pub const WORKERS: usize = 0;
/// `[server] max_connections` (nginx `worker_connections`; Varnish has no
/// direct equivalent): the most client connections served at once. 0 means
/// no cap. Over the cap, a connection is accepted, answered with a 503 and
/// closed.
pub const CLIENT_MAX_CONNECTIONS: usize = 0;
/// `[server] max_request_body` (nginx `client_max_body_size`, here 100 MiB):
/// the largest request body forwarded; larger ones get 413.
pub const MAX_REQUEST_BODY: u64 = 100 * 1024 * 1024;

/// `[cache.l2] prefix`: put before every Redis key and the fan-out channel
/// name, so several Shellac clusters (or other programs) can share a Redis.
pub const L2_PREFIX: &str = "shellac:";
/// `[cache.l2] timeout`: the longest an L2 lookup may delay a miss before
/// Shellac gives up on it and fetches from the backend.
pub const L2_TIMEOUT: Duration = Duration::from_millis(50);
/// `[cache.l2] max_object_size`: larger objects stay in this node's memory
/// only (each L2 read of them would cost the network more than it saves).
pub const L2_MAX_OBJECT_SIZE: u64 = 1024 * 1024;
/// After an L2 error or timeout, L2 is skipped this long; then one trial
/// request decides whether it is used again (the circuit breaker).
pub const L2_BREAKER_OPEN: Duration = Duration::from_secs(5);
/// The longest pause between two attempts to (re)connect the fan-out
/// subscription; the pause doubles from 100 ms up to this.
pub const L2_RECONNECT_MAX: Duration = Duration::from_secs(5);
/// `[cluster]`: connecting to a peer must succeed within this, or the
/// request goes to the next peer on the ring (peers are on one network).
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// `[cluster]`: a peer is ejected after this many failed fetches in a row
/// (its keys move to the next peer on the ring until it answers again).
pub const PEER_CONSECUTIVE_FAILURES: u32 = 2;

/// `[compression] gzip_support` (Varnish `http_gzip_support`, on): the
/// backend is asked for gzip, compressible answers are stored gzipped and
/// decoded for the clients that cannot take gzip.
pub const GZIP_SUPPORT: bool = true;
/// `[compression] brotli` (on): clients that accept `br` get it, made once
/// per stored object.
pub const BROTLI: bool = true;
/// `[compression] types`: the media types worth compressing (images,
/// video, archives and fonts other than SVG are compressed already).
pub const COMPRESSIBLE_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
];
/// `[compression] min_size` (1 KiB): below it, gzip's header and trailer
/// eat most of the saving.
pub const COMPRESSION_MIN_SIZE: u64 = 1024;
/// `[compression] gzip_level` (Varnish `gzip_level`, 6): zlib's default
/// trade of CPU for size.
pub const GZIP_LEVEL: u32 = 6;
/// `[esi] max_depth` (Varnish `max_esi_depth`, 5): how deep includes nest.
pub const ESI_MAX_DEPTH: u32 = 5;
/// `[esi] types`: the responses parsed for ESI (when a rule or the
/// backend's `Surrogate-Control` asks for it).
pub const ESI_TYPES: &[&str] = &["text/html"];
/// The brotli quality of the `br` copy made beside a stored gzip object
/// (not configurable): 5 is about gzip -9's size at a fraction of the
/// CPU of quality 11, and it is paid once per object, not per hit.
pub const BROTLI_QUALITY: u32 = 5;
