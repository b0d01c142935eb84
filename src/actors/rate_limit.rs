//! RateLimitActor: owns this replica's rate-limit counters — per scope
//! (global, key, user, team, key×model) the requests and tokens of the
//! last minute and the requests in flight.
//!
//! A request is checked against every scope that limits it at once: if any
//! refuses, nothing is counted anywhere (a refusal by the global limit does
//! not use up the key's quota). Requests per minute and tokens per minute
//! are sliding windows (`window.rs`); tokens are counted from an estimate
//! at admission (prompt tokens + `max_tokens`) and corrected with the real
//! usage when the request ends. Parallel slots are taken at admission and
//! given back on every ending — done, error, client gone — through the
//! `Permit`, which gives itself back if dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use std::sync::Arc;

use crate::access::KeyInfo;
use crate::actors::Metered;
use crate::config::LimitsConfig;
use crate::error::{GatewayError, RateLimitInfo};
use crate::metrics::{ActorMeter, Metrics};
use crate::shared_limits::SharedLimits;
use crate::store::now_ms;
use crate::window::{window_of, Windows, WINDOW_MS};

/// Scopes left alone this long (and with nothing in flight) are forgotten:
/// two windows later their counters are empty anyway.
const IDLE_EVICT: Duration = Duration::from_secs(150);

/// Whose limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Global,
    /// A key, by hash.
    Key(String),
    User(String),
    Team(String),
    /// The organization of the key's team.
    Org(String),
    /// A key's limit for one model group.
    KeyModel(String, String),
    /// An upstream deployment's own limit (by id).
    Deployment(String),
}

impl Scope {
    /// Names it in a refusal (never the key itself: its alias or name).
    fn describe(&self, key_name: &str) -> String {
        match self {
            Scope::Global => "the gateway".into(),
            Scope::Key(_) => format!("key {key_name}"),
            Scope::User(u) => format!("user {u}"),
            Scope::Team(t) => format!("team {t}"),
            Scope::Org(o) => format!("organization {o}"),
            Scope::KeyModel(_, m) => format!("key {key_name} on model {m}"),
            Scope::Deployment(d) => format!("deployment {d}"),
        }
    }

    /// Names it in the fleet's counters (the key of a key: its hash).
    pub fn redis_id(&self) -> String {
        match self {
            Scope::Global => "g".into(),
            Scope::Key(k) => format!("k:{k}"),
            Scope::User(u) => format!("u:{u}"),
            Scope::Team(t) => format!("t:{t}"),
            Scope::Org(o) => format!("o:{o}"),
            Scope::KeyModel(k, m) => format!("km:{k}:{m}"),
            Scope::Deployment(d) => format!("d:{d}"),
        }
    }
}

/// The limits of one scope; `None`: not limited in that way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Caps {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub parallel: Option<u64>,
}

impl Caps {
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.parallel.is_some()
    }
}

#[derive(Clone, Debug)]
pub struct Check {
    pub scope: Scope,
    pub caps: Caps,
}

/// Every limit on `key` calling model group `group`: the gateway's, the
/// key's (or the configured default), its user's, its team's, its team's
/// organization's, and its per-model limits. Empty when none applies (no round trip at all then).
pub fn checks_for(limits: &LimitsConfig, key: &KeyInfo, group: &str) -> Vec<Check> {
    let mut out = Vec::new();
    // The scope is made (its ids copied) only for a limit that is set:
    // most keys have none, and this runs on every request.
    let mut push = |scope: &dyn Fn() -> Scope, caps: Caps| {
        if caps.any() {
            out.push(Check {
                scope: scope(),
                caps,
            });
        }
    };
    push(
        &|| Scope::Global,
        Caps {
            rpm: limits.global_rpm.map(u64::from),
            tpm: limits.global_tpm,
            parallel: limits.global_max_parallel_requests,
        },
    );
    if key.is_master {
        return out;
    }
    push(
        &|| Scope::Key(key.id.clone()),
        Caps {
            rpm: key.rpm_limit.or(limits.default_key_rpm.map(u64::from)),
            tpm: key.tpm_limit.or(limits.default_key_tpm),
            parallel: key.max_parallel_requests,
        },
    );
    let caps = |o: &crate::access::Owner| Caps {
        rpm: o.rpm_limit,
        tpm: o.tpm_limit,
        parallel: o.max_parallel_requests,
    };
    if let Some(u) = &key.user {
        push(&|| Scope::User(u.id.clone()), caps(u));
    }
    if let Some(t) = &key.team {
        push(&|| Scope::Team(t.id.clone()), caps(t));
    }
    if let Some(o) = &key.org {
        push(&|| Scope::Org(o.id.clone()), caps(o));
    }
    push(
        &|| Scope::KeyModel(key.id.clone(), group.to_string()),
        Caps {
            rpm: key.model_rpm_limit.get(group).copied(),
            tpm: key.model_tpm_limit.get(group).copied(),
            parallel: None,
        },
    );
    out
}

