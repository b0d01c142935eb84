//! AuthActor (one per HTTP worker): owns that worker's key cache and answers
//! "who is this?". Handlers hash the presented token on their own thread
//! and send only the SHA-256 digest; raw keys never reach actor state.
//!
//! Lookup order: master/config keys → local cache → Redis → database.
//!
//! * The cache is bounded (quick_cache: a real eviction policy, no scans).
//!   Entries are fresh for `ttl`; an invalidation (local, or from another
//!   replica through Redis) removes the affected ones at once.
//! * An entry past its TTL is still answered at once while a background
//!   refresh runs: the database is never on the request path of a key we
//!   know, and a database outage never slows one down (stale-on-outage).
//! * Unknown keys are remembered as such for a few seconds, here and (via
//!   Redis) on every replica, so repeated bad keys cost nothing.
//! * Lookups per worker are capped (`auth.max_concurrent_lookups`), the
//!   rest queue (bounded): a flood of random keys cannot take every
//!   database connection. Tokens that cannot be ours never get a lookup.
//! * Concurrent misses of one key share one lookup.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::access::{KeyInfo, Owner};
use crate::actors::auth_hub::{AuthHub, Register};
use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::{ActorMeter, Metrics, OutcomeLabels};
use crate::shared::{Cached, Invalidation, Redis};
use crate::store::{Store, StoreError};
use prometheus_client::metrics::counter::Counter;

pub type KeyHash = [u8; 32];

pub fn hash_key(token: &str) -> KeyHash {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hash_hex(token: &str) -> String {
    hex::encode(hash_key(token))
}

/// How long an unknown key is remembered as unknown: long enough to shield
/// the database from a repeated bad key, short enough not to matter.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// While the database cannot be reached, a stale entry is re-checked at
/// most this often (per worker), not on every request.
const RETRY_STALE_AFTER: Duration = Duration::from_secs(1);

struct Entry {
    info: Option<Arc<KeyInfo>>,
    fresh_until: Instant,
    /// `AuthActor::epoch` when loaded: an `Invalidation::All` bumps the
    /// epoch, making every entry stale at once without touching them.
    epoch: u64,
}

type Waiter = oneshot::Sender<Result<Arc<KeyInfo>, GatewayError>>;

/// What the gateway knows of an end user (LiteLLM's customer).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerInfo {
    pub id: String,
    pub blocked: bool,
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    /// Empty: any model.
    pub allowed_models: Vec<String>,
}

struct CustomerEntry {
    /// `None`: no such customer (no restrictions).
    info: Option<Arc<CustomerInfo>>,
    fresh_until: Instant,
    epoch: u64,
}

pub struct AuthActor {
    master: Option<KeyHash>,
    master_info: Arc<KeyInfo>,
    static_keys: HashMap<KeyHash, Arc<KeyInfo>>,
    store: Option<Store>,
    redis: Option<Redis>,
    hub: Option<Addr<AuthHub>>,
    cache: quick_cache::unsync::Cache<KeyHash, Entry>,
    /// End users (customers) named by requests' `user` field.
    customers: quick_cache::unsync::Cache<String, CustomerEntry>,
    /// Lookups wanted or running, with who waits for each (none for a
    /// background refresh).
    pending: HashMap<KeyHash, Vec<Waiter>>,
    /// Lookups waiting for a free slot, oldest first.
    queued: VecDeque<KeyHash>,
    running: usize,
    max_running: usize,
    max_queued: usize,
    /// Bumped by every invalidation: a lookup that started before one must
    /// not put what it read into the cache.
    generation: u64,
    epoch: u64,
    ttl: Duration,
    meter: ActorMeter,
    /// `tollgate_key_lookups_total` by outcome: found, absent, failed, shed.
    lookups: [Counter; 4],
}

impl AuthActor {
    pub fn new(
        config: &Config,
        store: Option<Store>,
        redis: Option<Redis>,
        hub: Option<Addr<AuthHub>>,
        metrics: &Metrics,
    ) -> Self {
        let lookups = ["found", "absent", "failed", "shed"].map(|outcome| {
            metrics
                .key_lookups
                .get_or_create_owned(&OutcomeLabels { outcome })
        });
        let master = config
            .resolved_master_key
            .as_ref()
            .map(|k| hash_key(k.expose()));
        let master_info = Arc::new(KeyInfo {
            id: master.map(hex::encode).unwrap_or_default(),
            alias: Some("master".into()),
            is_master: true,
            ..Default::default()
        });
        let static_keys = config
            .keys
            .iter()
            .filter_map(|k| {
                let hash = hash_key(k.resolved.as_ref()?.expose());
                Some((
                    hash,
                    Arc::new(KeyInfo {
                        id: hex::encode(hash),
                        alias: k.alias.clone(),
                        models: k.models.clone(),
                        rpm_limit: k.rpm_limit.map(u64::from),
                        ..Default::default()
                    }),
                ))
            })
            .collect();
        AuthActor {
            master,
            master_info,
            static_keys,
            store,
            redis,
            hub,
            cache: quick_cache::unsync::Cache::new(config.auth.cache_max_entries.max(16)),
            customers: quick_cache::unsync::Cache::new(config.auth.cache_max_entries.max(16)),
            pending: HashMap::new(),
            queued: VecDeque::new(),
            running: 0,
            max_running: config.auth.max_concurrent_lookups.max(1),
            max_queued: config.auth.max_queued_lookups,
            generation: 0,
            epoch: 0,
            ttl: Duration::from_secs(config.auth.cache_ttl_secs.max(1)),
            meter: metrics.actor("auth"),
            lookups,
        }
    }

