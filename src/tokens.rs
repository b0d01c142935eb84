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
