//! The spend spool: a local write-ahead log of settlements, so that spend
//! survives a crash or a database outage.
//!
//! Format: a directory of segment files `<unix-ms>-<uuid>.spool`. A
//! segment starts with the 8 bytes `tgspool2`, then holds one record per
//! settlement: its length (u32, little-endian), a CRC-32 of its body, and
//! the body — the spend log row's fields in declaration order, strings as a
//! u32 length and their bytes (`u32::MAX`: none), numbers little-endian
//! (see [`encode`]). Binary rather than JSON because every request writes
//! one: escaping the row's metadata (itself JSON) as a JSON string was most
//! of a settlement's cost.
//!
//! A segment is created at a fixed size and mapped into memory (shared,
//! writable); a settlement is one copy into the mapping. The mapping is the
//! file's page cache, so once the copy is done a crash of the process loses
//! nothing — without a `write` system call per request. A segment still
//! uncommitted two write intervals (at least a second) after it is closed is fsynced (by SpendActor),
//! which covers power loss. The part of a segment not written yet reads as zero
//! bytes, and a record's length is written after its body: a reader stops
//! at the first zero length, so a crash mid-copy (which the client never
//! saw answered) leaves nothing half-read; the checksum catches a record
//! whose pages did not all reach the disk before a power loss. A segment is
//! closed (unmapped, truncated to what was written) when its batch is
//! handed to the database writer, and deleted once that batch is committed.
//! On start-up every segment left behind is replayed; the database ignores
//! rows it already has (the request id is the primary key), so a segment
//! committed but not yet deleted at a crash is harmless. Segments written
//! before this format (JSON lines) are still read. The format is
//! hand-written rather than a crate's: it is a copy, a read and an unlink,
//! and the idempotent replay is what makes it safe; `memmap2` does the
//! mapping, `crc32fast` the checksum.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::store::SpendLogRow;

const SUFFIX: &str = ".spool";
const LOCK: &str = "LOCK";

/// Holds the spool directory for this process (an exclusive file lock): two
/// gateways sharing one spool would replay each other's segments.
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

/// Creates the directory if needed and locks it.
pub fn lock(dir: &Path) -> std::io::Result<SpoolLock> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    file.try_lock().map_err(|e| {
        std::io::Error::other(format!(
            "the spend spool {} is in use by another process ({e}); give each gateway its own `spend.spool_dir`",
            dir.display()
        ))
    })?;
    Ok(SpoolLock { _file: file })
}

/// The segments in `dir`, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(SUFFIX) {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            found.push((entry.path(), len));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes a segment that holds no record (a spare made ahead, left by a
/// crash); true if it did.
pub fn remove_if_unwritten(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; MAGIC.len() + 4];
    let unwritten = File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head.starts_with(MAGIC) && head[MAGIC.len()..] == [0; 4]);
    unwritten && std::fs::remove_file(path).is_ok()
}

/// Every complete row of a segment; a torn or damaged tail is skipped.
pub fn read(path: &Path) -> std::io::Result<Vec<SpendLogRow>> {
    let bytes = std::fs::read(path)?;
    match bytes.strip_prefix(MAGIC) {
        Some(records) => Ok(read_records(path, records)),
        None => Ok(read_json_lines(path, &bytes)),
    }
}

fn read_records(path: &Path, mut rest: &[u8]) -> Vec<SpendLogRow> {
    let mut rows = Vec::new();
    while rest.len() >= HEAD {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap_or_default()) as usize;
        if len == 0 {
            break; // never written: the end
        }
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
        let Some(body) = rest.get(HEAD..HEAD + len) else {
            tracing::warn!(segment = %path.display(), "a spool record runs past the segment's end: skipping the rest");
            break;
        };
        match (crc32fast::hash(body) == crc)
            .then(|| decode(body))
            .flatten()
        {
            Some(row) => rows.push(row),
            None => {
                tracing::warn!(segment = %path.display(), "skipping the rest of a damaged spool segment (torn by a power loss?)");
                break;
            }
        }
        rest = &rest[HEAD + len..];
    }
    rows
}

