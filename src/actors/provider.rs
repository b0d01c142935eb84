//! ProviderActor: one on each HTTP worker thread. It owns the upstream HTTP
//! client (awc, `!Send`, so it cannot be shared across threads) and its
//! keep-alive pools (one per upstream host), and does the I/O around the
//! pure translation in `providers::`. Each call names its deployment, so
//! deployments added at run time need nothing started.
//!
//! Living on the worker's own thread means the call from the handler is a
//! same-thread message: no cross-core wake-up on the hottest hop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::header::{HeaderMap, CONTENT_TYPE};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::error::{GatewayError, UpstreamError};
use crate::metrics::ActorMeter;
use crate::providers::{
    inbound_body, is_retryable_status, openai, upstream_error, AnswerCtx, Endpoint, Inbound,
    Outbound, StreamDecoder, StreamStep, Usage,
};
use crate::topology::DeploymentTarget;

/// Largest non-streaming upstream body we accept.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Chunks buffered between the upstream reader and a slow client.
const STREAM_BUFFER: usize = 32;

pub struct ProviderActor {
    client: awc::Client,
    /// Turns true when the shutdown grace is about to end: open streams
    /// are told so (an error event) before their connections are cut.
    draining: watch::Receiver<bool>,
    meter: ActorMeter,
}

impl ProviderActor {
    pub fn new(draining: watch::Receiver<bool>, meter: ActorMeter) -> Self {
        let connector = awc::Connector::new()
            .timeout(Duration::from_secs(5))
            .limit(0)
            .conn_keep_alive(Duration::from_secs(30))
            .conn_lifetime(Duration::from_secs(300));
        let client = awc::Client::builder()
            .connector(connector)
            // The per-request timeout is set on each request.
            .disable_timeout()
            .no_default_headers()
            .finish();
        ProviderActor {
            client,
            draining,
            meter,
        }
    }
}

impl Actor for ProviderActor {
    type Context = Context<Self>;
}

/// Nothing to rebuild: the client and its pool are still good.
impl Supervised for ProviderActor {}

crate::actors::supervise::crashable!(ProviderActor);

/// One upstream attempt.
#[derive(Message)]
#[rtype(result = "Result<Reply, CallError>")]
pub struct Call {
    pub target: Arc<DeploymentTarget>,
    pub endpoint: Endpoint,
    pub outbound: Outbound,
    pub stream: bool,
    /// What a translated answer says about itself (id, model, usage chunk).
    pub answer: AnswerCtx,
    /// This attempt's time limit: the deployment's timeout, or less when
    /// the request's overall deadline is nearer. For a stream it covers the
    /// wait for the first event; after that the idle timeout applies.
    pub timeout: Duration,
}

pub enum Reply {
    Full(Inbound),
    /// The upstream's first item (already received, so the stream is known
    /// to have started well), then the rest as the upstream sends them; the
    /// channel closes at the end.
    Stream {
        first: StreamItem,
        rest: mpsc::Receiver<StreamItem>,
    },
}

#[derive(Debug)]
pub enum StreamItem {
    /// SSE bytes for the client.
    Data(Bytes),
    Usage(Usage),
    /// The final `[DONE]` event.
    Done(Bytes),
    /// The upstream failed mid-stream; no more items follow.
    Failed(String),
    /// The gateway ended the stream (shutdown grace is over); says nothing
    /// about the upstream.
    Aborted(String),
}

#[derive(Debug)]
pub enum CallError {
    Status(UpstreamError),
    Timeout,
    Connect(String),
    Protocol(String),
}

