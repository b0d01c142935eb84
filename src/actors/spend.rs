//! SpendActor: owns the spend write path of this replica.
//!
//! Batches arrive from the workers' SpendBuffers (each with the spool
//! segment that holds it) and from the spool left by a previous run. They
//! are written to the database in order, one transaction per write of up to
//! `spend.max_batch` rows (`Store::record_spend`: idempotent by request id,
//! rows locked in a fixed order), never more than one write at a time.
//! Once committed, their segments are deleted. While the database is away,
//! batches wait — in memory up to a bound, on disk only beyond it — and the
//! write is retried once a second; when the spool reaches
//! `spend.spool_max_bytes`, new requests are refused rather than served
//! without a durable record of their cost.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::auth_hub::{AuthHub, Changed};
use crate::config::SpendConfig;
use crate::metrics::{ActorMeter, EntityLabels, KeySpendLabels, Metrics, ModelLabels, TokenLabels};
use crate::shared::Invalidation;
use crate::store::{now_ms, BudgetReset};
use crate::store::{SpendCommit, SpendLogRow, Store, StoreError};

/// Rows kept in memory while they wait, at least; beyond this (or twice
/// `spend.max_batch`, if more), batches are re-read from their spool
/// segments when their turn comes.
const MIN_IN_MEMORY: usize = 10_000;
/// Pause before retrying a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A segment still waiting this long after its hand-over (or twice the
/// write interval, if longer) is fsynced. One committed sooner (nearly all
/// of them) is deleted without ever being written to disk: its pages die
/// in the page cache, which was enough to survive a crash of the process,
/// and the database holds its rows. A power loss may lose this much.
const MIN_SYNC_AFTER: Duration = Duration::from_secs(1);

struct Batch {
    /// `None` once dropped from memory (re-read from `segment`).
    rows: Option<Vec<SpendLogRow>>,
    /// Counted in `SpendActor::in_memory` (until written).
    counted: bool,
    count: usize,
    segment: Option<PathBuf>,
    bytes: u64,
}

pub struct SpendActor {
    store: Option<Store>,
    queue: VecDeque<Batch>,
    in_memory: usize,
    spool_bytes: u64,
    writing: bool,
    retry_at: Option<Instant>,
    failing_since: Option<Instant>,
    max_batch: usize,
    max_in_memory: usize,
    sync_after: Duration,
    /// Rows per write now: halved after a failure (down to 100), doubled
    /// back after each success — a backlog drains in pieces that fit.
    batch_limit: usize,
    flush_every: Duration,
    spool_max_bytes: u64,
    spool_near_full: bool,
    /// Set while the spool is full: admission refuses new requests.
    spool_full: Arc<AtomicBool>,
    /// Told of every budget reset, so caches and ledgers everywhere start
    /// the new period from zero.
    hub: Addr<AuthHub>,
    reset_every: Duration,
    resetting: bool,
    metrics: Arc<Metrics>,
    meter: ActorMeter,
}

impl SpendActor {
    /// `leftover`: segments found in the spool at start-up (path, bytes).
    pub fn new(
        store: Option<Store>,
        config: &SpendConfig,
        leftover: Vec<(PathBuf, u64)>,
        spool_full: Arc<AtomicBool>,
        hub: Addr<AuthHub>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut actor = SpendActor {
            store,
            queue: VecDeque::new(),
            in_memory: 0,
            spool_bytes: 0,
            writing: false,
            retry_at: None,
            failing_since: None,
            max_batch: config.max_batch.max(1),
            max_in_memory: MIN_IN_MEMORY.max(config.max_batch.saturating_mul(2)),
            sync_after: MIN_SYNC_AFTER.max(Duration::from_millis(config.flush_interval_ms) * 2),
            batch_limit: config.max_batch.max(1),
            flush_every: Duration::from_millis(config.flush_interval_ms),
            spool_max_bytes: config.spool_max_bytes,
            spool_near_full: false,
            spool_full,
            hub,
            reset_every: Duration::from_secs(config.budget_reset_interval_secs),
            resetting: false,
            meter: metrics.actor("spend"),
            metrics,
        };
        if !leftover.is_empty() {
            tracing::info!(
                segments = leftover.len(),
                "replaying spend left in the spool by a previous run"
            );
        }
        for (path, bytes) in leftover {
            actor.enqueue(Batch {
                rows: None,
                counted: false,
                // Unknown until read; a row is a few hundred bytes.
                count: (bytes / 300).max(1) as usize,
                segment: Some(path),
                bytes,
            });
        }
        actor
    }

