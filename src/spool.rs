//! The spend spool: a local write-ahead log of settlements, so that spend
//! survives a crash or a database outage.
//!
//! Format: a directory of segment files `<unix-ms>-<uuid>.spool`, each one
//! JSON object (a spend log row) per line. A writer appends whole lines with
//! one `write` each (no buffering in the process: once `append` returns, a
//! crash of the process loses nothing; `sync` on a timer covers power loss).
//! A segment is closed when its batch is handed to the database writer and
//! deleted once that batch is committed. On start-up every segment left
//! behind is replayed; the database ignores rows it already has (the
//! request id is the primary key), so a segment committed but not yet
//! deleted at a crash is harmless. A torn last line (a crash mid-write) is
//! skipped. Hand-written rather than a crate: it is an append, a read and
//! an unlink, and the idempotent replay is what makes it safe.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

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
    let reader = BufReader::new(File::open(path)?);
    let mut rows = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<SpendLogRow>(&line) {
            Ok(row) => rows.push(row),
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "skipping an unreadable spool line (torn by a crash?)")
            }
        }
    }
    Ok(rows)
}

/// One open segment.
pub struct Segment {
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl Segment {
    pub fn create(dir: &Path) -> std::io::Result<Segment> {
        let name = format!(
            "{:013}-{}{SUFFIX}",
            chrono::Utc::now().timestamp_millis(),
            uuid::Uuid::new_v4().simple()
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        Ok(Segment {
            path,
            file,
            bytes: 0,
        })
    }

    /// Appends one row as one line, in one write.
    pub fn append(&mut self, row: &SpendLogRow) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(row).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.append_lines(&line)
    }

    /// Appends whole lines (each `\n`-terminated) in one write.
    pub fn append_lines(&mut self, lines: &[u8]) -> std::io::Result<()> {
        self.file.write_all(lines)?;
        self.bytes += lines.len() as u64;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Closes the segment: its path and a handle to sync it with.
    pub fn close(self) -> (PathBuf, File) {
        (self.path, self.file)
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
        let mut seg = Segment::create(&dir).unwrap();
        seg.append(&row("a")).unwrap();
        seg.append(&row("b")).unwrap();
        let (path, mut file) = seg.close();
        file.write_all(br#"{"request_id":"c","call_ty"#).unwrap();
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
}
