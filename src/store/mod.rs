//! Durable storage for keys, users and teams: SQLite (embedded default) or
//! PostgreSQL, same schema, same queries. Every query is written once and
//! run on whichever pool the URL chose (`with_conn!`).

pub mod models;
pub mod schema;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

pub use models::{
    BudgetRow, CustomerRow, KeyModelSpendRow, KeyRow, MemberRow, OrgMemberRow, OrgRow, SpendLogRow,
    TeamRow, UserRow,
};
pub use spend::{spend_log_id, SpendCommit, SpendFilter};

use crate::breaker::Breaker;
use schema::{keys, team_members, teams, users};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long a SQLite writer waits for the lock (`PRAGMA busy_timeout`).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// A pool of either backend, every operation bounded by `timeout` and
/// failing fast while `breaker` is open (the database is known down).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced wholesale when an operation times out: a connection that
    /// died silently (no FIN, no RST) looks healthy to the pool and would
    /// be handed out again and again, and bb8 has no way to discard one.
    pools: RwLock<Pools>,
    url: String,
    pool_size: u32,
    breaker: Arc<Breaker>,
    timeout: Duration,
    /// SQLite: the one connection spend batches are written on (see
    /// `Store::record_spend`); opened on first use, dropped after an error.
    spend_writer: tokio::sync::Mutex<Option<rusqlite::Connection>>,
    /// PostgreSQL: the same, a connection outside the pool (it sends rows
    /// by COPY, which the pool's diesel connections cannot).
    pg_spend_writer: tokio::sync::Mutex<Option<spend_pg::Writer>>,
}

#[derive(Clone)]
enum Pools {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// No answer in time: a stall or an outage (see `Breaker::timed_out`).
    #[error("the database did not answer in time: {0}")]
    Slow(String),
    #[error("duplicate value: {0}")]
    Duplicate(String),
    /// A row changed between being read and written back.
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Query(String),
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StoreError::Duplicate(info.message().to_string())
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                StoreError::Unavailable(info.message().to_string())
            }
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
                if is_connection_message(info.message()) =>
            {
                StoreError::Unavailable(info.message().to_string())
            }
            other => StoreError::Query(other.to_string()),
        }
    }
}

/// A row written back after another write changed it (see `update_team`).
pub(crate) fn changed_meanwhile(what: &str, id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "{what} {id} changed while this request was applied; read it again and retry"
    ))
}

fn is_connection_message(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    m.contains("connection") || m.contains("database is locked") || m.contains("broken pipe")
}

fn pool_error<E: std::fmt::Display>(e: bb8::RunError<E>) -> StoreError {
    match e {
        bb8::RunError::TimedOut => StoreError::Slow("no connection came free in time".into()),
        bb8::RunError::User(e) => StoreError::Unavailable(e.to_string()),
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of either
/// backend, through the breaker and within the store's timeout.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let store: &Store = $store;
        let pools = store.pools();
        store
            .guarded(true, async {
                match &pools {
                    Pools::Postgres(pool) => {
                        let mut guard = pool.get().await.map_err(pool_error)?;
                        let $conn: &mut AsyncPgConnection = &mut guard;
                        $body
                    }
                    Pools::Sqlite(pool) => {
                        let mut guard = pool.get().await.map_err(pool_error)?;
                        let $conn: &mut SqliteConn = &mut guard;
                        $body
                    }
                }
            })
            .await
    }};
}

/// Writes `$row` over row `$id` of `$table` only if its `updated_at` is
/// still `$read_at`: a management read-change-write (see
/// `Store::update_team`). `Ok(true)` written, `Ok(false)` gone,
/// `Err(StoreError::Conflict)` changed meanwhile.
macro_rules! write_as_read {
    ($conn:ident, $table:ident, $id:expr, $row:expr, $read_at:expr, $what:expr, $name:expr) => {{
        let n = diesel::update(
            $table::table
                .find($id)
                .filter($table::updated_at.eq($read_at)),
        )
        .set($row)
        .execute($conn)
        .await?;
        if n > 0 {
            Ok(true)
        } else if $table::table
            .find($id)
            .count()
            .get_result::<i64>($conn)
            .await?
            > 0
        {
            Err($crate::store::changed_meanwhile($what, $name))
        } else {
            Ok(false)
        }
    }};
}