    fn enqueue(&mut self, mut batch: Batch) {
        if let Some(rows) = &batch.rows {
            if self.in_memory + rows.len() > self.max_in_memory && batch.segment.is_some() {
                batch.rows = None; // on disk only until its turn
            } else {
                self.in_memory += rows.len();
                batch.counted = true;
            }
        }
        self.spool_bytes += batch.bytes;
        self.queue.push_back(batch);
        self.update_gauges();
    }

    fn update_gauges(&mut self) {
        let rows = self.queued_rows();
        self.metrics.spend_queue_rows.set(rows as i64);
        self.metrics.spend_spool_bytes.set(self.spool_bytes as i64);
        let near = self.spool_bytes * 10 >= self.spool_max_bytes * 8;
        if near && !self.spool_near_full {
            tracing::warn!(
                spool_bytes = self.spool_bytes,
                limit = self.spool_max_bytes,
                "the spend spool is over 80% full: the database has not taken spend for a while; at 100% new requests are refused"
            );
            self.metrics
                .alerts
                .raise(crate::observe::alerts::Alert::SpendSpoolGrowing {
                    bytes: self.spool_bytes,
                    limit: self.spool_max_bytes,
                });
        }
        self.spool_near_full = near;
        let full = self.spool_bytes >= self.spool_max_bytes;
        if self.spool_full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::error!("the spend spool is full: refusing new requests until the database takes spend again");
            } else {
                tracing::info!("the spend spool has room again: accepting requests");
            }
        }
    }

    fn queued_rows(&self) -> usize {
        self.queue.iter().map(|b| b.count).sum()
    }

    /// Starts the next database write if none is running.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.queue.is_empty() {
            return;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some(store) = self.store.clone() else {
            // Nothing to persist to: spend is metrics only.
            self.queue.clear();
            self.in_memory = 0;
            self.update_gauges();
            return;
        };
        let mut take = Vec::new();
        let mut count = 0;
        while let Some(b) = self.queue.front() {
            if !take.is_empty() && count + b.count > self.batch_limit {
                break;
            }
            count += b.count;
            take.extend(self.queue.pop_front());
        }
        self.writing = true;
        let started = Instant::now();
        let write = async move {
            let mut rows = Vec::with_capacity(count);
            for b in &mut take {
                if b.rows.is_none() {
                    if let Some(path) = b.segment.clone() {
                        let read = actix_web::web::block(move || crate::spool::read(&path))
                            .await
                            .map_err(|e| StoreError::Query(e.to_string()))
                            .and_then(|r| r.map_err(|e| StoreError::Query(e.to_string())));
                        match read {
                            Ok(r) => b.rows = Some(r),
                            Err(e) => return (take, Err(e)),
                        }
                    }
                }
                // Rows with a spool segment move into the write (on failure
                // they are read back from it); others are copied.
                if b.segment.is_some() {
                    rows.extend(b.rows.take().into_iter().flatten());
                } else {
                    rows.extend(b.rows.iter().flatten().cloned());
                }
            }
            let result = store.record_spend(rows).await;
            (take, result)
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |(taken, result), act, ctx| {
                    act.writing = false;
                    act.finish_write(taken, result, started);
                    // A backlog (more than a batch waiting: after an
                    // outage, or a burst) drains write after write.
                    // Otherwise the next write waits for the tick, so one
                    // transaction carries a whole interval: a write costs
                    // per page it dirties more than per row (hot index
                    // pages are written once per transaction, not once
                    // per back-to-back small one).
                    if act.queued_rows() >= act.batch_limit {
                        act.pump(ctx);
                    }
                }),
        );
    }

    fn finish_write(
        &mut self,
        taken: Vec<Batch>,
        result: Result<SpendCommit, StoreError>,
        started: Instant,
    ) {
        match result {
            Ok(commit) => {
                let m = &self.metrics;
                m.spend_batches.inc();
                m.spend_rows_written.inc_by(commit.written as u64);
                m.spend_batch_rows
                    .observe((commit.written + commit.duplicates) as f64);
                m.spend_batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        after_secs = since.elapsed().as_secs(),
                        "spend is reaching the database again"
                    );
                }
                self.retry_at = None;
                self.batch_limit = (self.batch_limit * 2).min(self.max_batch);
                let mut segments = Vec::new();
                for b in taken {
                    if b.counted {
                        self.in_memory = self.in_memory.saturating_sub(b.count);
                    }
                    self.spool_bytes = self.spool_bytes.saturating_sub(b.bytes);
                    segments.extend(b.segment);
                }
                if !segments.is_empty() {
                    actix_rt::task::spawn_blocking(move || {
                        for s in segments {
                            if let Err(e) = std::fs::remove_file(&s) {
                                tracing::warn!(segment = %s.display(), error = %e, "cannot delete a committed spool segment (it will be replayed harmlessly)");
                            }
                        }
                    });
                }
            }
            Err(e) => {
                if self.failing_since.is_none() {
                    self.failing_since = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot write spend to the database; it is kept in the spool and retried");
                }
                self.metrics.spend_write_failures.inc();
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                self.batch_limit = (self.batch_limit / 2).max(100.min(self.max_batch));
                for b in taken.into_iter().rev() {
                    self.queue.push_front(b);
                }
            }
        }
        self.update_gauges();
    }
}

