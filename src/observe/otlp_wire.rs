//! The protobuf wire format of the OTLP trace messages tollgate sends,
//! written straight into one buffer.
//!
//! Why not prost's generated structs (`opentelemetry-proto`): they want an
//! owned `String` for every attribute key and value, a `Vec` per list and
//! an `Option<AnyValue>` box per attribute — about sixty small
//! allocations per request span, freed again right after a second pass
//! (`encoded_len`) walks them all. At 20k requests/s with two destinations
//! that was the largest part of what logging cost (glibc malloc alone was
//! ~19 % of the gateway's CPU in `perf`). Here an attribute is a handful of
//! bytes appended to a buffer that is reused batch after batch. The field
//! numbers are OTLP's (`opentelemetry/proto/{trace,common,resource}/v1`,
//! stable since OTLP 1.0); the unit tests decode what this writes with
//! `opentelemetry-proto`, which stays the reference.

/// Wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

#[inline]
pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
pub fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

#[inline]
fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// A length-delimited field (bytes, string or an encoded message).
#[inline]
pub fn bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

#[inline]
pub fn varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    tag(buf, field, VARINT);
    varint(buf, v);
}

#[inline]
pub fn fixed64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    tag(buf, field, I64);
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
pub fn fixed32_field(buf: &mut Vec<u8>, field: u32, v: u32) {
    tag(buf, field, I32);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// The size of a length-delimited field holding `len` bytes.
#[inline]
fn len_field_size(field: u32, len: usize) -> usize {
    tag_len(field) + varint_len(len as u64) + len
}

/// An attribute's value (`AnyValue`).
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    Str(&'a str),
    Int(i64),
    F64(f64),
    Bool(bool),
    /// An array of strings.
    Strs(&'a [&'a str]),
}

/// `AnyValue`'s fields.
mod any {
    pub const STRING: u32 = 1;
    pub const BOOL: u32 = 2;
    pub const INT: u32 = 3;
    pub const DOUBLE: u32 = 4;
    pub const ARRAY: u32 = 5;
}

fn strs_len(items: &[&str]) -> usize {
    // ArrayValue { repeated AnyValue values = 1 }, each AnyValue a string.
    items
        .iter()
        .map(|s| len_field_size(1, len_field_size(any::STRING, s.len())))
        .sum()
}

#[inline]
fn any_len(v: Val) -> usize {
    match v {
        Val::Str(s) => len_field_size(any::STRING, s.len()),
        Val::Int(i) => 1 + varint_len(i as u64),
        Val::F64(_) => 1 + 8,
        Val::Bool(_) => 2,
        Val::Strs(items) => len_field_size(any::ARRAY, strs_len(items)),
    }
}

#[inline]
fn write_any(buf: &mut Vec<u8>, v: Val) {
    match v {
        Val::Str(s) => bytes_field(buf, any::STRING, s.as_bytes()),
        // int64: negative numbers as their two's complement (10 bytes).
        Val::Int(i) => varint_field(buf, any::INT, i as u64),
        Val::F64(x) => fixed64_field(buf, any::DOUBLE, x.to_bits()),
        Val::Bool(b) => varint_field(buf, any::BOOL, u64::from(b)),
        Val::Strs(items) => {
            tag(buf, any::ARRAY, LEN);
            varint(buf, strs_len(items) as u64);
            for s in items {
                tag(buf, 1, LEN);
                varint(buf, len_field_size(any::STRING, s.len()) as u64);
                bytes_field(buf, any::STRING, s.as_bytes());
            }
        }
    }
}

/// One `KeyValue { key = 1, value = 2 }` as field `field` of the message
/// being written (a span's attributes are its field 9).
#[inline]
pub fn attr(buf: &mut Vec<u8>, field: u32, key: &str, v: Val) {
    let value_len = any_len(v);
    let kv_len = len_field_size(1, key.len()) + len_field_size(2, value_len);
    // Room for the whole attribute up front: it never regrows midway.
    buf.reserve(len_field_size(field, kv_len));
    // Nearly every attribute is short: every tag and length one byte, so
    // they go in as a few fixed-size writes rather than a push (and a
    // capacity check) per byte.
    if field < 16 && kv_len < 128 {
        buf.extend_from_slice(&[
            ((field << 3) | u32::from(LEN)) as u8,
            kv_len as u8,
            (1 << 3) | LEN,
            key.len() as u8,
        ]);
        buf.extend_from_slice(key.as_bytes());
        match v {
            Val::Str(s) => {
                buf.extend_from_slice(&[
                    (2 << 3) | LEN,
                    value_len as u8,
                    ((any::STRING as u8) << 3) | LEN,
                    s.len() as u8,
                ]);
                buf.extend_from_slice(s.as_bytes());
                return;
            }
            Val::Int(i) if (0..128).contains(&i) => {
                buf.extend_from_slice(&[(2 << 3) | LEN, 2, (any::INT as u8) << 3, i as u8]);
                return;
            }
            Val::F64(x) => {
                buf.extend_from_slice(&[(2 << 3) | LEN, 9, ((any::DOUBLE as u8) << 3) | I64]);
                buf.extend_from_slice(&x.to_bits().to_le_bytes());
                return;
            }
            _ => {}
        }
    } else {
        tag(buf, field, LEN);
        varint(buf, kv_len as u64);
        bytes_field(buf, 1, key.as_bytes());
    }
    tag(buf, 2, LEN);
    varint(buf, value_len as u64);
    write_any(buf, v);
}

