//! Hand-written JSON pieces: ids, reply text, usage, errors, embeddings.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;

/// The reply sentence, one entry per word.
const WORDS: [&str; 7] = ["This", "is", "a", "mock", "response", "from", "tollgate."];

/// `created` of the one model listed by `/v1/models`.
pub(crate) const MODEL_CREATED: u64 = 1_700_000_000;

static ID_COUNTER: AtomicU64 = AtomicU64::new(0);
static ID_PREFIX: OnceLock<u32> = OnceLock::new();

/// Appends a unique id such as `chatcmpl-1a2b3c4d000000000007`.
pub(crate) fn push_id(out: &mut String, kind: &str) {
    out.push_str(kind);
    out.push('-');
    push_unique(out);
}

/// Appends 20 hex digits unique within the process (random per process,
/// then a counter), e.g. `1a2b3c4d000000000007`.
pub(crate) fn push_unique(out: &mut String) {
    let prefix = *ID_PREFIX.get_or_init(rand::random::<u32>);
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let _ = write!(out, "{prefix:08x}{n:012x}");
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Appends content piece `i` of a reply split into `total` pieces. With up to
/// 7 pieces the sentence's words are spread over them; with more, one word
/// per piece and the sentence repeats. Pieces after the first start with a
/// space, so concatenating pieces gives the plain text.
pub(crate) fn push_piece(out: &mut String, total: usize, i: usize) {
    let (start, end) = if total <= WORDS.len() {
        (i * WORDS.len() / total, (i + 1) * WORDS.len() / total)
    } else {
        (i, i + 1)
    };
    for w in start..end {
        if w > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[w % WORDS.len()]);
    }
}

/// Appends the first `emit` pieces of a `total`-piece reply.
pub(crate) fn push_reply(out: &mut String, total: usize, emit: usize) {
    for i in 0..emit {
        push_piece(out, total, i);
    }
}

/// Appends `{"prompt_tokens":P,"completion_tokens":C,"total_tokens":T}`.
pub(crate) fn push_usage(out: &mut String, prompt: u64, completion: u64) {
    let _ = write!(
        out,
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
        prompt + completion
    );
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        last = i + 1;
    }
    out.push_str(&s[last..]);
    out.push('"');
}

/// `{"error":{"message":…,"type":…,"param":null,"code":…}}`.
pub(crate) fn error_body(message: &str, kind: &str, code: Option<&str>) -> String {
    let mut out = String::with_capacity(96 + message.len());
    out.push_str(r#"{"error":{"message":"#);
    push_json_str(&mut out, message);
    out.push_str(r#","type":"#);
    push_json_str(&mut out, kind);
    out.push_str(r#","param":null,"code":"#);
    match code {
        Some(c) => push_json_str(&mut out, c),
        None => out.push_str("null"),
    }
    out.push_str("}}");
    out
}

/// Characters of a JSON string value as written (quotes excluded); 0 for
/// anything that is not a string.
pub(crate) fn raw_str_chars(raw: &RawValue) -> usize {
    let s = raw.get();
    if s.len() >= 2 && s.starts_with('"') {
        s[1..s.len() - 1].chars().count()
    } else {
        0
    }
}

/// The prompt-token estimate: max(1, characters / 4).
pub(crate) fn tokens_for_chars(chars: usize) -> u64 {
    ((chars / 4) as u64).max(1)
}

/// FNV-1a, to seed an input's embedding.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic unit-length vector of `dims` floats for `seed`.
pub(crate) fn embedding(seed: u64, dims: usize, out: &mut Vec<f32>) {
    out.clear();
    let mut state = seed;
    let mut norm = 0.0f32;
    for _ in 0..dims {
        let v = (splitmix64(&mut state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        norm += v * v;
        out.push(v);
    }
    let norm = norm.sqrt();
    if norm > 0.0 {
        for v in out.iter_mut() {
            *v /= norm;
        }
    }
}

/// Appends `[v0,v1,…]`.
pub(crate) fn push_f32_array(out: &mut String, values: &[f32]) {
    out.push('[');
    for (j, v) in values.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v}");
    }
    out.push(']');
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn push_base64(out: &mut String, data: &[u8]) {
    let mut chunks = data.chunks_exact(3);
    for c in &mut chunks {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        for shift in [18, 12, 6, 0] {
            out.push(B64[((n >> shift) & 63) as usize] as char);
        }
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.push(B64[((n >> 18) & 63) as usize] as char);
            out.push(B64[((n >> 12) & 63) as usize] as char);
            out.push_str("==");
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.push(B64[((n >> 18) & 63) as usize] as char);
            out.push(B64[((n >> 12) & 63) as usize] as char);
            out.push(B64[((n >> 6) & 63) as usize] as char);
            out.push('=');
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(total: usize, emit: usize) -> String {
        let mut s = String::new();
        push_reply(&mut s, total, emit);
        s
    }

    #[test]
    fn pieces_make_the_sentence() {
        let full = "This is a mock response from tollgate.";
        for n in 1..=7 {
            assert_eq!(reply(n, n), full, "n = {n}");
        }
        assert_eq!(reply(5, 2), "This is");
        assert_eq!(
            reply(9, 9),
            "This is a mock response from tollgate. This is"
        );
        assert_eq!(reply(0, 0), "");
    }

    #[test]
    fn base64_matches_known_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut s = String::new();
            push_base64(&mut s, input.as_bytes());
            assert_eq!(s, want);
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001é\"");
        let v: serde_json::Value =
            serde_json::from_str(&error_body("x\"y", "t", Some("c"))).unwrap();
        assert_eq!(v["error"]["message"], "x\"y");
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
    }

    #[test]
    fn embeddings_are_unit_length_and_deterministic() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        embedding(42, 16, &mut a);
        embedding(42, 16, &mut b);
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