/// What `/user/list` filters on (LiteLLM's query parameters).
#[derive(Debug, Default, Clone)]
pub struct UserFilter {
    pub role: Option<String>,
    pub user_ids: Option<Vec<String>>,
    /// A substring, compared case-insensitively.
    pub email_contains: Option<String>,
    pub team: Option<String>,
    pub sort_by: Option<String>,
    pub sort_desc: bool,
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>);

/// `%`, `_` and `\` taken literally in a LIKE pattern (escape `\`).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What `/key/list` filters on.
#[derive(Debug, Default, Clone)]
pub struct KeyFilter {
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub key_alias: Option<String>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The PostgreSQL advisory lock key that serialises migrations ("tollgate"
/// in ASCII). Any fixed number works as long as every replica uses it.
const PG_MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// Runs the PostgreSQL migrations while holding a session-level advisory
/// lock on the same connection. Replicas started together on an empty
/// database would otherwise run the same `CREATE TABLE`s at once, and all
/// but one fail (`duplicate key value violates unique constraint
/// "pg_type_typname_nsp_index"`). The others wait for the lock, then find
/// nothing pending. The lock is released afterwards, on error too (and by
/// PostgreSQL itself if the connection dies first).
fn migrate_pg_locked<C>(conn: &mut C) -> Result<usize, StoreError>
where
    C: MigrationHarness<diesel::pg::Pg> + diesel::connection::SimpleConnection,
{
    diesel::connection::SimpleConnection::batch_execute(
        conn,
        &format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"),
    )
    .map_err(|e| StoreError::Migration(format!("taking the migration lock: {e}")))?;
    let result = conn
        .run_pending_migrations(PG_MIGRATIONS)
        .map(|v| v.len())
        .map_err(|e| StoreError::Migration(e.to_string()));
    let unlocked = diesel::connection::SimpleConnection::batch_execute(
        conn,
        &format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"),
    );
    match (result, unlocked) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(StoreError::Migration(format!(
            "releasing the migration lock: {e}"
        ))),
        (Ok(n), Ok(())) => Ok(n),
    }
}

/// A SQLite connection as every one of ours is set up, then `extra`
/// pragmas.
async fn sqlite_connect(url: &str) -> diesel::ConnectionResult<SqliteConn> {
    let mut conn = SqliteConn::establish(url).await?;
    // WAL lets readers run beside the writer; busy_timeout queues writers
    // instead of failing them.
    conn.batch_execute(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {}; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        SQLITE_BUSY_TIMEOUT.as_millis()
    ))
    .await
    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

impl Store {
    pub fn is_postgres(url: &str) -> bool {
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// Opens a pool. `url`: `postgres://…` or `sqlite://path` (a bare path
    /// is SQLite too). Every operation, pool wait included, is bounded by
    /// `timeout`; `breaker` learns of outages and makes calls fail fast
    /// while it is open.
    pub async fn connect(
        url: &str,
        pool_size: u32,
        timeout: Duration,
        breaker: Arc<Breaker>,
    ) -> Result<Store, StoreError> {
        let pools = Store::build_pools(url, pool_size, timeout, &breaker).await?;
        // A local file is never "unreachable"; what makes SQLite slow is a
        // writer holding the lock, which busy_timeout (5 s) already waits
        // out. Give it that long, and never open the breaker for it.
        let timeout = match pools {
            Pools::Sqlite(_) => timeout.max(SQLITE_BUSY_TIMEOUT + Duration::from_secs(1)),
            Pools::Postgres(_) => timeout,
        };
        Ok(Store {
            inner: Arc::new(Inner {
                pools: RwLock::new(pools),
                url: url.to_string(),
                pool_size,
                breaker,
                timeout,
                spend_writer: tokio::sync::Mutex::new(None),
                pg_spend_writer: tokio::sync::Mutex::new(None),
            }),
        })
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.inner.breaker
    }

    fn pools(&self) -> Pools {
        match self.inner.pools.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Drops every pooled PostgreSQL connection (in use ones finish first)
    /// and starts a fresh pool that connects on demand.
    fn reset_pool(&self) {
        if !Store::is_postgres(&self.inner.url) {
            return;
        }
        let fresh = Pools::Postgres(Store::pg_pool(
            &self.inner.url,
            self.inner.pool_size,
            self.inner.timeout,
            &self.inner.breaker,
        ));
        match self.inner.pools.write() {
            Ok(mut p) => *p = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        tracing::warn!("database connections stopped answering: the pool was replaced");
    }

    fn pg_pool(
        url: &str,
        pool_size: u32,
        timeout: Duration,
        breaker: &Arc<Breaker>,
    ) -> Pool<AsyncPgConnection> {
        // A connection attempt that hangs (a host that accepts and never
        // answers) would hold its pool slot for good: bound it.
        let mut config = ManagerConfig::<AsyncPgConnection>::default();
        config.custom_setup = Box::new(move |url| {
            async move {
                tokio::time::timeout(timeout, AsyncPgConnection::establish(url))
                    .await
                    .map_err(|_| {
                        diesel::ConnectionError::BadConnection(format!(
                            "no answer within {} ms",
                            timeout.as_millis()
                        ))
                    })?
            }
            .boxed()
        });
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
        Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(timeout)
            .retry_connection(false)
            .error_sink(breaker.connect_errors())
            .build_unchecked(manager)
    }

    /// Runs `op` within the timeout, telling the breaker what it learnt.
    /// `check_breaker` is false only for the probe, which must reach the
    /// database precisely while the breaker is open.
    async fn guarded<T>(
        &self,
        check_breaker: bool,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.guarded_for(self.inner.timeout, check_breaker, op)
            .await
    }

    /// `guarded` with its own time limit (a large batch write may take
    /// longer than a lookup should).
    async fn guarded_for<T>(
        &self,
        timeout: Duration,
        check_breaker: bool,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if check_breaker && self.inner.breaker.is_open() {
            return Err(StoreError::Unavailable(
                "the database is unreachable (probing it in the background)".into(),
            ));
        }
        let inner = &self.inner;
        let remote = Store::is_postgres(&inner.url);
        let began = std::time::Instant::now();
        let result = match tokio::time::timeout(timeout, op).await {
            Err(_) => Err(StoreError::Slow(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
            Ok(r) => r,
        };
        // A wait for a connection that could not be opened: refused.
        let result = match result {
            Err(StoreError::Slow(why)) => Err(match inner.breaker.connect_failed_since(began) {
                Some(refused) => StoreError::Unavailable(refused),
                None => StoreError::Slow(why),
            }),
            r => r,
        };
        match &result {
            Err(StoreError::Unavailable(why)) if remote => {
                // Connections that stopped answering look healthy to the
                // pool: start from a fresh one when the outage begins...
                if inner.breaker.failure(why) {
                    self.reset_pool();
                }
            }
            Err(StoreError::Slow(why)) if remote => {
                if inner.breaker.timed_out(why) {
                    self.reset_pool();
                }
            }
            // Any answer, even an error about the query, means reachable;
            // ...and again when it ends, dropping anything stuck meanwhile.
            _ => {
                if inner.breaker.success() {
                    self.reset_pool();
                }
            }
        }
        result
    }

    async fn build_pools(
        url: &str,
        pool_size: u32,
        timeout: Duration,
        breaker: &Arc<Breaker>,
    ) -> Result<Pools, StoreError> {
        if Store::is_postgres(url) {
            Ok(Pools::Postgres(Store::pg_pool(
                url, pool_size, timeout, breaker,
            )))
        } else {
            let path = sqlite_path(url).to_string();
            if path.is_empty() {
                return Err(StoreError::BadUrl("empty SQLite path".into()));
            }
            let mut config = ManagerConfig::<SqliteConn>::default();
            config.custom_setup = Box::new(|url| sqlite_connect(url).boxed());
            let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, config);
            let pool = Pool::builder()
                .max_size(pool_size.clamp(1, 8))
                .connection_timeout(timeout)
                .build(manager)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(Pools::Sqlite(pool))
        }
    }

    /// Runs pending migrations. Diesel's migration harness is synchronous,
    /// so it runs on a thread of its own, away from the async runtime.
    /// On PostgreSQL, replicas starting at once take turns under an
    /// advisory lock (`migrate_pg_locked`); SQLite needs none.
    pub async fn migrate(url: &str) -> Result<usize, StoreError> {
        let url = url.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let result = if Store::is_postgres(&url) {
                use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
                <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
                    .and_then(|mut c| migrate_pg_locked(&mut c))
            } else {
                SqliteConnection::establish(sqlite_path(&url))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
                    .and_then(|mut c| {
                        // Wait out another connection's write (a gateway
                        // that just stopped checkpoints as it closes)
                        // rather than fail the start with "database is
                        // locked".
                        use diesel::connection::SimpleConnection;
                        c.batch_execute(&format!(
                            "PRAGMA busy_timeout = {}",
                            SQLITE_BUSY_TIMEOUT.as_millis()
                        ))
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                        c.run_pending_migrations(SQLITE_MIGRATIONS)
                            .map(|v| v.len())
                            .map_err(|e| StoreError::Migration(e.to_string()))
                    })
            };
            let _ = tx.send(result);
        });
        rx.await
            .map_err(|_| StoreError::Migration("the migration thread died".into()))?
    }

    /// A cheap round trip for the breaker's probe: it bypasses the open
    /// breaker (finding out whether the database is back is its job).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pools = self.pools();
        let url = self.inner.url.clone();
        let down = self.inner.breaker.is_open();
        self.guarded(false, async {
            match &pools {
                Pools::Postgres(pool) if !down => {
                    let mut conn = pool.get().await.map_err(pool_error)?;
                    conn.batch_execute("SELECT 1").await?;
                }
                // While down, a new connection rather than a pooled one: it
                // proves the database answers, whatever state the pool is in.
                Pools::Postgres(_) => {
                    let mut conn = AsyncPgConnection::establish(&url)
                        .await
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    conn.batch_execute("SELECT 1").await?;
                }
                Pools::Sqlite(pool) => {
                    let mut conn = pool.get().await.map_err(pool_error)?;
                    conn.batch_execute("SELECT 1").await?;
                }
            }
            Ok(())
        })
        .await
    }

    pub fn backend(&self) -> &'static str {
        match self.pools() {
            Pools::Postgres(_) => "postgresql",
            Pools::Sqlite(_) => "sqlite",
        }
    }

