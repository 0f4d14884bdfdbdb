//! The second tier (`[cache.l2]`): a Redis or Valkey (standalone, or a
//! Redis Cluster) that every node shares, so that an object fetched by one
//! node is a hit for the others, and the channel that carries
//! invalidations between nodes ([`fanout`]).
//!
//! The rule is that L2 may make Shellac faster, never slower or less
//! available: every lookup is bounded by `timeout`; any error, timeout or
//! unreadable record is a miss, counted in metrics; after a failure the
//! [`breaker::Breaker`] skips L2 for [`L2_BREAKER_OPEN`] and then tries one
//! request. Writes, deletes and publishes run in spawned tasks and never
//! delay a response.
//!
//! The client is the `redis` crate: its `ConnectionManager` (standalone,
//! reconnects by itself) or its async `ClusterConnection`. Until the first
//! connection succeeds (Redis down at start), a task keeps trying with
//! backoff and L2 counts as skipped.

pub mod breaker;
pub mod codec;
pub mod fanout;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

use super::ban::BanMatcher;
use super::key::CacheKey;
use super::object::CachedObject;
use crate::config::defaults::{L2_BREAKER_OPEN, L2_RECONNECT_MAX};
use crate::config::{L2Config, L2Endpoint};
use crate::metrics::L2Metrics;
use breaker::Breaker;
use codec::Decoded;

/// How long bans are remembered for L2 objects at least (objects stored in
/// L2 before a ban must not come back through another node's miss). Longer
/// when objects with longer lifetimes were seen.
const BAN_MEMORY_MIN: Duration = Duration::from_secs(24 * 3600);
/// The most bans remembered for L2; the oldest go first.
const BAN_MEMORY_MAX: usize = 10_000;
/// Background operations (writes, deletes, publishes) get at least this
/// long: they delay no client.
const BACKGROUND_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// Why an L2 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// No answer within the limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Not connected (yet), or the connection broke.
    #[error("connection: {0}")]
    Connection(String),
    /// Redis answered with an error.
    #[error("server: {0}")]
    Server(String),
}

