//! BudgetActor: owns this replica's budget ledger — per budgeted entity
//! (key, user, team, end user, key×model) the spend it knows of and the
//! cost reserved by requests in flight.
//!
//! Admission reserves a request's estimated cost against every budget that
//! applies, all or nothing: a refusal at one level reserves nothing at the
//! others. Settlement replaces the estimate by the real cost. A budget is
//! exceeded once known spend plus reservations reach it, so parallel
//! requests cannot overshoot it by more than one request's estimate.
//!
//! Known spend is the larger of the database's figure (from the key cache)
//! and the spend settled here since: this replica's own spend counts at
//! once, other replicas' once the cache refreshes. Requests with no budget
//! anywhere never reach this actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::error::GatewayError;
use crate::metrics::{ActorMeter, EntityLabels, Metrics};
use crate::pricing::python_float;
use crate::shared::{Redis, SharedBudget};

/// Entries unused this long (and with nothing reserved) are forgotten.
const IDLE: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Key,
    User,
    Team,
    Customer,
    Org,
    /// A key's budget for one model group.
    KeyModel,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::User => "user",
            Kind::Team => "team",
            Kind::Customer => "customer",
            Kind::Org => "organization",
            Kind::KeyModel => "key_model",
        }
    }
}

/// One budget that applies to a request.
#[derive(Clone, Debug)]
pub struct Limit {
    pub kind: Kind,
    /// The entity's id (for KeyModel: key hash, NUL, model group).
    pub id: String,
    /// Spend as the database last said.
    pub db_spend: f64,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    /// How refusals and alerts name it (LiteLLM's wording needs these).
    pub name: String,
    pub alias: Option<String>,
    pub model: Option<String>,
}

/// The budgets that apply to `key` calling `group`: its own, its user's,
/// its team's, its team's organization's, its per-model budget for `group`. Soft budgets count too
/// (they are tracked, never enforced).
pub fn limits_for(
    key: &crate::access::KeyInfo,
    group: &str,
    customer: Option<&crate::actors::auth::CustomerInfo>,
) -> Vec<Limit> {
    let mut out = Vec::new();
    if let Some(c) = customer {
        if c.max_budget.is_some() || c.soft_budget.is_some() {
            out.push(Limit {
                kind: Kind::Customer,
                id: c.id.clone(),
                db_spend: c.spend,
                max_budget: c.max_budget,
                soft_budget: c.soft_budget,
                name: c.id.clone(),
                alias: None,
                model: None,
            });
        }
    }
    if key.is_master {
        return out;
    }
    let mut push = |kind,
                    id: &str,
                    db_spend,
                    max_budget: Option<f64>,
                    soft_budget: Option<f64>,
                    name: &str| {
        if max_budget.is_some() || soft_budget.is_some() {
            out.push(Limit {
                kind,
                id: id.to_string(),
                db_spend,
                max_budget,
                soft_budget,
                name: name.to_string(),
                alias: key.alias.clone(),
                model: (kind == Kind::KeyModel).then(|| group.to_string()),
            });
        }
    };
    push(
        Kind::Key,
        &key.id,
        key.spend,
        key.max_budget,
        key.soft_budget,
        key.display_name(),
    );
    if let Some(u) = &key.user {
        push(
            Kind::User,
            &u.id,
            u.spend,
            u.max_budget,
            u.soft_budget,
            &u.id,
        );
    }
    if let Some(t) = &key.team {
        push(
            Kind::Team,
            &t.id,
            t.spend,
            t.max_budget,
            t.soft_budget,
            &t.id,
        );
    }
    if let Some(o) = &key.org {
        push(
            Kind::Org,
            &o.id,
            o.spend,
            o.max_budget,
            o.soft_budget,
            &o.id,
        );
    }
    if let Some(max) = key.model_max_budget.get(group) {
        let spent = key.model_spend.get(group).copied().unwrap_or(0.0);
        push(
            Kind::KeyModel,
            &format!("{}\0{group}", key.id),
            spent,
            Some(*max),
            None,
            &key.id,
        );
    }
    out
}

/// What a request holds between admission and settlement.
#[derive(Debug)]
pub struct Reservation {
    entities: Vec<(Kind, String)>,
    estimate: f64,
    /// Its member in the shared (Redis) ledger, if it was made there.
    shared: Option<String>,
}

struct Entry {
    spent: f64,
    reserved: f64,
    soft_budget: Option<f64>,
    soft_crossed: bool,
    name: String,
    last_used: Instant,
}