/// `Span`'s fields.
pub mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
    /// `SpanKind`.
    pub const KIND_SERVER: u64 = 2;
    pub const KIND_CLIENT: u64 = 3;
    /// `Status.code`.
    pub const STATUS_ERROR: u64 = 2;
}

/// A span's `Status { message = 2, code = 3 }`, written only for errors
/// (an unset status is the default and needs no bytes).
pub fn error_status(buf: &mut Vec<u8>, message: &str) {
    // `code` (tag and one byte), and `message` unless empty.
    let message_len = if message.is_empty() {
        0
    } else {
        len_field_size(2, message.len())
    };
    let len = message_len + 2;
    tag(buf, span::STATUS, LEN);
    varint(buf, len as u64);
    if !message.is_empty() {
        bytes_field(buf, 2, message.as_bytes());
    }
    varint_field(buf, 3, span::STATUS_ERROR);
}

/// Bytes kept free at the front of an export body for its header, which
/// is only known once the spans after it are written (see [`Export`]).
const HEADER_ROOM: usize = 128;

/// The encoded `Resource` (service name and version) and
/// `InstrumentationScope` (`tollgate`): the same for every export.
fn resource_and_scope() -> &'static (Vec<u8>, Vec<u8>) {
    static PARTS: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    PARTS.get_or_init(|| {
        let version = env!("CARGO_PKG_VERSION");
        let mut resource = Vec::with_capacity(64);
        attr(&mut resource, 1, "service.name", Val::Str("tollgate"));
        attr(&mut resource, 1, "service.version", Val::Str(version));
        let mut scope = Vec::with_capacity(32);
        bytes_field(&mut scope, 1, b"tollgate");
        bytes_field(&mut scope, 2, version.as_bytes());
        (resource, scope)
    })
}

/// An `ExportTraceServiceRequest` being written: one `ResourceSpans`
/// holding one `ScopeSpans` whose `spans` (field 2) are appended to
/// [`Export::spans`]. The header in front is written last, into room
/// left for it, so the spans are never copied: one buffer, sized from the
/// previous batch, becomes the request body as it is.
pub struct Export {
    buf: Vec<u8>,
}

impl Export {
    pub fn with_capacity(spans: usize) -> Export {
        let mut buf = Vec::with_capacity(HEADER_ROOM + spans);
        buf.resize(HEADER_ROOM, 0);
        Export { buf }
    }