/// A block of one limit's current minute leased from the fleet.
#[derive(Debug, Default)]
struct Pool {
    window: i64,
    /// Leased and not used yet; negative: used beyond the lease (real
    /// tokens above the estimate), owed to the fleet's counter.
    avail: i64,
    /// The block size last asked for (what is kept back when idle).
    block: u64,
    /// The fleet's use of the limit when the block was leased, without it.
    seen: f64,
    /// Admitted from blocks since.
    taken: u64,
    last_used: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// This replica's own counts: the whole truth without Redis, its share
    /// while Redis is unreachable, and always kept so that falling back
    /// starts from what this replica did.
    rpm: Windows,
    tpm: Windows,
    in_flight: u64,
    /// Shared counting: quota leased from the fleet.
    rpm_pool: Pool,
    tpm_pool: Pool,
    /// Parallel slots leased from the fleet (≥ in flight while shared).
    slots: u64,
    /// Admitted while Redis was unreachable: added to the fleet's counters
    /// when it is back, so the outage's traffic still counts.
    unsynced_rpm: Windows,
    unsynced_tpm: Windows,
    last_used: Option<Instant>,
}

/// Which of a scope's leases a request lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lack {
    Requests,
    Tokens,
    Slots,
}

/// A lease to ask the fleet for.
struct Need {
    check: usize,
    lack: Lack,
    limit: u64,
    need: u64,
    block: u64,
}

/// How long a replica's parallel slots outlive it in the fleet's tables.
const DEFAULT_SLOT_LEASE: Duration = Duration::from_secs(10);
/// Leased quota unused this long goes back to the fleet.
const GIVE_BACK_AFTER: Duration = Duration::from_millis(250);
/// Rounds of leasing one admission may take when other requests on this
/// replica keep using up what it leased.
const MAX_ROUNDS: u32 = 8;

pub struct RateLimitActor {
    states: HashMap<Scope, State>,
    /// Leases being asked for: requests lacking the same lease wait for
    /// that answer instead of asking again (a burst of cold requests would
    /// otherwise lease a block each).
    pending: HashMap<(Scope, Lack), Arc<tokio::sync::Notify>>,
    /// The fleet's counters; `None`: this replica is the whole fleet.
    shared: Option<Arc<SharedLimits>>,
    /// Redis failed: counting locally until a heartbeat gets through.
    fallback: bool,
    /// Live replicas, as the last heartbeat said.
    replicas: u64,
    slot_lease: Duration,
    metrics: Arc<Metrics>,
    meter: ActorMeter,
}

impl RateLimitActor {
    pub fn new(shared: Option<Arc<SharedLimits>>, metrics: Arc<Metrics>) -> Self {
        RateLimitActor {
            states: HashMap::new(),
            pending: HashMap::new(),
            shared,
            fallback: false,
            replicas: 1,
            slot_lease: DEFAULT_SLOT_LEASE,
            meter: metrics.actor("rate_limit"),
            metrics,
        }
    }

    /// The fleet's counters, when they can be used now.
    fn shared_now(&self) -> Option<Arc<SharedLimits>> {
        self.shared
            .clone()
            .filter(|s| !self.fallback && !s.redis().breaker().is_open())
    }

    fn enter_fallback(&mut self, error: &str) {
        if !self.fallback {
            self.fallback = true;
            self.metrics.rate_limit_fallback.set(1);
            tracing::warn!(
                error,
                replicas = self.replicas,
                "redis is unreachable: rate limits are counted on this replica alone, each limit divided by the live replicas"
            );
        }
        // Leases stay this replica's (the fleet still counts them) and
        // serve again once Redis is back; meanwhile nothing is taken from
        // them. Leased slots are kept in the fleet's table by the
        // heartbeat once it gets through, or expire with the lease.
    }