impl Actor for SpendActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.flush_every, |act, ctx| act.pump(ctx));
        ctx.run_interval(self.reset_every, |act, ctx| act.reset_budgets(ctx));
    }
}

impl SpendActor {
    /// Resets every budget whose period is over (see
    /// `Store::reset_due_budgets`) and tells every cache and ledger.
    fn reset_budgets(&mut self, ctx: &mut Context<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if self.resetting || store.breaker().is_open() {
            return;
        }
        self.resetting = true;
        let hub = self.hub.clone();
        let metrics = self.metrics.clone();
        let job = async move {
            let reset = store
                .reset_due_budgets(now_ms(), crate::access::next_reset)
                .await?;
            for r in &reset {
                tracing::info!(budget = ?r, "budget period over: spend reset to 0");
                let entity = match r {
                    BudgetReset::Key(_) => "key",
                    BudgetReset::User(_) => "user",
                    BudgetReset::Team(_) => "team",
                    BudgetReset::Customer(_) => "customer",
                    BudgetReset::Org(_) => "organization",
                };
                metrics
                    .budget_resets
                    .get_or_create(&EntityLabels { entity })
                    .inc();
                let (what, key_hashes) = match r {
                    BudgetReset::Key(t) => (Invalidation::Key(t.clone()), vec![t.clone()]),
                    BudgetReset::User(u) => (
                        Invalidation::User(u.clone()),
                        store
                            .keys_of_user(u)
                            .await?
                            .into_iter()
                            .map(|k| k.token)
                            .collect(),
                    ),
                    BudgetReset::Team(t) => (
                        Invalidation::Team(t.clone()),
                        store
                            .keys_of_team(t)
                            .await?
                            .into_iter()
                            .map(|k| k.token)
                            .collect(),
                    ),
                    BudgetReset::Customer(c) => (Invalidation::Customer(c.clone()), Vec::new()),
                    BudgetReset::Org(o) => {
                        (Invalidation::Org(o.clone()), store.keys_of_org(o).await?)
                    }
                };
                let _ = hub.send(Changed { what, key_hashes }).await;
            }
            Ok::<_, StoreError>(reset.len())
        };
        ctx.spawn(job.into_actor(self).map(|res, act, _| {
            act.resetting = false;
            if let Err(e) = res {
                tracing::warn!(error = %e, "budget reset failed; retrying at the next interval");
            }
        }));
    }
}

