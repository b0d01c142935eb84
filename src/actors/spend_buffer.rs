//! SpendBuffer: one per HTTP worker. Owns that worker's not-yet-settled
//! spend and hands it to SpendActor in batches (every 100 ms, or at 1,000
//! entries), so a request's settlement is a same-thread message and
//! SpendActor's thread wakes ten times a second instead of once a request.
//! On stop — and on drop, should the worker's thread end first — whatever
//! is pending is handed over: nothing is lost to the batching.

use std::time::Duration;

use actix::prelude::*;

use crate::actors::spend::{Settle, SettleBatch, SpendActor};
use crate::actors::Metered;
use crate::metrics::ActorMeter;

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_AT: usize = 1_000;

pub struct SpendBuffer {
    pending: Vec<Settle>,
    spend: Metered<SpendActor>,
    meter: ActorMeter,
}

impl SpendBuffer {
    pub fn new(spend: Metered<SpendActor>, meter: ActorMeter) -> Self {
        SpendBuffer {
            pending: Vec::new(),
            spend,
            meter,
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.spend
                .do_send(SettleBatch(std::mem::take(&mut self.pending)));
        }
    }
}

impl Actor for SpendBuffer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(FLUSH_EVERY, |act, _| act.flush());
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.flush();
    }
}

/// What is pending stays and goes out with the next flush; `started`
/// schedules the flush timer again.
impl Supervised for SpendBuffer {}

crate::actors::supervise::crashable!(SpendBuffer);

impl Drop for SpendBuffer {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Handler<Settle> for SpendBuffer {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        self.pending.push(msg);
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
    }
}

/// Hand over everything pending now; answered once handed over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushBuffer;

impl Handler<FlushBuffer> for SpendBuffer {
    type Result = ();

    fn handle(&mut self, _: FlushBuffer, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        self.flush();
    }
}
