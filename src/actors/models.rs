//! ModelsActor: owns the models added at run time as this replica last read
//! them from the database, and the topology built from them and the
//! config. A change (made here, announced by another replica through
//! Redis, or found by the periodic check) reads the table again, builds
//! the next topology and swaps it in whole: new requests use it at once,
//! requests in flight finish on the snapshot they started with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::config::{Config, ModelGroup};
use crate::metrics::{ActorMeter, Metrics};
use crate::model_list::{self, Sealer};
use crate::store::models::ProxyModelRow;
use crate::store::Store;
use crate::topology::{SharedTopology, Topology};

/// How often the table is read even without a change announced: the
/// safety net for replicas without Redis, and for missed messages.
const RECHECK_EVERY: Duration = Duration::from_secs(10);

pub struct ModelsActor {
    config: Arc<Config>,
    store: Option<Store>,
    topology: SharedTopology,
    sealer: Option<Sealer>,
    mock_url: Option<String>,
    metrics: Arc<Metrics>,
    /// (id, revision) of the stored models the current topology holds.
    loaded: Vec<(String, i64)>,
    meter: ActorMeter,
}

impl ModelsActor {
    pub fn new(
        config: Arc<Config>,
        store: Option<Store>,
        topology: SharedTopology,
        mock_url: Option<String>,
        metrics: Arc<Metrics>,
        loaded: Vec<(String, i64)>,
    ) -> Self {
        ModelsActor {
            sealer: sealer(&config),
            meter: metrics.actor("models"),
            config,
            store,
            topology,
            mock_url,
            metrics,
            loaded,
        }
    }
}

/// The key stored provider secrets are sealed with.
pub fn sealer(config: &Config) -> Option<Sealer> {
    config
        .storage
        .resolved_salt_key
        .as_ref()
        .or(config.resolved_master_key.as_ref())
        .map(|s| Sealer::new(s.expose()))
}

/// The config's model groups with the stored models merged in (a stored
/// model may join a configured group). A stored model that cannot be read
/// is left out and logged, never fatal: one bad row must not take the
/// others (or the gateway) down.
pub fn merge(
    config: &Config,
    rows: &[ProxyModelRow],
    sealer: Option<&Sealer>,
) -> BTreeMap<String, ModelGroup> {
    let mut models = config.models.clone();
    for row in rows {
        let Some(sealer) = sealer else {
            tracing::error!(model_id = %row.model_id, "stored model skipped: no master key or storage.salt_key to open its secrets");
            continue;
        };
        match model_list::read_stored(
            &row.model_id,
            &row.model_name,
            &row.litellm_params,
            &row.model_info,
            row.revision,
            sealer,
        ) {
            Ok(read) => models
                .entry(row.model_name.clone())
                .or_insert_with(|| ModelGroup {
                    deployments: Vec::new(),
                    routing_strategy: None,
                    retry_policy: None,
                })
                .deployments
                .push(read.deployment),
            Err(e) => {
                tracing::error!(model_id = %row.model_id, model = %row.model_name, error = %e, "stored model skipped: it cannot be read")
            }
        }
    }
    models
}

pub fn fingerprint(rows: &[ProxyModelRow]) -> Vec<(String, i64)> {
    rows.iter()
        .map(|r| (r.model_id.clone(), r.revision))
        .collect()
}

impl Actor for ModelsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.store.is_some() {
            ctx.run_interval(RECHECK_EVERY, |_, ctx| {
                ctx.notify(Reload);
            });
        }
    }
}

/// The stored models and the topology are plain data, rebuilt from the
/// database on the next reload.
impl Supervised for ModelsActor {}

crate::actors::supervise::crashable!(ModelsActor);

/// Read the stored models again; swap in a new topology if they changed.
/// Answered once the swap is done (or nothing changed).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Reload;

impl Handler<Reload> for ModelsActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _: Reload, ctx: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // One reload at a time (the mailbox waits): an older read can
        // never be applied after a newer one.
        ctx.wait(
            async move {
                match store {
                    Some(s) => s.list_proxy_models().await.map_err(|e| e.to_string()),
                    None => Ok(Vec::new()),
                }
            }
            .into_actor(self)
            .map(|rows, act, _| {
                let _ = tx.send(rows.map(|rows| act.apply(&rows)));
            }),
        );
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the models actor restarted".into()))
        })
    }
}

impl ModelsActor {
    fn apply(&mut self, rows: &[ProxyModelRow]) {
        let now = fingerprint(rows);
        if now == self.loaded {
            return;
        }
        let models = merge(&self.config, rows, self.sealer.as_ref());
        let prev = self.topology.load_full();
        let next = Topology::assemble(
            &self.config,
            &models,
            Some(&prev),
            self.mock_url.as_deref(),
            Some(&self.metrics),
        );
        tracing::info!(
            version = next.version,
            models = next.by_name.len(),
            stored = rows.len(),
            "model list changed: new topology in use"
        );
        self.topology.store(Arc::new(next));
        self.loaded = now;
    }
}
