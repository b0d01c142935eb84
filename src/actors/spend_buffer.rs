//! SpendBuffer: one per HTTP worker. Owns that worker's not-yet-handed-over
//! settlements and its open spool segment.
//!
//! Not an actor, on purpose: a settlement must be in the spool before the
//! client's response completes, and a message to an actor plus the wait for
//! its answer cost more than the settlement itself. The worker's handlers
//! call it directly (same thread, no lock): the row is copied into the
//! worker's memory-mapped spool segment — durable against a crash of the
//! process as soon as the copy is done (see `crate::spool`) — and kept for
//! the next hand-over. Every 250 ms (or at 2,500 rows) the batch and its
//! closed segment go to SpendActor, which writes them to the database and
//! deletes the segment; the segment's fsync runs off this thread meanwhile
//! (group fsync: a power loss may lose the last interval). When the worker
//! stops, whatever is pending is handed over as the buffer is dropped:
//! nothing is lost to the batching.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use crate::actors::spend::{SettleBatch, SpendActor};
use crate::actors::Metered;
use crate::http::record::RequestRecord;
use crate::metrics::Metrics;
use crate::providers::Usage;
use crate::spool::Segment;
use crate::store::SpendLogRow;

/// Rows that hand a batch over before its interval is up. Every hand-over
/// costs a segment (a file made, mapped, unmapped and deleted) and a
/// message, so they are as rare as the spend write interval allows.
const FLUSH_AT: usize = 2_500;
/// Longest a settlement waits here before SpendActor has it: the write
/// interval (a second by default) then adds to it, so a short hand-over
/// keeps spend visible soon after a request, at the cost of a segment per
/// hand-over (at high rates `FLUSH_AT` sets the pace anyway).
const HAND_OVER_EVERY: Duration = Duration::from_millis(250);
/// Room in a new segment: a quarter over what the last one held, within these
/// bounds (a full segment is handed over early, nothing more). Its pages
/// are faulted in when it is made, and unused room is cut off at close.
const SEGMENT_MIN: usize = 256 << 10;
const SEGMENT_MAX: usize = 8 << 20;

/// A handle on this worker's buffer (cheap to clone, this thread only).
#[derive(Clone)]
pub struct SpendBuffer {
    state: Rc<RefCell<Buffer>>,
}

struct Buffer {
    /// Where segments go; `None` when nothing is persisted (no database).
    spool: Option<PathBuf>,
    segment: Option<Segment>,
    /// The next segment, made (and its pages faulted in) on a blocking
    /// thread ahead of need: creating one costs a file, a mapping and a
    /// page fault per 4 KB — none of it for a request to wait on.
    spare: Option<Segment>,
    making_spare: bool,
    next_size: usize,
    me: Weak<RefCell<Buffer>>,
    pending: Vec<SpendLogRow>,
    spend: Metered<SpendActor>,
    metrics: Arc<Metrics>,
}

impl SpendBuffer {
    /// A buffer for the current worker; hands over every `every` (the
    /// spend write interval) or `HAND_OVER_EVERY`, whichever is shorter,
    /// from a task on this worker's event loop, which ends with the buffer.
    pub fn start(
        spool: Option<PathBuf>,
        every: Duration,
        spend: Metered<SpendActor>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let buffer = SpendBuffer {
            state: Rc::new_cyclic(|me| {
                RefCell::new(Buffer {
                    spool,
                    segment: None,
                    spare: None,
                    making_spare: false,
                    next_size: SEGMENT_MIN,
                    me: me.clone(),
                    pending: Vec::new(),
                    spend,
                    metrics,
                })
            }),
        };
        buffer.state.borrow_mut().make_spare();
        let weak: Weak<RefCell<Buffer>> = Rc::downgrade(&buffer.state);
        actix_rt::spawn(async move {
            let every = every.clamp(Duration::from_millis(10), HAND_OVER_EVERY);
            let mut tick = actix_rt::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else {
                    return;
                };
                state.borrow_mut().flush();
            }
        });
        buffer
    }

    /// Settles one request: in the spool when this returns.
    pub fn settle(&self, row: SpendLogRow) {
        self.state.borrow_mut().settle(row);
    }

    /// Settles a request that ended without usage from its upstream (a
    /// stream cut short): its tokens are counted off this thread first.
    pub fn settle_estimated(
        &self,
        mut record: RequestRecord,
        status: u16,
        error: Option<String>,
        frames: Vec<bytes::Bytes>,
    ) {
        let buffer = self.clone();
        actix_rt::spawn(async move {
            let counted = actix_web::web::block(move || {
                crate::tokens::count(&crate::tokens::streamed_text(&frames))
            })
            .await;
            record.usage_estimated = true;
            let usage = Usage::new(record.prompt_estimate, counted.unwrap_or(0));
            if let Some(row) = record.finish(status, Some(usage), error) {
                buffer.settle(row);
            }
        });
    }

    /// Hands everything pending to SpendActor now.
    pub fn flush(&self) {
        self.state.borrow_mut().flush();
    }
}