/// The queue is a plain list of batches and segment paths: it survives a
/// restart as it is; the write that was running is retried.
impl Supervised for SpendActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.writing = false;
    }
}

crate::actors::supervise::crashable!(SpendActor);

/// Settlements from a worker's SpendBuffer, with the spool segment (path,
/// bytes) that holds them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SettleBatch {
    pub rows: Vec<SpendLogRow>,
    pub segment: Option<(PathBuf, u64)>,
}

impl Handler<SettleBatch> for SpendActor {
    type Result = ();

    fn handle(&mut self, msg: SettleBatch, ctx: &mut Context<Self>) {
        let _t = self.meter.handling();
        self.count(&msg.rows);
        let (segment, bytes) = match msg.segment {
            Some((p, b)) => (Some(p), b),
            None => (None, 0),
        };
        if let Some(path) = segment.clone() {
            ctx.run_later(self.sync_after, move |_, _| {
                actix_rt::task::spawn_blocking(move || {
                    // Gone: committed and deleted, nothing to keep.
                    if let Ok(file) = std::fs::File::open(&path) {
                        let _ = file.sync_data();
                    }
                });
            });
        }
        self.enqueue(Batch {
            counted: false,
            count: msg.rows.len(),
            rows: Some(msg.rows),
            segment,
            bytes,
        });
        if self.queued_rows() >= self.max_batch {
            self.pump(ctx);
        }
    }
}

impl SpendActor {
    /// Token and spend metrics, as settlements arrive: summed per batch
    /// first, so a label set is looked up once per batch, not per row.
    fn count(&self, rows: &[SpendLogRow]) {
        let mut by_model: HashMap<&str, (u64, u64, f64)> = HashMap::new();
        let mut by_key: HashMap<(&str, &str), f64> = HashMap::new();
        for r in rows {
            let m = by_model.entry(&r.model_group).or_default();
            m.0 += r.prompt_tokens.max(0) as u64;
            m.1 += r.completion_tokens.max(0) as u64;
            m.2 += r.spend;
            if r.spend > 0.0 {
                *by_key
                    .entry((
                        r.key_alias.as_deref().unwrap_or_default(),
                        r.team_id.as_deref().unwrap_or_default(),
                    ))
                    .or_default() += r.spend;
            }
        }
        let m = &self.metrics;
        for (model, (prompt, completion, spend)) in by_model {
            for (kind, n) in [("prompt", prompt), ("completion", completion)] {
                if n > 0 {
                    m.tokens
                        .get_or_create(&TokenLabels {
                            model: model.to_string(),
                            kind,
                        })
                        .inc_by(n);
                }
            }
            if spend > 0.0 {
                m.cost
                    .get_or_create(&ModelLabels {
                        model: model.to_string(),
                    })
                    .inc_by(spend);
            }
        }
        for ((alias, team), spend) in by_key {
            m.key_spend
                .get_or_create(&KeySpendLabels {
                    key_alias: alias.to_string(),
                    team: team.to_string(),
                })
                .inc_by(spend);
        }
    }
}

/// Write what is queued now; answers how many batches still wait (the
/// caller polls until 0 or it gives up, e.g. at shutdown).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Flush;

impl Handler<Flush> for SpendActor {
    type Result = usize;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> usize {
        let _t = self.meter.handling();
        self.retry_at = None;
        self.pump(ctx);
        self.queue.len() + usize::from(self.writing)
    }
}
