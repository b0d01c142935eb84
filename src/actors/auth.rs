//! AuthActor (one per HTTP worker): owns that worker's key cache and answers
//! "who is this?". Handlers hash the presented token on their own thread
//! and send only the SHA-256 digest; raw keys never reach actor state.
//!
//! Lookup order: master/config keys → local cache → Redis → database. Many
//! concurrent misses of one key share one lookup. Entries live `ttl`; an
//! invalidation (local or from another replica through Redis) drops them at
//! once. If the database is down, an expired entry is served stale rather
//! than failing a key we knew a moment ago; a key never seen gets 503.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::access::KeyInfo;
use crate::actors::auth_hub::{AuthHub, Register};
use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::ActorMeter;
use crate::shared::{Invalidation, Redis};
use crate::store::{Store, StoreError};

pub type KeyHash = [u8; 32];

pub fn hash_key(token: &str) -> KeyHash {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hash_hex(token: &str) -> String {
    hex::encode(hash_key(token))
}

/// How unknown keys are remembered: long enough to shield the database
/// from a flood of bad keys, short enough not to matter.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

struct Entry {
    info: Option<Arc<KeyInfo>>,
    loaded_at: Instant,
}

type Waiter = oneshot::Sender<Result<Arc<KeyInfo>, GatewayError>>;

pub struct AuthActor {
    master: Option<KeyHash>,
    master_info: Arc<KeyInfo>,
    static_keys: HashMap<KeyHash, Arc<KeyInfo>>,
    store: Option<Store>,
    redis: Option<Redis>,
    hub: Option<Addr<AuthHub>>,
    cache: HashMap<KeyHash, Entry>,
    pending: HashMap<KeyHash, Vec<Waiter>>,
    /// Bumped by every invalidation: a lookup that started before one must
    /// not put what it read into the cache.
    generation: u64,
    ttl: Duration,
    max_entries: usize,
    meter: ActorMeter,
}

impl AuthActor {
    pub fn new(
        config: &Config,
        store: Option<Store>,
        redis: Option<Redis>,
        hub: Option<Addr<AuthHub>>,
        meter: ActorMeter,
    ) -> Self {
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
                        rpm_limit: k.rpm_limit,
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
            cache: HashMap::new(),
            pending: HashMap::new(),
            generation: 0,
            ttl: Duration::from_secs(config.auth.cache_ttl_secs.max(1)),
            max_entries: config.auth.cache_max_entries.max(16),
            meter,
        }
    }

    fn fresh(&self, entry: &Entry, now: Instant) -> bool {
        let ttl = if entry.info.is_some() {
            self.ttl
        } else {
            NEGATIVE_TTL.min(self.ttl)
        };
        now.duration_since(entry.loaded_at) < ttl
    }

    fn insert(&mut self, hash: KeyHash, info: Option<Arc<KeyInfo>>) {
        if self.cache.len() >= self.max_entries && !self.cache.contains_key(&hash) {
            let now = Instant::now();
            let ttl = self.ttl;
            self.cache
                .retain(|_, e| now.duration_since(e.loaded_at) < ttl);
            if self.cache.len() >= self.max_entries {
                // Still full of live entries: drop an arbitrary one (a
                // HashMap's first is as good as random) rather than grow.
                if let Some(victim) = self.cache.keys().next().copied() {
                    self.cache.remove(&victim);
                }
            }
        }
        self.cache.insert(
            hash,
            Entry {
                info,
                loaded_at: Instant::now(),
            },
        );
    }

    fn complete(
        &mut self,
        hash: KeyHash,
        generation: u64,
        result: Result<Option<KeyInfo>, StoreError>,
    ) {
        let waiters = self.pending.remove(&hash).unwrap_or_default();
        // None: the key does not exist; Err: we could not find out.
        let outcome: Result<Option<Arc<KeyInfo>>, ()> = match result {
            Ok(found) => {
                let info = found.map(Arc::new);
                if generation == self.generation {
                    self.insert(hash, info.clone());
                }
                Ok(info)
            }
            Err(e) => {
                // Serve what we knew if the database is away.
                match self.cache.get(&hash).and_then(|e| e.info.clone()) {
                    Some(stale) => {
                        tracing::warn!(error = %e, "key lookup failed; serving the cached entry");
                        Ok(Some(stale))
                    }
                    None => {
                        tracing::warn!(error = %e, "key lookup failed");
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

async fn load(
    store: Store,
    redis: Option<Redis>,
    hash: String,
    ttl: Duration,
) -> Result<Option<KeyInfo>, StoreError> {
    if let Some(r) = &redis {
        if let Some(info) = r.get_key(&hash).await {
            return Ok(Some(info));
        }
    }
    let Some(key) = store.get_key(&hash).await? else {
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
    let info = KeyInfo::from_rows(&key, user.as_ref(), team.as_ref());
    if let Some(r) = &redis {
        r.put_key(&info, ttl).await;
    }
    Ok(Some(info))
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
        let now = Instant::now();
        if let Some(entry) = self.cache.get(&hash) {
            if self.fresh(entry, now) {
                let res = entry.info.clone().ok_or(GatewayError::InvalidKey);
                return Box::pin(async move { res });
            }
        }
        let Some(store) = self.store.clone() else {
            return Box::pin(async { Err(GatewayError::InvalidKey) });
        };
        let (tx, rx) = oneshot::channel();
        let first = match self.pending.get_mut(&hash) {
            Some(waiters) => {
                waiters.push(tx);
                false
            }
            None => {
                self.pending.insert(hash, vec![tx]);
                true
            }
        };
        if first {
            let generation = self.generation;
            let fut = load(store, self.redis.clone(), hex::encode(hash), self.ttl);
            ctx.spawn(
                fut.into_actor(self)
                    .map(move |res, act, _| act.complete(hash, generation, res)),
            );
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
        self.generation += 1;
        match msg.0 {
            Invalidation::All => self.cache.clear(),
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
        }
    }
}
