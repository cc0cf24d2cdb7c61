//! A fresh key ledger database for one test, on either engine: an SQLite
//! file in a temp directory, or a new database on the PostgreSQL that
//! `scripts/test` starts and names in `KEYBROKER_TEST_POSTGRES_URL`. A test
//! that needs PostgreSQL and finds none fails loudly.

use std::path::PathBuf;
use std::time::Duration;

use keybroker::app::config::Config;
use keybroker::ledger::Ledger;
use sqlx::Connection as _;
use tempfile::TempDir;

/// The two engines the ledger runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Both engines, for tests that run the same checks on each.
pub const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

/// The PostgreSQL server's administrative URL.
pub fn postgres_admin_url() -> String {
    std::env::var("KEYBROKER_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("KEYBROKER_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL and sets it")
    })
}

/// One test's ledger database.
pub struct LedgerDb {
    pub engine: Engine,
    /// The PostgreSQL database's URL (`None` for SQLite).
    pub url: Option<String>,
    /// The SQLite file (unused for PostgreSQL).
    pub file: PathBuf,
    /// The PostgreSQL database's name.
    pub name: String,
    pub dir: TempDir,
}

impl LedgerDb {
    /// A new, empty database on `engine`.
    pub async fn new(engine: Engine) -> LedgerDb {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.sqlite");
        let name = format!("ledger_{}", uuid::Uuid::new_v4().simple());
        let url = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
                let base = admin.rsplit_once('/').unwrap().0;
                Some(format!("{base}/{name}"))
            }
        };
        LedgerDb { engine, url, file, name, dir }
    }

    /// Points `config` at this database.
    pub fn configure(&self, config: &mut Config) {
        config.ledger.enabled = true;
        config.ledger.url = self.url.clone();
        config.ledger.file = self.file.clone();
        config.ledger.connect_timeout_ms = 1_000;
    }

    /// A second handle on the same database, for reading what was recorded.
    pub async fn open(&self) -> Ledger {
        Ledger::open(self.url.as_deref(), &self.file, Duration::from_secs(5)).await.unwrap()
    }

    /// Waits (at most 5 s) until the anonymous caller's request `token` has
    /// no claim left in the database, and asserts it had none by then.
    pub async fn assert_token_released(&self, token: &str) {
        let ledger = self.open().await;
        let key = keybroker::ledger::TokenKey { identity: "anonymous", token };
        let mut released = false;
        for _ in 0..100 {
            if ledger.submission(key).await.unwrap().is_none() {
                released = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(released, "the claim on {token} is still held: {:?}", ledger.submission(key).await.unwrap());
        ledger.close().await;
    }

    /// Every byte the database holds about recorded keys: the SQLite files
    /// (the database and its write-ahead log), or every PostgreSQL row as
    /// text.
    pub async fn contents(&self) -> Vec<u8> {
        match self.engine {
            Engine::Sqlite => {
                let mut all = Vec::new();
                for entry in std::fs::read_dir(self.dir.path()).unwrap() {
                    all.extend(std::fs::read(entry.unwrap().path()).unwrap());
                }
                all
            }
            Engine::Postgres => {
                let mut conn = sqlx::PgConnection::connect(self.url.as_deref().unwrap()).await.unwrap();
                let rows: Vec<(String,)> = sqlx::query_as("SELECT row_to_json(k)::text FROM ledger_keys k")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                rows.into_iter().flat_map(|(text,)| text.into_bytes()).collect()
            }
        }
    }
}
