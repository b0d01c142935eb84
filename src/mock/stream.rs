//! SSE bodies for chat and legacy completions, scripted bodies for the
//! native provider routes, and the broken-body fault.

use std::fmt::Write as _;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::web;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::wire::{push_piece, push_usage};
use super::{bump, Fault, Shared};

/// Which OpenAI API the stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `chat.completion.chunk` with `delta`s.
    Chat,
    /// `text_completion` with `text`.
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Start,
    Content(usize),
    Finish,
    Usage,
    Done,
    End,
}

/// What a stream sends; built by the handlers.
pub(crate) struct StreamPlan {
    pub(crate) kind: Kind,
    /// The id, e.g. `chatcmpl-…`.
    pub(crate) id: String,
    pub(crate) created: u64,
    /// The model as a JSON string literal (quotes included).
    pub(crate) model_json: String,
    /// Pieces the reply is split into.
    pub(crate) total: usize,
    /// Content chunks to send (`<= total`).
    pub(crate) emit: usize,
    pub(crate) finish_reason: &'static str,
    pub(crate) include_usage: bool,
    pub(crate) prompt_tokens: u64,
    pub(crate) interval_ms: u64,
    /// `Some(n)`: break the connection after `n` content chunks.
    pub(crate) cut_after: Option<usize>,
    /// `Some(n)`: before content chunk `n`, an event whose data is not JSON.
    pub(crate) garbage_at: Option<usize>,
}

/// An OpenAI-style SSE body. Each event is its own `Bytes` item, so actix
/// writes it out as it is produced. Dropping it before `[DONE]` counts as a
/// cancelled stream.
pub(crate) struct SseStream {
    shared: web::Data<Shared>,
    plan: StreamPlan,
    /// `data: {"id":…,"object":…,"created":…,"model":…,` shared by events.
    prefix: String,
    pacer: Pacer,
    cut_pending: bool,
    garbage_sent: bool,
    step: Step,
}

impl SseStream {
    pub(crate) fn new(shared: web::Data<Shared>, plan: StreamPlan) -> Self {
        bump(&shared.counters.streams_started);
        let object = match plan.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Text => "text_completion",
        };
        let mut prefix = String::with_capacity(96 + plan.model_json.len());
        let _ = write!(
            prefix,
            r#"data: {{"id":"{}","object":"{object}","created":{},"model":{},"#,
            plan.id, plan.created, plan.model_json
        );
        if plan.kind == Kind::Chat {
            prefix.push_str(r#""system_fingerprint":null,"#);
        }
        let pacer = Pacer::new(plan.interval_ms);
        SseStream {
            shared,
            plan,
            prefix,
            pacer,
            cut_pending: false,
            garbage_sent: false,
            step: Step::Start,
        }
    }

