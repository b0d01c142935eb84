//! What a destination hears of one request: built once when the request
//! ends (only if some destination is configured), shared by every sink
//! behind an `Arc`. Everything costly — parsing metadata, pulling the text
//! out of stream frames, JSON and protobuf — happens later, in the sinks;
//! what several destinations read alike is worked out once ([`Derived`]).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::access::KeyInfo;
use crate::providers::{Endpoint, Usage};
use crate::topology::DeploymentTarget;

/// At most this much of a response is kept for the logs.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// A W3C trace context: the client's `traceparent` continued, or a new
/// trace. `span_id` is this request's own (server) span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The client's span, when it sent a `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub span_id: [u8; 8],
    pub flags: u8,
}

pub fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

fn hex_into(s: &str, out: &mut [u8]) -> bool {
    s.len() == out.len() * 2
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && hex::decode_to_slice(s, out).is_ok()
}

impl TraceContext {
    /// Continues a valid `traceparent` (version 00, or a later version
    /// read as 00 as the spec asks), else starts a new sampled trace.
    pub fn from_traceparent(header: Option<&str>) -> TraceContext {
        header
            .and_then(Self::parse)
            .unwrap_or_else(|| TraceContext {
                trace_id: new_trace_id(),
                parent_span_id: None,
                span_id: new_span_id(),
                flags: 1,
            })
    }

    fn parse(h: &str) -> Option<TraceContext> {
        let mut parts = h.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let mut v = [0u8; 1];
        if !hex_into(version, &mut v) || v[0] == 0xff || (v[0] == 0 && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut f = [0u8; 1];
        if !hex_into(trace, &mut trace_id)
            || !hex_into(parent, &mut parent_id)
            || !hex_into(flags, &mut f)
            || trace_id == [0; 16]
            || parent_id == [0; 8]
        {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent_span_id: Some(parent_id),
            span_id: new_span_id(),
            flags: f[0] & 1,
        })
    }

    /// The `traceparent` to send upstream for a call made in span `span`:
    /// `00-{trace}-{span}-{flags}`, lowercase hex. Written into a fixed
    /// buffer: through `format!` and `hex::encode` it cost about 3,000
    /// instructions, on every upstream call of a traced request.
    pub fn traceparent(&self, span: &[u8; 8]) -> [u8; 55] {
        fn hex(out: &mut [u8], bytes: &[u8]) {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
                pair[0] = DIGITS[usize::from(b >> 4)];
                pair[1] = DIGITS[usize::from(b & 0xf)];
            }
        }
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex(&mut out[3..35], &self.trace_id);
        hex(&mut out[36..52], span);
        hex(&mut out[53..55], &[self.flags]);
        out
    }
}

/// One upstream attempt, for its span.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub span_id: [u8; 8],
    pub deployment: Arc<DeploymentTarget>,
    /// From the request's start.
    pub start: Duration,
    pub duration: Duration,
    /// None: the upstream answered (for a stream: its head).
    pub error: Option<String>,
    pub status: Option<u16>,
}

/// The response, as far as the logs need it.
#[derive(Debug, Clone, Default)]
pub enum Output {
    #[default]
    None,
    /// A whole JSON answer (OpenAI shape), and where its `choices` list
    /// is in it when the usage parse saw it.
    Json {
        body: Bytes,
        choices: Option<Range<usize>>,
    },
    /// The SSE frames sent to the client, in order (OpenAI shape), and
    /// their bytes in all.
    Frames(Vec<Bytes>, usize),
}

#[derive(Debug)]
pub struct LogRecord {
    pub request_id: String,
    pub call_id: String,
    pub endpoint: Endpoint,
    /// The model the client asked for.
    pub model: String,
    pub deployment: Option<Arc<DeploymentTarget>>,
    pub key: Option<Arc<KeyInfo>>,
    pub end_user: Option<String>,
    /// The request body's `metadata` object.
    pub metadata: Option<Box<RawValue>>,
    pub status: u16,
    pub error: Option<String>,
    pub stream: bool,
    pub usage: Usage,
    pub usage_estimated: bool,
    pub cost: f64,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Streams: when the first chunk went out, unix ms.
    pub first_chunk_ms: Option<i64>,
    pub upstream: Duration,
    pub attempts: Vec<AttemptRecord>,
    pub fallbacks: u32,
    pub trace: Option<TraceContext>,
    /// The request's `messages` / `prompt` / `input`; None when no
    /// destination takes content.
    pub input: Option<Box<RawValue>>,
    pub output: Output,
    /// Filled by the first destination that reads it.
    pub derived: OnceLock<Derived>,
}