impl CallError {
    /// Would another attempt (here or elsewhere) plausibly succeed?
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Status(u) => is_retryable_status(u.status),
            CallError::Timeout | CallError::Connect(_) | CallError::Protocol(_) => true,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status(u) => u.retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            CallError::Status(u) => u.status,
            CallError::Timeout => 504,
            CallError::Connect(_) | CallError::Protocol(_) => 502,
        }
    }

    pub fn into_gateway_error(self) -> GatewayError {
        match self {
            CallError::Status(u) => GatewayError::Upstream(u),
            CallError::Timeout => GatewayError::UpstreamTimeout,
            CallError::Connect(m) => GatewayError::UpstreamUnreachable(m),
            CallError::Protocol(m) => GatewayError::UpstreamProtocol(m),
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn send_error(e: awc::error::SendRequestError) -> CallError {
    use awc::error::SendRequestError as E;
    match e {
        E::Timeout => CallError::Timeout,
        E::Connect(c) => CallError::Connect(c.to_string()),
        other => CallError::Connect(other.to_string()),
    }
}

impl Handler<Call> for ProviderActor {
    type Result = ResponseFuture<Result<Reply, CallError>>;

    fn handle(&mut self, msg: Call, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let draining = self.draining.clone();
        let Call {
            target,
            endpoint,
            outbound,
            stream,
            answer,
            timeout,
        } = msg;
        let mut req = self
            .client
            .post(target.url(endpoint, stream))
            .timeout(timeout)
            .insert_header((CONTENT_TYPE, "application/json"));
        if let Some((name, value)) = &target.auth_header {
            req = req.insert_header((name.clone(), value.clone()));
        }
        for (k, v) in target.extra_headers.iter().chain(&outbound.headers) {
            req = req.insert_header((k.clone(), v.clone()));
        }
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            let mut resp = req.send_body(outbound.body).await.map_err(send_error)?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                let retry_after = openai::retry_after(
                    header_str(resp.headers(), "retry-after"),
                    header_str(resp.headers(), "retry-after-ms"),
                );
                let error_type = header_str(resp.headers(), "x-amzn-errortype").map(str::to_string);
                let body = read_body(&mut resp, deadline, 1024 * 1024)
                    .await
                    .unwrap_or_default();
                return Err(CallError::Status(upstream_error(
                    target.wire,
                    status,
                    retry_after,
                    error_type.as_deref(),
                    &body,
                )));
            }
            if !stream {
                let body = read_body(&mut resp, deadline, MAX_RESPONSE_BYTES).await?;
                let answer =
                    inbound_body(&target, endpoint, body, &answer).map_err(CallError::Protocol)?;
                return Ok(Reply::Full(answer));
            }
            if let Some(kind) = header_str(resp.headers(), "content-type").map(str::to_string) {
                let kind_ok = kind.trim_start().starts_with("text/event-stream")
                    || kind
                        .trim_start()
                        .starts_with("application/vnd.amazon.eventstream");
                if !kind_ok {
                    // A JSON or HTML page where a stream was asked for: an
                    // error page or a proxy speaking for the upstream.
                    let body = read_body(&mut resp, deadline, 4096)
                        .await
                        .unwrap_or_default();
                    let snippet: String =
                        String::from_utf8_lossy(&body).chars().take(200).collect();
                    return Err(CallError::Protocol(format!(
                        "the upstream answered a stream request with `{kind}`, not an event stream: {snippet}"
                    )));
                }
            }
            let (tx, mut rest) = mpsc::channel(STREAM_BUFFER);
            actix_rt::spawn(pump_stream(
                resp,
                tx,
                StreamDecoder::new(target.wire, answer),
                target.stream_idle_timeout,
                draining,
            ));
            // Nothing reaches the client before the first event: a stream
            // that fails before it can still be retried elsewhere.
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, rest.recv()).await {
                Err(_) => Err(CallError::Timeout),
                Ok(None) => Err(CallError::Protocol(
                    "the upstream stream ended before its first event".into(),
                )),
                Ok(Some(StreamItem::Failed(m))) => Err(CallError::Protocol(m)),
                Ok(Some(first)) => Ok(Reply::Stream { first, rest }),
            }
        })
    }
}

async fn read_body(
    resp: &mut awc::ClientResponse<
        impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
    >,
    deadline: Instant,
    limit: usize,
) -> Result<Bytes, CallError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, resp.body().limit(limit)).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Err(e)) => Err(CallError::Protocol(format!(
            "reading the upstream body failed: {e}"
        ))),
        Ok(Ok(b)) => Ok(b),
    }
}

/// Reads the upstream stream, translates it event by event and feeds
/// the client's channel. Stops — dropping the upstream connection, which
/// cancels the generation — as soon as the client's side is gone.
async fn pump_stream<S>(
    mut resp: awc::ClientResponse<S>,
    tx: mpsc::Sender<StreamItem>,
    mut decoder: StreamDecoder,
    idle_timeout: Duration,
    mut draining: watch::Receiver<bool>,
) where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut steps = Vec::with_capacity(4);
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            Ok(_) = draining.wait_for(|d| *d) => {
                let _ = tx
                    .send(StreamItem::Aborted(
                        "the gateway is shutting down and cut this stream short; retry the request".into(),
                    ))
                    .await;
                return;
            }
            next = tokio::time::timeout(idle_timeout, resp.next()) => next,
        };
        let ended = match next {
            Err(_) => Err(format!(
                "the upstream sent nothing for {}s",
                idle_timeout.as_secs()
            )),
            Ok(None) => decoder.finish(&mut steps),
            Ok(Some(Err(e))) => Err(format!("the upstream stream broke: {e}")),
            Ok(Some(Ok(bytes))) => match decoder.push(&bytes, &mut steps) {
                Ok(()) => {
                    for step in steps.drain(..) {
                        match forward(&tx, step).await {
                            None | Some(true) => return, // client gone, or the end
                            Some(false) => {}
                        }
                    }
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        for step in steps.drain(..) {
            if forward(&tx, step).await != Some(false) {
                return;
            }
        }
        if let Err(m) = ended {
            let _ = tx.send(StreamItem::Failed(m)).await;
        }
        return;
    }
}

/// Sends one translated step. `None`: the client is gone; `Some(true)`:
/// the stream is over (complete, or failed with the client told).
async fn forward(tx: &mpsc::Sender<StreamItem>, step: StreamStep) -> Option<bool> {
    match step {
        StreamStep::Forward(bytes) => tx.send(StreamItem::Data(bytes)).await.ok().map(|_| false),
        StreamStep::Usage { usage, forward } => {
            tx.send(StreamItem::Usage(usage)).await.ok()?;
            if let Some(bytes) = forward {
                tx.send(StreamItem::Data(bytes)).await.ok()?;
            }
            Some(false)
        }
        StreamStep::Done(bytes) => tx.send(StreamItem::Done(bytes)).await.ok().map(|_| true),
        StreamStep::Invalid => {
            let _ = tx
                .send(StreamItem::Failed(
                    "the upstream sent a stream event that is not JSON".into(),
                ))
                .await;
            Some(true)
        }
        StreamStep::Failed(m) => {
            let _ = tx.send(StreamItem::Failed(m)).await;
            Some(true)
        }
    }
}