    fn fresh(&self, entry: &Entry, now: Instant) -> bool {
        entry.epoch == self.epoch && now < entry.fresh_until
    }

    /// Asks for a lookup of `hash` (joining one already wanted); `waiter`
    /// is answered when it completes. False if the queue is full.
    fn want(&mut self, ctx: &mut Context<Self>, hash: KeyHash, waiter: Option<Waiter>) -> bool {
        if let Some(waiters) = self.pending.get_mut(&hash) {
            waiters.extend(waiter);
            return true;
        }
        if self.running < self.max_running {
            self.pending.insert(hash, waiter.into_iter().collect());
            self.start(ctx, hash);
            return true;
        }
        if self.queued.len() >= self.max_queued {
            self.lookups[3].inc();
            return false;
        }
        self.pending.insert(hash, waiter.into_iter().collect());
        self.queued.push_back(hash);
        true
    }

    fn start(&mut self, ctx: &mut Context<Self>, hash: KeyHash) {
        let Some(store) = self.store.clone() else {
            return;
        };
        self.running += 1;
        let generation = self.generation;
        let fut = load(store, self.redis.clone(), hex::encode(hash), self.ttl);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.running -= 1;
            act.complete(hash, generation, res);
            act.start_queued(ctx);
        }));
    }

    fn start_queued(&mut self, ctx: &mut Context<Self>) {
        while self.running < self.max_running {
            let Some(hash) = self.queued.pop_front() else {
                return;
            };
            if self.pending.contains_key(&hash) {
                self.start(ctx, hash);
            }
        }
    }

    fn complete(
        &mut self,
        hash: KeyHash,
        generation: u64,
        result: Result<Option<KeyInfo>, StoreError>,
    ) {
        let waiters = self.pending.remove(&hash).unwrap_or_default();
        // None: the key does not exist; Err: we could not find out.
        self.lookups[match &result {
            Ok(Some(_)) => 0,
            Ok(None) => 1,
            Err(_) => 2,
        }]
        .inc();
        let outcome: Result<Option<Arc<KeyInfo>>, ()> = match result {
            Ok(found) => {
                let info = found.map(Arc::new);
                if generation == self.generation {
                    let ttl = if info.is_some() {
                        self.ttl
                    } else {
                        NEGATIVE_TTL.min(self.ttl)
                    };
                    self.cache.insert(
                        hash,
                        Entry {
                            info: info.clone(),
                            fresh_until: Instant::now() + ttl,
                            epoch: self.epoch,
                        },
                    );
                }
                Ok(info)
            }
            Err(e) => {
                // Serve what we knew if the database is away, and ask again
                // in a second rather than on every request.
                match self.cache.peek(&hash).and_then(|e| e.info.clone()) {
                    Some(stale) => {
                        tracing::debug!(error = %e, "key lookup failed; serving the cached entry");
                        if generation == self.generation {
                            self.cache.insert(
                                hash,
                                Entry {
                                    info: Some(stale.clone()),
                                    fresh_until: Instant::now() + RETRY_STALE_AFTER,
                                    epoch: self.epoch,
                                },
                            );
                        }
                        Ok(Some(stale))
                    }
                    None => {
                        if !waiters.is_empty() {
                            tracing::warn!(error = %e, "key lookup failed");
                        }
                        Err(())
                    }
                }
            }
        };
        for w in waiters {
            let _ = w.send(match &outcome {
                Ok(Some(info)) => Ok(info.clone()),
                Ok(None) => Err(GatewayError::InvalidKey),
                Err(()) => Err(GatewayError::Unavailable(
                    "cannot verify the API key: the key database is unreachable".into(),
                )),
            });
        }
    }
}

