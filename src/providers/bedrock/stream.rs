//! ConverseStream answers: AWS event-stream binary frames (prelude, typed
//! headers, JSON payload, CRCs), each an event named by its
//! `:event-type` header, turned into OpenAI chunks one by one.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message as Frame;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{finish_reason, WireUsage, JSON_TOOL};
use crate::providers::sse::MAX_EVENT_BYTES;
use crate::providers::{openai, AnswerCtx, StreamStep};

/// Which OpenAI thing a content block became.
#[derive(Clone, Copy)]
enum Block {
    /// A tool call, with its index among the answer's tool calls.
    Tool(usize),
    /// The forced JSON tool: its input is streamed as content.
    Json,
}

/// One ConverseStream being turned into OpenAI chunks.
pub struct StreamState {
    buf: BytesMut,
    decoder: MessageFrameDecoder,
    /// The decoder holds the prelude of a frame whose rest is awaited.
    in_frame: bool,
    ctx: AnswerCtx,
    /// Tool blocks by `contentBlockIndex` (text and reasoning blocks need
    /// no bookkeeping). A list, not an index-addressed vector: the index
    /// comes from the upstream and must not size an allocation.
    blocks: Vec<(usize, Block)>,
    tools: usize,
    json_answer: bool,
    /// `messageStop` came: its finish chunk is out, usage follows.
    stopped: bool,
    done: bool,
}