    /// Where the spans go (each as a `ScopeSpans.spans` entry).
    pub fn spans(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The bytes of the spans written so far.
    pub fn spans_len(&self) -> usize {
        self.buf.len() - HEADER_ROOM
    }

    pub fn finish(mut self) -> bytes::Bytes {
        let (resource, scope) = resource_and_scope();
        let spans = self.spans_len();
        // ScopeSpans { scope = 1, spans = 2 }
        let scope_spans_len = len_field_size(1, scope.len()) + spans;
        // ResourceSpans { resource = 1, scope_spans = 2 }
        let resource_spans_len =
            len_field_size(1, resource.len()) + len_field_size(2, scope_spans_len);
        let mut header = Vec::with_capacity(HEADER_ROOM);
        tag(&mut header, 1, LEN);
        varint(&mut header, resource_spans_len as u64);
        bytes_field(&mut header, 1, resource);
        tag(&mut header, 2, LEN);
        varint(&mut header, scope_spans_len as u64);
        bytes_field(&mut header, 1, scope);
        // At most 3 × 10 varint bytes, 3 tags and the constant parts:
        // well within the room (a unit test checks it).
        let start = HEADER_ROOM - header.len();
        self.buf[start..HEADER_ROOM].copy_from_slice(&header);
        bytes::Bytes::from(self.buf).slice(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_what_is_written() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn the_export_header_fits_its_room_whatever_the_spans_size() {
        let (resource, scope) = resource_and_scope();
        // Largest lengths: every varint at 10 bytes.
        assert!(3 + 3 * 10 + resource.len() + scope.len() + 2 * 10 <= HEADER_ROOM);
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message as _;
        let mut e = Export::with_capacity(0);
        let mut span = Vec::new();
        bytes_field(&mut span, span::NAME, b"s");
        for _ in 0..3 {
            bytes_field(e.spans(), 2, &span);
        }
        let back = ExportTraceServiceRequest::decode(e.finish()).unwrap();
        let rs = &back.resource_spans[0];
        assert_eq!(rs.scope_spans[0].spans.len(), 3);
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "tollgate");
        assert_eq!(rs.resource.as_ref().unwrap().attributes.len(), 2);
    }

    /// Attributes written as a `Resource`'s (field 1), decoded by
    /// `opentelemetry-proto`.
    fn resource_attributes(
        bytes: &[u8],
    ) -> Vec<(
        String,
        opentelemetry_proto::tonic::common::v1::any_value::Value,
    )> {
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use prost::Message as _;
        Resource::decode(bytes)
            .unwrap()
            .attributes
            .into_iter()
            .map(|kv| (kv.key, kv.value.unwrap().value.unwrap()))
            .collect()
    }

    #[test]
    fn attributes_of_every_size_decode_alike() {
        // Around the one-byte-length fast path's edges: key, value and
        // attribute lengths of 127 and 128 bytes, ints on both sides of
        // 128, fields with one- and two-byte tags.
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
        use prost::encoding::decode_varint;
        fn val(v: &Av) -> Val<'_> {
            match v {
                Av::StringValue(s) => Val::Str(s),
                Av::IntValue(i) => Val::Int(*i),
                Av::DoubleValue(d) => Val::F64(*d),
                Av::BoolValue(b) => Val::Bool(*b),
                _ => unreachable!(),
            }
        }
        let mut cases: Vec<(String, Av)> = Vec::new();
        for key_len in [1, 60, 118, 119, 120, 126, 127, 128, 300] {
            let key = "k".repeat(key_len);
            for s_len in [0, 1, 4, 5, 6, 120, 123, 124, 125, 126, 127, 128, 1000] {
                cases.push((key.clone(), Av::StringValue("v".repeat(s_len))));
            }
            for i in [0, 1, 127, 128, 300, -1, i64::MAX] {
                cases.push((key.clone(), Av::IntValue(i)));
            }
            cases.push((key.clone(), Av::DoubleValue(-2.5)));
            cases.push((key.clone(), Av::BoolValue(true)));
        }
        for field in [1, 9, 15, 16, 2000] {
            // Each attribute takes exactly the room it reserves, under
            // this field's tag; re-tagged as field 1 they read back as a
            // Resource's attributes.
            let mut as_resource = Vec::new();
            for (k, v) in &cases {
                let mut one = Vec::new();
                attr(&mut one, field, k, val(v));
                let kv = len_field_size(1, k.len()) + len_field_size(2, any_len(val(v)));
                assert_eq!(one.len(), len_field_size(field, kv));
                let mut rest = &one[..];
                assert_eq!(
                    decode_varint(&mut rest).unwrap(),
                    (u64::from(field) << 3) | 2
                );
                assert_eq!(decode_varint(&mut rest).unwrap() as usize, rest.len());
                bytes_field(&mut as_resource, 1, rest);
            }
            assert_eq!(resource_attributes(&as_resource), cases, "field {field}");
        }
    }

    #[test]
    fn attributes_decode_as_otlp_key_values() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
        let long = "x".repeat(300);
        let mut buf = Vec::new();
        attr(&mut buf, 1, "s", Val::Str(&long));
        attr(&mut buf, 1, "i", Val::Int(-5));
        attr(&mut buf, 1, "z", Val::Int(0));
        attr(&mut buf, 1, "d", Val::F64(0.25));
        attr(&mut buf, 1, "b", Val::Bool(false));
        attr(&mut buf, 1, "a", Val::Strs(&["p", "q"]));
        let vals = resource_attributes(&buf);
        assert_eq!(vals[0], ("s".into(), Av::StringValue(long)));
        assert_eq!(vals[1], ("i".into(), Av::IntValue(-5)));
        assert_eq!(vals[2], ("z".into(), Av::IntValue(0)));
        assert_eq!(vals[3], ("d".into(), Av::DoubleValue(0.25)));
        assert_eq!(vals[4], ("b".into(), Av::BoolValue(false)));
        match &vals[5].1 {
            Av::ArrayValue(a) => assert_eq!(
                a.values
                    .iter()
                    .map(|v| v.value.clone().unwrap())
                    .collect::<Vec<_>>(),
                [Av::StringValue("p".into()), Av::StringValue("q".into())]
            ),
            other => panic!("{other:?}"),
        }
    }
}
