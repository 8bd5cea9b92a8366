//! The LLM token budget of a `scope: global` integration (`llm.tokensPerMinute`), kept in
//! Redis like the request bucket: one token bucket for every pod, refilled on Redis's clock,
//! that admits a request's estimate and is corrected by its real usage afterwards (the level
//! may go below zero: a debt every pod then waits out).

use std::time::Duration;

use redis::{aio::ConnectionManager, Script};

use super::backend::REDIS_TIMEOUT;

/// KEYS[1]: the bucket (`level` and `at`, µs). ARGV: capacity, tokens per second, op (`take`
/// or `adjust`), amount. `take`: takes `amount` when the level allows, else says how long
/// until it will (µs). `adjust`: adds `amount` (negative: takes), capped at the capacity.
/// Returns {1, 0} when done, {0, wait µs} when a take must wait.
const LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 1000000
local amount = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or cap
local at = tonumber(state[2]) or now
level = math.min(cap, level + math.max(0, now - at) * rate)
local done = 1
local wait = 0
if ARGV[3] == 'take' then
  if level >= amount then
    level = level - amount
  else
    done = 0
    wait = math.ceil((amount - level) / rate)
  end
else
  level = math.min(cap, level + amount)
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate / 1000) + 60000)
return {done, wait}
"#;

/// The integration's token bucket in Redis.
#[derive(Clone)]
pub struct RedisTokens {
    conn: ConnectionManager,
    script: std::sync::Arc<Script>,
    key: String,
    /// The whole integration's tokens per minute (not a pod's share).
    per_minute: f64,
}

impl RedisTokens {
    pub fn new(conn: ConnectionManager, key_prefix: &str, per_minute: u32) -> Self {
        Self {
            conn,
            script: std::sync::Arc::new(Script::new(LUA)),
            key: format!("{key_prefix}:tokens"),
            per_minute: f64::from(per_minute),
        }
    }

    /// An estimate as taken from the whole bucket (at most a minute's tokens, so a request
    /// larger than the budget still goes when the bucket is full).
    pub fn capped(&self, estimate: u64) -> f64 {
        (estimate as f64).min(self.per_minute)
    }

    /// Takes `want` tokens: `Ok(None)` when taken, `Ok(Some(wait))` when the bucket needs that
    /// long, `Err` when Redis did not answer in time (the caller falls back).
    pub async fn take(&self, want: f64) -> Result<Option<Duration>, ()> {
        let (done, wait) = self.call("take", want).await?;
        Ok((done == 0).then(|| Duration::from_micros(u64::try_from(wait).unwrap_or(0))))
    }

    /// Gives back (`delta` > 0) or takes (`delta` < 0) tokens, in the background: a settlement
    /// never delays an answer. A settlement Redis misses is lost (logged).
    pub fn adjust(&self, delta: f64) {
        let this = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if this.call("adjust", delta).await.is_err() {
                    tracing::debug!("token budget: a settlement did not reach Redis");
                }
            });
        }
    }

    async fn call(&self, op: &str, amount: f64) -> Result<(i64, i64), ()> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(&self.key);
        invocation
            .arg(self.per_minute)
            .arg(self.per_minute / 60.0)
            .arg(op)
            .arg(amount);
        let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(r)) => Ok(r),
            _ => Err(()),
        }
    }
}