/// Segments written before the binary format: one JSON row per line.
fn read_json_lines(path: &Path, bytes: &[u8]) -> Vec<SpendLogRow> {
    // A segment left open by a crash is zeros past its last write.
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut rows = Vec::new();
    for line in bytes[..end].split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<SpendLogRow>(line) {
            Ok(row) => rows.push(row),
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "skipping an unreadable spool line (torn by a crash?)")
            }
        }
    }
    rows
}

const MAGIC: &[u8; 8] = b"tgspool2";
/// A record's length and checksum.
const HEAD: usize = 8;
const NONE: u32 = u32::MAX;

/// The encoded size of a row's record, head included.
pub fn record_len(r: &SpendLogRow) -> usize {
    let s = |x: &str| 4 + x.len();
    let o = |x: &Option<String>| 4 + x.as_ref().map_or(0, String::len);
    HEAD + s(&r.request_id)
        + s(&r.call_type)
        + s(&r.api_key)
        + o(&r.key_alias)
        + 8 * 6 // spend, three token counts, start and end
        + 9 // completion start (flag, value)
        + s(&r.model)
        + s(&r.model_group)
        + s(&r.model_id)
        + s(&r.api_base)
        + o(&r.user_id)
        + o(&r.team_id)
        + o(&r.end_user)
        + s(&r.metadata)
        + 1 // cache hit
        + s(&r.status)
        + 1 // usage estimated
}

/// Writes a row's body (without its head) to `out`.
fn encode(r: &SpendLogRow, out: &mut Vec<u8>) {
    fn s(out: &mut Vec<u8>, x: &str) {
        out.extend_from_slice(&(x.len() as u32).to_le_bytes());
        out.extend_from_slice(x.as_bytes());
    }
    fn o(out: &mut Vec<u8>, x: &Option<String>) {
        match x {
            Some(x) => s(out, x),
            None => out.extend_from_slice(&NONE.to_le_bytes()),
        }
    }
    s(out, &r.request_id);
    s(out, &r.call_type);
    s(out, &r.api_key);
    o(out, &r.key_alias);
    out.extend_from_slice(&r.spend.to_le_bytes());
    for n in [
        r.prompt_tokens,
        r.completion_tokens,
        r.total_tokens,
        r.start_time,
        r.end_time,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.push(u8::from(r.completion_start_time.is_some()));
    out.extend_from_slice(&r.completion_start_time.unwrap_or(0).to_le_bytes());
    s(out, &r.model);
    s(out, &r.model_group);
    s(out, &r.model_id);
    s(out, &r.api_base);
    o(out, &r.user_id);
    o(out, &r.team_id);
    o(out, &r.end_user);
    s(out, &r.metadata);
    out.push(u8::from(r.cache_hit));
    s(out, &r.status);
    out.push(u8::from(r.usage_estimated));
}

/// Reads a record's body; `None` if it is not one.
fn decode(body: &[u8]) -> Option<SpendLogRow> {
    struct Cursor<'a>(&'a [u8]);
    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = rest;
            Some(head)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn i64(&mut self) -> Option<i64> {
            Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn byte(&mut self) -> Option<u8> {
            Some(self.take(1)?[0])
        }
        fn opt(&mut self) -> Option<Option<String>> {
            match self.u32()? {
                NONE => Some(None),
                n => Some(Some(
                    String::from_utf8(self.take(n as usize)?.to_vec()).ok()?,
                )),
            }
        }
        fn s(&mut self) -> Option<String> {
            self.opt()?
        }
    }
    let mut c = Cursor(body);
    let row = SpendLogRow {
        request_id: c.s()?,
        call_type: c.s()?.into(),
        api_key: c.s()?,
        key_alias: c.opt()?,
        spend: f64::from_le_bytes(c.take(8)?.try_into().ok()?),
        prompt_tokens: c.i64()?,
        completion_tokens: c.i64()?,
        total_tokens: c.i64()?,
        start_time: c.i64()?,
        end_time: c.i64()?,
        completion_start_time: {
            let set = c.byte()? != 0;
            let at = c.i64()?;
            set.then_some(at)
        },
        model: c.s()?,
        model_group: c.s()?,
        model_id: c.s()?,
        api_base: c.s()?,
        user_id: c.opt()?,
        team_id: c.opt()?,
        end_user: c.opt()?,
        metadata: c.s()?,
        cache_hit: c.byte()? != 0,
        status: c.s()?.into(),
        usage_estimated: c.byte()? != 0,
    };
    c.0.is_empty().then_some(row)
}