    fn leave_fallback(&mut self) {
        if !self.fallback {
            return;
        }
        self.fallback = false;
        self.metrics.rate_limit_fallback.set(0);
        tracing::info!("redis is back: rate limits are shared by the fleet again");
        let now = now_ms();
        for (scope, s) in self.states.iter_mut() {
            for (kind, w) in [("rpm", &mut s.unsynced_rpm), ("tpm", &mut s.unsynced_tpm)] {
                w.roll(now);
                let start = w.start;
                give_back_window(&self.shared, scope, kind, start, -(w.cur as i64));
                give_back_window(
                    &self.shared,
                    scope,
                    kind,
                    start - WINDOW_MS,
                    -(w.prev as i64),
                );
                *w = Windows::default();
            }
        }
    }

    fn evict_idle(&mut self) {
        let now = Instant::now();
        self.states.retain(|_, s| {
            s.in_flight > 0
                || s.slots > 0
                || s.last_used
                    .is_some_and(|t| now.duration_since(t) < IDLE_EVICT)
        });
    }

    /// A limit as this replica may use it on its own: the whole of it
    /// when alone, its share of the fleet's while Redis is unreachable.
    fn local_share(&self, limit: u64) -> u64 {
        if self.shared.is_some() {
            (limit / self.replicas.max(1)).max(1)
        } else {
            limit
        }
    }

    /// Decides on this replica's own counts.
    fn admit_locally(
        &mut self,
        msg: Acquire,
        now: i64,
    ) -> Result<(Held, RateLimitInfo), GatewayError> {
        let to_next = (window_of(now) + WINDOW_MS - now) as f64 / 1000.0;
        // Decide on every scope before counting anything.
        for c in &msg.checks {
            let (rpm, tpm, parallel) = (
                c.caps.rpm.map(|l| self.local_share(l)),
                c.caps.tpm.map(|l| self.local_share(l)),
                c.caps.parallel.map(|l| self.local_share(l)),
            );
            let s = self.states.entry(c.scope.clone()).or_default();
            if let Some(rpm) = rpm {
                if !s.rpm.fits(rpm, 1, now) {
                    let wait = s.rpm.wait_secs(rpm, 1, now);
                    return Err(refusal(c, &msg.key_name, "requests", c.caps.rpm, wait));
                }
            }
            if let Some(tpm) = tpm {
                // A request bigger than the whole limit could never fit:
                // it waits for an empty window and is then counted as the
                // limit, not refused forever.
                let cost = msg.tokens.min(tpm);
                if !s.tpm.fits(tpm, cost, now) {
                    let wait = s.tpm.wait_secs(tpm, cost, now);
                    return Err(refusal(c, &msg.key_name, "tokens", c.caps.tpm, wait));
                }
            }
            if let Some(parallel) = parallel {
                if s.in_flight >= parallel {
                    return Err(refusal(
                        c,
                        &msg.key_name,
                        "parallel requests",
                        c.caps.parallel,
                        1.0,
                    ));
                }
            }
        }
        let mut held = Held::new(&msg, now, false);
        let mut info = RateLimitInfo::default();
        let last = Instant::now();
        let fleet = self.shared.is_some();
        for c in msg.checks {
            let (rpm, tpm) = (
                c.caps.rpm.map(|l| self.local_share(l)),
                c.caps.tpm.map(|l| self.local_share(l)),
            );
            let s = self.states.entry(c.scope.clone()).or_default();
            s.last_used = Some(last);
            if fleet {
                if rpm.is_some() {
                    s.unsynced_rpm.add(1, now);
                }
                if let Some(tpm) = tpm {
                    s.unsynced_tpm.add(msg.tokens.min(tpm), now);
                }
            }
            let key_model = matches!(c.scope, Scope::KeyModel(..));
            if let Some(rpm) = rpm {
                s.rpm.add(1, now);
                let remaining = (rpm as f64 - s.rpm.used(now)).max(0.0) as u64;
                info.requests(rpm, remaining, to_next);
                if key_model {
                    info.key_model_requests = Some(remaining);
                }
            }
            let cost = tpm.map_or(0, |t| msg.tokens.min(t));
            if let Some(tpm) = tpm {
                s.tpm.add(cost, now);
                let remaining = (tpm as f64 - s.tpm.used(now)).max(0.0) as u64;
                info.tokens(tpm, remaining, to_next);
                if key_model {
                    info.key_model_tokens = Some(remaining);
                }
            }
            if c.caps.parallel.is_some() {
                s.in_flight += 1;
            }
            held.scopes.push(HeldScope {
                scope: c.scope,
                parallel: c.caps.parallel,
                tokens: cost,
            });
        }
        Ok((held, info))
    }

