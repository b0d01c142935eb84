//! Spend log rows in PostgreSQL's binary COPY format, the fastest way rows
//! go into a table: the server reads each field with its type's binary
//! receive function and inserts the rows a page at a time (one WAL record
//! per page, not one per row), with no statement executed per row.
//!
//! Written by hand: the format is a fixed header, then per row a field
//! count and each field as a length (-1 for NULL) and its bytes, then a
//! trailer (PostgreSQL's docs, "COPY", "Binary Format"). tokio-postgres's
//! `BinaryCopyInWriter` does the same through a `ToSql` trait object per
//! field and an await per row.
//!
//! Pure: no I/O here; `spend_pg` sends what this writes.

use bytes::{BufMut, BytesMut};

use super::SpendLogRow;

/// The columns, in the order `row` writes them.
pub const COLUMNS: &str = "request_id, call_type, api_key, key_alias, spend, prompt_tokens, \
    completion_tokens, total_tokens, start_time, end_time, completion_start_time, model, \
    model_group, model_id, api_base, user_id, team_id, end_user, metadata, cache_hit, status, \
    usage_estimated";
const FIELDS: i16 = 22;

/// The signature, no flags, no header extension.
pub fn header(buf: &mut BytesMut) {
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
}

/// The end of the data.
pub fn trailer(buf: &mut BytesMut) {
    buf.put_i16(-1);
}

/// One spend log row.
pub fn row(buf: &mut BytesMut, r: &SpendLogRow) {
    buf.put_i16(FIELDS);
    text(buf, &r.request_id);
    text(buf, &r.call_type);
    text(buf, &r.api_key);
    opt_text(buf, r.key_alias.as_deref());
    float8(buf, r.spend);
    int8(buf, r.prompt_tokens);
    int8(buf, r.completion_tokens);
    int8(buf, r.total_tokens);
    int8(buf, r.start_time);
    int8(buf, r.end_time);
    match r.completion_start_time {
        Some(t) => int8(buf, t),
        None => null(buf),
    }
    text(buf, &r.model);
    text(buf, &r.model_group);
    text(buf, &r.model_id);
    text(buf, &r.api_base);
    opt_text(buf, r.user_id.as_deref());
    opt_text(buf, r.team_id.as_deref());
    opt_text(buf, r.end_user.as_deref());
    text(buf, &r.metadata);
    boolean(buf, r.cache_hit);
    text(buf, &r.status);
    boolean(buf, r.usage_estimated);
}

fn text(buf: &mut BytesMut, s: &str) {
    // A field's length is an i32: a longer string cannot be sent as one,
    // and nothing in a spend row comes near (the body limit is far below).
    let len = i32::try_from(s.len()).unwrap_or(i32::MAX);
    buf.put_i32(len);
    buf.put_slice(&s.as_bytes()[..len as usize]);
}

fn opt_text(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => text(buf, s),
        None => null(buf),
    }
}

fn null(buf: &mut BytesMut) {
    buf.put_i32(-1);
}

fn int8(buf: &mut BytesMut, v: i64) {
    buf.put_i32(8);
    buf.put_i64(v);
}

fn float8(buf: &mut BytesMut, v: f64) {
    buf.put_i32(8);
    buf.put_f64(v);
}

fn boolean(buf: &mut BytesMut, v: bool) {
    buf.put_i32(1);
    buf.put_u8(u8::from(v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_its_field_count_then_each_field_length_prefixed_and_nulls_as_minus_one() {
        let r = SpendLogRow {
            request_id: "r1".into(),
            call_type: "acompletion".into(),
            api_key: "k".into(),
            key_alias: None,
            spend: 0.5,
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
            start_time: 4,
            end_time: 5,
            completion_start_time: None,
            model: "m".into(),
            model_group: "g".into(),
            model_id: "i".into(),
            api_base: "b".into(),
            user_id: Some("u".into()),
            team_id: None,
            end_user: None,
            metadata: "{}".into(),
            cache_hit: false,
            status: "success".into(),
            usage_estimated: true,
        };
        let mut buf = BytesMut::new();
        row(&mut buf, &r);
        let mut want: Vec<u8> = vec![0, 22];
        let t = |w: &mut Vec<u8>, s: &str| {
            w.extend((s.len() as i32).to_be_bytes());
            w.extend(s.as_bytes());
        };
        let n = |w: &mut Vec<u8>| w.extend((-1i32).to_be_bytes());
        let i = |w: &mut Vec<u8>, v: i64| {
            w.extend(8i32.to_be_bytes());
            w.extend(v.to_be_bytes());
        };
        t(&mut want, "r1");
        t(&mut want, "acompletion");
        t(&mut want, "k");
        n(&mut want);
        want.extend(8i32.to_be_bytes());
        want.extend(0.5f64.to_bits().to_be_bytes());
        for v in 1..=5 {
            i(&mut want, v);
        }
        n(&mut want);
        for s in ["m", "g", "i", "b", "u"] {
            t(&mut want, s);
        }
        n(&mut want);
        n(&mut want);
        t(&mut want, "{}");
        want.extend([0, 0, 0, 1, 0]);
        t(&mut want, "success");
        want.extend([0, 0, 0, 1, 1]);
        assert_eq!(&buf[..], &want[..]);

        let mut framed = BytesMut::new();
        header(&mut framed);
        trailer(&mut framed);
        assert_eq!(&framed[..], b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\xff\xff");
    }
}
