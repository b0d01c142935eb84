//! RateLimitActor: owns the request-rate counters (global and per key).
//!
//! Counters are GCRA cells from `governor`: a limit of N requests per minute
//! admits a burst of N and then one request every 60/N seconds, which is the
//! smooth form of "N per minute" without a window edge to game.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use actix::prelude::*;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::error::{GatewayError, RateLimitInfo};
use crate::metrics::ActorMeter;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct KeyLimiter {
    rpm: u32,
    limiter: Limiter,
    last_used: Instant,
}

fn per_minute(rpm: u32, clock: &DefaultClock) -> Limiter {
    let n = NonZeroU32::new(rpm.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(Quota::per_minute(n), clock.clone())
        .with_middleware::<StateInformationMiddleware>()
}

/// A per-minute limiter left alone for this long is full again, so
/// forgetting it changes no decision.
const IDLE_EVICT: Duration = Duration::from_secs(120);

pub struct RateLimitActor {
    clock: DefaultClock,
    global: Option<(u32, Limiter)>,
    default_key_rpm: Option<u32>,
    keys: HashMap<String, KeyLimiter>,
    meter: ActorMeter,
}

impl RateLimitActor {
    pub fn new(limits: &LimitsConfig, meter: ActorMeter) -> Self {
        let clock = DefaultClock::default();
        RateLimitActor {
            global: limits.global_rpm.map(|n| (n, per_minute(n, &clock))),
            default_key_rpm: limits.default_key_rpm,
            keys: HashMap::new(),
            clock,
            meter,
        }
    }

    fn evict_idle(&mut self) {
        let now = Instant::now();
        self.keys
            .retain(|_, k| now.duration_since(k.last_used) < IDLE_EVICT);
    }
}

impl Actor for RateLimitActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE_EVICT, |act, _| act.evict_idle());
    }
}

impl Supervised for RateLimitActor {}

crate::actors::supervise::crashable!(RateLimitActor);

/// Admit one request for `key_id`, or refuse it with 429 details.
#[derive(Message)]
#[rtype(result = "Result<Option<RateLimitInfo>, GatewayError>")]
pub struct Acquire {
    pub key_id: String,
    pub key_rpm: Option<u32>,
}

impl Handler<Acquire> for RateLimitActor {
    type Result = Result<Option<RateLimitInfo>, GatewayError>;

    fn handle(&mut self, msg: Acquire, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let mut info = None;
        if let Some(rpm) = msg.key_rpm.or(self.default_key_rpm) {
            let clock = &self.clock;
            let entry = self.keys.entry(msg.key_id).or_insert_with(|| KeyLimiter {
                rpm,
                limiter: per_minute(rpm, clock),
                last_used: Instant::now(),
            });
            if entry.rpm != rpm {
                // The key's limit changed: start it fresh at the new rate.
                entry.rpm = rpm;
                entry.limiter = per_minute(rpm, clock);
            }
            entry.last_used = Instant::now();
            match entry.limiter.check() {
                Ok(snapshot) => {
                    info = Some(RateLimitInfo {
                        limit: rpm,
                        remaining: snapshot.remaining_burst_capacity(),
                        reset_secs: 60.0 / rpm as f64,
                    })
                }
                Err(not_until) => {
                    return Err(GatewayError::RateLimited {
                        scope: "key",
                        limit: rpm,
                        retry_after_secs: not_until.wait_time_from(self.clock.now()).as_secs_f64(),
                    })
                }
            }
        }
        if let Some((rpm, limiter)) = &self.global {
            if let Err(not_until) = limiter.check() {
                return Err(GatewayError::RateLimited {
                    scope: "the gateway",
                    limit: *rpm,
                    retry_after_secs: not_until.wait_time_from(self.clock.now()).as_secs_f64(),
                });
            }
        }
        Ok(info)
    }
}