/// Redis (shared cache), then the database; what the database said is
/// shared back through Redis unless an invalidation happened meanwhile.
async fn load(
    store: Store,
    redis: Option<Redis>,
    hash: String,
    ttl: Duration,
) -> Result<Option<KeyInfo>, StoreError> {
    let mut generation = None;
    if let Some(r) = &redis {
        match r.lookup_key(&hash).await {
            Ok(Cached::Found(info)) => return Ok(Some(*info)),
            Ok(Cached::Absent) => return Ok(None),
            Ok(Cached::Miss { generation: g }) => generation = Some(g),
            // Redis away: the database alone decides, and nothing is shared.
            Err(_) => {}
        }
    }
    let Some(key) = store.get_key(&hash).await? else {
        share(redis, generation, hash, None, NEGATIVE_TTL);
        return Ok(None);
    };
    let user = match &key.user_id {
        Some(u) => store.get_user(u).await?,
        None => None,
    };
    let team = match &key.team_id {
        Some(t) => store.get_team(t).await?,
        None => None,
    };
    let mut info = KeyInfo::from_rows(&key, user.as_ref(), team.as_ref());
    if let Some(org) = team.as_ref().and_then(|t| t.organization_id.as_deref()) {
        info.org = org_owner(&store, org).await?;
    }
    if !info.model_max_budget.is_empty() {
        info.model_spend = store.key_model_spend(&hash).await?.into_iter().collect();
    }
    share(redis, generation, hash, Some(info.clone()), ttl);
    Ok(Some(info))
}

/// An organization as the checks see it: its own limits, else those of
/// the budget it links.
async fn org_owner(store: &Store, id: &str) -> Result<Option<Owner>, StoreError> {
    let Some(o) = store.get_org(id).await? else {
        return Ok(None);
    };
    let budget = match &o.budget_id {
        Some(b) => store.get_budget(b).await?,
        None => None,
    };
    let b = budget.as_ref();
    let positive = |n: Option<i64>| n.filter(|n| *n > 0).map(|n| n as u64);
    Ok(Some(Owner {
        id: o.organization_id,
        alias: o.organization_alias,
        models: serde_json::from_str(&o.models).unwrap_or_default(),
        spend: o.spend,
        max_budget: o.max_budget.or(b.and_then(|b| b.max_budget)),
        soft_budget: o.soft_budget.or(b.and_then(|b| b.soft_budget)),
        rpm_limit: positive(o.rpm_limit.or(b.and_then(|b| b.rpm_limit))),
        tpm_limit: positive(o.tpm_limit.or(b.and_then(|b| b.tpm_limit))),
        max_parallel_requests: positive(
            o.max_parallel_requests
                .or(b.and_then(|b| b.max_parallel_requests)),
        ),
        blocked: o.blocked,
    }))
}

/// Writes a lookup's result back to Redis off the lookup's own clock.
fn share(
    redis: Option<Redis>,
    generation: Option<i64>,
    hash: String,
    info: Option<KeyInfo>,
    ttl: Duration,
) {
    if let (Some(r), Some(generation)) = (redis, generation) {
        actix_rt::spawn(async move {
            let _ = r.remember_key(&hash, info.as_ref(), generation, ttl).await;
        });
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(hub) = &self.hub {
            hub.do_send(Register(ctx.address()));
        }
    }
}

/// The lookups in flight were cancelled with the old context: answer their
/// waiters now (they would otherwise wait forever), and start from an empty
/// cache so nothing half-written survives.
impl Supervised for AuthActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.generation += 1;
        self.cache.clear();
        self.customers.clear();
        self.queued.clear();
        self.running = 0;
        for (_, waiters) in self.pending.drain() {
            for w in waiters {
                let _ = w.send(Err(GatewayError::Unavailable(
                    "the key cache restarted; retry the request".into(),
                )));
            }
        }
    }
}

crate::actors::supervise::crashable!(AuthActor);

#[derive(Message)]
#[rtype(result = "Result<Arc<KeyInfo>, GatewayError>")]
pub struct Authenticate {
    pub key_hash: KeyHash,
    /// False when the token cannot be a stored key (wrong shape): only the
    /// master and config keys are checked, nothing is looked up.
    pub lookup: bool,
}

impl Handler<Authenticate> for AuthActor {
    type Result = ResponseFuture<Result<Arc<KeyInfo>, GatewayError>>;

