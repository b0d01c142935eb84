//! SinkActor: one per destination, on the logging arbiter (never on a
//! request thread). Holds a bounded queue, sends batches (by size, or by
//! time for a partial one) with one POST each, retries a failed batch with
//! exponential backoff and jitter, and counts what it had to drop. Requests
//! hand it records through its [`Inbox`] and never wait: a slow or dead
//! destination costs them nothing and memory stays bounded (the inbox and
//! the queue hold `queue_size` records each, plus the batch in flight).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::Secret;
use crate::observe::config::SinkSettings;

/// One POST's worth: built by an exporter from a batch, sent as is (and
/// re-sent as is on retry).
#[derive(Debug, Clone)]
pub struct Payload {
    pub body: Bytes,
    pub content_type: &'static str,
    /// Per-body headers (a signature).
    pub headers: Vec<(&'static str, String)>,
}

/// A destination's encoding: pure, so it is unit-tested without I/O.
pub trait Exporter: Unpin + 'static {
    type Item: Send + Unpin + 'static;
    /// Whether to take this item at all (alerts drop repeats here).
    fn admit(&mut self, _item: &Self::Item) -> bool {
        true
    }
    fn encode(&self, batch: &[Self::Item]) -> Result<Payload, String>;
}

/// The destination's counters, shared with the request side (which counts
/// what it could not even enqueue).
#[derive(Clone)]
pub struct SinkMeters {
    pub queued: Gauge,
    pub sent: Counter,
    pub dropped: Counter,
    pub failures: Counter,
}

/// Records on their way to a sink. Request threads push here instead of
/// sending the sink a message each: at 20k requests/s a message per record
/// woke the logging thread 20k times a second per destination, and the
/// wake-ups (on both sides) cost more than encoding and shipping the
/// records. The sink is woken once per `batch_size` records and drains
/// the inbox on every turn and every flush tick.
pub struct Inbox<T> {
    items: Mutex<Vec<T>>,
    cap: usize,
    wake_at: usize,
    waker: OnceLock<Recipient<Wake>>,
}

impl<T> Inbox<T> {
    pub fn new(cap: usize, wake_at: usize) -> Arc<Self> {
        Arc::new(Inbox {
            items: Mutex::new(Vec::new()),
            cap: cap.max(1),
            wake_at: wake_at.clamp(1, cap.max(1)),
            waker: OnceLock::new(),
        })
    }

    /// Whom to wake when a batch is ready (set once the sink runs).
    pub fn set_waker(&self, waker: Recipient<Wake>) {
        let _ = self.waker.set(waker);
    }

    /// False when full: the caller counts the item dropped.
    pub fn push(&self, item: T) -> bool {
        let len = {
            let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
            if items.len() >= self.cap {
                return false;
            }
            items.push(item);
            items.len()
        };
        if len == self.wake_at {
            if let Some(w) = self.waker.get() {
                let _ = w.try_send(Wake);
            }
        }
        true
    }

    fn take(&self) -> Vec<T> {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        if items.is_empty() {
            return Vec::new();
        }
        std::mem::replace(&mut *items, Vec::with_capacity(self.wake_at))
    }

