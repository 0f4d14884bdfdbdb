//! Every default in one place, named after the Varnish parameter it mirrors
//! where Varnish has one. `docs/configuration.md` documents the same values;
//! change both together.

use std::time::Duration;

/// `[server] listen`: Varnish's default client port.
pub const LISTEN: &str = "127.0.0.1:6081";
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

/// `[defaults] connect_timeout` (Varnish, 3.5 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3500);
/// `[defaults] first_byte_timeout` (Varnish, 60 s): request sent → response head.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// `[defaults] between_bytes_timeout` (Varnish, 60 s): the longest pause
/// between two pieces of a backend response body.
pub const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(60);
/// `[defaults] http_resp_hdr_len` (Varnish, 8 KiB): the longest backend
/// response header line.
pub const HTTP_RESP_HDR_LEN: u64 = 8 * 1024;
/// `[defaults] http_resp_size` (Varnish, 32 KiB): the largest whole backend
/// response head.
pub const HTTP_RESP_SIZE: u64 = 32 * 1024;
/// `[defaults] backend_idle_timeout` (Varnish `backend_idle_timeout`, 60 s):
/// an unused pooled backend connection is closed after this.
pub const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pool every backend joins when the file declares no `[[pool]]`, and
/// the pool requests go to when no `[[route]]` matches.
pub const POOL_NAME: &str = "default";
/// Where `shellac` looks for its configuration when `--config` is not given.
pub const CONFIG_PATH: &str = "config/shellac.toml";

/// `[server] send_timeout` (Varnish `send_timeout`, 600 s): a write to a
/// client that has made no progress for this long fails and the connection
/// is closed, so a client that never reads cannot hold a response (and the
/// backend connection feeding it) forever.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(600);
/// `[server] max_connections` (nginx `worker_connections`; Varnish has no
/// direct equivalent): the most client connections served at once. 0 means
/// no cap. Over the cap, a connection is accepted, answered with a 503 and
/// closed.
pub const MAX_CONNECTIONS: usize = 0;
/// `[server] max_request_body` (nginx `client_max_body_size`, here 100 MiB):
/// the largest request body forwarded; larger ones get 413.
pub const MAX_REQUEST_BODY: u64 = 100 * 1024 * 1024;
