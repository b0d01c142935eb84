//! Redis, for what replicas share: a key cache in front of the database and
//! the invalidation channel that makes a revoked key die everywhere at once.
//!
//! Every Redis failure is survivable: each call is bounded by a short
//! timeout and fails fast while the breaker is open (the cache then falls
//! through to the database), and a lost subscription is re-established.
//!
//! **No write-back revives a revoked key.** Every invalidation bumps one
//! generation counter (atomically with deleting the entries and publishing
//! the change). A lookup reads the generation together with the entry; after
//! reading the database it writes its row back only if the generation is
//! still the one it saw (a Lua script checks and sets in one step). A
//! block/delete that lands between the database read and the write-back
//! therefore wins, on every replica. Authority flags (`is_master`) are
//! never part of what is stored.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bb8_redis::RedisConnectionManager;
use serde::{Deserialize, Serialize};

use crate::access::KeyInfo;
use crate::breaker::Breaker;

/// What changed, so caches can drop exactly the affected entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Invalidation {
    /// A key, by its hash (hex).
    Key(String),
    User(String),
    Team(String),
    /// An end user (customer), by id.
    Customer(String),
    /// An organization, by id (its teams' keys carry it).
    Org(String),
    /// The models added at run time changed: every replica reloads them.
    Models,
    /// Anything may have changed (messages were missed): every entry must
    /// be checked again before it is trusted, but may still be served if
    /// the database cannot be reached.
    All,
}

/// Least time a fleet-wide admission (budget reservation, rate-limit
/// lease) waits for Redis: a Redis that is merely slow is waited for; one
/// that does not answer in this long opens the breaker, and admissions fall
/// back to this replica's view at once until the probe sees it back.
pub(crate) const LEDGER_TIMEOUT: Duration = Duration::from_millis(1_000);

/// A shared cache lookup.
#[derive(Debug)]
pub enum Cached {
    Found(Box<KeyInfo>),
    /// Known not to exist (a negative entry another replica shared).
    Absent,
    /// Not cached; `generation` is the counter to write back against.
    Miss {
        generation: i64,
    },
}

/// Stored for a key that does not exist.
const ABSENT: &str = "absent";

/// Sets the entry only if no invalidation happened since the lookup read
/// the generation. KEYS: generation, entry. ARGV: generation seen, value,
/// ttl seconds. Returns 1 if written.
const WRITE_BACK: &str = r#"
local current = redis.call('GET', KEYS[1]) or '0'
if current == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"#;

/// Reserves a request's estimate against several budgets, all or
/// nothing. KEYS: per budget, its spent counter then its reservation set.
/// ARGV: n, now (ms), lease end (ms), member (`<id>:<estimate>`), then per
/// budget the database's spend and the budget (-1: none, track only).
/// Expired reservations (a replica that died mid-request) are dropped
/// first. Returns {0} when admitted, {i, spent} when budget i is reached.
const RESERVE_BUDGET: &str = r#"
local n = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
for i = 1, n do
  local spent_key, resv_key = KEYS[2 * i - 1], KEYS[2 * i]
  local db, max = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', resv_key, '-inf', now)
  local spent = tonumber(redis.call('GET', spent_key) or '0')
  if db > spent then
    spent = db
    redis.call('SET', spent_key, ARGV[3 + 2 * i], 'EX', 86400)
  end
  if max >= 0 then
    local reserved = 0
    for _, m in ipairs(redis.call('ZRANGE', resv_key, 0, -1)) do
      reserved = reserved + (tonumber(string.match(m, ':([^:]+)$')) or 0)
    end
    if spent + reserved >= max then
      return {i, tostring(spent)}
    end
  end
end
for i = 1, n do
  redis.call('ZADD', KEYS[2 * i], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[2 * i], 86400000)
end
return {0}
"#;

/// Turns a reservation into spend. KEYS as for reserve; ARGV: n, member,
/// actual cost.
const RELEASE_BUDGET: &str = r#"
local n = tonumber(ARGV[1])
for i = 1, n do
  redis.call('ZREM', KEYS[2 * i], ARGV[2])
  if tonumber(ARGV[3]) > 0 then
    redis.call('INCRBYFLOAT', KEYS[2 * i - 1], ARGV[3])
  end
  redis.call('EXPIRE', KEYS[2 * i - 1], 86400)
end
return 0
"#;

/// One budget as the shared ledger sees it.
pub struct SharedBudget<'a> {
    /// Entity kind and id, e.g. ("key", hash).
    pub kind: &'static str,
    pub id: &'a str,
    pub db_spend: f64,
    pub max_budget: Option<f64>,
}