    fn handle(&mut self, msg: Authenticate, ctx: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let hash = msg.key_hash;
        if let Some(master) = &self.master {
            if bool::from(master.ct_eq(&hash)) {
                let info = self.master_info.clone();
                return Box::pin(async move { Ok(info) });
            }
        }
        // A HashMap probe on a SHA-256 digest reveals nothing usable about
        // other keys, so it needs no constant-time treatment.
        if let Some(info) = self.static_keys.get(&hash) {
            let info = info.clone();
            return Box::pin(async move { Ok(info) });
        }
        if !msg.lookup || self.store.is_none() {
            return Box::pin(async { Err(GatewayError::InvalidKey) });
        }
        let now = Instant::now();
        if let Some(entry) = self.cache.get(&hash) {
            if self.fresh(entry, now) {
                let res = entry.info.clone().ok_or(GatewayError::InvalidKey);
                return Box::pin(async move { res });
            }
            if let Some(stale) = entry.info.clone() {
                // Known key past its TTL: answer now, refresh behind it.
                self.want(ctx, hash, None);
                return Box::pin(async move { Ok(stale) });
            }
        }
        let (tx, rx) = oneshot::channel();
        if !self.want(ctx, hash, Some(tx)) {
            return Box::pin(async {
                Err(GatewayError::Unavailable(
                    "too many API keys are being verified at once; retry shortly".into(),
                ))
            });
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(GatewayError::Unavailable("the key cache restarted".into()))
            })
        })
    }
}

/// Drop cached entries affected by a change.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Invalidate(pub Invalidation);

impl Handler<Invalidate> for AuthActor {
    type Result = ();

    fn handle(&mut self, msg: Invalidate, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        if msg.0 == Invalidation::Models {
            return; // ModelsActor's business: no key changed.
        }
        self.generation += 1;
        match msg.0 {
            Invalidation::All => self.epoch += 1,
            Invalidation::Key(hex_hash) => {
                if let Ok(bytes) = hex::decode(&hex_hash) {
                    if let Ok(hash) = <KeyHash>::try_from(bytes.as_slice()) {
                        self.cache.remove(&hash);
                    }
                }
            }
            Invalidation::User(id) => self.cache.retain(|_, e| {
                e.info
                    .as_ref()
                    .is_none_or(|i| i.user_id.as_deref() != Some(id.as_str()))
            }),
            Invalidation::Team(id) => self.cache.retain(|_, e| {
                e.info
                    .as_ref()
                    .is_none_or(|i| i.team_id.as_deref() != Some(id.as_str()))
            }),
            Invalidation::Customer(id) => {
                self.customers.remove(&id);
            }
            Invalidation::Org(id) => self.cache.retain(|_, e| {
                e.info
                    .as_ref()
                    .is_none_or(|i| i.org.as_ref().map(|o| o.id.as_str()) != Some(id.as_str()))
            }),
            Invalidation::Models => {}
        }
    }
}

/// The end user a request names, if the database knows it.
#[derive(Message)]
#[rtype(result = "Result<Option<Arc<CustomerInfo>>, GatewayError>")]
pub struct LookupCustomer {
    pub id: String,
}

impl Handler<LookupCustomer> for AuthActor {
    type Result = ResponseActFuture<Self, Result<Option<Arc<CustomerInfo>>, GatewayError>>;

    fn handle(&mut self, msg: LookupCustomer, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let now = Instant::now();
        let cached = self.customers.get(&msg.id).map(|e| {
            let fresh = e.epoch == self.epoch && now < e.fresh_until;
            (fresh, e.info.clone())
        });
        if let Some((true, info)) = cached {
            return Box::pin(actix::fut::ready(Ok(info)));
        }
        let Some(store) = self.store.clone() else {
            return Box::pin(actix::fut::ready(Ok(None)));
        };
        let stale = cached.and_then(|(_, info)| info);
        let (generation, ttl) = (self.generation, self.ttl);
        let id = msg.id;
        let lookup = {
            let id = id.clone();
            async move {
                let Some(c) = store.get_customer(&id).await? else {
                    return Ok(None);
                };
                // A linked budget's limits apply where the customer has none.
                let budget = match &c.budget_id {
                    Some(b) if c.max_budget.is_none() || c.soft_budget.is_none() => {
                        store.get_budget(b).await?
                    }
                    _ => None,
                };
                Ok::<_, StoreError>(Some((c, budget)))
            }
        };
        Box::pin(lookup.into_actor(self).map(move |res, act, _| match res {
            Ok(row) => {
                let info = row.map(|(c, b)| {
                    Arc::new(CustomerInfo {
                        id: c.user_id,
                        blocked: c.blocked,
                        spend: c.spend,
                        max_budget: c.max_budget.or(b.as_ref().and_then(|b| b.max_budget)),
                        soft_budget: c.soft_budget.or(b.as_ref().and_then(|b| b.soft_budget)),
                        allowed_models: serde_json::from_str(&c.allowed_models).unwrap_or_default(),
                    })
                });
                if generation == act.generation {
                    act.customers.insert(
                        id,
                        CustomerEntry {
                            info: info.clone(),
                            fresh_until: Instant::now() + ttl,
                            epoch: act.epoch,
                        },
                    );
                }
                Ok(info)
            }
            // The database is away: what we knew, else no restrictions
            // (the key itself was verified).
            Err(_) => Ok(stale),
        }))
    }
}