impl L2Error {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            L2Error::Timeout(_) => "timeout",
            L2Error::Connection(_) => "connection",
            L2Error::Server(_) => "server",
        }
    }

    fn from_redis(error: redis::RedisError) -> L2Error {
        if error.is_timeout() {
            L2Error::Timeout(Duration::ZERO)
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
        {
            L2Error::Connection(error.to_string())
        } else {
            L2Error::Server(error.to_string())
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The second-tier client of one node.
pub struct L2 {
    config: L2Config,
    node_id: u64,
    conn: OnceLock<Conn>,
    breaker: Breaker,
    metrics: L2Metrics,
    /// Bans (unix ms, matcher) that L2 objects stored before them must pass.
    bans: Mutex<Vec<(u64, BanMatcher)>>,
    /// The longest object lifetime seen, ms (how long bans must be remembered).
    longest_ms: std::sync::atomic::AtomicU64,
}

impl L2 {
    /// A client for `config`; nothing connects until [`L2::start`].
    pub fn new(config: L2Config, node_id: u64, metrics: L2Metrics) -> Arc<L2> {
        Arc::new(L2 {
            breaker: Breaker::new(L2_BREAKER_OPEN, metrics.breaker_open.clone()),
            config,
            node_id,
            conn: OnceLock::new(),
            metrics,
            bans: Mutex::new(Vec::new()),
            longest_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This node's id in fan-out messages (random per process).
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The configuration it runs on.
    pub fn config(&self) -> &L2Config {
        &self.config
    }

    /// The metric handles.
    pub fn metrics(&self) -> &L2Metrics {
        &self.metrics
    }

    /// The Redis key of a cache key.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.config.prefix, key.as_str())
    }

    /// The fan-out channel.
    pub fn channel(&self) -> String {
        format!("{}invalidate", self.config.prefix)
    }

    /// Whether lookups are being skipped (breaker open or not connected).
    pub fn is_skipping(&self) -> bool {
        self.conn.get().is_none() || self.breaker.is_open()
    }

    /// Connects in the background, retrying with backoff until it works;
    /// afterwards the connection reconnects by itself.
    pub fn connect_in_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let l2 = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            let mut logged = false;
            loop {
                match l2.connect().await {
                    // Reads start only once the bans made before this
                    // node started are known (they hide older L2 objects).
                    Ok(conn) => match l2.load_bans(conn.clone()).await {
                        Ok(bans) => {
                            let _ = l2.conn.set(conn);
                            tracing::info!(url = %l2.config.url, bans, "L2 connected");
                            return;
                        }
                        Err(error) => {
                            l2.metrics.error(error.kind());
                            if !logged {
                                tracing::warn!(%error, "cannot read the bans from L2; retrying");
                                logged = true;
                            }
                        }
                    },
                    Err(error) => {
                        l2.metrics.error("connection");
                        if !logged {
                            tracing::warn!(url = %l2.config.url, %error, "cannot connect to L2; serving without it and retrying");
                            logged = true;
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(L2_RECONNECT_MAX);
            }
        })
    }

    async fn connect(&self) -> Result<Conn, L2Error> {
        let limit = self.background_timeout();
        let attempt = async {
            match &self.config.endpoint {
                L2Endpoint::Standalone(url) => {
                    let client = redis::Client::open(url.as_str()).map_err(L2Error::from_redis)?;
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(limit)
                        .set_response_timeout(limit)
                        .set_number_of_retries(2)
                        .set_max_delay(L2_RECONNECT_MAX.as_millis() as u64);
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map(Conn::Single)
                        .map_err(L2Error::from_redis)
                }
                L2Endpoint::Cluster(seeds) => redis::cluster::ClusterClient::builder(seeds.clone())
                    .connection_timeout(limit)
                    .response_timeout(limit)
                    .retries(2)
                    .build()
                    .map_err(L2Error::from_redis)?
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
                    .map_err(L2Error::from_redis),
            }
        };
        tokio::time::timeout(limit * 4, attempt)
            .await
            .map_err(|_| L2Error::Timeout(limit * 4))?
    }

    fn background_timeout(&self) -> Duration {
        self.config.timeout.max(BACKGROUND_TIMEOUT_MIN)
    }

    /// Runs `cmd` within `limit`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        limit: Duration,
    ) -> Result<T, L2Error> {
        let Some(conn) = self.conn.get().cloned() else {
            return Err(L2Error::Connection("not connected yet".into()));
        };
        run_on(conn, cmd, limit).await
    }

    fn failed(&self, op: &'static str, error: &L2Error) {
        self.metrics.error(error.kind());
        if self.breaker.failure() {
            tracing::warn!(op, %error, url = %self.config.url, "L2 failed: skipping it for {L2_BREAKER_OPEN:?}, then one trial");
        }
    }

    /// The raw record under `key`, within `timeout`; `None` on a miss, an
    /// error, or while the breaker is open.
    pub async fn get(&self, key: &CacheKey) -> Option<Bytes> {
        if self.conn.get().is_none() || !self.breaker.allow() {
            self.metrics.skipped.inc();
            return None;
        }
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.redis_key(key));
        match self.run::<Option<Vec<u8>>>(&cmd, self.config.timeout).await {
            Ok(found) => {
                self.breaker.success();
                if found.is_none() {
                    self.metrics.misses.inc();
                }
                found.map(Bytes::from)
            }
            Err(error) => {
                self.failed("get", &error);
                None
            }
        }
    }

    /// Decodes a record read for `key`; unreadable records count as decode
    /// errors, banned ones as misses.
    pub fn decode(&self, key: &CacheKey, bytes: Bytes) -> Option<Decoded> {
        match codec::decode(bytes, Instant::now(), SystemTime::now()) {
            Ok(decoded) => {
                if self.banned(key, &decoded) {
                    self.metrics.misses.inc();
                    return None;
                }
                self.saw_lifetime(&decoded.object);
                Some(decoded)
            }
            Err(error) => {
                self.metrics.error("decode");
                tracing::warn!(key = key.as_str(), %error, "ignoring an unreadable L2 record");
                None
            }
        }
    }

    /// Writes `object` in the background with the rest of its lifetime as
    /// expiry, unless it is larger than `max_object_size` or L2 is skipped.
    pub fn store(self: &Arc<Self>, key: &CacheKey, object: Arc<CachedObject>, vary: Vec<String>) {
        if self.is_skipping() || object.body.len() as u64 > self.config.max_object_size {
            return;
        }
        let now = Instant::now();
        let left =
            object.lifetimes.ttl.saturating_sub(object.age(now)) + object.lifetimes.retention();
        let px = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        if px == 0 {
            return;
        }
        self.saw_lifetime(&object);
        let l2 = self.clone();
        let redis_key = self.redis_key(key);
        spawn(async move {
            let record = codec::encode(&object, &vary, now, SystemTime::now());
            if record.len() as u64 > l2.config.max_object_size {
                return;
            }
            if !l2.breaker.allow() {
                return;
            }
            let mut cmd = redis::cmd("SET");
            cmd.arg(&redis_key).arg(record).arg("PX").arg(px);
            match l2.run::<()>(&cmd, l2.background_timeout()).await {
                Ok(()) => {
                    l2.breaker.success();
                    l2.metrics.writes.inc();
                }
                Err(error) => l2.failed("set", &error),
            }
        });
    }

    /// Deletes `key` from L2 in the background (PURGE and writes).
    pub fn delete(self: &Arc<Self>, key: &CacheKey) {
        let l2 = self.clone();
        let redis_key = self.redis_key(key);
        spawn(async move {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(&redis_key);
            if let Err(error) = l2.run::<i64>(&cmd, l2.background_timeout()).await {
                l2.metrics.error(error.kind());
                tracing::warn!(key = %redis_key, %error, "could not delete an L2 key");
            }
        });
    }

    /// Publishes `payload` on the fan-out channel in the background.
    fn publish(self: &Arc<Self>, payload: String) {
        let l2 = self.clone();
        spawn(async move {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(l2.channel()).arg(&payload);
            match l2.run::<i64>(&cmd, l2.background_timeout()).await {
                Ok(_) => {
                    l2.metrics.invalidations_sent.inc();
                }
                Err(error) => {
                    l2.metrics.error(error.kind());
                    tracing::warn!(%error, "could not publish an invalidation: other nodes keep their copies until they expire");
                }
            }
        });
    }

    /// Remembers a ban (made at `at_ms`) for objects read from L2 later.
    pub fn remember_ban(&self, at_ms: u64, matcher: BanMatcher) {
        let horizon = self.ban_horizon_ms();
        let now = codec::unix_ms(SystemTime::now());
        let mut bans = self.bans.lock().unwrap_or_else(|p| p.into_inner());
        bans.retain(|(at, _)| at.saturating_add(horizon) > now);
        // The same ban arrives twice when a node reloads the list it is on.
        let same = format!("{matcher:?}");
        if bans
            .iter()
            .any(|(at, m)| *at == at_ms && format!("{m:?}") == same)
        {
            return;
        }
        if bans.len() >= BAN_MEMORY_MAX {
            tracing::warn!(
                "more than {BAN_MEMORY_MAX} recent bans: forgetting the oldest for L2 objects"
            );
            bans.remove(0);
        }
        bans.push((at_ms, matcher));
    }

    /// How long bans matter for L2 objects, ms.
    fn ban_horizon_ms(&self) -> u64 {
        self.longest_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(BAN_MEMORY_MIN.as_millis() as u64)
    }

    fn banned(&self, key: &CacheKey, decoded: &Decoded) -> bool {
        let bans = self.bans.lock().unwrap_or_else(|p| p.into_inner());
        bans.iter().any(|(at, matcher)| {
            *at > decoded.stored_unix_ms && matcher.matches(key, &decoded.object)
        })
    }

    fn saw_lifetime(&self, object: &CachedObject) {
        let total = object.lifetimes.ttl + object.lifetimes.retention();
        let ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX);
        self.longest_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Spawns on the current runtime; does nothing outside one (unit tests of
/// the cache without a runtime).
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
    }
}

/// Runs `cmd` on `conn` within `limit`.
async fn run_on<T: redis::FromRedisValue>(
    conn: Conn,
    cmd: &redis::Cmd,
    limit: Duration,
) -> Result<T, L2Error> {
    let query = async move {
        match conn {
            Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
        }
    };
    match tokio::time::timeout(limit, query).await {
        Err(_) => Err(L2Error::Timeout(limit)),
        Ok(Err(error)) => Err(match L2Error::from_redis(error) {
            L2Error::Timeout(_) => L2Error::Timeout(limit),
            other => other,
        }),
        Ok(Ok(value)) => Ok(value),
    }
}
