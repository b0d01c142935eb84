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

use crate::access::KeyInfo;
use crate::actors::Metered;
use crate::config::LimitsConfig;
use crate::error::{GatewayError, RateLimitInfo};
use crate::metrics::ActorMeter;
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
    /// A key's limit for one model group.
    KeyModel(String, String),
}

impl Scope {
    /// Names it in a refusal (never the key itself: its alias or name).
    fn describe(&self, key_name: &str) -> String {
        match self {
            Scope::Global => "the gateway".into(),
            Scope::Key(_) => format!("key {key_name}"),
            Scope::User(u) => format!("user {u}"),
            Scope::Team(t) => format!("team {t}"),
            Scope::KeyModel(_, m) => format!("key {key_name} on model {m}"),
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
/// key's (or the configured default), its user's, its team's, and its
/// per-model limits. Empty when none applies (no round trip at all then).
pub fn checks_for(limits: &LimitsConfig, key: &KeyInfo, group: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |scope, caps: Caps| {
        if caps.any() {
            out.push(Check { scope, caps });
        }
    };
    push(
        Scope::Global,
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
        Scope::Key(key.id.clone()),
        Caps {
            rpm: key.rpm_limit.or(limits.default_key_rpm.map(u64::from)),
            tpm: key.tpm_limit.or(limits.default_key_tpm),
            parallel: key.max_parallel_requests,
        },
    );
    for (owner, scope) in [
        (
            &key.user,
            key.user.as_ref().map(|u| Scope::User(u.id.clone())),
        ),
        (
            &key.team,
            key.team.as_ref().map(|t| Scope::Team(t.id.clone())),
        ),
    ] {
        if let (Some(o), Some(scope)) = (owner, scope) {
            push(
                scope,
                Caps {
                    rpm: o.rpm_limit,
                    tpm: o.tpm_limit,
                    parallel: o.max_parallel_requests,
                },
            );
        }
    }
    push(
        Scope::KeyModel(key.id.clone(), group.to_string()),
        Caps {
            rpm: key.model_rpm_limit.get(group).copied(),
            tpm: key.model_tpm_limit.get(group).copied(),
            parallel: None,
        },
    );
    out
}

#[derive(Default)]
struct State {
    rpm: Windows,
    tpm: Windows,
    in_flight: u64,
    last_used: Option<Instant>,
}

pub struct RateLimitActor {
    states: HashMap<Scope, State>,
    meter: ActorMeter,
}

impl RateLimitActor {
    pub fn new(meter: ActorMeter) -> Self {
        RateLimitActor {
            states: HashMap::new(),
            meter,
        }
    }

    fn evict_idle(&mut self) {
        let now = Instant::now();
        self.states.retain(|_, s| {
            s.in_flight > 0
                || s.last_used
                    .is_some_and(|t| now.duration_since(t) < IDLE_EVICT)
        });
    }

    fn release(&mut self, held: &Held, actual_tokens: Option<u64>) {
        let now = now_ms();
        for (scope, parallel, tpm) in &held.scopes {
            let Some(s) = self.states.get_mut(scope) else {
                continue;
            };
            if *parallel {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
            if let (true, Some(actual)) = (*tpm, actual_tokens) {
                s.tpm.correct(held.window, held.tokens, actual, now);
            }
        }
    }
}

impl Actor for RateLimitActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE_EVICT, |act, _| act.evict_idle());
    }
}

/// Counters survive a restart as they are; permits still out give their
/// slots back as they end.
impl Supervised for RateLimitActor {}

crate::actors::supervise::crashable!(RateLimitActor);

/// What a permit holds: per scope, whether it took a parallel slot and
/// counted tokens, and the estimate counted in `window`.
#[derive(Debug, Default)]
pub struct Held {
    scopes: Vec<(Scope, bool, bool)>,
    window: i64,
    tokens: u64,
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
    type Result = Result<(Held, RateLimitInfo), GatewayError>;

    fn handle(&mut self, msg: Acquire, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let now = now_ms();
        let to_next = (window_of(now) + WINDOW_MS - now) as f64 / 1000.0;
        // Decide on every scope before counting anything.
        for c in &msg.checks {
            let s = self.states.entry(c.scope.clone()).or_default();
            let refuse = |kind: &'static str, limit: u64, wait: f64| GatewayError::RateLimited {
                scope: c.scope.describe(&msg.key_name),
                kind,
                limit,
                retry_after_secs: wait,
            };
            if let Some(rpm) = c.caps.rpm {
                if !s.rpm.fits(rpm, 1, now) {
                    return Err(refuse("requests", rpm, s.rpm.wait_secs(rpm, 1, now)));
                }
            }
            if let Some(tpm) = c.caps.tpm {
                // A request bigger than the whole limit could never fit:
                // it waits for an empty window and is then counted as the
                // limit, not refused forever.
                let cost = msg.tokens.min(tpm);
                if !s.tpm.fits(tpm, cost, now) {
                    return Err(refuse("tokens", tpm, s.tpm.wait_secs(tpm, cost, now)));
                }
            }
            if let Some(parallel) = c.caps.parallel {
                if s.in_flight >= parallel {
                    return Err(refuse("parallel requests", parallel, 1.0));
                }
            }
        }
        let mut held = Held {
            scopes: Vec::with_capacity(msg.checks.len()),
            window: window_of(now),
            tokens: msg.tokens,
        };
        let mut info = RateLimitInfo::default();
        let last = Instant::now();
        for c in msg.checks {
            let s = self.states.entry(c.scope.clone()).or_default();
            s.last_used = Some(last);
            if let Some(rpm) = c.caps.rpm {
                s.rpm.add(1, now);
                let remaining = (rpm as f64 - s.rpm.used(now)).max(0.0) as u64;
                if info.limit_requests.is_none() || Some(remaining) < info.remaining_requests {
                    info.limit_requests = Some(rpm);
                    info.remaining_requests = Some(remaining);
                    info.reset_requests_secs = Some(to_next);
                }
            }
            if let Some(tpm) = c.caps.tpm {
                s.tpm.add(msg.tokens.min(tpm), now);
                let remaining = (tpm as f64 - s.tpm.used(now)).max(0.0) as u64;
                if info.limit_tokens.is_none() || Some(remaining) < info.remaining_tokens {
                    info.limit_tokens = Some(tpm);
                    info.remaining_tokens = Some(remaining);
                    info.reset_tokens_secs = Some(to_next);
                }
            }
            if c.caps.parallel.is_some() {
                s.in_flight += 1;
            }
            held.scopes
                .push((c.scope, c.caps.parallel.is_some(), c.caps.tpm.is_some()));
        }
        Ok((held, info))
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
