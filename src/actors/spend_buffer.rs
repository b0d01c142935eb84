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
use tokio::sync::oneshot;

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
    /// Settlements handled since the last write, and who waits for it:
    /// everything settled in one turn of the event loop goes out in one
    /// `write` (group commit), then all of them are answered.
    unwritten: Vec<u8>,
    waiting: Vec<oneshot::Sender<()>>,
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
            unwritten: Vec::new(),
            waiting: Vec::new(),
            pending: Vec::new(),
            spend,
            metrics,
            meter,
        }
    }

    /// Writes what was settled this turn, then answers its waiters.
    fn write_out(&mut self) {
        if !self.unwritten.is_empty() {
            self.write_spool();
        }
        for w in self.waiting.drain(..) {
            let _ = w.send(());
        }
    }

    fn write_spool(&mut self) {
        let lines = std::mem::take(&mut self.unwritten);
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
            if let Err(e) = seg.append_lines(&lines) {
                self.metrics.spend_spool_errors.inc();
                tracing::error!(error = %e, "cannot append to the spend spool: this spend is only in memory until written to the database");
            }
        }
    }

    fn flush(&mut self) {
        // What is handed over must be in its segment first.
        self.write_out();
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
/// schedules the flush timer again. The write scheduled for this turn was
/// cancelled with the old context: done now, so no one waits for it.
impl Supervised for SpendBuffer {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.write_out();
    }
}

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
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Settle, ctx: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let (tx, rx) = oneshot::channel();
        self.settle(msg.0, Some(tx), ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl SpendBuffer {
    /// Queues a row for this turn's spool write (scheduling the write
    /// after the mailbox is drained) and for the next hand-over.
    fn settle(
        &mut self,
        row: SpendLogRow,
        waiter: Option<oneshot::Sender<()>>,
        ctx: &mut Context<Self>,
    ) {
        if self.spool.is_some() {
            if self.unwritten.is_empty() && self.waiting.is_empty() {
                // Runs once the messages already queued are handled: one
                // write for all of them.
                ctx.spawn(actix::fut::ready(()).map(|_, act: &mut Self, _| act.write_out()));
            }
            if serde_json::to_writer(&mut self.unwritten, &row).is_ok() {
                self.unwritten.push(b'\n');
            }
            self.waiting.extend(waiter);
        } else if let Some(w) = waiter {
            let _ = w.send(());
        }
        self.pending.push(row);
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
        ctx.spawn(count.into_actor(self).map(move |counted, act, ctx| {
            let completion_tokens = counted.unwrap_or(0);
            record.usage_estimated = true;
            let usage = Usage::new(prompt_tokens, completion_tokens);
            if let Some(row) = record.finish(status, Some(usage), error) {
                act.settle(row, None, ctx);
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
