//! Counting tokens ourselves, for when an upstream reports no usage (a
//! stream cut short, a server that ignores `include_usage`). Counts use
//! OpenAI's o200k_base encoding: exact for current OpenAI models, an
//! estimate for others — and the spend log says it was estimated.
//!
//! Encoding costs about a microsecond per few bytes: callers run it off
//! the worker thread (`web::block`) for anything but tiny texts.

use bytes::Bytes;
use serde::Deserialize;

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_with_special_tokens(text)
        .len() as u64
}

/// The text of a request's prompt: chat messages' `content` (strings and
/// text parts), a completion's `prompt`, an embedding's `input`.
pub fn prompt_text(body: &crate::request::RawObject) -> String {
    #[derive(Deserialize)]
    struct Message {
        content: Option<serde_json::Value>,
    }
    fn collect(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            serde_json::Value::Object(o) => {
                if let Some(t) = o.get("text") {
                    collect(t, out);
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    if let Some(messages) = body.get("messages") {
        if let Ok(msgs) = serde_json::from_str::<Vec<Message>>(messages.get()) {
            for m in msgs.iter().filter_map(|m| m.content.as_ref()) {
                collect(m, &mut out);
            }
        }
    }
    for field in ["prompt", "input"] {
        if let Some(v) = body.get(field) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(v.get()) {
                collect(&v, &mut out);
            }
        }
    }
    out
}

/// Texts up to this size are counted on the calling thread; larger ones
/// go to the blocking pool.
pub const INLINE_COUNT_BYTES: usize = 32 * 1024;

/// Tokens of a request's prompt, counted off the worker thread when large.
pub async fn prompt_tokens(body: &crate::request::RawObject) -> u64 {
    let text = prompt_text(body);
    if text.len() <= INLINE_COUNT_BYTES {
        return count(&text);
    }
    actix_web::web::block(move || count(&text))
        .await
        .unwrap_or(0)
}

/// The generated text carried by OpenAI-shaped stream frames
/// (`data: {...}\n\n`): chat `delta.content` (and `reasoning_content`),
/// completions `text`.
pub fn streamed_text(frames: &[Bytes]) -> String {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        delta: Option<Delta>,
        text: Option<String>,
    }
    #[derive(Deserialize)]
    struct Delta {
        content: Option<String>,
        reasoning_content: Option<String>,
    }
    let mut out = String::new();
    for frame in frames {
        let data = frame.strip_prefix(b"data: ").unwrap_or(frame);
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data.trim_ascii_end()) else {
            continue;
        };
        for c in chunk.choices {
            if let Some(d) = c.delta {
                out.extend(d.content);
                out.extend(d.reasoning_content);
            }
            out.extend(c.text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_openai() {
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
    }

    #[test]
    fn text_is_collected_from_chat_and_completion_frames() {
        let frames = [
            Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"),
            Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n"),
            Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"}}]}\n\n"),
            Bytes::from_static(b"data: {\"choices\":[{\"text\":\"!\",\"index\":0}]}\n\n"),
            Bytes::from_static(b"data: not json\n\n"),
        ];
        assert_eq!(streamed_text(&frames), "Hello world!");
    }
}
