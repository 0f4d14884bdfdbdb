//! Several Shellac nodes sharing a Redis second tier (`[cache.l2]`) and
//! invalidation fan-out, against a real `redis-server` the tests start
//! themselves (tests/support/redis.rs).

mod support;

use support::redis::RedisServer;

#[tokio::test]
async fn the_test_redis_answers() {
    let Some(redis) = RedisServer::start("the_test_redis_answers") else {
        return;
    };
    let mut conn = redis.connection().await;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
}
