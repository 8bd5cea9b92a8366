//! The one Lua script every sidecar runs on Redis: GCRA over a lease of tokens, and the quota
//! counter, read and written atomically with Redis's own clock (`TIME`), so pods whose clocks
//! disagree still share one exact bucket.
//!
//! GCRA keeps one number per bucket, the theoretical arrival time (TAT, microseconds): a
//! request may go at `now` when `TAT - now <= (burst - 1) × interval`, and each token taken
//! moves TAT on by one `interval`. Asking for `want` tokens grants as many as fit now (maybe
//! fewer), so a pod never holds more than it asked for.

use std::time::Duration;

use redis::{aio::ConnectionManager, Script};

/// KEYS[1]: the bucket's TAT. KEYS[2]: the quota counter's prefix (`:WINDOW` is appended; the
/// window number comes from Redis's clock, so it cannot be a declared key: fine on one server
/// or a replicated pair, and the hash tag keeps it on the bucket's node in a cluster).
/// ARGV: interval (µs), burst, want, quota requests (0: none), quota window (s), debt (requests
/// sent while Redis was away, charged to the quota now).
/// Returns {granted, wait µs (when none granted), quota left (-1: none), µs to the next window}.
const LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local qlimit = tonumber(ARGV[4])
local qper = tonumber(ARGV[5])
local debt = tonumber(ARGV[6])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local free = math.floor((now + burst * interval - tat) / interval)
local grant = math.max(0, math.min(want, free))
local qleft = -1
local qreset = 0
if qlimit > 0 then
  local window = math.floor(tonumber(t[1]) / qper)
  local qkey = KEYS[2] .. ':' .. string.format('%d', window)
  local used = tonumber(redis.call('GET', qkey) or '0') + debt
  qleft = math.max(0, qlimit - used)
  grant = math.min(grant, qleft)
  used = used + grant
  qleft = qleft - grant
  if used > 0 then
    redis.call('SET', qkey, string.format('%d', used), 'EX', qper + 3600)
  end
  qreset = (window + 1) * qper * 1000000 - now
end
local wait = 0
if grant > 0 then
  tat = tat + grant * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
elseif qleft ~= 0 then
  wait = math.max(0, tat - (burst - 1) * interval - now)
end
return {grant, wait, qleft, qreset}
"#;

/// What the bucket and the quota are (fixed for an integration's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub bucket_key: String,
    pub quota_key: String,
    pub interval_us: u64,
    pub burst: u32,
    /// (requests, window seconds)
    pub quota: Option<(u32, u64)>,
}

/// Redis's answer to one ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u32,
    /// When nothing was granted by the rate: how long until one token is free.
    pub wait: Duration,
    /// Quota left after this grant (None without a quota).
    pub quota_left: Option<u64>,
    /// Time to the next quota window.
    pub quota_reset: Duration,
}

impl Grant {
    pub fn quota_exhausted(&self) -> bool {
        self.granted == 0 && self.quota_left == Some(0)
    }
}

/// The script, hashed once; `invoke_async` sends EVALSHA and, when Redis does not know the
/// script yet (restarted, flushed), loads it and retries.
pub struct GcraScript(Script);

impl Default for GcraScript {
    fn default() -> Self {
        Self(Script::new(LUA))
    }
}

impl GcraScript {
    pub async fn ask(
        &self,
        conn: &mut ConnectionManager,
        bucket: &Bucket,
        want: u32,
        debt: u64,
    ) -> redis::RedisResult<Grant> {
        let (quota, per) = bucket.quota.unwrap_or((0, 1));
        let (granted, wait, left, reset): (i64, i64, i64, i64) = self
            .0
            .key(&bucket.bucket_key)
            .key(&bucket.quota_key)
            .arg(bucket.interval_us)
            .arg(bucket.burst)
            .arg(want)
            .arg(quota)
            .arg(per)
            .arg(debt)
            .invoke_async(conn)
            .await?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Grant {
            granted: u32::try_from(granted).unwrap_or(0),
            wait: micros(wait),
            quota_left: u64::try_from(left).ok(),
            quota_reset: micros(reset),
        })
    }
}