impl Buffer {
    fn settle(&mut self, row: SpendLogRow) {
        if self.spool.is_some() {
            self.spool_row(&row);
        }
        self.pending.push(row);
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Copies the row into the open segment, starting a new one when
    /// there is none or it is full.
    fn spool_row(&mut self, row: &SpendLogRow) {
        if let Some(seg) = &mut self.segment {
            if seg.append(row) {
                return;
            }
            // Full: what it holds goes out with its rows, this one starts
            // the next segment.
            self.flush();
        }
        let Some(dir) = self.spool.clone() else {
            return;
        };
        let need = crate::spool::record_len(row);
        let made = match self.spare.take() {
            Some(seg) if seg.room() >= need => Ok(seg),
            spare => {
                // None ready (or a row too big for it): made here.
                self.spare = spare;
                Segment::create(&dir, self.next_size.max(need))
            }
        };
        self.make_spare();
        match made {
            Ok(mut seg) => {
                seg.append(row);
                self.segment = Some(seg);
            }
            Err(e) => {
                self.metrics.spend_spool_errors.inc();
                tracing::error!(error = %e, dir = %dir.display(), "cannot create a spend spool segment: this spend is only in memory until written to the database");
            }
        }
    }

    /// Starts making the next segment on a blocking thread, unless one is
    /// ready or on its way.
    fn make_spare(&mut self) {
        if self.spare.is_some() || self.making_spare {
            return;
        }
        let Some(dir) = self.spool.clone() else {
            return;
        };
        self.making_spare = true;
        let (size, me) = (self.next_size, self.me.clone());
        actix_rt::spawn(async move {
            let made = actix_web::web::block(move || Segment::create(&dir, size)).await;
            let seg = match made {
                Ok(Ok(seg)) => Some(seg),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot make a spare spool segment (one is made when needed)");
                    None
                }
                Err(_) => None,
            };
            match me.upgrade() {
                Some(state) => {
                    let mut b = state.borrow_mut();
                    b.making_spare = false;
                    b.spare = seg;
                }
                None => seg.into_iter().for_each(Segment::discard),
            }
        });
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let segment = self.segment.take().map(|seg| {
            let bytes = seg.bytes();
            // A quarter more than this interval took: every byte of a
            // segment is faulted in and zeroed when it is made, so room
            // never used costs as much as room used (sized at twice, half
            // of what was zeroed went unused). A burst that outgrows it
            // hands over early and starts the spare.
            let used = bytes as usize;
            self.next_size = (used + used / 4).clamp(SEGMENT_MIN, SEGMENT_MAX);
            let path = seg.path().to_path_buf();
            // Closed (unmapped: a TLB shootdown; truncated) off this
            // thread; SpendActor fsyncs it later if it is not committed
            // by then. Its rows are all in the mapping already, so the
            // database writer may read or delete the file meanwhile. At
            // shutdown (a flush from `Drop`, the runtime already gone) it
            // is closed and synced here: nothing is left to do it later.
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(move || drop(seg.close()));
                }
                Err(_) => {
                    let (_, file) = seg.close();
                    let _ = file.sync_data();
                }
            }
            (path, bytes)
        });
        // The next batch starts with room for as many rows as this one:
        // grown from empty it was reallocated a dozen times per hand-over
        // (rows of ~400 bytes, up to FLUSH_AT of them), each time copied
        // and faulted into fresh pages on the request thread.
        let room = self.pending.len().min(FLUSH_AT);
        self.spend.do_send(SettleBatch {
            rows: std::mem::replace(&mut self.pending, Vec::with_capacity(room)),
            segment,
        });
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.flush();
        if let Some(spare) = self.spare.take() {
            spare.discard();
        }
    }
}