/// What every destination reads from a record, parsed once per record
/// rather than once per destination.
#[derive(Debug, Default)]
pub struct Derived {
    /// The request's `metadata` object (empty if none or not an object).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The answer's message, see [`output_message`].
    pub output: Option<OutputMessage>,
    /// The span attributes every OTLP flavour writes alike, encoded by
    /// the first destination to need them.
    pub span_attrs: OnceLock<crate::observe::otlp::SharedAttrs>,
}

impl Derived {
    /// Whether the metadata sets `key` to true (`true` or `"true"`).
    pub fn flag(&self, key: &str) -> bool {
        use serde_json::Value;
        matches!(self.metadata.get(key), Some(Value::Bool(true)))
            || matches!(self.metadata.get(key), Some(Value::String(s)) if s == "true")
    }
}

impl LogRecord {
    pub fn team_id(&self) -> Option<&str> {
        self.key.as_ref()?.team_id.as_deref()
    }

    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nanos.saturating_sub(self.start_unix_nanos))
    }

    pub fn derived(&self) -> &Derived {
        self.derived.get_or_init(|| {
            let metadata = self
                .metadata
                .as_ref()
                .and_then(|m| serde_json::from_str(m.get()).ok())
                .unwrap_or_default();
            let output = output_message(&self.output);
            Derived {
                metadata,
                output,
                span_attrs: OnceLock::new(),
            }
        })
    }

    /// Time to first token, for streams that sent one.
    pub fn ttft(&self) -> Option<Duration> {
        let first = u64::try_from(self.first_chunk_ms?).ok()? * 1_000_000;
        Some(Duration::from_nanos(
            first.saturating_sub(self.start_unix_nanos),
        ))
    }
}

/// The first choice's message of an answer, as the logs show it: built
/// as the one-message array the destinations ship, in one buffer (a
/// record's output was four allocations before, each a cache miss on the
/// logging thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMessage {
    pub role: Cow<'static, str>,
    /// `[{"role":…,"content":…}]`.
    messages: String,
    /// Where the content's JSON sits in `messages`: the upstream's own
    /// string when it was one (never unescaped and escaped again), else
    /// the JSON of what stands for it (content parts, tool calls) as a
    /// string.
    content: Range<usize>,
    pub finish_reason: Option<Cow<'static, str>>,
}