    fn len(&self) -> usize {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A batch may be waiting in the inbox.
pub struct Wake;

impl Message for Wake {
    type Result = ();
}

pub struct SinkActor<E: Exporter> {
    name: String,
    url: String,
    headers: Vec<(String, Secret)>,
    settings: SinkSettings,
    exporter: E,
    queue: VecDeque<E::Item>,
    /// The batch being sent or waiting for its retry, and its size.
    current: Option<(Payload, usize)>,
    in_flight: bool,
    /// Failures of `current` so far.
    tries: u32,
    retry_at: Option<Instant>,
    client: Option<awc::Client>,
    meters: SinkMeters,
    inbox: Option<Arc<Inbox<E::Item>>>,
}

/// Hand one item to a sink.
pub struct Enqueue<T>(pub T);

impl<T: Send + 'static> Message for Enqueue<T> {
    type Result = ();
}

/// Send what is queued now (shutdown); answers how many items are still
/// queued or in flight.
pub struct Drain;

impl Message for Drain {
    type Result = usize;
}

impl<E: Exporter> SinkActor<E> {
    pub fn new(
        name: String,
        url: String,
        headers: Vec<(String, Secret)>,
        settings: SinkSettings,
        exporter: E,
        meters: SinkMeters,
    ) -> Self {
        SinkActor {
            name,
            url,
            headers,
            settings,
            exporter,
            queue: VecDeque::new(),
            current: None,
            in_flight: false,
            tries: 0,
            retry_at: None,
            client: None,
            meters,
            inbox: None,
        }
    }

    /// Takes items from `inbox` too (see [`Inbox`]).
    pub fn with_inbox(mut self, inbox: Arc<Inbox<E::Item>>) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Moves what request threads pushed into the queue, as far as it has
    /// room; the rest is dropped (counted).
    fn take_inbox(&mut self) {
        let Some(inbox) = &self.inbox else {
            return;
        };
        for item in inbox.take() {
            if !self.exporter.admit(&item) {
                self.meters.queued.dec();
            } else if self.queue.len() >= self.settings.queue_size {
                self.meters.dropped.inc();
                self.meters.queued.dec();
            } else {
                self.queue.push_back(item);
            }
        }
    }

    fn client(&mut self) -> &awc::Client {
        let timeout = self.settings.timeout;
        self.client.get_or_insert_with(|| {
            awc::Client::builder()
                .timeout(timeout)
                .disable_redirects()
                .finish()
        })
    }

    /// Starts the next POST if nothing is in flight or waiting to retry
    /// and there is something to send (`force`: a partial batch too).
    fn pump(&mut self, ctx: &mut Context<Self>, force: bool) {
        self.take_inbox();
        if self.in_flight {
            return;
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return;
            }
            self.retry_at = None;
        }
        if self.current.is_none() {
            let n = self.queue.len().min(self.settings.batch_size);
            if n == 0 || (!force && n < self.settings.batch_size) {
                return;
            }
            let batch: Vec<E::Item> = self.queue.drain(..n).collect();
            match self.exporter.encode(&batch) {
                Ok(p) => self.current = Some((p, n)),
                Err(e) => {
                    tracing::warn!(destination = %self.name, error = %e, records = n, "log batch could not be encoded; dropped");
                    self.meters.dropped.inc_by(n as u64);
                    self.meters.queued.dec_by(n as i64);
                    return;
                }
            }
        }
        let Some((payload, _)) = &self.current else {
            return;
        };
        let payload = payload.clone();
        let url = self.url.clone();
        let mut req = self.client().post(url);
        req = req.insert_header(("content-type", payload.content_type));
        for (k, v) in &self.headers {
            req = req.insert_header((k.as_str(), v.expose()));
        }
        for (k, v) in &payload.headers {
            req = req.insert_header((*k, v.as_str()));
        }
        self.in_flight = true;
        let fut = async move {
            match req.send_body(payload.body).await {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    // Drain the body so the connection can be reused.
                    let _ = resp.body().limit(64 * 1024).await;
                    Ok(status)
                }
                Err(e) => Err(e.to_string()),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| act.sent(res, ctx)));
    }

    fn sent(&mut self, res: Result<u16, String>, ctx: &mut Context<Self>) {
        self.in_flight = false;
        let n = self.current.as_ref().map_or(0, |c| c.1);
        let retry = match res {
            Ok(s) if (200..300).contains(&s) => {
                self.meters.sent.inc_by(n as u64);
                self.meters.queued.dec_by(n as i64);
                self.current = None;
                self.tries = 0;
                // More full batches may be waiting.
                self.pump(ctx, false);
                return;
            }
            // The destination refuses this batch as such: sending it
            // again cannot help.
            Ok(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                tracing::warn!(destination = %self.name, status = s, records = n, "log destination refused a batch; dropped");
                false
            }
            Ok(s) => {
                tracing::debug!(destination = %self.name, status = s, "log destination failed; will retry");
                true
            }
            Err(e) => {
                tracing::debug!(destination = %self.name, error = %e, "log destination unreachable; will retry");
                true
            }
        };
        self.meters.failures.inc();
        if retry && self.tries < self.settings.max_retries {
            self.tries += 1;
            let wait = backoff(
                self.settings.retry_backoff,
                self.settings.max_backoff,
                self.tries,
                rand::random::<f64>(),
            );
            self.retry_at = Some(Instant::now() + wait);
            ctx.run_later(wait, |act, ctx| act.pump(ctx, true));
            return;
        }
        if retry {
            tracing::warn!(destination = %self.name, records = n, tries = self.tries + 1, "log destination still failing; batch dropped");
        }
        self.meters.dropped.inc_by(n as u64);
        self.meters.queued.dec_by(n as i64);
        self.current = None;
        self.tries = 0;
        self.pump(ctx, false);
    }
}

