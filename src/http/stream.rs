//! The body of a streaming response: pulls translated SSE chunks from the
//! ProviderActor's channel and, when the stream ends for any reason (done,
//! upstream failure, client gone), settles the request exactly once.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::inference::{Attempt, RequestRecord};
use crate::actors::provider::StreamItem;
use crate::actors::router::OutcomeKind;
use crate::providers::Usage;

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
    first_chunk_at: Option<Instant>,
    end: Option<End>,
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
            first_chunk_at: None,
            end: None,
            finished: false,
            head_at: Instant::now(),
        }
    }

    fn note_first_chunk(&mut self) {
        if self.first_chunk_at.is_none() {
            let now = Instant::now();
            self.first_chunk_at = Some(now);
            if let Some(r) = &self.record {
                if let Some(m) = r.group.and_then(|g| r.gw.group_meters.get(g)) {
                    m.time_to_first_chunk
                        .observe(now.duration_since(r.started).as_secs_f64());
                }
            }
        }
    }

    fn settle(&mut self) {
        let (Some(mut record), Some(attempt)) = (self.record.take(), self.attempt.take()) else {
            return;
        };
        record.upstream += self.head_at.elapsed();
        match self.end.take() {
            Some(End::Done) => {
                attempt.finish(OutcomeKind::Success);
                record.finish(200, self.usage, None);
            }
            Some(End::Failed(msg)) => {
                attempt.finish(OutcomeKind::Failure { retry_after: None });
                record.finish(502, self.usage, Some(msg));
            }
            Some(End::Aborted(msg)) => {
                attempt.finish(OutcomeKind::Neutral);
                record.finish(503, self.usage, Some(msg));
            }
            None => {
                // The client went away first: says nothing about the upstream.
                attempt.finish(OutcomeKind::Neutral);
                record.finish(499, self.usage, Some("client disconnected".into()));
            }
        }
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
                    this.note_first_chunk();
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Poll::Ready(Some(StreamItem::Usage(u))) => this.usage = Some(u),
                Poll::Ready(Some(StreamItem::Done(bytes))) => {
                    this.note_first_chunk();
                    this.end = Some(End::Done);
                    this.finished = true;
                    this.settle();
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Poll::Ready(Some(StreamItem::Failed(msg))) => {
                    let event = error_event(&msg, "upstream_error");
                    this.end = Some(End::Failed(msg));
                    this.finished = true;
                    this.settle();
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(Some(StreamItem::Aborted(msg))) => {
                    let event = error_event(&msg, "service_unavailable");
                    this.end = Some(End::Aborted(msg));
                    this.finished = true;
                    this.settle();
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(None) => {
                    // The pump ended without a verdict (it only does that
                    // when it saw the client leave).
                    this.finished = true;
                    this.settle();
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.settle();
    }
}
