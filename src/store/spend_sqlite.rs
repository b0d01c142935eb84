//! The spend batch write on a plain (synchronous) SQLite connection: the
//! whole transaction runs on one blocking thread instead of one thread hop
//! per statement, and diesel's batch insert is available there.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::{SpendCommit, SpendLogRow, StoreError};

pub fn record(
    conn: &mut SqliteConnection,
    rows: &[SpendLogRow],
) -> Result<SpendCommit, StoreError> {
    conn.transaction(|conn| crate::record_batch!(conn, rows, one_by_one, []))
}
