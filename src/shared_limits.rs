//! The fleet's rate-limit counters in Redis, leased out in blocks.
//!
//! A replica does not ask Redis about every request. It leases a block of
//! a limit's current minute (requests or tokens) or of its parallel slots,
//! admits requests from the block on its own thread, and gives back what it
//! did not use. Redis only ever hands out what fits under the limit, so the
//! fleet never admits more than the limit; what a block costs is that other
//! replicas may be refused while this one holds unused quota, which is why
//! blocks shrink as the limit nears exhaustion (at most the room left
//! divided among twice the live replicas) and surplus goes back within a
//! fraction of a second.
//!
//! Keys: `{prefix}:{rl:<scope>}:<kind>:<window>` — every key of one scope
//! shares a hash tag, so each script touches one Redis Cluster slot.

use std::time::Duration;

use crate::shared::Redis;

/// Leases up to `block` (at least `need`) of a per-minute limit for the
/// current window. KEYS: current window, previous window. ARGV: limit,
/// need, block, fraction of the window gone, ttl (ms), live replicas.
/// Returns {granted, prev, cur}: granted is 0 when `need` does not fit.
const LEASE_WINDOW: &str = r#"
local limit, need, block = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local into, replicas = tonumber(ARGV[4]), math.max(1, tonumber(ARGV[6]))
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local room = math.floor(limit - prev * (1 - into) - cur)
if room < need then
  return {0, prev, cur}
end
local grant = math.min(room, math.max(need, math.min(block, math.floor(room / (2 * replicas)))))
redis.call('INCRBY', KEYS[1], grant)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {grant, prev, cur + grant}
"#;

/// Adds `delta` (negative: quota given back) to a window that still
/// exists. KEYS: the window. ARGV: delta.
const ADJUST_WINDOW: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
end
return 0
"#;

/// Leases `want` parallel slots. KEYS: slots held per replica, their lease
/// ends. ARGV: replica, want, limit, now (ms), lease end (ms), ttl (ms).
/// Slots of replicas whose lease ended (they died) are dropped first.
/// Grants what fits, up to `want`. Returns {granted, held by the fleet}.
const LEASE_SLOTS: &str = r#"
local now = tonumber(ARGV[4])
local ends = redis.call('HGETALL', KEYS[2])
for i = 1, #ends, 2 do
  if tonumber(ends[i + 1]) < now then
    redis.call('HDEL', KEYS[1], ends[i])
    redis.call('HDEL', KEYS[2], ends[i])
  end
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  total = total + tonumber(v)
end
local want = math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - total)
if want < 1 then
  return {0, total}
end
redis.call('HINCRBY', KEYS[1], ARGV[1], want)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return {want, total + want}
"#;

/// Gives `n` slots back. KEYS as for leasing. ARGV: replica, n.
const RETURN_SLOTS: &str = r#"
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return left
"#;

/// Extends this replica's slot lease where it holds slots. KEYS as for
/// leasing. ARGV: replica, lease end (ms), ttl (ms).
const RENEW_SLOTS: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 0
"#;

/// How long a window's counter outlives its minute: it is the previous
/// window for one more minute.
const WINDOW_TTL_MS: i64 = 150_000;

/// What Redis said to a window lease.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowLease {
    pub granted: u64,
    /// The previous and current window's fleet totals, after the grant.
    pub prev: u64,
    pub cur: u64,
}

pub struct SharedLimits {
    redis: Redis,
    /// This process, in the fleet's slot tables.
    replica: String,
    lease_window: redis::Script,
    adjust_window: redis::Script,
    lease_slots: redis::Script,
    return_slots: redis::Script,
}

