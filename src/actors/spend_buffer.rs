//! SpendBuffer: one per HTTP worker. Owns that worker's not-yet-handed-over
//! settlements and its open spool segment.
//!
//! A settlement is appended to the segment (one `write`, no fsync) before
//! the handler is answered — and handlers wait for that answer before the
//! client's response completes — so a crash of the process after a
//! response loses no spend. Every 100 ms (or at 1,000 entries) the batch
//! and its closed segment go to SpendActor, which writes them to the
//! database and deletes the segment; the segment's fsync runs off this
//! thread meanwhile (group fsync: a power loss may lose the last interval).
//! On stop — and on drop, should the worker's thread end first — whatever
//! is pending is handed over: nothing is lost to the batching.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::spend::{SettleBatch, SpendActor};
use crate::actors::Metered;
use crate::http::record::RequestRecord;
use crate::metrics::{ActorMeter, Metrics};
use crate::providers::Usage;
use crate::spool::Segment;
use crate::store::SpendLogRow;

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_AT: usize = 1_000;

pub struct SpendBuffer {
    /// Where segments go; `None` when nothing is persisted (no database).
    spool: Option<PathBuf>,
    segment: Option<Segment>,
    pending: Vec<SpendLogRow>,
    spend: Metered<SpendActor>,
    metrics: Arc<Metrics>,
    meter: ActorMeter,
}

impl SpendBuffer {
    pub fn new(
        spool: Option<PathBuf>,
        spend: Metered<SpendActor>,
        metrics: Arc<Metrics>,
        meter: ActorMeter,
    ) -> Self {
        SpendBuffer {
            spool,
            segment: None,
            pending: Vec::new(),
            spend,
            metrics,
            meter,
        }
    }

    fn append(&mut self, row: &SpendLogRow) {
        let Some(dir) = &self.spool else {
            return;
        };
        if self.segment.is_none() {
            match Segment::create(dir) {
                Ok(s) => self.segment = Some(s),
                Err(e) => {
                    self.metrics.spend_spool_errors.inc();
                    tracing::error!(error = %e, dir = %dir.display(), "cannot create a spend spool segment: this spend is only in memory until written to the database");
                    return;
                }
            }
        }
        if let Some(seg) = &mut self.segment {
            if let Err(e) = seg.append(row) {
                self.metrics.spend_spool_errors.inc();
                tracing::error!(error = %e, "cannot append to the spend spool: this spend is only in memory until written to the database");
            }
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let segment = self.segment.take().map(|seg| {
            let bytes = seg.bytes();
            let (path, file) = seg.close();
            // Group fsync, off this thread — or here, when the runtime is
            // already gone (a flush from `Drop` at shutdown).
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(move || {
                        let _ = file.sync_data();
                    });
                }
                Err(_) => {
                    let _ = file.sync_data();
                }
            }
            (path, bytes)
        });
        self.spend.do_send(SettleBatch {
            rows: std::mem::take(&mut self.pending),
            segment,
        });
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

/// One request's settlement. Answered once it is in the spool.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settle(pub SpendLogRow);

impl Handler<Settle> for SpendBuffer {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        self.append(&msg.0);
        self.pending.push(msg.0);
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
    }
}

/// A request that ended without usage from its upstream (a stream cut
/// short): its tokens are counted off this thread, then it is settled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SettleEstimated {
    pub record: RequestRecord,
    pub status: u16,
    pub error: Option<String>,
    /// The stream frames sent to the client.
    pub frames: Vec<bytes::Bytes>,
}

impl Handler<SettleEstimated> for SpendBuffer {
    type Result = ();

    fn handle(&mut self, msg: SettleEstimated, ctx: &mut Context<Self>) {
        let _t = self.meter.handling();
        let SettleEstimated {
            mut record,
            status,
            error,
            frames,
        } = msg;
        let prompt_tokens = record.prompt_estimate;
        let count = actix_web::web::block(move || {
            crate::tokens::count(&crate::tokens::streamed_text(&frames))
        });
        ctx.spawn(count.into_actor(self).map(move |counted, act, _| {
            let completion_tokens = counted.unwrap_or(0);
            record.usage_estimated = true;
            let usage = Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            };
            if let Some(row) = record.finish(status, Some(usage), error) {
                act.append(&row);
                act.pending.push(row);
            }
        }));
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