impl StreamState {
    pub fn new(ctx: AnswerCtx) -> StreamState {
        StreamState {
            buf: BytesMut::new(),
            decoder: MessageFrameDecoder::new(),
            in_frame: false,
            ctx,
            blocks: Vec::new(),
            tools: 0,
            json_answer: false,
            stopped: false,
            done: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<StreamStep>) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        while !self.done {
            if !self.in_frame {
                // The decoder would wait for as many bytes as a frame's
                // prelude claims; a broken or hostile length is refused
                // before anything is buffered for it.
                let Some(prelude) = self.buf.get(..4) else {
                    break;
                };
                let len = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]);
                if len as usize > MAX_EVENT_BYTES {
                    return Err(format!(
                        "an upstream event-stream frame claims {len} bytes, more than the {MAX_EVENT_BYTES} allowed"
                    ));
                }
                self.in_frame = true;
            }
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Incomplete) => break,
                Ok(DecodedFrame::Complete(frame)) => {
                    self.in_frame = false;
                    self.frame(&frame, out);
                }
                Err(e) => {
                    return Err(format!(
                        "the upstream sent a broken event-stream frame: {e}"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Complete once `metadata` (the usage, after `messageStop`) came.
    pub fn finish(&mut self, _out: &mut Vec<StreamStep>) -> Result<(), String> {
        if self.done {
            Ok(())
        } else if self.stopped {
            Err(
                "the upstream closed the stream after messageStop but before its usage metadata"
                    .into(),
            )
        } else {
            Err("the upstream closed the stream before messageStop".into())
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> StreamStep {
        StreamStep::Forward(openai::sse_json_frame(&json!({
            "id": self.ctx.id,
            "object": "chat.completion.chunk",
            "created": self.ctx.created,
            "model": self.ctx.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })))
    }

    fn frame(&mut self, frame: &Frame, out: &mut Vec<StreamStep>) {
        let header = |name: &str| {
            frame
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str())
        };
        match header(":message-type") {
            None | Some("event") => {}
            Some("exception") => {
                let kind = header(":exception-type").unwrap_or("exception");
                let message = payload_message(frame.payload());
                out.push(StreamStep::Failed(format!(
                    "the upstream failed mid-stream ({kind}): {message}"
                )));
                self.done = true;
                return;
            }
            Some("error") => {
                let kind = header(":error-code").unwrap_or("error");
                let message = header(":error-message").unwrap_or("");
                out.push(StreamStep::Failed(format!(
                    "the upstream failed mid-stream ({kind}): {message}"
                )));
                self.done = true;
                return;
            }
            // Message types added later.
            Some(_) => return,
        }
        let Some(kind) = header(":event-type") else {
            return;
        };
        self.event(kind, frame.payload(), out);
    }

    fn event(&mut self, kind: &str, payload: &Bytes, out: &mut Vec<StreamStep>) {
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Event {
            content_block_index: Option<usize>,
            start: Option<Value>,
            delta: Option<Value>,
            stop_reason: Option<String>,
            usage: Option<WireUsage>,
        }
        let Ok(ev) = serde_json::from_slice::<Event>(payload) else {
            out.push(StreamStep::Invalid);
            self.done = true;
            return;
        };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match kind {
            "messageStart" => {
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "contentBlockStart" => {
                let Some(call) = ev.start.as_ref().and_then(|s| s.get("toolUse")) else {
                    return;
                };
                let block = if s(call, "name") == JSON_TOOL {
                    self.json_answer = true;
                    Block::Json
                } else {
                    let i = self.tools;
                    self.tools += 1;
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": i,
                            "id": s(call, "toolUseId"),
                            "type": "function",
                            "function": {"name": s(call, "name"), "arguments": ""},
                        }]}),
                        None,
                    ));
                    Block::Tool(i)
                };
                let index = ev.content_block_index.unwrap_or(usize::MAX);
                self.blocks.retain(|(i, _)| *i != index);
                self.blocks.push((index, block));
            }
            "contentBlockDelta" => {
                let delta = ev.delta.unwrap_or(Value::Null);
                let piece = if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    json!({ "content": text })
                } else if let Some(call) = delta.get("toolUse") {
                    let block = self
                        .blocks
                        .iter()
                        .find(|(i, _)| Some(*i) == ev.content_block_index)
                        .map(|(_, b)| *b);
                    match block {
                        Some(Block::Json) => json!({ "content": s(call, "input") }),
                        Some(Block::Tool(i)) => json!({"tool_calls": [{
                            "index": i,
                            "function": {"arguments": s(call, "input")},
                        }]}),
                        // A piece of a call that never started: nothing
                        // to attach it to.
                        None => return,
                    }
                } else if let Some(text) = delta
                    .get("reasoningContent")
                    .and_then(|r| r.get("text"))
                    .and_then(Value::as_str)
                {
                    json!({ "reasoning_content": text })
                } else {
                    // Reasoning signatures, redacted reasoning, citations:
                    // nothing OpenAI-shaped.
                    return;
                };
                out.push(self.chunk(piece, None));
            }
            "messageStop" => {
                let finish = if self.json_answer {
                    "stop"
                } else {
                    finish_reason(ev.stop_reason.as_deref())
                };
                out.push(self.chunk(json!({}), Some(finish)));
                self.stopped = true;
            }
            "metadata" => {
                if !self.stopped {
                    out.push(self.chunk(json!({}), Some("stop")));
                    self.stopped = true;
                }
                let usage = ev.usage.unwrap_or_default().usage();
                let forward = self.ctx.wants_usage.then(|| {
                    openai::sse_json_frame(&json!({
                        "id": self.ctx.id,
                        "object": "chat.completion.chunk",
                        "created": self.ctx.created,
                        "model": self.ctx.model,
                        "choices": [],
                        "usage": usage.to_openai_json(),
                    }))
                });
                out.push(StreamStep::Usage { usage, forward });
                out.push(StreamStep::Done(Bytes::from_static(openai::DONE_EVENT)));
                self.done = true;
            }
            // contentBlockStop, and event types added later.
            _ => {}
        }
    }
}

/// An exception frame's `{"message":…}` (or `Message`), else its text.
fn payload_message(payload: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
        #[serde(rename = "Message")]
        message_upper: Option<String>,
    }
    match serde_json::from_slice::<Body>(payload) {
        Ok(Body {
            message: Some(m), ..
        })
        | Ok(Body {
            message_upper: Some(m),
            ..
        }) => m,
        _ => String::from_utf8_lossy(payload).chars().take(500).collect(),
    }
}

#[cfg(test)]
mod tests;
