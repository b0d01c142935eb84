//! The body of a streaming response: pulls translated SSE chunks from the
//! ProviderActor's channel and, when the stream ends for any reason (done,
//! upstream failure, client gone), settles the request exactly once.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::dispatch::Attempt;
use super::record::{settle, RequestRecord};
use crate::actors::provider::StreamItem;
use crate::actors::router::OutcomeKind;
use crate::providers::Usage;
use crate::routing::ErrorClass;

enum End {
    Done,
    Failed(String),
    Aborted(String),
}

pub struct SseBody {
    /// The item the provider already received (see `Reply::Stream`).
    first: Option<StreamItem>,
    rx: mpsc::Receiver<StreamItem>,
    record: Option<RequestRecord>,
    attempt: Option<Attempt>,
    usage: Option<Usage>,
    /// The frames sent while no usage has been seen: if the stream ends
    /// without one, its tokens are counted from them.
    sent: Vec<Bytes>,
    first_chunk_at: Option<Instant>,
    finished: bool,
    /// When the upstream's response head arrived (the record's upstream
    /// time covers everything before it).
    head_at: Instant,
}

impl SseBody {
    pub fn new(
        first: StreamItem,
        rx: mpsc::Receiver<StreamItem>,
        record: RequestRecord,
        attempt: Attempt,
    ) -> Self {
        SseBody {
            first: Some(first),
            rx,
            record: Some(record),
            attempt: Some(attempt),
            usage: None,
            sent: Vec::new(),
            first_chunk_at: None,
            finished: false,
            head_at: Instant::now(),
        }
    }

    fn note_chunk(&mut self, bytes: &Bytes) {
        if self.usage.is_none() {
            self.sent.push(bytes.clone());
        }
        if let Some(r) = &mut self.record {
            r.capture_frame(bytes);
        }
        if self.first_chunk_at.is_none() {
            let now = Instant::now();
            self.first_chunk_at = Some(now);
            if let Some(r) = &mut self.record {
                r.first_chunk_ms = Some(crate::store::now_ms());
                if let Some(m) = r.meters() {
                    m.time_to_first_chunk
                        .observe(now.duration_since(r.started).as_secs_f64());
                }
            }
        }
    }

    /// Ends the request once: tells the router, and settles its cost (in
    /// the spool when this returns). Without usage from the upstream,
    /// SpendBuffer counts the tokens first, off this thread.
    fn settle(&mut self, end: Option<End>) {
        let (Some(mut record), Some(attempt)) = (self.record.take(), self.attempt.take()) else {
            return;
        };
        record.upstream += self.head_at.elapsed();
        let (status, error) = match end {
            Some(End::Done) => {
                attempt.finish(OutcomeKind::Success {
                    tokens: self
                        .usage
                        .map_or(0, |u| u.prompt_tokens + u.completion_tokens),
                });
                (200, None)
            }
            Some(End::Failed(msg)) => {
                attempt.finish(OutcomeKind::Failure {
                    retry_after: None,
                    class: ErrorClass::InternalServer,
                    transient: true,
                    reported: false,
                });
                (502, Some(msg))
            }
            Some(End::Aborted(msg)) => {
                attempt.finish(OutcomeKind::Neutral);
                (503, Some(msg))
            }
            None => {
                // The client went away first: says nothing about the upstream.
                attempt.finish(OutcomeKind::Neutral);
                (499, Some("client disconnected".into()))
            }
        };
        let spend = record.spend.clone();
        let Some(usage) = self.usage else {
            spend.settle_estimated(record, status, error, std::mem::take(&mut self.sent));
            return;
        };
        settle(&spend, record.finish(status, Some(usage), error));
    }

    /// Settles, then sends `last`: a stream is not complete until its
    /// cost is durable.
    fn end_with(&mut self, end: End, last: Bytes) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.finished = true;
        self.settle(Some(end));
        Poll::Ready(Some(Ok(last)))
    }
}

fn error_event(message: &str, kind: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": kind,
            "param": null,
            "code": "stream_interrupted",
        }
    });
    crate::providers::openai::sse_frame(body.to_string().as_bytes())
}

impl Stream for SseBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            let next = match this.first.take() {
                Some(item) => Poll::Ready(Some(item)),
                None => this.rx.poll_recv(cx),
            };
            match next {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(StreamItem::Data(bytes))) => {
                    this.note_chunk(&bytes);
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Poll::Ready(Some(StreamItem::Usage(u))) => {
                    this.usage = Some(u);
                    this.sent = Vec::new();
                }
                Poll::Ready(Some(StreamItem::Done(bytes))) => {
                    this.note_chunk(&bytes);
                    return this.end_with(End::Done, bytes);
                }
                Poll::Ready(Some(StreamItem::Failed(msg))) => {
                    let event = error_event(&msg, "upstream_error");
                    return this.end_with(End::Failed(msg), event);
                }
                Poll::Ready(Some(StreamItem::Aborted(msg))) => {
                    let event = error_event(&msg, "service_unavailable");
                    return this.end_with(End::Aborted(msg), event);
                }
                Poll::Ready(None) => {
                    // The pump ended without a verdict (it only does that
                    // when it saw the client leave).
                    this.finished = true;
                    this.settle(None);
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        // The client left mid-stream: settle what was generated.
        self.settle(None);
    }
}