/// `base · 2^(try-1)`, capped, times a jitter factor in [0.5, 1.5).
pub fn backoff(base: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(max).mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

impl<E: Exporter> Actor for SinkActor<E> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.queue_size.min(16 * 1024));
        ctx.run_interval(self.settings.flush_interval, |act, ctx| act.pump(ctx, true));
    }
}

impl<E: Exporter> Supervised for SinkActor<E> {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // What was queued or in flight is lost with the panic: counted.
        let lost = self.queue.len() + self.current.take().map_or(0, |c| c.1);
        self.queue.clear();
        self.in_flight = false;
        self.tries = 0;
        self.retry_at = None;
        self.meters.dropped.inc_by(lost as u64);
        self.meters.queued.dec_by(lost as i64);
    }
}

impl<E: Exporter> Handler<Enqueue<E::Item>> for SinkActor<E> {
    type Result = ();

    fn handle(&mut self, Enqueue(item): Enqueue<E::Item>, ctx: &mut Context<Self>) {
        // `queued` was counted up by the sender.
        if !self.exporter.admit(&item) {
            self.meters.queued.dec();
            return;
        }
        if self.queue.len() >= self.settings.queue_size {
            self.meters.dropped.inc();
            self.meters.queued.dec();
            return;
        }
        self.queue.push_back(item);
        self.pump(ctx, false);
    }
}

impl<E: Exporter> Handler<Drain> for SinkActor<E> {
    type Result = usize;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> usize {
        // Shutdown does not wait out a backoff.
        self.retry_at = None;
        self.pump(ctx, true);
        self.queue.len()
            + self.current.as_ref().map_or(0, |c| c.1)
            + self.inbox.as_ref().map_or(0, |i| i.len())
    }
}

impl<E: Exporter> Handler<Wake> for SinkActor<E> {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.pump(ctx, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_holds_at_most_its_bound_and_hands_over_everything() {
        let inbox = Inbox::new(3, 2);
        assert!(inbox.push(1) && inbox.push(2) && inbox.push(3));
        assert!(!inbox.push(4), "full");
        assert_eq!(inbox.take(), vec![1, 2, 3]);
        assert_eq!(inbox.len(), 0);
        assert!(inbox.push(5));
        assert_eq!(inbox.take(), vec![5]);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (b, m) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 1, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(b, m, 2, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(b, m, 3, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(b, m, 10, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 1, 0.0), Duration::from_millis(50));
        assert!(backoff(b, m, 1, 0.999) < Duration::from_millis(150));
        // Absurd attempt counts neither overflow nor exceed the cap.
        assert!(backoff(b, m, u32::MAX, 1.0) <= Duration::from_millis(1500));
    }
}
