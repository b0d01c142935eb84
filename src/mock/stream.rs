//! SSE bodies for chat and legacy completions, and the broken-body fault.

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
use super::{bump, Shared};

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
    sleep: Option<Pin<Box<Sleep>>>,
    sleeping: bool,
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
        let sleep = (plan.interval_ms > 0).then(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
        SseStream {
            shared,
            plan,
            prefix,
            sleep,
            sleeping: false,
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

    /// Waits `interval_ms` (if any) before a content chunk.
    fn poll_interval(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(sleep) = self.sleep.as_mut() else {
            return Poll::Ready(());
        };
        if !self.sleeping {
            let deadline = Instant::now() + Duration::from_millis(self.plan.interval_ms);
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
                        // Yield once so actix writes out what is buffered,
                        // then fail: the connection closes without [DONE].
                        if !this.cut_pending {
                            this.cut_pending = true;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        this.step = Step::End;
                        return Poll::Ready(Some(Err(io::Error::other("mock: cut fault"))));
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
                    if this.poll_interval(cx).is_pending() {
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
        if !this.flushed {
            this.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(io::Error::other("mock: drop fault"))))
    }
}