/// What a message's content is made from.
enum Content<'a> {
    /// A JSON value's text: a string goes in as it is, anything else as
    /// its JSON text, escaped.
    Json(&'a str),
    /// Plain text, escaped.
    Text(&'a str),
}

/// The usual roles and finish reasons, without an allocation.
fn known(v: Cow<'_, str>) -> Cow<'static, str> {
    const KNOWN: [&str; 6] = [
        "assistant",
        "stop",
        "length",
        "tool_calls",
        "content_filter",
        "function_call",
    ];
    match KNOWN.iter().find(|k| **k == v) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(v.into_owned()),
    }
}

impl OutputMessage {
    fn new(
        role: Cow<'_, str>,
        content: Content<'_>,
        finish_reason: Option<Cow<'_, str>>,
    ) -> OutputMessage {
        let role = known(role);
        let raw = match content {
            Content::Json(r) | Content::Text(r) => r,
        };
        let mut buf = Vec::with_capacity(raw.len() + role.len() + 32);
        buf.extend_from_slice(b"[{\"role\":");
        let _ = serde_json::to_writer(&mut buf, &*role);
        buf.extend_from_slice(b",\"content\":");
        let from = buf.len();
        match content {
            Content::Json(r) if r.starts_with('"') => buf.extend_from_slice(r.as_bytes()),
            Content::Json(r) | Content::Text(r) => {
                let _ = serde_json::to_writer(&mut buf, r);
            }
        }
        let to = buf.len();
        buf.extend_from_slice(b"}]");
        OutputMessage {
            role,
            // Made of `str`s and serde_json's valid UTF-8: checked once.
            messages: String::from_utf8(buf).unwrap_or_default(),
            content: from..to,
            finish_reason: finish_reason.map(known),
        }
    }

    /// The content as a JSON string.
    pub fn content_json(&self) -> &str {
        self.messages.get(self.content.clone()).unwrap_or("null")
    }

    /// The content as plain text.
    pub fn content(&self) -> String {
        serde_json::from_str(self.content_json()).unwrap_or_default()
    }

    /// The message as a one-message JSON array, `[{"role":…,"content":…}]`.
    pub fn as_messages(&self) -> &str {
        &self.messages
    }
}

/// The parts of an OpenAI answer (or stream chunk) the logs show, read
/// borrowing from the body: no map per object, no copy of the text.
mod shape {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
    use serde::Deserialize;
    use serde_json::value::RawValue;

    #[derive(Deserialize)]
    pub struct Answer<'a> {
        #[serde(borrow, default)]
        pub choices: First<Choice<'a>>,
    }

    /// A list's first item; the rest is skipped, not collected.
    pub struct First<T>(pub Option<T>);

    impl<T> Default for First<T> {
        fn default() -> Self {
            First(None)
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = First<T>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a list")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                    let first = seq.next_element()?;
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(First(first))
                }
            }
            d.deserialize_seq(V(std::marker::PhantomData))
        }
    }

    #[derive(Deserialize)]
    pub struct Choice<'a> {
        #[serde(borrow, default)]
        pub message: Option<Message<'a>>,
        #[serde(borrow, default)]
        pub delta: Option<Delta<'a>>,
        /// Completions' text, as its JSON.
        #[serde(borrow, default)]
        pub text: Option<&'a RawValue>,
        #[serde(borrow, default)]
        pub finish_reason: Option<Cow<'a, str>>,
    }

    #[derive(Deserialize)]
    pub struct Message<'a> {
        #[serde(borrow, default)]
        pub role: Option<Cow<'a, str>>,
        /// A string, null, or content parts, as their JSON.
        #[serde(borrow, default)]
        pub content: Option<&'a RawValue>,
        #[serde(borrow, default)]
        pub tool_calls: Option<&'a RawValue>,
    }

    #[derive(Deserialize)]
    pub struct Delta<'a> {
        #[serde(borrow, default)]
        pub content: Option<Cow<'a, str>>,
    }
}