impl SharedLimits {
    pub fn new(redis: Redis) -> SharedLimits {
        SharedLimits {
            redis,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            lease_window: redis::Script::new(LEASE_WINDOW),
            adjust_window: redis::Script::new(ADJUST_WINDOW),
            lease_slots: redis::Script::new(LEASE_SLOTS),
            return_slots: redis::Script::new(RETURN_SLOTS),
        }
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    fn window_key(&self, scope: &str, kind: &str, window: i64) -> String {
        format!("{}:{{rl:{scope}}}:{kind}:{window}", self.redis.prefix)
    }

    fn slot_keys(&self, scope: &str) -> (String, String) {
        let base = format!("{}:{{rl:{scope}}}:slots", self.redis.prefix);
        (base.clone(), format!("{base}:ends"))
    }

    fn replicas_key(&self) -> String {
        format!("{}:rl:replicas", self.redis.prefix)
    }

    /// Leases at least `need`, up to `block`, of `kind` ("rpm"/"tpm") in
    /// `window` of `scope`, under `limit`.
    #[allow(clippy::too_many_arguments)]
    pub async fn lease_window(
        &self,
        scope: &str,
        kind: &str,
        window: i64,
        now_ms: i64,
        limit: u64,
        need: u64,
        block: u64,
        replicas: u64,
    ) -> Result<WindowLease, String> {
        let into = (now_ms - window) as f64 / crate::window::WINDOW_MS as f64;
        let mut invocation = self.lease_window.prepare_invoke();
        invocation
            .key(self.window_key(scope, kind, window))
            .key(self.window_key(scope, kind, window - crate::window::WINDOW_MS))
            .arg(limit)
            .arg(need)
            .arg(block.max(need))
            .arg(format!("{into:.6}"))
            .arg(WINDOW_TTL_MS)
            .arg(replicas);
        // An admission waits on a slow Redis rather than fall back to this
        // replica's share and let replicas overshoot together.
        let (granted, prev, cur): (i64, i64, i64) = self
            .redis
            .run_within(
                self.redis.timeout().max(crate::shared::LEDGER_TIMEOUT),
                true,
                |mut c| async move { invocation.invoke_async(&mut *c).await },
            )
            .await?;
        Ok(WindowLease {
            granted: granted.max(0) as u64,
            prev: prev.max(0) as u64,
            cur: cur.max(0) as u64,
        })
    }

    /// Corrects `window` of `scope` by `delta`: unused quota given back
    /// (negative) or usage beyond what was leased (positive).
    pub async fn adjust_window(
        &self,
        scope: &str,
        kind: &str,
        window: i64,
        delta: i64,
    ) -> Result<(), String> {
        if delta == 0 {
            return Ok(());
        }
        let mut invocation = self.adjust_window.prepare_invoke();
        invocation
            .key(self.window_key(scope, kind, window))
            .arg(delta);
        self.redis
            .run(true, |mut c| async move {
                invocation.invoke_async::<i64>(&mut *c).await
            })
            .await
            .map(|_| ())
    }

    /// Leases up to `want` parallel slots of `scope` under `limit`; returns
    /// how many were granted and how many the fleet holds.
    pub async fn lease_slots(
        &self,
        scope: &str,
        want: u64,
        limit: u64,
        lease: Duration,
    ) -> Result<(u64, u64), String> {
        let (held, ends) = self.slot_keys(scope);
        let now = crate::store::now_ms();
        let mut invocation = self.lease_slots.prepare_invoke();
        invocation
            .key(held)
            .key(ends)
            .arg(&self.replica)
            .arg(want)
            .arg(limit)
            .arg(now)
            .arg(now + lease.as_millis() as i64)
            .arg(2 * lease.as_millis() as i64);
        let (granted, total): (i64, i64) = self
            .redis
            .run_within(
                self.redis.timeout().max(crate::shared::LEDGER_TIMEOUT),
                true,
                |mut c| async move { invocation.invoke_async(&mut *c).await },
            )
            .await?;
        Ok((granted.max(0) as u64, total.max(0) as u64))
    }

    pub async fn return_slots(&self, scope: &str, n: u64) -> Result<(), String> {
        let (held, ends) = self.slot_keys(scope);
        let mut invocation = self.return_slots.prepare_invoke();
        invocation.key(held).key(ends).arg(&self.replica).arg(n);
        self.redis
            .run(true, |mut c| async move {
                invocation.invoke_async::<i64>(&mut *c).await
            })
            .await
            .map(|_| ())
    }

    /// Keeps this replica's slots of `scopes` from expiring, and says the
    /// replica is alive; returns how many replicas are.
    pub async fn heartbeat(&self, scopes: &[String], lease: Duration) -> Result<u64, String> {
        let now = crate::store::now_ms();
        let end = now + lease.as_millis() as i64;
        let mut pipe = redis::pipe();
        let replicas = self.replicas_key();
        pipe.cmd("ZADD")
            .arg(&replicas)
            .arg(end)
            .arg(&self.replica)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&replicas)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&replicas)
            .arg(2 * lease.as_millis() as i64)
            .ignore()
            .cmd("ZCARD")
            .arg(&replicas);
        for scope in scopes {
            let (held, ends) = self.slot_keys(scope);
            pipe.cmd("EVAL")
                .arg(RENEW_SLOTS)
                .arg(2)
                .arg(held)
                .arg(ends)
                .arg(&self.replica)
                .arg(end)
                .arg(2 * lease.as_millis() as i64)
                .ignore();
        }
        let (live,): (u64,) = self
            .redis
            .run(true, |mut c| async move { pipe.query_async(&mut *c).await })
            .await?;
        Ok(live.max(1))
    }
}