    /// What the request lacks of the leases every check needs.
    fn lacking(&mut self, msg: &Acquire, now: i64) -> Vec<Need> {
        let window = window_of(now);
        let mut needs = Vec::new();
        for (i, c) in msg.checks.iter().enumerate() {
            let s = self.states.entry(c.scope.clone()).or_default();
            if let Some(rpm) = c.caps.rpm {
                roll_pool(&self.shared, &c.scope, "rpm", &mut s.rpm_pool, window);
                if s.rpm_pool.avail < 1 {
                    needs.push(Need {
                        check: i,
                        lack: Lack::Requests,
                        limit: rpm,
                        need: (1 - s.rpm_pool.avail) as u64,
                        block: block_for(rpm),
                    });
                }
            }
            if let Some(tpm) = c.caps.tpm {
                roll_pool(&self.shared, &c.scope, "tpm", &mut s.tpm_pool, window);
                let cost = msg.tokens.min(tpm) as i64;
                if s.tpm_pool.avail < cost {
                    needs.push(Need {
                        check: i,
                        lack: Lack::Tokens,
                        limit: tpm,
                        need: (cost - s.tpm_pool.avail).min(tpm as i64).max(1) as u64,
                        block: block_for(tpm),
                    });
                }
            }
            if let Some(parallel) = c.caps.parallel {
                if s.in_flight >= s.slots {
                    needs.push(Need {
                        check: i,
                        lack: Lack::Slots,
                        limit: parallel,
                        need: 1,
                        block: spare_slots(parallel, self.replicas) + 1,
                    });
                }
            }
        }
        needs
    }

    /// Admits from leases already held (`lacking` said they suffice).
    fn take_leased(&mut self, msg: Acquire, now: i64) -> (Held, RateLimitInfo) {
        let to_next = (window_of(now) + WINDOW_MS - now) as f64 / 1000.0;
        let mut held = Held::new(&msg, now, true);
        let mut info = RateLimitInfo::default();
        let last = Instant::now();
        for c in msg.checks {
            let s = self.states.entry(c.scope.clone()).or_default();
            s.last_used = Some(last);
            let key_model = matches!(c.scope, Scope::KeyModel(..));
            if let Some(rpm) = c.caps.rpm {
                s.rpm.add(1, now);
                let p = &mut s.rpm_pool;
                p.avail -= 1;
                p.taken += 1;
                p.last_used = Some(last);
                let left = remaining(rpm, p);
                info.requests(rpm, left, to_next);
                if key_model {
                    info.key_model_requests = Some(left);
                }
            }
            let cost = c.caps.tpm.map_or(0, |t| msg.tokens.min(t));
            if let Some(tpm) = c.caps.tpm {
                s.tpm.add(cost, now);
                let p = &mut s.tpm_pool;
                p.avail -= cost as i64;
                p.taken += cost;
                p.last_used = Some(last);
                let left = remaining(tpm, p);
                info.tokens(tpm, left, to_next);
                if key_model {
                    info.key_model_tokens = Some(left);
                }
            }
            if c.caps.parallel.is_some() {
                s.in_flight += 1;
            }
            held.scopes.push(HeldScope {
                scope: c.scope,
                parallel: c.caps.parallel,
                tokens: cost,
            });
        }
        (held, info)
    }