pub struct BudgetActor {
    ledger: HashMap<(Kind, String), Entry>,
    /// The fleet's ledger. Without it (or while it is unreachable) each
    /// replica enforces budgets on its own view.
    redis: Option<Redis>,
    /// How long a shared reservation outlives a replica that died holding it.
    lease: Duration,
    fallback_logged: bool,
    /// HTTP status of a refusal (400 or 429, `spend.budget_exceeded_status`).
    status: u16,
    metrics: Arc<Metrics>,
    meter: ActorMeter,
}

impl BudgetActor {
    pub fn new(status: u16, redis: Option<Redis>, lease: Duration, metrics: Arc<Metrics>) -> Self {
        BudgetActor {
            ledger: HashMap::new(),
            redis,
            lease,
            fallback_logged: false,
            status,
            meter: metrics.actor("budget"),
            metrics,
        }
    }

    fn refusal(&self, l: &Limit, spent: f64, max: f64) -> GatewayError {
        self.metrics
            .budget_refusals
            .get_or_create(&EntityLabels {
                entity: l.kind.label(),
            })
            .inc();
        self.metrics
            .alerts
            .raise(crate::observe::alerts::Alert::BudgetExceeded {
                entity: l.kind.label(),
                name: l.name.clone(),
                spend: spent,
                max_budget: max,
            });
        let (s, m) = (python_float(spent), python_float(max));
        let message = match l.kind {
            Kind::Key => format!("Budget has been exceeded! Current cost: {s}, Max budget: {m}"),
            Kind::Team => {
                format!(
                    "Budget has been exceeded! Team={} Current cost: {s}, Max budget: {m}",
                    l.name
                )
            }
            Kind::User => format!(
                "ExceededBudget: User={} over budget. Spend={s}, Budget={m}",
                l.name
            ),
            Kind::Customer => format!(
                "ExceededBudget: End User={} over budget. Spend={s}, Budget={m}",
                l.name
            ),
            Kind::Org => format!(
                "Budget has been exceeded! Organization={} Current cost: {s}, Max budget: {m}",
                l.name
            ),
            Kind::KeyModel => format!(
                "LiteLLM Virtual Key: {}, key_alias: {}, exceeded budget for model={}",
                l.name,
                l.alias.as_deref().unwrap_or("None"),
                l.model.as_deref().unwrap_or_default()
            ),
        };
        GatewayError::BudgetExceeded {
            message,
            status: self.status,
        }
    }

    fn evict_idle(&mut self) {
        let now = Instant::now();
        self.ledger
            .retain(|_, e| e.reserved > 0.0 || now.duration_since(e.last_used) < IDLE);
    }
}

impl Actor for BudgetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE, |act, _| act.evict_idle());
    }
}

/// Reservations of requests cut off by a restart are lost with the old
/// state; the ledger starts again from the database's spend.
impl Supervised for BudgetActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.ledger.clear();
    }
}

crate::actors::supervise::crashable!(BudgetActor);

/// Admit a request of estimated cost `estimate` against `limits`.
#[derive(Message)]
#[rtype(result = "Result<Reservation, GatewayError>")]
pub struct Reserve {
    pub limits: Vec<Limit>,
    pub estimate: f64,
}

impl Handler<Reserve> for BudgetActor {
    type Result = ResponseActFuture<Self, Result<Reservation, GatewayError>>;

    fn handle(&mut self, msg: Reserve, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let Some(redis) = self.redis.clone().filter(|r| !r.breaker().is_open()) else {
            return Box::pin(actix::fut::ready(self.reserve_locally(msg)));
        };
        let member = format!("{}:{}", uuid::Uuid::new_v4().simple(), msg.estimate);
        let lease = self.lease;
        let shared = {
            let member = member.clone();
            let budgets: Vec<(&'static str, String, f64, Option<f64>)> = msg
                .limits
                .iter()
                .map(|l| (l.kind.label(), l.id.clone(), l.db_spend, l.max_budget))
                .collect();
            async move {
                let budgets: Vec<SharedBudget> = budgets
                    .iter()
                    .map(|(kind, id, db_spend, max_budget)| SharedBudget {
                        kind,
                        id,
                        db_spend: *db_spend,
                        max_budget: *max_budget,
                    })
                    .collect();
                redis.reserve_budget(&budgets, &member, lease).await
            }
        };
        Box::pin(shared.into_actor(self).map(move |res, act, _| match res {
            Ok(None) => {
                act.fallback_logged = false;
                act.track(&msg.limits, 0.0);
                Ok(Reservation {
                    entities: msg.limits.into_iter().map(|l| (l.kind, l.id)).collect(),
                    estimate: msg.estimate,
                    shared: Some(member),
                })
            }
            Ok(Some((i, spent))) => {
                let l = &msg.limits[i.min(msg.limits.len() - 1)];
                Err(act.refusal(l, spent, l.max_budget.unwrap_or(0.0)))
            }
            Err(e) => {
                if !act.fallback_logged {
                    act.fallback_logged = true;
                    tracing::warn!(error = %e, "the shared budget ledger is unreachable: enforcing budgets on this replica's view");
                }
                act.reserve_locally(msg)
            }
        }))
    }
}

impl BudgetActor {
    /// Local entries for `limits`, `reserve` added to each.
    fn track(&mut self, limits: &[Limit], reserve: f64) {
        let now = Instant::now();
        for l in limits {
            let e = self
                .ledger
                .entry((l.kind, l.id.clone()))
                .or_insert_with(|| Entry {
                    spent: l.db_spend,
                    reserved: 0.0,
                    soft_budget: None,
                    soft_crossed: false,
                    name: l.name.clone(),
                    last_used: now,
                });
            e.spent = e.spent.max(l.db_spend);
            e.reserved += reserve;
            e.soft_budget = l.soft_budget;
            e.last_used = now;
        }
    }