/// One open segment, mapped.
pub struct Segment {
    path: PathBuf,
    file: File,
    map: MmapMut,
    len: usize,
    /// A record's body is built here, then copied in (kept: no
    /// allocation per settlement).
    scratch: Vec<u8>,
}

impl Segment {
    /// A new segment with room for `capacity` bytes.
    pub fn create(dir: &Path, capacity: usize) -> std::io::Result<Segment> {
        let name = format!(
            "{:013}-{}{SUFFIX}",
            chrono::Utc::now().timestamp_millis(),
            uuid::Uuid::new_v4().simple()
        );
        let path = dir.join(name);
        let capacity = capacity + MAGIC.len();
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let mapped = file
            .set_len(capacity.max(1) as u64)
            // SAFETY: the file is ours alone (created here, in a directory
            // locked by this process) and is neither truncated nor resized
            // while mapped: `close` unmaps before it truncates.
            .and_then(|()| unsafe { MmapMut::map_mut(&file) });
        match mapped {
            Ok(map) => {
                // Fault the pages in now, in one call, rather than one
                // page fault per 4 KB on the thread that copies rows in
                // (a fault on a file's hole also reads ahead and zeroes
                // pages around it). Best effort: older kernels lack it.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::PopulateWrite);
                let mut seg = Segment {
                    path,
                    file,
                    map,
                    len: 0,
                    scratch: Vec::new(),
                };
                if seg.map.len() >= MAGIC.len() {
                    seg.map[..MAGIC.len()].copy_from_slice(MAGIC);
                    seg.len = MAGIC.len();
                }
                Ok(seg)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Appends a row's record; false, with nothing written, when it does
    /// not fit. The length goes in last: until it does, a reader sees the
    /// end of the segment there.
    pub fn append(&mut self, row: &SpendLogRow) -> bool {
        let need = record_len(row);
        let end = self.len + need;
        if end > self.map.len() {
            return false;
        }
        self.scratch.clear();
        encode(row, &mut self.scratch);
        debug_assert_eq!(self.scratch.len() + HEAD, need);
        let at = self.len;
        self.map[at + HEAD..end].copy_from_slice(&self.scratch);
        self.map[at + 4..at + HEAD].copy_from_slice(&crc32fast::hash(&self.scratch).to_le_bytes());
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::Release);
        self.map[at..at + 4].copy_from_slice(&(self.scratch.len() as u32).to_le_bytes());
        self.len = end;
        true
    }

    pub fn bytes(&self) -> u64 {
        self.len as u64
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes left for records.
    pub fn room(&self) -> usize {
        self.map.len() - self.len
    }

    /// Removes a segment nothing was written to.
    pub fn discard(self) {
        let (path, file) = self.close();
        drop(file);
        let _ = std::fs::remove_file(path);
    }

    /// Closes the segment: unmapped and cut to what was written. Returns
    /// its path and a handle to sync it with.
    pub fn close(self) -> (PathBuf, File) {
        let Segment {
            path,
            file,
            map,
            len,
            ..
        } = self;
        drop(map);
        // Only tidiness: a reader stops at the zeros anyway.
        let _ = file.set_len(len as u64);
        (path, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> SpendLogRow {
        SpendLogRow {
            request_id: id.into(),
            call_type: "acompletion".into(),
            api_key: "h".into(),
            key_alias: None,
            spend: 0.25,
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
            start_time: 1,
            end_time: 2,
            completion_start_time: None,
            model: "m".into(),
            model_group: "g".into(),
            model_id: "d".into(),
            api_base: "http://x".into(),
            user_id: None,
            team_id: None,
            end_user: Some("e".into()),
            metadata: "{}".into(),
            cache_hit: false,
            status: "success".into(),
            usage_estimated: false,
        }
    }

    fn temp_spool() -> (PathBuf, SpoolLock) {
        let dir = std::env::temp_dir().join(format!("tollgate-spool-{}", uuid::Uuid::new_v4()));
        let lock = lock(&dir).unwrap();
        (dir, lock)
    }

    fn ids(rows: &[SpendLogRow]) -> Vec<&str> {
        rows.iter().map(|r| r.request_id.as_str()).collect()
    }

    #[test]
    fn every_field_of_a_row_reads_back_as_written() {
        let (dir, _lock) = temp_spool();
        let mut full = row("a");
        full.key_alias = Some("alias ✓".into());
        full.completion_start_time = Some(-7);
        full.user_id = Some(String::new());
        full.team_id = Some("t".into());
        full.end_user = None;
        full.metadata = r#"{"q":"\"quoted\"\n"}"#.into();
        full.cache_hit = true;
        full.usage_estimated = true;
        full.spend = 1e-9;
        let mut seg = Segment::create(&dir, 4096).unwrap();
        assert!(seg.append(&full));
        assert!(seg.append(&row("b")));
        let (path, _file) = seg.close();
        assert_eq!(read(&path).unwrap(), vec![full, row("b")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rows_survive_and_a_torn_tail_is_skipped() {
        let (dir, _lock) = temp_spool();
        let mut seg = Segment::create(&dir, 4096).unwrap();
        assert!(seg.append(&row("a")));
        assert!(seg.append(&row("b")));
        // A crash mid-copy: the next record's body is partly there, its
        // length not yet — and the file was never closed.
        let at = seg.len;
        seg.map[at + HEAD..at + HEAD + 20].fill(0x5a);
        let path = seg.path.clone();
        std::mem::forget(seg);
        assert_eq!(ids(&read(&path).unwrap()), ["a", "b"]);
        assert_eq!(segments(&dir).unwrap().len(), 1);
        // A second process cannot take the same spool.
        assert!(lock(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_record_ends_the_segment_there() {
        let (dir, _lock) = temp_spool();
        let mut seg = Segment::create(&dir, 4096).unwrap();
        for id in ["a", "b", "c"] {
            assert!(seg.append(&row(id)));
        }
        // "b"'s body lost a page to a power loss: its checksum fails.
        let b = MAGIC.len() + record_len(&row("a"));
        seg.map[b + HEAD + 6] ^= 0xff;
        let (path, _file) = seg.close();
        assert_eq!(ids(&read(&path).unwrap()), ["a"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_of_the_json_lines_format_are_still_replayed() {
        let (dir, _lock) = temp_spool();
        let path = dir.join("0000000000001-old.spool");
        let mut bytes = Vec::new();
        for id in ["a", "b"] {
            bytes.extend(serde_json::to_vec(&row(id)).unwrap());
            bytes.push(b'\n');
        }
        bytes.extend(br#"{"request_id":"c","call_ty"#);
        bytes.extend([0u8; 64]);
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(ids(&read(&path).unwrap()), ["a", "b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_segment_refuses_a_row_whole_and_closes_to_what_it_holds() {
        let (dir, _lock) = temp_spool();
        let one = record_len(&row("a"));
        let mut seg = Segment::create(&dir, one + 10).unwrap();
        assert!(seg.append(&row("a")));
        assert!(!seg.append(&row("b")), "no room for a second row");
        assert_eq!(seg.bytes(), (MAGIC.len() + one) as u64);
        let (path, _file) = seg.close();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (MAGIC.len() + one) as u64,
            "no torn record, no zeros"
        );
        assert_eq!(ids(&read(&path).unwrap()), ["a"]);
        let spare = Segment::create(&dir, 4096).unwrap();
        spare.discard();
        assert_eq!(
            segments(&dir).unwrap().len(),
            1,
            "a discarded segment is gone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_spare_never_written_is_removed_at_start_up_and_a_written_one_kept() {
        let (dir, _lock) = temp_spool();
        let spare = Segment::create(&dir, 4096).unwrap();
        let spare_path = spare.path.clone();
        std::mem::forget(spare); // left by a crash, still full size
        let mut used = Segment::create(&dir, 4096).unwrap();
        assert!(used.append(&row("a")));
        let used_path = used.path.clone();
        std::mem::forget(used);
        assert!(remove_if_unwritten(&spare_path));
        assert!(!spare_path.exists());
        assert!(!remove_if_unwritten(&used_path));
        assert_eq!(ids(&read(&used_path).unwrap()), ["a"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