    // ---- keys -----------------------------------------------------------

    pub async fn get_key(&self, token: &str) -> Result<Option<KeyRow>, StoreError> {
        with_conn!(self, |conn| Ok(keys::table
            .find(token)
            .select(KeyRow::as_select())
            .first(conn)
            .await
            .optional()?))
    }

    /// Inserts the key and, if its `user_id` names no user yet, that user
    /// (as LiteLLM does), in one transaction.
    pub async fn insert_key(&self, row: &KeyRow) -> Result<(), StoreError> {
        let row = row.clone();
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                if let Some(user) = &row.user_id {
                    diesel::insert_into(users::table)
                        .values(UserRow::blank(user.clone(), row.updated_at))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                }
                diesel::insert_into(keys::table)
                    .values(&row)
                    .execute(conn)
                    .await?;
                Ok::<_, StoreError>(())
            })
            .await
        })
    }

    /// Writes every column but `spend` and `created_at` of the key stored
    /// under `old_token` — and `row.token` when it differs (regenerate) —
    /// then `spend` if given, creating its user if missing: one
    /// transaction, all or nothing. False if no such key.
    /// Writes a key read when its `updated_at` was `read_at` (as
    /// `update_team`: `StoreError::Conflict` if it changed since).
    pub async fn update_key(
        &self,
        old_token: &str,
        row: &KeyRow,
        spend: Option<f64>,
        read_at: i64,
    ) -> Result<bool, StoreError> {
        let (old, mut row) = (old_token.to_string(), row.clone());
        row.updated_at = row.updated_at.max(read_at + 1);
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                if let Some(user) = &row.user_id {
                    diesel::insert_into(users::table)
                        .values(UserRow::blank(user.clone(), row.updated_at))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                }
                if !write_as_read!(conn, keys, &old, &row, read_at, "key", &row.key_name)? {
                    return Ok::<_, StoreError>(false);
                }
                if row.token != old {
                    diesel::update(keys::table.find(&old))
                        .set(keys::token.eq(&row.token))
                        .execute(conn)
                        .await?;
                }
                if let Some(spend) = spend {
                    diesel::update(keys::table.find(&row.token))
                        .set(keys::spend.eq(spend))
                        .execute(conn)
                        .await?;
                }
                Ok(true)
            })
            .await
        })
    }

    pub async fn delete_keys(&self, tokens: &[String]) -> Result<usize, StoreError> {
        with_conn!(self, |conn| Ok(diesel::delete(
            keys::table.filter(keys::token.eq_any(tokens))
        )
        .execute(conn)
        .await?))
    }

    pub async fn tokens_by_alias(&self, aliases: &[String]) -> Result<Vec<String>, StoreError> {
        with_conn!(self, |conn| Ok(keys::table
            .filter(keys::key_alias.eq_any(aliases))
            .select(keys::token)
            .load(conn)
            .await?))
    }

    pub async fn alias_taken(&self, alias: &str, except: Option<&str>) -> Result<bool, StoreError> {
        with_conn!(self, |conn| {
            let found: Vec<String> = keys::table
                .filter(keys::key_alias.eq(alias))
                .select(keys::token)
                .load(conn)
                .await?;
            Ok(found.iter().any(|t| Some(t.as_str()) != except))
        })
    }

    pub async fn list_keys(
        &self,
        filter: &KeyFilter,
        page: i64,
        size: i64,
    ) -> Result<(Vec<KeyRow>, i64), StoreError> {
        macro_rules! filtered {
            () => {{
                let mut q = keys::table.into_boxed();
                if let Some(u) = &filter.user_id {
                    q = q.filter(keys::user_id.eq(u));
                }
                if let Some(t) = &filter.team_id {
                    q = q.filter(keys::team_id.eq(t));
                }
                if let Some(a) = &filter.key_alias {
                    q = q.filter(keys::key_alias.eq(a));
                }
                q
            }};
        }
        with_conn!(self, |conn| {
            let total: i64 = filtered!().count().get_result(conn).await?;
            let rows = filtered!()
                .select(KeyRow::as_select())
                .order((keys::created_at.desc(), keys::token.desc()))
                .offset((page - 1).max(0) * size)
                .limit(size)
                .load(conn)
                .await?;
            Ok((rows, total))
        })
    }

    pub async fn keys_of_user(&self, user_id: &str) -> Result<Vec<KeyRow>, StoreError> {
        with_conn!(self, |conn| Ok(keys::table
            .filter(keys::user_id.eq(user_id))
            .select(KeyRow::as_select())
            .order(keys::created_at.asc())
            .load(conn)
            .await?))
    }

    pub async fn keys_of_team(&self, team_id: &str) -> Result<Vec<KeyRow>, StoreError> {
        with_conn!(self, |conn| Ok(keys::table
            .filter(keys::team_id.eq(team_id))
            .select(KeyRow::as_select())
            .order(keys::created_at.asc())
            .load(conn)
            .await?))
    }

    // ---- users ----------------------------------------------------------

    pub async fn get_user(&self, user_id: &str) -> Result<Option<UserRow>, StoreError> {
        with_conn!(self, |conn| Ok(users::table
            .find(user_id)
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()?))
    }

    pub async fn user_email_taken(
        &self,
        email: &str,
        except: Option<&str>,
    ) -> Result<bool, StoreError> {
        with_conn!(self, |conn| {
            let found: Vec<String> = users::table
                .filter(users::user_email.eq(email))
                .select(users::user_id)
                .load(conn)
                .await?;
            Ok(found.iter().any(|u| Some(u.as_str()) != except))
        })
    }

    pub async fn insert_user(&self, row: &UserRow) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(users::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// The row's columns, then `spend` if given, in one transaction.
    /// Writes a user read when its `updated_at` was `read_at` (as
    /// `update_team`: `StoreError::Conflict` if it changed since).
    pub async fn update_user(
        &self,
        row: &UserRow,
        spend: Option<f64>,
        read_at: i64,
    ) -> Result<bool, StoreError> {
        let mut row = row.clone();
        row.updated_at = row.updated_at.max(read_at + 1);
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                let written = write_as_read!(
                    conn,
                    users,
                    &row.user_id,
                    &row,
                    read_at,
                    "user",
                    &row.user_id
                )?;
                if let (true, Some(spend)) = (written, spend) {
                    diesel::update(users::table.find(&row.user_id))
                        .set(users::spend.eq(spend))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, StoreError>(written)
            })
            .await
        })
    }

    /// Deletes users, their keys and memberships in one transaction.
    /// Returns (users deleted, tokens of the keys deleted).
    pub async fn delete_users(&self, ids: &[String]) -> Result<(usize, Vec<String>), StoreError> {
        let ids = ids.to_vec();
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                let tokens: Vec<String> = keys::table
                    .filter(keys::user_id.eq_any(&ids))
                    .select(keys::token)
                    .load(conn)
                    .await?;
                diesel::delete(keys::table.filter(keys::user_id.eq_any(&ids)))
                    .execute(conn)
                    .await?;
                diesel::delete(team_members::table.filter(team_members::user_id.eq_any(&ids)))
                    .execute(conn)
                    .await?;
                let n = diesel::delete(users::table.filter(users::user_id.eq_any(&ids)))
                    .execute(conn)
                    .await?;
                Ok::<_, StoreError>((n, tokens))
            })
            .await
        })
    }

    /// A page of users matching `f`, and how many match in all.
    pub async fn list_users(
        &self,
        f: &UserFilter,
        page: i64,
        size: i64,
    ) -> Result<(Vec<UserRow>, i64), StoreError> {
        with_conn!(self, |conn| {
            // Team membership resolves to ids first: one query shape for both backends.
            let in_team: Option<Vec<String>> = match &f.team {
                Some(t) => Some(
                    team_members::table
                        .filter(team_members::team_id.eq(t))
                        .select(team_members::user_id)
                        .load(conn)
                        .await?,
                ),
                None => None,
            };
            macro_rules! filtered {
                () => {{
                    let mut q = users::table.into_boxed();
                    if let Some(r) = &f.role {
                        q = q.filter(users::user_role.eq(r));
                    }
                    if let Some(ids) = &f.user_ids {
                        q = q.filter(users::user_id.eq_any(ids));
                    }
                    if let Some(e) = &f.email_contains {
                        q = q.filter(
                            lower(users::user_email)
                                .like(format!("%{}%", like_escape(&e.to_lowercase())))
                                .escape('\\'),
                        );
                    }
                    if let Some(ids) = &in_team {
                        q = q.filter(users::user_id.eq_any(ids));
                    }
                    q
                }};
            }
            let total: i64 = filtered!().count().get_result(conn).await?;
            let q = filtered!().select(UserRow::as_select());
            let desc = f.sort_desc;
            let q = match f.sort_by.as_deref() {
                Some("user_id") if desc => q.order(users::user_id.desc()),
                Some("user_id") => q.order(users::user_id.asc()),
                Some("user_email") if desc => {
                    q.order((users::user_email.desc(), users::user_id.asc()))
                }
                Some("user_email") => q.order((users::user_email.asc(), users::user_id.asc())),
                Some("spend") if desc => q.order((users::spend.desc(), users::user_id.asc())),
                Some("spend") => q.order((users::spend.asc(), users::user_id.asc())),
                Some("user_alias") if desc => {
                    q.order((users::user_alias.desc(), users::user_id.asc()))
                }
                Some("user_alias") => q.order((users::user_alias.asc(), users::user_id.asc())),
                Some("user_role") if desc => {
                    q.order((users::user_role.desc(), users::user_id.asc()))
                }
                Some("user_role") => q.order((users::user_role.asc(), users::user_id.asc())),
                Some("created_at") if !desc => {
                    q.order((users::created_at.asc(), users::user_id.asc()))
                }
                _ => q.order((users::created_at.desc(), users::user_id.asc())),
            };
            let rows = q
                .offset((page - 1).max(0) * size)
                .limit(size)
                .load(conn)
                .await?;
            Ok((rows, total))
        })
    }

    /// The user with this email (compared case-insensitively, as LiteLLM does).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        let lower = email.to_lowercase();
        with_conn!(self, |conn| {
            let rows: Vec<UserRow> = users::table
                .filter(users::user_email.is_not_null())
                .select(UserRow::as_select())
                .order(users::created_at.asc())
                .load(conn)
                .await?;
            Ok(rows.into_iter().find(|u| {
                u.user_email.as_deref().map(str::to_lowercase).as_deref() == Some(lower.as_str())
            }))
        })
    }

    pub async fn key_counts_by_user(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        with_conn!(self, |conn| {
            let owners: Vec<Option<String>> = keys::table
                .filter(keys::user_id.eq_any(ids))
                .select(keys::user_id)
                .load(conn)
                .await?;
            Ok(ids
                .iter()
                .map(|id| {
                    let n = owners.iter().filter(|o| o.as_deref() == Some(id)).count();
                    (id.clone(), n as i64)
                })
                .collect())
        })
    }

    // ---- teams ----------------------------------------------------------

    pub async fn get_team(&self, team_id: &str) -> Result<Option<TeamRow>, StoreError> {
        with_conn!(self, |conn| Ok(teams::table
            .find(team_id)
            .select(TeamRow::as_select())
            .first(conn)
            .await
            .optional()?))
    }

    pub async fn insert_team(
        &self,
        row: &TeamRow,
        members: &[MemberRow],
    ) -> Result<(), StoreError> {
        let row = row.clone();
        let members = members.to_vec();
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                diesel::insert_into(teams::table)
                    .values(&row)
                    .execute(conn)
                    .await?;
                for m in &members {
                    diesel::insert_into(team_members::table)
                        .values(m)
                        .execute(conn)
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
            .await
        })
    }

    /// The row's columns, then `spend` if given, in one transaction.
    /// Writes a team read when its `updated_at` was `read_at`; false if it
    /// is gone. If it changed since (another management call wrote it in
    /// between), nothing is written: `StoreError::Conflict`, rather than
    /// one of the two changes silently lost.
    pub async fn update_team(
        &self,
        row: &TeamRow,
        spend: Option<f64>,
        read_at: i64,
    ) -> Result<bool, StoreError> {
        let mut row = row.clone();
        // Strictly later, so a write in the same millisecond is told apart.
        row.updated_at = row.updated_at.max(read_at + 1);
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                let written = write_as_read!(
                    conn,
                    teams,
                    &row.team_id,
                    &row,
                    read_at,
                    "team",
                    &row.team_id
                )?;
                if let (true, Some(spend)) = (written, spend) {
                    diesel::update(teams::table.find(&row.team_id))
                        .set(teams::spend.eq(spend))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, StoreError>(written)
            })
            .await
        })
    }

    /// Deletes teams, their keys and memberships; returns the deleted keys' tokens.
    pub async fn delete_teams(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let ids = ids.to_vec();
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                let tokens: Vec<String> = keys::table
                    .filter(keys::team_id.eq_any(&ids))
                    .select(keys::token)
                    .load(conn)
                    .await?;
                diesel::delete(keys::table.filter(keys::team_id.eq_any(&ids)))
                    .execute(conn)
                    .await?;
                diesel::delete(team_members::table.filter(team_members::team_id.eq_any(&ids)))
                    .execute(conn)
                    .await?;
                diesel::delete(teams::table.filter(teams::team_id.eq_any(&ids)))
                    .execute(conn)
                    .await?;
                Ok::<_, StoreError>(tokens)
            })
            .await
        })
    }

    /// Teams, all or those `member` belongs to, optionally of one
    /// organization (`Some(None)`: teams in no organization).
    pub async fn list_teams(
        &self,
        member: Option<&str>,
        org: Option<Option<&str>>,
    ) -> Result<Vec<TeamRow>, StoreError> {
        let rows = self.list_teams_of(member).await?;
        Ok(match org {
            None => rows,
            Some(o) => rows
                .into_iter()
                .filter(|t| t.organization_id.as_deref() == o)
                .collect(),
        })
    }

    async fn list_teams_of(&self, member: Option<&str>) -> Result<Vec<TeamRow>, StoreError> {
        with_conn!(self, |conn| {
            let rows = match member {
                Some(user) => {
                    let ids: Vec<String> = team_members::table
                        .filter(team_members::user_id.eq(user))
                        .select(team_members::team_id)
                        .load(conn)
                        .await?;
                    teams::table
                        .filter(teams::team_id.eq_any(ids))
                        .select(TeamRow::as_select())
                        .order((teams::team_alias.asc(), teams::team_id.asc()))
                        .load(conn)
                        .await?
                }
                None => {
                    teams::table
                        .select(TeamRow::as_select())
                        .order((teams::team_alias.asc(), teams::team_id.asc()))
                        .load(conn)
                        .await?
                }
            };
            Ok(rows)
        })
    }

    pub async fn members(&self, team_id: &str) -> Result<Vec<MemberRow>, StoreError> {
        with_conn!(self, |conn| Ok(team_members::table
            .filter(team_members::team_id.eq(team_id))
            .select(MemberRow::as_select())
            .order(team_members::created_at.asc())
            .load(conn)
            .await?))
    }

    pub async fn memberships_of(&self, user_id: &str) -> Result<Vec<MemberRow>, StoreError> {
        with_conn!(self, |conn| Ok(team_members::table
            .filter(team_members::user_id.eq(user_id))
            .select(MemberRow::as_select())
            .load(conn)
            .await?))
    }

    pub async fn add_member(&self, row: &MemberRow) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(team_members::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    pub async fn set_member_role(
        &self,
        team_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::update(
            team_members::table
                .filter(team_members::team_id.eq(team_id))
                .filter(team_members::user_id.eq(user_id))
        )
        .set(team_members::role.eq(role))
        .execute(conn)
        .await?
            == 1))
    }

    pub async fn remove_member(&self, team_id: &str, user_id: &str) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::delete(
            team_members::table
                .filter(team_members::team_id.eq(team_id))
                .filter(team_members::user_id.eq(user_id))
        )
        .execute(conn)
        .await?
            == 1))
    }
}

// After `with_conn!`, which they use.
mod customers;
mod orgs;
mod pg_copy;
mod proxy_models;
mod spend;
mod spend_pg;
mod spend_sqlite;

pub use customers::BudgetReset;
