//! The spend spool: a local write-ahead log of settlements, so that spend
//! survives a crash or a database outage.
//!
//! Format: a directory of segment files `<unix-ms>-<uuid>.spool`, each one
//! JSON object (a spend log row) per line. A segment is created at a fixed
//! size and mapped into memory (shared, writable); a settlement is one
//! copy into the mapping. The mapping is the file's page cache, so once
//! the copy is done a crash of the process loses nothing — without a
//! `write` system call per request (what each request's durability used to
//! cost, or a wait for the next group write). `sync` on a timer covers
//! power loss. The part of a segment not written yet reads as zero bytes:
//! a reader stops at the first zero. A segment is closed (unmapped,
//! truncated to what was written) when its batch is handed to the database
//! writer, and deleted once that batch is committed. On start-up every
//! segment left behind is replayed; the database ignores rows it already
//! has (the request id is the primary key), so a segment committed but not
//! yet deleted at a crash is harmless. A torn last line (a crash mid-copy)
//! is skipped. The format is hand-written rather than a crate's: it is a
//! copy, a read and an unlink, and the idempotent replay is what makes it
//! safe; `memmap2` does the mapping.

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

/// Every complete row of a segment; torn or unreadable lines are skipped.
pub fn read(path: &Path) -> std::io::Result<Vec<SpendLogRow>> {
    let bytes = std::fs::read(path)?;
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
    Ok(rows)
}

/// One open segment, mapped.
pub struct Segment {
    path: PathBuf,
    file: File,
    map: MmapMut,
    len: usize,
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
                Ok(Segment {
                    path,
                    file,
                    map,
                    len: 0,
                })
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Appends whole lines (each `\n`-terminated); false, with nothing
    /// written, when they do not fit.
    pub fn append(&mut self, lines: &[u8]) -> bool {
        let end = self.len + lines.len();
        if end > self.map.len() {
            return false;
        }
        self.map[self.len..end].copy_from_slice(lines);
        self.len = end;
        true
    }

    pub fn bytes(&self) -> u64 {
        self.len as u64
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
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

    #[test]
    fn rows_survive_and_a_torn_tail_is_skipped() {
        let dir = std::env::temp_dir().join(format!("tollgate-spool-{}", uuid::Uuid::new_v4()));
        let _lock = lock(&dir).unwrap();
        let mut seg = Segment::create(&dir, 4096).unwrap();
        for id in ["a", "b"] {
            let mut line = serde_json::to_vec(&row(id)).unwrap();
            line.push(b'\n');
            assert!(seg.append(&line));
        }
        // A crash mid-copy: the last line is cut short, the rest of the
        // segment still zeros — and the file was never closed.
        assert!(seg.append(br#"{"request_id":"c","call_ty"#));
        let path = seg.path.clone();
        std::mem::forget(seg);
        let rows = read(&path).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| r.request_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(segments(&dir).unwrap().len(), 1);
        // A second process cannot take the same spool.
        assert!(lock(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_segment_refuses_a_line_whole_and_closes_to_what_it_holds() {
        let dir = std::env::temp_dir().join(format!("tollgate-spool-{}", uuid::Uuid::new_v4()));
        let _lock = lock(&dir).unwrap();
        let mut line = serde_json::to_vec(&row("a")).unwrap();
        line.push(b'\n');
        let mut seg = Segment::create(&dir, line.len() + 10).unwrap();
        assert!(seg.append(&line));
        assert!(!seg.append(&line), "no room for a second line");
        assert_eq!(seg.bytes(), line.len() as u64);
        let (path, _file) = seg.close();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            line,
            "no torn line, no zeros"
        );
        let spare = Segment::create(&dir, 4096).unwrap();
        spare.discard();
        assert_eq!(
            segments(&dir).unwrap().len(),
            1,
            "a discarded segment is gone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