    fn reserve_locally(&mut self, msg: Reserve) -> Result<Reservation, GatewayError> {
        // Check every level first: a refusal reserves nothing anywhere.
        for l in &msg.limits {
            let Some(max) = l.max_budget else { continue };
            let (spent, reserved) = self
                .ledger
                .get(&(l.kind, l.id.clone()))
                .map(|e| (e.spent.max(l.db_spend), e.reserved))
                .unwrap_or((l.db_spend, 0.0));
            if spent + reserved >= max {
                return Err(self.refusal(l, spent, max));
            }
        }
        self.track(&msg.limits, msg.estimate);
        Ok(Reservation {
            entities: msg.limits.into_iter().map(|l| (l.kind, l.id)).collect(),
            estimate: msg.estimate,
            shared: None,
        })
    }
}

/// A request ended: its reservation becomes its real cost.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub reservation: Reservation,
    pub actual: f64,
}

impl Handler<Release> for BudgetActor {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        let r = msg.reservation;
        if let (Some(member), Some(redis)) = (&r.shared, self.redis.clone()) {
            let entities: Vec<(&'static str, String)> = r
                .entities
                .iter()
                .map(|(k, id)| (k.label(), id.clone()))
                .collect();
            let (member, actual) = (member.clone(), msg.actual);
            // If this fails the reservation expires with its lease and the
            // spend shows once the database has it.
            actix_rt::spawn(async move {
                let _ = redis.release_budget(&entities, &member, actual).await;
            });
        }
        let local_reserve = if r.shared.is_some() { 0.0 } else { r.estimate };
        for key in r.entities {
            let kind = key.0;
            let Some(e) = self.ledger.get_mut(&key) else {
                continue;
            };
            e.reserved = (e.reserved - local_reserve).max(0.0);
            e.spent += msg.actual;
            if let Some(soft) = e.soft_budget {
                if e.spent >= soft && !e.soft_crossed {
                    e.soft_crossed = true;
                    self.metrics
                        .soft_budget_crossed
                        .get_or_create(&EntityLabels {
                            entity: kind.label(),
                        })
                        .inc();
                    tracing::warn!(
                        entity = kind.label(),
                        name = %e.name,
                        spend = e.spent,
                        soft_budget = soft,
                        "soft budget crossed"
                    );
                    self.metrics
                        .alerts
                        .raise(crate::observe::alerts::Alert::SoftBudgetCrossed {
                            entity: kind.label(),
                            name: e.name.clone(),
                            spend: e.spent,
                            soft_budget: soft,
                        });
                }
            }
        }
    }
}

/// An entity's spend was reset (budget period over) or changed through
/// the API: start again from the database's figure.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget {
    pub kind: Kind,
    pub id: String,
}

impl Handler<Forget> for BudgetActor {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        if let Some(redis) = self.redis.clone() {
            let (kind, id) = (msg.kind.label(), msg.id.clone());
            actix_rt::spawn(async move {
                let _ = redis.forget_budget(kind, &id).await;
            });
        }
        // A key's per-model budgets reset with it.
        let model_prefix = format!("{}\0", msg.id);
        for ((kind, id), e) in self.ledger.iter_mut() {
            let hit = (*kind == msg.kind && *id == msg.id)
                || (msg.kind == Kind::Key
                    && *kind == Kind::KeyModel
                    && id.starts_with(&model_prefix));
            if hit {
                // Reservations in flight stay; the spend is the database's again.
                e.spent = 0.0;
                e.soft_crossed = false;
            }
        }
    }
}