    /// Admits on leases, leasing what is lacking from the fleet first
    /// (several leases at once, one round trip each, concurrently).
    fn admit_shared(
        &mut self,
        msg: Acquire,
        shared: Arc<SharedLimits>,
        round: u32,
    ) -> ResponseActFuture<Self, Result<(Held, RateLimitInfo), GatewayError>> {
        let now = now_ms();
        if self.shared_now().is_none() {
            // Redis was lost while this request waited for a lease.
            return Box::pin(actix::fut::ready(self.admit_locally(msg, now)));
        }
        let needs = self.lacking(&msg, now);
        if needs.is_empty() {
            return Box::pin(actix::fut::ready(Ok(self.take_leased(msg, now))));
        }
        if round >= MAX_ROUNDS {
            // Other requests here keep taking what is leased: the limit is
            // all but used up.
            let n = &needs[0];
            let c = &msg.checks[n.check];
            return Box::pin(actix::fut::ready(Err(refusal(
                c,
                &msg.key_name,
                n.lack.kind(),
                Some(n.limit),
                1.0,
            ))));
        }
        // Leases already being asked for: wait for their answer, then
        // decide again.
        let (waits, needs): (Vec<Need>, Vec<Need>) = needs.into_iter().partition(|n| {
            self.pending
                .contains_key(&(msg.checks[n.check].scope.clone(), n.lack))
        });
        if needs.is_empty() {
            let n = &waits[0];
            let notify = self.pending[&(msg.checks[n.check].scope.clone(), n.lack)].clone();
            let notified = notify.notified_owned();
            return Box::pin(
                notified
                    .into_actor(self)
                    .then(move |_, act, _| act.admit_shared(msg, shared, round + 1)),
            );
        }
        for n in &needs {
            self.pending.insert(
                (msg.checks[n.check].scope.clone(), n.lack),
                Arc::new(tokio::sync::Notify::new()),
            );
        }
        let window = window_of(now);
        let replicas = self.replicas;
        let lease = self.slot_lease;
        let scopes: Vec<String> = needs
            .iter()
            .map(|n| msg.checks[n.check].scope.redis_id())
            .collect();
        let asks: Vec<(Lack, u64, u64, u64)> = needs
            .iter()
            .map(|n| (n.lack, n.limit, n.need, n.block))
            .collect();
        let sh = shared.clone();
        let fetch = async move {
            let calls = scopes
                .iter()
                .zip(asks)
                .map(|(scope, (lack, limit, need, block))| {
                    let sh = &sh;
                    async move {
                        match lack {
                            Lack::Requests | Lack::Tokens => sh
                                .lease_window(
                                    scope,
                                    lack.key(),
                                    window,
                                    now,
                                    limit,
                                    need,
                                    block,
                                    replicas,
                                )
                                .await
                                .map(Leased::Window),
                            Lack::Slots => sh
                                .lease_slots(scope, block, limit, lease)
                                .await
                                .map(|(granted, _)| Leased::Slots(granted)),
                        }
                    }
                });
            futures_util::future::join_all(calls).await
        };
        Box::pin(fetch.into_actor(self).then(move |results, act, _| {
            act.metrics.rate_limit_leases.inc_by(results.len() as u64);
            for n in &needs {
                if let Some(waiting) = act
                    .pending
                    .remove(&(msg.checks[n.check].scope.clone(), n.lack))
                {
                    waiting.notify_waiters();
                }
            }
            let mut refused: Option<GatewayError> = None;
            for (n, result) in needs.iter().zip(results) {
                let c = &msg.checks[n.check];
                let leased = match result {
                    Ok(l) => l,
                    Err(e) => {
                        act.enter_fallback(&e);
                        let now = now_ms();
                        return Box::pin(actix::fut::ready(act.admit_locally(msg, now)))
                            as ResponseActFuture<Self, _>;
                    }
                };
                let s = act.states.entry(c.scope.clone()).or_default();
                match leased {
                    Leased::Window(l) => {
                        let pool = match n.lack {
                            Lack::Requests => &mut s.rpm_pool,
                            _ => &mut s.tpm_pool,
                        };
                        roll_pool(&act.shared, &c.scope, n.lack.key(), pool, window);
                        if pool.window == window {
                            pool.avail += l.granted as i64;
                            pool.block = n.block;
                            // The fleet's use, this replica's unused lease not counted.
                            pool.seen =
                                crate::window::used(l.prev, l.cur, now) - pool.avail.max(0) as f64;
                            pool.taken = 0;
                            pool.last_used = Some(Instant::now());
                        } else if l.granted > 0 {
                            // The minute turned while asking: give it back.
                            give_back_window(
                                &act.shared,
                                &c.scope,
                                n.lack.key(),
                                window,
                                l.granted as i64,
                            );
                        }
                        if l.granted == 0 && refused.is_none() {
                            let wait =
                                crate::window::wait_secs(n.limit, l.prev, l.cur, n.need, now_ms());
                            refused = Some(refusal(
                                c,
                                &msg.key_name,
                                n.lack.kind(),
                                Some(n.limit),
                                wait,
                            ));
                        }
                    }
                    Leased::Slots(granted) => {
                        s.slots += granted;
                        if granted == 0 && refused.is_none() {
                            refused = Some(refusal(
                                c,
                                &msg.key_name,
                                "parallel requests",
                                Some(n.limit),
                                1.0,
                            ));
                        }
                    }
                }
            }
            match refused {
                // What was leased for the other limits stays with this
                // replica (unused: nothing is counted) and goes back if idle.
                Some(e) => Box::pin(actix::fut::ready(Err(e))),
                None => act.admit_shared(msg, shared, round + 1),
            }
        }))
    }

