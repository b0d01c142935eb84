//! Several replicas starting at once on a fresh PostgreSQL database all run
//! the migrations: every one must succeed and the schema must be applied
//! exactly once (`Store::migrate` serialises them with an advisory lock;
//! without it they race on `CREATE TABLE` and some fail with a duplicate
//! `pg_type` entry).

mod common;

use common::{Backend, TestDb};
use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tollgate::store::Store;

const REPLICAS: usize = 4;
/// Fresh databases tried, each migrated by `REPLICAS` tasks at once: the
/// race is not certain on one try, so a missing lock is caught on several.
const ROUNDS: usize = 3;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    present: bool,
}

/// The migrations shipped for PostgreSQL: one directory each.
fn pg_migration_count() -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    std::fs::read_dir(dir)
        .expect("migrations/postgres exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("up.sql").is_file())
        .count()
}

#[actix_rt::test]
async fn replicas_migrating_at_once_all_succeed_and_apply_each_migration_once() {
    let expected = pg_migration_count();
    assert!(expected > 0, "no PostgreSQL migrations found");

    for round in 0..ROUNDS {
        let db = TestDb::new(Backend::Postgres).await;

        let tasks: Vec<_> = (0..REPLICAS)
            .map(|_| {
                let url = db.url.clone();
                actix_rt::spawn(async move { Store::migrate(&url).await })
            })
            .collect();
        let mut applied = Vec::new();
        let mut failures = Vec::new();
        for task in tasks {
            match task.await.expect("migration task ran") {
                Ok(n) => applied.push(n),
                Err(e) => failures.push(e.to_string()),
            }
        }
        assert!(
            failures.is_empty(),
            "round {round}: {} of {REPLICAS} concurrent migrations failed: {failures:?}",
            failures.len()
        );
        // Each migration was applied by exactly one of them.
        assert_eq!(
            applied.iter().sum::<usize>(),
            expected,
            "round {round}: migrations applied per task: {applied:?}"
        );

        let mut conn = AsyncPgConnection::establish(&db.url)
            .await
            .expect("connect to the test database");
        let rows: Count = diesel::sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations")
            .get_result(&mut conn)
            .await
            .expect("count applied migrations");
        assert_eq!(rows.n as usize, expected, "round {round}");
        for table in [
            "keys",
            "users",
            "teams",
            "team_members",
            "spend_logs",
            "customers",
        ] {
            let t: Exists = diesel::sql_query(format!(
                "SELECT to_regclass('public.{table}') IS NOT NULL AS present"
            ))
            .get_result(&mut conn)
            .await
            .expect("look the table up");
            assert!(t.present, "round {round}: table {table} is missing");
        }
        drop(conn);

        // A replica started later finds nothing left to do.
        assert_eq!(Store::migrate(&db.url).await.expect("migrate again"), 0);

        db.cleanup().await;
    }
}
