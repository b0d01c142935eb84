//! Durable storage for keys, users and teams: SQLite (embedded default) or
//! PostgreSQL, same schema, same queries. Every query is written once and
//! run on whichever pool the URL chose (`with_conn!`).

pub mod models;
pub mod schema;

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

pub use models::{KeyRow, MemberRow, TeamRow, UserRow};
use schema::{keys, team_members, teams, users};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

#[derive(Clone)]
pub enum Store {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Postgres(_) => "Store::Postgres",
            Store::Sqlite(_) => "Store::Sqlite",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("duplicate value: {0}")]
    Duplicate(String),
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

fn is_connection_message(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    m.contains("connection") || m.contains("database is locked") || m.contains("broken pipe")
}

fn pool_error<E: std::fmt::Display>(e: bb8::RunError<E>) -> StoreError {
    match e {
        bb8::RunError::TimedOut => {
            StoreError::Unavailable("timed out waiting for a database connection".into())
        }
        bb8::RunError::User(e) => StoreError::Unavailable(e.to_string()),
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of either backend.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match $store {
            Store::Postgres(pool) => {
                let mut guard = pool.get().await.map_err(pool_error)?;
                let $conn: &mut AsyncPgConnection = &mut guard;
                $body
            }
            Store::Sqlite(pool) => {
                let mut guard = pool.get().await.map_err(pool_error)?;
                let $conn: &mut SqliteConn = &mut guard;
                $body
            }
        }
    };
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
    /// is SQLite too).
    pub async fn connect(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let timeout = Duration::from_secs(3);
        if Store::is_postgres(url) {
            let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
            let pool = Pool::builder()
                .max_size(pool_size.max(1))
                .min_idle(Some(0))
                .connection_timeout(timeout)
                .retry_connection(false)
                .build(manager)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(Store::Postgres(pool))
        } else {
            let path = sqlite_path(url).to_string();
            if path.is_empty() {
                return Err(StoreError::BadUrl("empty SQLite path".into()));
            }
            let mut config = ManagerConfig::<SqliteConn>::default();
            config.custom_setup = Box::new(|url| {
                async move {
                    let mut conn = SqliteConn::establish(url).await?;
                    // WAL lets readers run beside the writer; busy_timeout
                    // queues writers instead of failing them.
                    conn.batch_execute(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    )
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                    Ok(conn)
                }
                .boxed()
            });
            let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, config);
            let pool = Pool::builder()
                .max_size(pool_size.clamp(1, 8))
                .connection_timeout(timeout)
                .build(manager)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(Store::Sqlite(pool))
        }
    }

    /// Runs pending migrations. Diesel's migration harness is synchronous,
    /// so it runs on a thread of its own, away from the async runtime.
    pub async fn migrate(url: &str) -> Result<usize, StoreError> {
        let url = url.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let result = if Store::is_postgres(&url) {
                use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
                <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
                    .and_then(|mut c| {
                        c.run_pending_migrations(PG_MIGRATIONS)
                            .map(|v| v.len())
                            .map_err(|e| StoreError::Migration(e.to_string()))
                    })
            } else {
                SqliteConnection::establish(sqlite_path(&url))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
                    .and_then(|mut c| {
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

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            keys::table
                .select(keys::token)
                .limit(1)
                .load::<String>(conn)
                .await?;
            Ok(())
        })
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgresql",
            Store::Sqlite(_) => "sqlite",
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

    pub async fn insert_key(&self, row: &KeyRow) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(keys::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Writes every column but `spend` and `created_at`; false if no such key.
    pub async fn update_key(&self, row: &KeyRow) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::update(
            keys::table.find(&row.token)
        )
        .set(row)
        .execute(conn)
        .await?
            == 1))
    }

    pub async fn set_key_spend(&self, token: &str, spend: f64) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::update(keys::table.find(token))
                .set(keys::spend.eq(spend))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Replaces a key's token (regenerate): same row, new hash.
    pub async fn replace_key_token(&self, old: &str, row: &KeyRow) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::update(keys::table.find(old))
            .set((
                keys::token.eq(&row.token),
                keys::key_name.eq(&row.key_name),
                keys::updated_at.eq(row.updated_at),
            ))
            .execute(conn)
            .await?
            == 1))
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

    pub async fn update_user(&self, row: &UserRow) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::update(
            users::table.find(&row.user_id)
        )
        .set(row)
        .execute(conn)
        .await?
            == 1))
    }

    pub async fn set_user_spend(&self, user_id: &str, spend: f64) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::update(users::table.find(user_id))
                .set(users::spend.eq(spend))
                .execute(conn)
                .await?;
            Ok(())
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

    pub async fn list_users(
        &self,
        page: i64,
        size: i64,
    ) -> Result<(Vec<UserRow>, i64), StoreError> {
        with_conn!(self, |conn| {
            let total: i64 = users::table.count().get_result(conn).await?;
            let rows = users::table
                .select(UserRow::as_select())
                .order((users::created_at.desc(), users::user_id.asc()))
                .offset((page - 1).max(0) * size)
                .limit(size)
                .load(conn)
                .await?;
            Ok((rows, total))
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

    pub async fn update_team(&self, row: &TeamRow) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::update(
            teams::table.find(&row.team_id)
        )
        .set(row)
        .execute(conn)
        .await?
            == 1))
    }

    pub async fn set_team_spend(&self, team_id: &str, spend: f64) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::update(teams::table.find(team_id))
                .set(teams::spend.eq(spend))
                .execute(conn)
                .await?;
            Ok(())
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

    pub async fn list_teams(&self, member: Option<&str>) -> Result<Vec<TeamRow>, StoreError> {
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