    fn release(&mut self, held: &Held, actual_tokens: Option<u64>) {
        let now = now_ms();
        let shared = if held.shared { self.shared_now() } else { None };
        for h in &held.scopes {
            let Some(s) = self.states.get_mut(&h.scope) else {
                continue;
            };
            if h.parallel.is_some() {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
            if let Some(actual) = actual_tokens.filter(|_| h.tokens > 0) {
                s.tpm.correct(held.window, h.tokens, actual, now);
                if !held.shared && self.shared.is_some() {
                    s.unsynced_tpm.correct(held.window, h.tokens, actual, now);
                }
                if shared.is_some() {
                    let delta = actual as i64 - h.tokens as i64;
                    let p = &mut s.tpm_pool;
                    if p.window == held.window {
                        p.avail -= delta;
                        // An estimate far above the real use: the rest goes
                        // back now, not when the pool idles.
                        let surplus = p.avail - 2 * p.block as i64;
                        if surplus > 0 {
                            p.avail -= surplus;
                            give_back_window(&self.shared, &h.scope, "tpm", p.window, surplus);
                        }
                    } else {
                        give_back_window(&self.shared, &h.scope, "tpm", held.window, -delta);
                    }
                }
            }
            if let (Some(parallel), Some(sh)) = (h.parallel, &shared) {
                let keep = s.in_flight + spare_slots(parallel, self.replicas);
                if s.slots > keep {
                    let n = s.slots - keep;
                    s.slots = keep;
                    let (sh, scope) = (sh.clone(), h.scope.redis_id());
                    actix_rt::spawn(async move {
                        // If this fails the slots expire with the lease.
                        let _ = sh.return_slots(&scope, n).await;
                    });
                }
            }
        }
    }

    /// Gives back leased quota nobody here is using: blocks of past
    /// minutes, blocks idle for a moment, slots beyond those in flight.
    fn give_back_idle(&mut self) {
        let Some(shared) = self.shared_now() else {
            return;
        };
        let now = Instant::now();
        let window = window_of(now_ms());
        let idle = |p: &Pool| {
            p.last_used
                .is_none_or(|t| now.duration_since(t) >= GIVE_BACK_AFTER)
        };
        let mut slots = Vec::new();
        for (scope, s) in self.states.iter_mut() {
            for (kind, pool) in [("rpm", &mut s.rpm_pool), ("tpm", &mut s.tpm_pool)] {
                roll_pool(&self.shared, scope, kind, pool, window);
                // Idle: everything goes back (or, if negative, what was
                // used beyond the lease is counted); busy: what exceeds
                // two blocks.
                let surplus = if idle(pool) {
                    pool.avail
                } else {
                    (pool.avail - 2 * pool.block as i64).max(0)
                };
                if surplus != 0 {
                    pool.avail -= surplus;
                    give_back_window(&self.shared, scope, kind, pool.window, surplus);
                }
            }
            let idle_slots = s
                .last_used
                .is_none_or(|t| now.duration_since(t) >= GIVE_BACK_AFTER);
            if idle_slots && s.slots > s.in_flight {
                slots.push((scope.redis_id(), s.slots - s.in_flight));
                s.slots = s.in_flight;
            }
        }
        if !slots.is_empty() {
            actix_rt::spawn(async move {
                for (scope, n) in slots {
                    let _ = shared.return_slots(&scope, n).await;
                }
            });
        }
    }

    /// Tells the fleet this replica is alive and renews its slot leases;
    /// learns how many replicas there are; notices Redis coming back.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let held: Vec<String> = self
            .states
            .iter()
            .filter(|(_, s)| s.slots > 0)
            .map(|(scope, _)| scope.redis_id())
            .collect();
        let lease = self.slot_lease;
        ctx.spawn(
            async move { shared.heartbeat(&held, lease).await }
                .into_actor(self)
                .map(|result, act, _| match result {
                    Ok(live) => {
                        act.replicas = live;
                        act.leave_fallback();
                    }
                    Err(e) => act.enter_fallback(&e),
                }),
        );
    }
}