#[derive(Clone)]
pub struct Redis {
    /// Replaced when a call times out: a connection that died silently
    /// would otherwise be handed out again and again (bb8 cannot discard
    /// one that still looks healthy).
    pool: Arc<RwLock<bb8::Pool<RedisConnectionManager>>>,
    pub url: String,
    pub prefix: String,
    breaker: Arc<Breaker>,
    timeout: Duration,
    write_back: Arc<redis::Script>,
    reserve_budget: Arc<redis::Script>,
    release_budget: Arc<redis::Script>,
}

impl Redis {
    /// Sets up the pool without connecting: a Redis that is down at start
    /// is an outage like any other (the breaker opens, the probe retries).
    pub fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
        breaker: Arc<Breaker>,
    ) -> Result<Redis, String> {
        let pool = Redis::pool(url, timeout, &breaker)?;
        Ok(Redis {
            pool: Arc::new(RwLock::new(pool)),
            url: url.to_string(),
            prefix: prefix.to_string(),
            breaker,
            timeout,
            write_back: Arc::new(redis::Script::new(WRITE_BACK)),
            reserve_budget: Arc::new(redis::Script::new(RESERVE_BUDGET)),
            release_budget: Arc::new(redis::Script::new(RELEASE_BUDGET)),
        })
    }

    fn pool(
        url: &str,
        timeout: Duration,
        breaker: &Arc<Breaker>,
    ) -> Result<bb8::Pool<RedisConnectionManager>, String> {
        let manager = RedisConnectionManager::new(url).map_err(|e| e.to_string())?;
        Ok(bb8::Pool::builder()
            .max_size(16)
            .min_idle(Some(0))
            .connection_timeout(timeout)
            .retry_connection(false)
            .error_sink(breaker.connect_errors())
            .build_unchecked(manager))
    }

    fn current_pool(&self) -> bb8::Pool<RedisConnectionManager> {
        match self.pool.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn reset_pool(&self) {
        let Ok(fresh) = Redis::pool(&self.url, self.timeout, &self.breaker) else {
            return;
        };
        match self.pool.write() {
            Ok(mut p) => *p = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        tracing::warn!("redis connections stopped answering: the pool was replaced");
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn channel(&self) -> String {
        format!("{}:invalidate", self.prefix)
    }

    fn key_entry(&self, hash_hex: &str) -> String {
        format!("{}:key:{hash_hex}", self.prefix)
    }

    fn generation_key(&self) -> String {
        format!("{}:keys:generation", self.prefix)
    }

    /// Runs `op` on a pooled connection within the timeout, through the
    /// breaker (bypassed only by the probe).
    pub(crate) async fn run<T, F, Fut>(&self, check_breaker: bool, op: F) -> Result<T, String>
    where
        F: FnOnce(bb8::PooledConnection<'static, RedisConnectionManager>) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        self.run_within(self.timeout, check_breaker, op).await
    }

    /// `run` with its own time limit.
    pub(crate) async fn run_within<T, F, Fut>(
        &self,
        timeout: Duration,
        check_breaker: bool,
        op: F,
    ) -> Result<T, String>
    where
        F: FnOnce(bb8::PooledConnection<'static, RedisConnectionManager>) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        if check_breaker && self.breaker.is_open() {
            return Err("redis is unreachable (probing it in the background)".into());
        }
        let pool = self.current_pool();
        let began = Instant::now();
        // Each error says whether Redis was out of reach, slow, or
        // answered with an error of its own.
        let attempt = async {
            let conn = pool.get_owned().await.map_err(|e| match e {
                bb8::RunError::TimedOut => (Fault::Slow, e.to_string()),
                bb8::RunError::User(e) => (fault(&e), e.to_string()),
            })?;
            op(conn).await.map_err(|e| (fault(&e), e.to_string()))
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err((
                Fault::Slow,
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        };
        // A wait for a connection that could not be opened: refused.
        let result = result.map_err(|(f, why)| match f {
            Fault::Slow => match self.breaker.connect_failed_since(began) {
                Some(refused) => (Fault::Unreachable, refused),
                None => (f, why),
            },
            _ => (f, why),
        });
        self.learn(&result);
        result.map_err(|(_, e)| e)
    }

    /// Tells the breaker. Connections that stopped answering look healthy
    /// to the pool, so a fresh pool starts when an outage begins and again
    /// when it ends.
    fn learn<T>(&self, result: &Result<T, (Fault, String)>) {
        let transition = match result {
            Err((Fault::Unreachable, e)) => self.breaker.failure(e),
            Err((Fault::Slow, e)) => self.breaker.timed_out(e),
            Ok(_) | Err((Fault::Answered, _)) => self.breaker.success(),
        };
        if transition {
            self.reset_pool();
        }
    }

    /// For the breaker's probe: PING through the pool while up; while down,
    /// through a new connection (the pool's may be stuck), bypassing the
    /// breaker.
    pub async fn ping(&self) -> Result<(), String> {
        if !self.breaker.is_open() {
            return self
                .run(false, |mut c| async move {
                    redis::cmd("PING").query_async::<String>(&mut *c).await
                })
                .await
                .map(|_| ());
        }
        let url = self.url.clone();
        let timeout = self.timeout.max(Duration::from_millis(500));
        let attempt = async move {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        // While down, any error keeps it down: only a PONG closes the breaker.
        self.learn(&result.clone().map_err(|e| (Fault::Unreachable, e)));
        result
    }

    /// The shared entry for a key and, on a miss, the generation to write
    /// back against — one round trip.
    pub async fn lookup_key(&self, hash_hex: &str) -> Result<Cached, String> {
        let (entry, generation) = (self.key_entry(hash_hex), self.generation_key());
        let (raw, gen): (Option<String>, Option<i64>) = self
            .run(true, |mut c| async move {
                redis::cmd("MGET")
                    .arg(entry)
                    .arg(generation)
                    .query_async(&mut *c)
                    .await
            })
            .await?;
        Ok(match raw.as_deref() {
            Some(ABSENT) => Cached::Absent,
            Some(json) => match serde_json::from_str::<KeyInfo>(json) {
                Ok(info) => Cached::Found(Box::new(info)),
                // Unreadable (an older format): treat as not cached.
                Err(_) => Cached::Miss {
                    generation: gen.unwrap_or(0),
                },
            },
            None => Cached::Miss {
                generation: gen.unwrap_or(0),
            },
        })
    }

    /// Shares what the database said about a key (`None`: no such key),
    /// unless an invalidation happened since `generation` was read.
    pub async fn remember_key(
        &self,
        hash_hex: &str,
        info: Option<&KeyInfo>,
        generation: i64,
        ttl: Duration,
    ) -> Result<bool, String> {
        let value = match info {
            Some(i) => serde_json::to_string(i).map_err(|e| e.to_string())?,
            None => ABSENT.to_string(),
        };
        let (entry, gen_key) = (self.key_entry(hash_hex), self.generation_key());
        let script = self.write_back.clone();
        self.run(true, |mut c| async move {
            script
                .key(gen_key)
                .key(entry)
                .arg(generation.to_string())
                .arg(value)
                .arg(ttl.as_secs().max(1))
                .invoke_async::<i64>(&mut *c)
                .await
        })
        .await
        .map(|written| written == 1)
    }

    /// Bumps the generation, drops the keys' shared entries and tells every
    /// replica — one atomic transaction.
    pub async fn invalidate(
        &self,
        what: &Invalidation,
        key_hashes: &[String],
    ) -> Result<(), String> {
        let payload = serde_json::to_string(what).map_err(|e| e.to_string())?;
        let entries: Vec<String> = key_hashes.iter().map(|h| self.key_entry(h)).collect();
        let (gen_key, channel) = (self.generation_key(), self.channel());
        self.run(true, |mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic().incr(gen_key, 1).ignore();
            if !entries.is_empty() {
                pipe.del(entries).ignore();
            }
            pipe.publish(channel, payload).ignore();
            pipe.query_async::<()>(&mut *c).await
        })
        .await
    }

    /// The budget ledger's keys for an entity. One hash tag for all of
    /// them: a reservation touches several entities atomically, which
    /// Redis Cluster allows only within one slot.
    fn budget_keys(&self, kind: &str, id: &str) -> (String, String) {
        let tag = format!("{{{}:budget}}", self.prefix);
        (
            format!("{tag}:spent:{kind}:{id}"),
            format!("{tag}:resv:{kind}:{id}"),
        )
    }

    /// Reserves `estimate` against every budget, all or nothing, fleet-wide.
    /// `Ok(None)`: admitted; `Ok(Some((i, spent)))`: budget `i` is reached.
    pub async fn reserve_budget(
        &self,
        budgets: &[SharedBudget<'_>],
        member: &str,
        lease: Duration,
    ) -> Result<Option<(usize, f64)>, String> {
        let script = self.reserve_budget.clone();
        let now = crate::store::now_ms();
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(budgets.len())
            .arg(now)
            .arg(now + lease.as_millis() as i64)
            .arg(member);
        for b in budgets {
            let (spent, resv) = self.budget_keys(b.kind, b.id);
            invocation.key(spent).key(resv);
            invocation
                .arg(b.db_spend.to_string())
                .arg(b.max_budget.map_or("-1".to_string(), |m| m.to_string()));
        }
        // A fleet-wide budget is only as good as this answer: a Redis that
        // is merely slow (a loaded machine) is waited for, longer than a
        // cache lookup would be, rather than falling back to this replica's
        // view and letting replicas overshoot together. A Redis known down
        // (breaker open) still falls back at once.
        let answer: Vec<String> = self
            .run_within(self.timeout.max(LEDGER_TIMEOUT), true, |mut c| async move {
                invocation.invoke_async(&mut *c).await
            })
            .await?;
        let index: usize = answer.first().and_then(|i| i.parse().ok()).unwrap_or(0);
        if index == 0 {
            return Ok(None);
        }
        let spent = answer.get(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
        Ok(Some((index - 1, spent)))
    }

    /// Replaces a reservation by the real cost.
    pub async fn release_budget(
        &self,
        entities: &[(&'static str, String)],
        member: &str,
        actual: f64,
    ) -> Result<(), String> {
        let mut invocation = self.release_budget.prepare_invoke();
        invocation
            .arg(entities.len())
            .arg(member)
            .arg(actual.to_string());
        for (kind, id) in entities {
            let (spent, resv) = self.budget_keys(kind, id);
            invocation.key(spent).key(resv);
        }
        self.run(true, |mut c| async move {
            invocation.invoke_async::<i64>(&mut *c).await
        })
        .await
        .map(|_| ())
    }

    /// Forgets an entity's shared spend (its budget period was reset).
    pub async fn forget_budget(&self, kind: &str, id: &str) -> Result<(), String> {
        let (spent, _) = self.budget_keys(kind, id);
        self.run(true, |mut c| async move {
            redis::cmd("DEL")
                .arg(spent)
                .query_async::<i64>(&mut *c)
                .await
        })
        .await
        .map(|_| ())
    }
}

/// Whether an error means Redis is out of reach — which opens the breaker
/// and moves every replica's limits to their local view — rather than an
/// answer from a server that is up (a script's error, a wrong type), which
/// says nothing about its availability: treating those as an outage would
/// flip the whole fleet to local counting over one bad reply.
/// What a failed Redis call says about Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Refused, broken, or not serving: down.
    Unreachable,
    /// No answer in time: down only if it goes on (`Breaker::timed_out`).
    Slow,
    /// Redis answered, with an error about the command: up.
    Answered,
}

fn fault(e: &redis::RedisError) -> Fault {
    use redis::{ErrorKind, ServerErrorKind};
    if e.is_timeout() {
        Fault::Slow
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
            ) | ErrorKind::AuthenticationFailed
        )
    {
        Fault::Unreachable
    } else {
        Fault::Answered
    }
}

#[cfg(test)]
mod reachability_tests {
    use super::{fault, Fault};
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    #[test]
    fn only_errors_of_reaching_redis_count_as_it_being_down_and_timeouts_as_slow() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let loading = RedisError::from((
            ErrorKind::Server(ServerErrorKind::BusyLoading),
            "LOADING Redis is loading the dataset in memory",
        ));
        for down in [&refused, &reset, &loading] {
            assert_eq!(fault(down), Fault::Unreachable, "{down}");
        }
        let slow = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(fault(&slow), Fault::Slow, "{slow}");
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR user_script:1: attempt to compare nil with number",
        ));
        let wrong_type = RedisError::from((ErrorKind::UnexpectedReturnType, "expected an integer"));
        for answered in [&script, &wrong_type] {
            assert_eq!(fault(answered), Fault::Answered, "{answered}");
        }
    }

    /// Against the tests' Redis (see .ci/run) and a port nobody listens on.
    #[actix_rt::test]
    async fn a_script_error_leaves_the_breaker_closed_and_a_refusal_opens_it() {
        use super::{Breaker, Redis};
        use std::time::Duration;
        let url = std::env::var("TOLLGATE_TEST_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let failing_script = |mut c: bb8::PooledConnection<'static, _>| async move {
            redis::cmd("EVAL")
                .arg("return error('boom')")
                .arg(0)
                .query_async::<i64>(&mut *c)
                .await
        };
        let up = Breaker::new("redis", Default::default());
        let redis = Redis::connect(&url, "t-reach", Duration::from_secs(2), up.clone()).unwrap();
        let answer = redis.run(true, failing_script).await;
        assert!(answer.is_err_and(|e| e.contains("boom")));
        assert!(!up.is_open(), "a reply opened the breaker");

        let down = Breaker::new("redis", Default::default());
        let nobody = Redis::connect(
            "redis://127.0.0.1:1",
            "t-reach",
            Duration::from_secs(2),
            down.clone(),
        )
        .unwrap();
        assert!(nobody.run(true, failing_script).await.is_err());
        assert!(
            down.is_open(),
            "a refused connection left the breaker closed"
        );
    }
}
