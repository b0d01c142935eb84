//! AuthHub: owns the list of this replica's AuthActors and the Redis
//! subscription. A change made here is broadcast to every local worker and
//! published to the other replicas; a change published elsewhere arrives
//! through the subscription and is broadcast locally.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::StreamExt;

use crate::actors::auth::{AuthActor, Invalidate};
use crate::actors::budget::{BudgetActor, Forget, Kind};
use crate::actors::models::{ModelsActor, Reload};
use crate::metrics::ActorMeter;
use crate::shared::{Invalidation, Redis};

pub struct AuthHub {
    workers: Vec<Addr<AuthActor>>,
    /// The budget ledger: a change to an entity (a budget reset above all)
    /// makes it start again from the database's spend.
    budget: Option<Addr<BudgetActor>>,
    redis: Option<Redis>,
    /// Reloads models added at run time when another replica changed them.
    models: Option<Addr<ModelsActor>>,
    meter: ActorMeter,
}

impl AuthHub {
    pub fn new(
        redis: Option<Redis>,
        budget: Option<Addr<BudgetActor>>,
        models: Option<Addr<ModelsActor>>,
        meter: ActorMeter,
    ) -> Self {
        AuthHub {
            workers: Vec::new(),
            budget,
            redis,
            models,
            meter,
        }
    }

    fn broadcast(&mut self, what: &Invalidation) {
        self.workers.retain(|w| w.connected());
        for w in &self.workers {
            w.do_send(Invalidate(what.clone()));
        }
        if let Some(budget) = &self.budget {
            let forget = |kind, id: &String| Forget {
                kind,
                id: id.clone(),
            };
            match what {
                Invalidation::Key(h) => budget.do_send(forget(Kind::Key, h)),
                Invalidation::User(id) => budget.do_send(forget(Kind::User, id)),
                Invalidation::Team(id) => budget.do_send(forget(Kind::Team, id)),
                Invalidation::Customer(id) => budget.do_send(forget(Kind::Customer, id)),
                Invalidation::Org(id) => budget.do_send(forget(Kind::Org, id)),
                Invalidation::All | Invalidation::Models => {}
            }
        }
        // Models added, changed or removed elsewhere (or maybe, when
        // messages were missed): reload them.
        if matches!(what, Invalidation::Models | Invalidation::All) {
            if let Some(models) = &self.models {
                models.do_send(Reload);
            }
        }
    }
}

impl Actor for AuthHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(redis) = self.redis.clone() {
            let hub = ctx.address();
            ctx.spawn(subscribe(redis, hub).into_actor(self));
        }
    }
}

/// The worker list stays; the subscription task was cancelled with the
/// old context and `started` opens a new one (which flushes every cache,
/// as any re-subscription does).
impl Supervised for AuthHub {}

crate::actors::supervise::crashable!(AuthHub);

/// How often the subscription connection is pinged, and how long an answer
/// may take before the connection is presumed dead. A connection that dies
/// silently (no FIN, no RST) would otherwise look alive forever while
/// invalidations from other replicas go unheard.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
const KEEPALIVE_DEADLINE: Duration = Duration::from_secs(1);
/// Opening and subscribing a new connection.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
/// While unsubscribed, caches are marked stale this often: with no way to
/// hear of revocations, a key is re-checked against the database at most
/// this long after it was revoked elsewhere.
const STALE_WHILE_DEAF: Duration = Duration::from_secs(5);

/// Keeps a subscription to the invalidation channel alive for as long as
/// the hub lives. Whenever it may have missed messages (lost, or newly
/// re-established) every local cache is marked stale.
async fn subscribe(redis: Redis, hub: Addr<AuthHub>) {
    let channel = redis.channel();
    let mut first = true;
    let mut flushed_at = Instant::now();
    loop {
        let conn = actix_rt::time::timeout(CONNECT_DEADLINE, async {
            let client = redis::Client::open(redis.url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match conn {
            Ok(Ok(pubsub)) => {
                if !first {
                    // Messages may have been missed while we were away.
                    hub.do_send(Received(Invalidation::All));
                    tracing::info!("redis invalidation channel re-subscribed");
                }
                listen(pubsub, &hub).await;
                hub.do_send(Received(Invalidation::All));
                flushed_at = Instant::now();
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot subscribe to the redis invalidation channel; retrying");
            }
            Err(_) => {
                tracing::warn!("subscribing to the redis invalidation channel timed out; retrying");
            }
        }
        if !hub.connected() {
            return;
        }
        if flushed_at.elapsed() >= STALE_WHILE_DEAF {
            hub.do_send(Received(Invalidation::All));
            flushed_at = Instant::now();
        }
        first = false;
        actix_rt::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Forwards messages until the connection closes or stops answering pings.
async fn listen(pubsub: redis::aio::PubSub, hub: &Addr<AuthHub>) {
    let (mut sink, mut stream) = pubsub.split();
    let mut keepalive = actix_rt::time::interval(KEEPALIVE_EVERY);
    keepalive.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    tracing::warn!("redis invalidation channel closed; reconnecting");
                    return;
                };
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                hub.do_send(Received(read_invalidation(&payload)));
            }
            _ = keepalive.tick() => {
                match actix_rt::time::timeout(KEEPALIVE_DEADLINE, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "redis invalidation channel failed a ping; reconnecting");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(deadline_ms = KEEPALIVE_DEADLINE.as_millis() as u64, "redis invalidation channel did not answer a ping: presumed dead; reconnecting");
                        return;
                    }
                }
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Register(pub Addr<AuthActor>);

impl Handler<Register> for AuthHub {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        // A restarted AuthActor registers again: keep one entry per worker.
        if !self.workers.contains(&msg.0) {
            self.workers.push(msg.0);
        }
    }
}

/// An invalidation that arrived from Redis: broadcast locally only.
#[derive(Message)]
#[rtype(result = "()")]
struct Received(Invalidation);

impl Handler<Received> for AuthHub {
    type Result = ();

    fn handle(&mut self, msg: Received, _: &mut Context<Self>) {
        self.meter.sent();
        let _t = self.meter.handling();
        self.broadcast(&msg.0);
    }
}

/// A change made on this replica: broadcast locally, then tell the others.
/// Answered once the local broadcast is queued and the publish is done, so
/// the management call that caused it can return knowing it took effect.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Changed {
    pub what: Invalidation,
    /// Hashes of keys whose shared cache entries must go.
    pub key_hashes: Vec<String>,
}

impl Handler<Changed> for AuthHub {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: Changed, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        self.broadcast(&msg.what);
        let redis = self.redis.clone();
        Box::pin(async move {
            match redis {
                Some(r) => r.invalidate(&msg.what, &msg.key_hashes).await,
                None => Ok(()),
            }
        })
    }
}

/// A message this replica cannot read (from a newer release during a
/// rolling upgrade, say) may revoke anything: every entry is checked again
/// rather than the message dropped.
fn read_invalidation(payload: &str) -> Invalidation {
    serde_json::from_str(payload).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "an invalidation message this release cannot read: checking every cached entry again");
        Invalidation::All
    })
}

#[cfg(test)]
mod invalidation_tests {
    use super::*;

    #[test]
    fn an_unreadable_invalidation_checks_everything_again() {
        assert_eq!(
            read_invalidation(r#"{"kind":"team","id":"t1"}"#),
            Invalidation::Team("t1".into())
        );
        for unknown in [
            r#"{"kind":"project","id":"p1"}"#,
            "not json",
            r#"{"kind":7}"#,
        ] {
            assert_eq!(read_invalidation(unknown), Invalidation::All, "{unknown}");
        }
    }
}