/// The message of an OpenAI-shaped answer: whole, or rebuilt from its
/// stream's frames. The first choice's, or None when there is no text to
/// show (embeddings, errors).
pub fn output_message(output: &Output) -> Option<OutputMessage> {
    match output {
        Output::None => None,
        Output::Json { body, choices } => {
            // Only the `choices` list when the usage parse said where it
            // is: about half the body, and no walk over the rest.
            // Checked as UTF-8 once, up front: read as a `str`, serde_json
            // does not check each string again.
            let choice = match choices.as_ref().and_then(|r| body.get(r.clone())) {
                Some(list) => {
                    let list = std::str::from_utf8(list).ok()?;
                    serde_json::from_str::<shape::First<shape::Choice>>(list).ok()?
                }
                None => {
                    let body = std::str::from_utf8(body).ok()?;
                    serde_json::from_str::<shape::Answer>(body).ok()?.choices
                }
            }
            .0?;
            let finish_reason = choice.finish_reason;
            if let Some(msg) = choice.message {
                let role = msg.role.unwrap_or(Cow::Borrowed("assistant"));
                let content = msg.content.map(RawValue::get).unwrap_or("null");
                let content = if content == "null" {
                    msg.tool_calls.map_or("", RawValue::get)
                } else {
                    content
                };
                return Some(OutputMessage::new(
                    role,
                    Content::Json(content),
                    finish_reason,
                ));
            }
            Some(OutputMessage::new(
                Cow::Borrowed("assistant"),
                Content::Json(choice.text?.get()),
                finish_reason,
            ))
        }
        Output::Frames(frames, _) => {
            let mut content = String::new();
            let mut finish = None;
            let mut any = false;
            for frame in frames {
                for line in frame.split(|&b| b == b'\n') {
                    let Some(data) = line.strip_prefix(b"data:") else {
                        continue;
                    };
                    let data = data.trim_ascii();
                    if data == b"[DONE]" {
                        continue;
                    }
                    let Ok(chunk) = serde_json::from_slice::<shape::Answer>(data) else {
                        continue;
                    };
                    let Some(choice) = chunk.choices.0 else {
                        continue;
                    };
                    any = true;
                    let text = choice
                        .text
                        .and_then(|t| serde_json::from_str::<Cow<str>>(t.get()).ok());
                    if let Some(p) = choice.delta.and_then(|d| d.content).or(text) {
                        content.push_str(&p);
                    }
                    if let Some(f) = choice.finish_reason {
                        finish = Some(f.into_owned());
                    }
                }
            }
            any.then(|| {
                OutputMessage::new(
                    Cow::Borrowed("assistant"),
                    Content::Text(&content),
                    finish.map(Cow::Owned),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_with_a_new_span() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let t = TraceContext::from_traceparent(Some(tp));
        assert_eq!(hex::encode(t.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            t.parent_span_id.map(hex::encode).as_deref(),
            Some("b7ad6b7169203331")
        );
        assert_ne!(hex::encode(t.span_id), "b7ad6b7169203331");
        let out = t.traceparent(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-0102030405060708-01"
        );
        let unsampled = TraceContext {
            trace_id: [0xab; 16],
            parent_span_id: None,
            span_id: [0; 8],
            flags: 0,
        };
        assert_eq!(
            std::str::from_utf8(&unsampled.traceparent(&[0xfe; 8])).unwrap(),
            "00-abababababababababababababababab-fefefefefefefefe-00"
        );
    }

    #[test]
    fn bad_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            let t = TraceContext::from_traceparent(Some(bad));
            assert_eq!(t.parent_span_id, None, "{bad}");
            assert_ne!(t.trace_id, [0; 16]);
        }
        // A later version is read as 00, extra fields allowed.
        let t = TraceContext::from_traceparent(Some(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-more",
        ));
        assert!(t.parent_span_id.is_some());
        assert_eq!(t.flags, 0);
    }

    #[test]
    fn output_text_from_a_whole_answer_and_from_stream_frames() {
        fn whole(body: &'static [u8]) -> Option<OutputMessage> {
            let body = Bytes::from_static(body);
            let told = output_message(&Output::Json {
                body: body.clone(),
                choices: crate::providers::openai::answer_from_body(
                    Endpoint::ChatCompletions,
                    &body,
                )
                .ok()
                .and_then(|(_, at)| at),
            });
            // Told where the choices are or not, the same message.
            let found = output_message(&Output::Json {
                body,
                choices: None,
            });
            assert_eq!(told, found);
            found
        }
        let m = whole(
            br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"},{"index":1,"message":{"content":"other"}}],"usage":{"prompt_tokens":1}}"#,
        )
        .unwrap();
        assert_eq!(
            (&*m.role, m.content().as_str(), m.finish_reason.as_deref()),
            ("assistant", "Hi there", Some("stop"))
        );
        assert_eq!(
            m.as_messages(),
            r#"[{"role":"assistant","content":"Hi there"}]"#
        );
        let frames = vec![
            Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n"),
            Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\\"x\\\"\"},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n"),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ];
        let m = output_message(&Output::Frames(frames, 0)).unwrap();
        assert_eq!(
            (m.content().as_str(), m.finish_reason.as_deref()),
            ("Hello \"x\"", Some("length"))
        );
        assert_eq!(m.content_json(), r#""Hello \"x\"""#);
        // Escaped text stays valid JSON in the messages and reads back
        // unescaped; tool calls stand in for null content.
        let m = whole(
            br#"{"choices":[{"message":{"role":"assistant","content":"say \"hi\"\n\u00e9"}}]}"#,
        )
        .unwrap();
        assert_eq!(m.content(), "say \"hi\"\n\u{e9}");
        let back: serde_json::Value = serde_json::from_str(m.as_messages()).unwrap();
        assert_eq!(back[0]["content"], "say \"hi\"\n\u{e9}");
        let m = whole(
            br#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1"}]}}]}"#,
        )
        .unwrap();
        assert_eq!(m.content(), r#"[{"id":"c1"}]"#);
        // Completions' text, and content parts shown as their JSON.
        let m = whole(br#"{"choices":[{"text":"once upon","finish_reason":"length"}]}"#).unwrap();
        assert_eq!((m.content().as_str(), &*m.role), ("once upon", "assistant"));
        let m = whole(br#"{"choices":[{"message":{"content":[{"type":"text","text":"hi"}]}}]}"#)
            .unwrap();
        assert_eq!(m.content(), r#"[{"type":"text","text":"hi"}]"#);
        assert_eq!(whole(br#"{"data":[{"embedding":[0.1]}]}"#), None);
        assert_eq!(whole(br#"{"choices":[]}"#), None);
    }
}
