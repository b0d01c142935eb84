//! Incremental decoder for `text/event-stream` bodies.
//!
//! Upstream bytes arrive cut anywhere — mid-line, mid-UTF-8 sequence — so the
//! decoder buffers until a blank line ends an event, then yields the event's
//! `data` payload. Comments, `event:`, `id:` and `retry:` lines are skipped:
//! OpenAI-style streams carry everything in `data`.

use bytes::{Buf, BytesMut};

#[derive(Default)]
pub struct SseDecoder {
    buf: BytesMut,
    data: Vec<u8>,
    has_data: bool,
}

/// Longest event we accept; a stream that exceeds it is broken or hostile.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event's data, if one is buffered.
    pub fn next_event(&mut self) -> Result<Option<Vec<u8>>, EventTooLarge> {
        while let Some(pos) = memchr::memchr(b'\n', &self.buf) {
            let mut line = &self.buf[..pos];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.is_empty() {
                self.buf.advance(pos + 1);
                if self.has_data {
                    self.has_data = false;
                    return Ok(Some(std::mem::take(&mut self.data)));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(rest);
                self.has_data = true;
            }
            self.buf.advance(pos + 1);
        }
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(None)
    }

    /// At end of stream: an event not closed by a blank line still counts.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if !self.buf.is_empty() {
            let mut tail = std::mem::take(&mut self.buf);
            tail.extend_from_slice(b"\n\n");
            self.buf = tail;
            if let Ok(Some(ev)) = self.next_event() {
                return Some(ev);
            }
        }
        if self.has_data {
            self.has_data = false;
            return Some(std::mem::take(&mut self.data));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut SseDecoder) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(ev) = d.next_event().unwrap() {
            out.push(String::from_utf8(ev).unwrap());
        }
        out
    }

    #[test]
    fn events_split_at_any_byte_are_reassembled() {
        let stream =
            "data: {\"a\":1}\n\ndata: {\"b\":\"é\"}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut d = SseDecoder::new();
            let mut got = Vec::new();
            d.push(&stream.as_bytes()[..cut]);
            got.extend(all(&mut d));
            d.push(&stream.as_bytes()[cut..]);
            got.extend(all(&mut d));
            assert_eq!(
                got,
                vec!["{\"a\":1}", "{\"b\":\"é\"}", "[DONE]"],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn multi_line_data_joins_with_newline_and_other_fields_are_ignored() {
        let mut d = SseDecoder::new();
        d.push(b"event: message_start\nid: 7\ndata: line1\ndata:line2\n\n");
        assert_eq!(all(&mut d), vec!["line1\nline2"]);
    }

    #[test]
    fn unterminated_last_event_is_returned_by_finish() {
        let mut d = SseDecoder::new();
        d.push(b"data: {\"x\":1}");
        assert!(all(&mut d).is_empty());
        assert_eq!(d.finish().unwrap(), b"{\"x\":1}");
        assert!(d.finish().is_none());
    }
}