/// The lease a block request came back with.
enum Leased {
    Window(crate::shared_limits::WindowLease),
    Slots(u64),
}

impl Lack {
    fn key(self) -> &'static str {
        match self {
            Lack::Requests => "rpm",
            Lack::Tokens => "tpm",
            Lack::Slots => "slots",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Lack::Requests => "requests",
            Lack::Tokens => "tokens",
            Lack::Slots => "parallel requests",
        }
    }
}

/// The block of a per-minute limit a replica asks for: 1% of it (the
/// fleet's counters cap it further as the limit nears exhaustion).
fn block_for(limit: u64) -> u64 {
    (limit / 100).max(1)
}

/// Parallel slots a replica may keep leased beyond those in use: none for
/// small limits (every slot goes back as soon as its request ends).
fn spare_slots(limit: u64, replicas: u64) -> u64 {
    limit / (8 * replicas.max(1))
}

/// What the fleet has left of a limit, as this replica knows it.
fn remaining(limit: u64, p: &Pool) -> u64 {
    (limit as f64 - p.seen - p.taken as f64).max(0.0) as u64
}

/// Moves a pool to `window`, giving back what it had left of the old one.
fn roll_pool(
    shared: &Option<Arc<SharedLimits>>,
    scope: &Scope,
    kind: &'static str,
    pool: &mut Pool,
    window: i64,
) {
    if pool.window == window {
        return;
    }
    if pool.avail != 0 && pool.window + WINDOW_MS >= window {
        give_back_window(shared, scope, kind, pool.window, pool.avail);
    }
    *pool = Pool {
        window,
        ..Pool::default()
    };
}

/// Takes `amount` off a window's fleet total (negative: adds), in the
/// background. If it fails the quota stays counted: the fleet admits less
/// that minute, never more.
fn give_back_window(
    shared: &Option<Arc<SharedLimits>>,
    scope: &Scope,
    kind: &'static str,
    window: i64,
    amount: i64,
) {
    let Some(sh) = shared.clone() else { return };
    if amount == 0 {
        return;
    }
    let scope = scope.redis_id();
    actix_rt::spawn(async move {
        let _ = sh.adjust_window(&scope, kind, window, -amount).await;
    });
}

fn refusal(
    c: &Check,
    key_name: &str,
    kind: &'static str,
    limit: Option<u64>,
    wait: f64,
) -> GatewayError {
    GatewayError::RateLimited {
        scope: c.scope.describe(key_name),
        kind,
        limit: limit.unwrap_or(0),
        retry_after_secs: wait,
    }
}

impl Actor for RateLimitActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE_EVICT, |act, _| act.evict_idle());
        if self.shared.is_some() {
            self.heartbeat(ctx);
            ctx.run_interval(Duration::from_secs(1), |act, ctx| act.heartbeat(ctx));
            ctx.run_interval(GIVE_BACK_AFTER, |act, _| act.give_back_idle());
        }
    }
}

/// Counters survive a restart as they are; permits still out give their
/// slots back as they end.
impl Supervised for RateLimitActor {}

crate::actors::supervise::crashable!(RateLimitActor);

#[derive(Debug)]
struct HeldScope {
    scope: Scope,
    /// The parallel limit, if a slot was taken.
    parallel: Option<u64>,
    /// Tokens counted against a tokens-per-minute limit (0: none).
    tokens: u64,
}

