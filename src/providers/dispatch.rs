//! The one place a deployment's wire format picks its translation: request
//! out, answer back, stream events, errors. ProviderActor calls these and
//! does nothing provider-specific itself.

use std::ops::Range;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::Bytes;

use super::{anthropic, bedrock, gemini, openai, AnswerCtx, Endpoint, StreamStep, Usage, Wire};
use crate::error::{GatewayError, UpstreamError};
use crate::request::InferenceRequest;
use crate::topology::DeploymentTarget;

/// One upstream HTTP call, ready to send to `DeploymentTarget::url`.
#[derive(Debug)]
pub struct Outbound {
    /// Per-request headers on top of the deployment's static ones
    /// (Bedrock's signature).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

fn unsupported(target: &DeploymentTarget, endpoint: Endpoint) -> GatewayError {
    GatewayError::InvalidRequest {
        message: format!(
            "model group `{}`: provider {} does not support {} requests",
            target.group,
            target.provider.name(),
            endpoint.label()
        ),
        param: Some("model"),
    }
}

/// The request in the deployment's wire format.
pub fn outbound(
    target: &DeploymentTarget,
    req: &InferenceRequest,
) -> Result<Outbound, GatewayError> {
    let endpoint = req.endpoint;
    let plain = |body| Outbound {
        headers: Vec::new(),
        body,
    };
    match target.wire {
        Wire::OpenAi | Wire::Azure => Ok(plain(openai::upstream_body(req, &target.upstream_model))),
        Wire::Anthropic => match endpoint {
            Endpoint::ChatCompletions => anthropic::request(req, target).map(plain),
            _ => Err(unsupported(target, endpoint)),
        },
        Wire::Gemini => match endpoint {
            Endpoint::ChatCompletions | Endpoint::Embeddings => {
                gemini::request(req, target).map(plain)
            }
            Endpoint::Completions => Err(unsupported(target, endpoint)),
        },
        Wire::Bedrock => match endpoint {
            Endpoint::ChatCompletions => {
                let body = bedrock::request(req, target)?;
                let url = target.url(endpoint, req.stream);
                let headers = bedrock::sign(target, url, &body, std::time::SystemTime::now())?;
                Ok(Outbound { headers, body })
            }
            _ => Err(unsupported(target, endpoint)),
        },
    }
}

/// A complete 2xx answer as the client gets it.
pub struct Inbound {
    pub body: Bytes,
    pub usage: Option<Usage>,
    /// Where the answer's `choices` list is in `body`, when the parse saw
    /// it (an upstream answer passed on as it came).
    pub choices: Option<Range<usize>>,
}

/// A complete 2xx answer as the client gets it, with its usage. The parse
/// doubles as validation: a body that is not the endpoint's answer is an
/// error to retry elsewhere.
pub fn inbound_body(
    target: &DeploymentTarget,
    endpoint: Endpoint,
    body: Bytes,
    ctx: &AnswerCtx,
) -> Result<Inbound, String> {
    let translated = |(body, usage)| Inbound {
        body,
        usage,
        choices: None,
    };
    match target.wire {
        Wire::OpenAi | Wire::Azure => {
            let (usage, choices) = openai::answer_from_body(endpoint, &body)?;
            Ok(Inbound {
                body,
                usage,
                choices,
            })
        }
        Wire::Anthropic => anthropic::response(&body, ctx).map(translated),
        Wire::Gemini => gemini::response(endpoint, &body, ctx).map(translated),
        Wire::Bedrock => bedrock::response(&body, ctx).map(translated),
    }
}

/// An upstream error answer in OpenAI's shape, status normalised.
pub fn upstream_error(
    wire: Wire,
    status: u16,
    retry_after: Option<Duration>,
    error_type_header: Option<&str>,
    body: &[u8],
) -> UpstreamError {
    match wire {
        Wire::OpenAi | Wire::Azure => openai::parse_error(status, retry_after, body),
        Wire::Anthropic => anthropic::error(status, retry_after, body),
        Wire::Gemini => gemini::error(status, retry_after, body),
        Wire::Bedrock => bedrock::error(status, retry_after, error_type_header, body),
    }
}

/// Turns an upstream stream body, as it arrives in pieces, into OpenAI
/// chunks.
pub enum StreamDecoder {
    OpenAi(openai::StreamState),
    Anthropic(anthropic::StreamState),
    Gemini(gemini::StreamState),
    Bedrock(bedrock::StreamState),
}

impl StreamDecoder {
    pub fn new(wire: Wire, ctx: AnswerCtx) -> StreamDecoder {
        match wire {
            Wire::OpenAi | Wire::Azure => StreamDecoder::OpenAi(openai::StreamState::new(ctx)),
            Wire::Anthropic => StreamDecoder::Anthropic(anthropic::StreamState::new(ctx)),
            Wire::Gemini => StreamDecoder::Gemini(gemini::StreamState::new(ctx)),
            Wire::Bedrock => StreamDecoder::Bedrock(bedrock::StreamState::new(ctx)),
        }
    }

    /// Feeds bytes; the steps of every event they complete go to `out`.
    /// An error means the stream cannot be read on (framing broken).
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamStep>) -> Result<(), String> {
        match self {
            StreamDecoder::OpenAi(s) => s.push(chunk, out),
            StreamDecoder::Anthropic(s) => s.push(chunk, out),
            StreamDecoder::Gemini(s) => s.push(chunk, out),
            StreamDecoder::Bedrock(s) => s.push(chunk, out),
        }
    }

    /// The upstream closed the body. `Ok`: the stream was complete and
    /// `out` ends it (`Done`); `Err`: it was cut short.
    pub fn finish(&mut self, out: &mut Vec<StreamStep>) -> Result<(), String> {
        match self {
            StreamDecoder::OpenAi(s) => s.finish(out),
            StreamDecoder::Anthropic(s) => s.finish(out),
            StreamDecoder::Gemini(s) => s.finish(out),
            StreamDecoder::Bedrock(s) => s.finish(out),
        }
    }
}
