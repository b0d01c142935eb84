//! Anthropic's Messages API, inbound: `POST /v1/messages` and
//! `/v1/messages/count_tokens`, so the Anthropic SDK reaches every
//! provider through tollgate. The request is translated to OpenAI's shape
//! and runs the same pipeline as `/v1/chat/completions` (keys, budgets,
//! limits, routing, spend); the answer, stream or error is translated back.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;

use super::inference::{handle_body, Body};
use super::{authenticate, read_body, WorkerState};
use crate::error::GatewayError;
use crate::providers::anthropic_inbound::{self as inbound, InboundInfo, StreamTranslator};
use crate::providers::Endpoint;

pub async fn messages(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    // Who is calling before anything is buffered or parsed.
    if let Err(e) = authenticate(&st, &req).await {
        return anthropic_error(e);
    }
    let body = match read_body(&req, payload, &st.gw.config.server).await {
        Ok(b) => b,
        Err(e) => return anthropic_error(e),
    };
    let (openai_body, info) = match inbound::to_openai_request(&body) {
        Ok(t) => t,
        Err(e) => return anthropic_error(e),
    };
    drop(body);
    let resp = handle_body(
        Endpoint::ChatCompletions,
        req,
        Body::Ready(Bytes::from(openai_body)),
        st,
    )
    .await;
    translate_response(resp, info).await
}

pub async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    if let Err(e) = authenticate(&st, &req).await {
        return anthropic_error(e);
    }
    let body = match read_body(&req, payload, &st.gw.config.server).await {
        Ok(b) => b,
        Err(e) => return anthropic_error(e),
    };
    let text = match inbound::count_tokens_text(&body) {
        Ok(t) => t,
        Err(e) => return anthropic_error(e),
    };
    // Tokenizing a long prompt is CPU work: off the worker's event loop.
    let n = web::block(move || crate::tokens::count(&text))
        .await
        .unwrap_or(0);
    HttpResponse::Ok().json(serde_json::json!({ "input_tokens": n }))
}

/// An error before the pipeline ran, in Anthropic's shape.
fn anthropic_error(e: GatewayError) -> HttpResponse {
    let resp = e.error_response();
    let status = resp.status();
    let (mut head, _) = resp.into_parts();
    let body = inbound::error_body(status.as_u16(), &e.to_string());
    set_json(&mut head);
    head.set_body(BoxBody::new(body))
}

fn set_json(head: &mut HttpResponse<()>) {
    head.headers_mut().remove(CONTENT_LENGTH);
    head.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
}

/// The pipeline's OpenAI-shaped answer, stream or error in Anthropic's
/// shape; status and headers (request id, cost, rate limits) kept.
async fn translate_response(resp: HttpResponse, info: InboundInfo) -> HttpResponse {
    let status = resp.status();
    let streaming = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let (mut head, body) = resp.into_parts();
    if status.is_success() && streaming {
        return head.set_body(BoxBody::new(AnthropicSse {
            inner: body,
            translator: StreamTranslator::new(&info),
            finished: false,
        }));
    }
    let bytes = match actix_web::body::to_bytes(body).await {
        Ok(b) => b,
        Err(_) => Bytes::new(),
    };
    let out = if status.is_success() {
        match inbound::to_anthropic_response(&bytes, &info) {
            Ok(b) => b,
            Err(m) => {
                let e = GatewayError::UpstreamProtocol(m);
                return anthropic_error(e);
            }
        }
    } else {
        inbound::error_body(status.as_u16(), &openai_error_message(&bytes))
    };
    set_json(&mut head);
    head.set_body(BoxBody::new(out))
}

fn openai_error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// The gateway's OpenAI SSE body re-framed as Anthropic events as it flows.
struct AnthropicSse {
    inner: BoxBody,
    translator: StreamTranslator,
    finished: bool,
}

impl MessageBody for AnthropicSse {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(chunk))) => match this.translator.push(&chunk) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(Bytes::from(out)))),
                    Err(m) => return Poll::Ready(Some(Err(m.into()))),
                },
                Poll::Ready(None) => {
                    this.finished = true;
                    let out = this.translator.finish();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(out))));
                    }
                }
            }
        }
    }
}