    /// One event: prefix + `"choices":[…]` + optional `"usage":null`.
    fn event(&self, choice: impl FnOnce(&mut String)) -> Bytes {
        let mut out = String::with_capacity(self.prefix.len() + 128);
        out.push_str(&self.prefix);
        out.push_str(r#""choices":["#);
        choice(&mut out);
        out.push(']');
        if self.plan.include_usage {
            out.push_str(r#","usage":null"#);
        }
        out.push_str("}\n\n");
        Bytes::from(out)
    }

    fn content(&self, i: usize) -> Bytes {
        let total = self.plan.total;
        match self.plan.kind {
            Kind::Chat => self.event(|o| {
                o.push_str(r#"{"index":0,"delta":{"content":""#);
                push_piece(o, total, i);
                o.push_str(r#""},"logprobs":null,"finish_reason":null}"#);
            }),
            Kind::Text => self.event(|o| {
                o.push_str(r#"{"text":""#);
                push_piece(o, total, i);
                o.push_str(r#"","index":0,"logprobs":null,"finish_reason":null}"#);
            }),
        }
    }

    fn finish(&self) -> Bytes {
        let reason = self.plan.finish_reason;
        match self.plan.kind {
            Kind::Chat => self.event(|o| {
                let _ = write!(
                    o,
                    r#"{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{reason}"}}"#
                );
            }),
            Kind::Text => self.event(|o| {
                let _ = write!(
                    o,
                    r#"{{"text":"","index":0,"logprobs":null,"finish_reason":"{reason}"}}"#
                );
            }),
        }
    }

    fn usage(&self) -> Bytes {
        let mut out = String::with_capacity(self.prefix.len() + 96);
        out.push_str(&self.prefix);
        out.push_str(r#""choices":[],"usage":"#);
        push_usage(&mut out, self.plan.prompt_tokens, self.plan.emit as u64);
        out.push_str("}\n\n");
        Bytes::from(out)
    }
}

impl Stream for SseStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.step {
                Step::Start if this.plan.garbage_at == Some(0) && !this.garbage_sent => {
                    this.garbage_sent = true;
                    return Poll::Ready(Some(Ok(Bytes::from_static(
                        b"data: <html>upstream proxy error</html>\n\n",
                    ))));
                }
                Step::Start => {
                    this.step = Step::Content(0);
                    if this.plan.kind == Kind::Chat {
                        return Poll::Ready(Some(Ok(this.event(|o| {
                            o.push_str(
                                r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#,
                            );
                        }))));
                    }
                }
                Step::Content(i) => {
                    if this.plan.cut_after.is_some_and(|c| i >= c) {
                        // The connection closes without [DONE].
                        let p = poll_break(&mut this.cut_pending, cx, "mock: cut fault");
                        if p.is_ready() {
                            this.step = Step::End;
                        }
                        return p;
                    }
                    if i >= this.plan.emit {
                        this.step = Step::Finish;
                        continue;
                    }
                    if this.plan.garbage_at == Some(i) && !this.garbage_sent {
                        this.garbage_sent = true;
                        return Poll::Ready(Some(Ok(Bytes::from_static(
                            b"data: {\"choices\": [truncated\n\n",
                        ))));
                    }
                    if this.pacer.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.step = Step::Content(i + 1);
                    return Poll::Ready(Some(Ok(this.content(i))));
                }
                Step::Finish => {
                    this.step = if this.plan.include_usage {
                        Step::Usage
                    } else {
                        Step::Done
                    };
                    return Poll::Ready(Some(Ok(this.finish())));
                }
                Step::Usage => {
                    this.step = Step::Done;
                    return Poll::Ready(Some(Ok(this.usage())));
                }
                Step::Done => {
                    this.step = Step::End;
                    bump(&this.shared.counters.streams_completed);
                    return Poll::Ready(Some(Ok(Bytes::from_static(b"data: [DONE]\n\n"))));
                }
                Step::End => return Poll::Ready(None),
            }
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if self.step != Step::End {
            self.shared
                .counters
                .streams_cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A body that breaks the connection right after the response head: the
/// first poll yields (so actix flushes the head), the second fails.
pub(crate) struct BrokenBody {
    flushed: bool,
}

impl BrokenBody {
    pub(crate) fn new() -> Self {
        BrokenBody { flushed: false }
    }
}

impl Stream for BrokenBody {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        poll_break(&mut this.flushed, cx, "mock: drop fault")
    }
}

/// Breaks a body: the first call yields (so actix writes out what is
/// buffered, the response head at least), the second returns the error.
fn poll_break(
    flushed: &mut bool,
    cx: &mut Context<'_>,
    why: &'static str,
) -> Poll<Option<Result<Bytes, io::Error>>> {
    if !*flushed {
        *flushed = true;
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    Poll::Ready(Some(Err(io::Error::other(why))))
}

/// The chunk-interval knob: waits `interval_ms` before each paced item.
pub(crate) struct Pacer {
    interval_ms: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    sleeping: bool,
}

impl Pacer {
    pub(crate) fn new(interval_ms: u64) -> Self {
        let sleep = (interval_ms > 0).then(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
        Pacer {
            interval_ms,
            sleep,
            sleeping: false,
        }
    }

    /// Ready once the interval since the call that started the wait passed.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(sleep) = self.sleep.as_mut() else {
            return Poll::Ready(());
        };
        if !self.sleeping {
            let deadline = Instant::now() + Duration::from_millis(self.interval_ms);
            sleep.as_mut().reset(deadline);
            self.sleeping = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.sleeping = false;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How a scripted body ends after its last frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScriptEnd {
    /// The normal end: counts in `streams_completed`.
    Complete,
    /// An in-band error event ended it: counts as neither completed nor
    /// cancelled.
    Aborted,
    /// The `cut` fault: the connection breaks (neither completed nor
    /// cancelled).
    Break,
}

struct Frame {
    bytes: Bytes,
    /// Waits the chunk interval first.
    paced: bool,
}

/// Builds the frames of a native-provider stream and plays the stream
/// faults on them, the same way for every wire format:
/// * `cut`: before content delta `planned / 2` the connection breaks;
/// * a mid-stream error event (`overloaded_mid`, `throttle_mid`, given as
///   `mid_error`): sent before delta `planned / 2`, then the body ends;
/// * `garbage`: `garbage` is the first frame; `garbage_mid`: `garbage` is
///   sent before delta `planned / 2` and the stream goes on.
///
/// A fault due at a delta that is never sent (no deltas planned) fires at
/// [`Script::finish`].
pub(crate) struct Script {
    frames: Vec<Frame>,
    half: usize,
    deltas: usize,
    cut: bool,
    garbage_mid: Option<Bytes>,
    mid_error: Option<Bytes>,
    stopped: bool,
    end: ScriptEnd,
}

impl Script {
    /// `planned`: the content deltas the stream will carry.
    pub(crate) fn new(
        fault: Option<Fault>,
        planned: usize,
        garbage: &'static [u8],
        mid_error: Option<Bytes>,
    ) -> Self {
        let mut frames = Vec::with_capacity(planned + 8);
        if fault == Some(Fault::Garbage) {
            frames.push(Frame {
                bytes: Bytes::from_static(garbage),
                paced: false,
            });
        }
        Script {
            frames,
            half: planned / 2,
            deltas: 0,
            cut: fault == Some(Fault::Cut),
            garbage_mid: (fault == Some(Fault::GarbageMid)).then(|| Bytes::from_static(garbage)),
            mid_error,
            stopped: false,
            end: ScriptEnd::Complete,
        }
    }

    /// A frame sent at once (no interval); dropped after a fault stopped
    /// the script.
    pub(crate) fn frame(&mut self, bytes: impl Into<Bytes>) {
        if !self.stopped {
            self.frames.push(Frame {
                bytes: bytes.into(),
                paced: false,
            });
        }
    }

    /// Faults due now (at delta `self.deltas`, or at the end).
    fn due(&mut self, at_end: bool) {
        if self.stopped || !(at_end || self.deltas == self.half) {
            return;
        }
        if self.cut {
            self.stopped = true;
            self.end = ScriptEnd::Break;
        } else if let Some(err) = self.mid_error.take() {
            self.frames.push(Frame {
                bytes: err,
                paced: false,
            });
            self.stopped = true;
            self.end = ScriptEnd::Aborted;
        } else if let Some(g) = self.garbage_mid.take() {
            self.frames.push(Frame {
                bytes: g,
                paced: false,
            });
        }
    }

    /// A content delta: waits the chunk interval first, counts for the
    /// "halfway" faults.
    pub(crate) fn delta(&mut self, bytes: impl Into<Bytes>) {
        self.due(false);
        if self.stopped {
            return;
        }
        self.frames.push(Frame {
            bytes: bytes.into(),
            paced: true,
        });
        self.deltas += 1;
    }

    pub(crate) fn finish(mut self, shared: web::Data<Shared>, interval_ms: u64) -> ScriptStream {
        self.due(true);
        bump(&shared.counters.streams_started);
        ScriptStream {
            shared,
            frames: self.frames.into_iter(),
            pending: None,
            pacer: Pacer::new(interval_ms),
            end: self.end,
            flushed: false,
            done: false,
        }
    }
}

/// A body made of pre-built frames (SSE events, JSON-array pieces or AWS
/// event-stream messages). Dropped before its end: a cancelled stream.
pub(crate) struct ScriptStream {
    shared: web::Data<Shared>,
    frames: std::vec::IntoIter<Frame>,
    /// A paced frame waiting for its interval.
    pending: Option<Frame>,
    pacer: Pacer,
    end: ScriptEnd,
    flushed: bool,
    done: bool,
}

impl Stream for ScriptStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(frame) = this.pending.take().or_else(|| this.frames.next()) {
            if frame.paced && this.pacer.poll(cx).is_pending() {
                this.pending = Some(frame);
                return Poll::Pending;
            }
            if this.frames.as_slice().is_empty() && this.end != ScriptEnd::Break {
                this.done = true;
                if this.end == ScriptEnd::Complete {
                    bump(&this.shared.counters.streams_completed);
                }
            }
            return Poll::Ready(Some(Ok(frame.bytes)));
        }
        match this.end {
            ScriptEnd::Complete => {
                // Only reached with no frames at all.
                this.done = true;
                bump(&this.shared.counters.streams_completed);
                Poll::Ready(None)
            }
            ScriptEnd::Aborted => {
                this.done = true;
                Poll::Ready(None)
            }
            ScriptEnd::Break => {
                let p = poll_break(&mut this.flushed, cx, "mock: cut fault");
                if p.is_ready() {
                    this.done = true;
                }
                p
            }
        }
    }
}

impl Drop for ScriptStream {
    fn drop(&mut self) {
        if !self.done {
            bump(&self.shared.counters.streams_cancelled);
        }
    }
}