/// What a permit holds: per scope, the slot and tokens it took, in which
/// window, and whether from the fleet's leases or this replica's counts.
#[derive(Debug, Default)]
pub struct Held {
    scopes: Vec<HeldScope>,
    window: i64,
    shared: bool,
}

impl Held {
    fn new(msg: &Acquire, now: i64, shared: bool) -> Held {
        Held {
            scopes: Vec::with_capacity(msg.checks.len()),
            window: window_of(now),
            shared,
        }
    }
}

/// Admission under every limit that applies; given back with `release`
/// (or when dropped).
pub struct Permit {
    held: Option<Held>,
    limiter: Metered<RateLimitActor>,
    /// For the `x-ratelimit-*` headers.
    pub info: RateLimitInfo,
}

impl Permit {
    /// The request ended; `actual_tokens` (when known) replaces the
    /// estimate in the tokens-per-minute windows.
    pub fn release(mut self, actual_tokens: Option<u64>) {
        if let Some(held) = self.held.take() {
            self.limiter.do_send(Release {
                held,
                actual_tokens,
            });
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            self.limiter.do_send(Release {
                held,
                actual_tokens: None,
            });
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("info", &self.info).finish()
    }
}

/// Admit one request of about `tokens` tokens under `checks`, or refuse it
/// with the limit that was hit.
#[derive(Message)]
#[rtype(result = "Result<(Held, RateLimitInfo), GatewayError>")]
pub struct Acquire {
    pub checks: Vec<Check>,
    pub tokens: u64,
    /// How the key is named in a refusal.
    pub key_name: String,
}

impl Acquire {
    /// Sends it, wrapping the answer in a `Permit` tied to `limiter`.
    pub async fn send(self, limiter: &Metered<RateLimitActor>) -> Result<Permit, GatewayError> {
        let (held, info) = limiter
            .send(self)
            .await
            .map_err(|_| GatewayError::Unavailable("the rate limiter is restarting".into()))??;
        Ok(Permit {
            held: Some(held),
            limiter: limiter.clone(),
            info,
        })
    }
}

impl Handler<Acquire> for RateLimitActor {
    type Result = ResponseActFuture<Self, Result<(Held, RateLimitInfo), GatewayError>>;

    fn handle(&mut self, msg: Acquire, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        if let Some(shared) = self.shared_now() {
            return self.admit_shared(msg, shared, 0);
        }
        if self.shared.is_some() {
            self.enter_fallback("redis is unreachable (its breaker is open)");
        }
        Box::pin(actix::fut::ready(self.admit_locally(msg, now_ms())))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    held: Held,
    actual_tokens: Option<u64>,
}

impl Handler<Release> for RateLimitActor {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        self.release(&msg.held, msg.actual_tokens);
    }
}

/// How much of each deployment's own limits is used this minute, as a
/// fraction (the larger of requests and tokens), for usage-based routing:
/// the fleet's use where limits are shared, this replica's otherwise.
/// A deployment without limits (`None` caps) counts as 0.
#[derive(Message)]
#[rtype(result = "Vec<f64>")]
pub struct DeploymentUsage(pub Vec<(String, Caps)>);

impl Handler<DeploymentUsage> for RateLimitActor {
    type Result = MessageResult<DeploymentUsage>;

    fn handle(&mut self, msg: DeploymentUsage, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let now = now_ms();
        let window = window_of(now);
        let shared = self.shared_now().is_some();
        let out = msg
            .0
            .into_iter()
            .map(|(id, caps)| {
                let Some(s) = self.states.get_mut(&Scope::Deployment(id)) else {
                    return 0.0;
                };
                let fraction = |limit: Option<u64>, w: &mut Windows, p: &Pool| -> f64 {
                    let Some(limit) = limit.filter(|l| *l > 0) else {
                        return 0.0;
                    };
                    let used = if shared && p.window == window {
                        p.seen + p.taken as f64
                    } else {
                        w.used(now)
                    };
                    used / limit as f64
                };
                let r = fraction(caps.rpm, &mut s.rpm, &s.rpm_pool);
                let t = fraction(caps.tpm, &mut s.tpm, &s.tpm_pool);
                r.max(t)
            })
            .collect();
        MessageResult(out)
    }
}
