//! The ledger's database: SQLite embedded or PostgreSQL shared, through
//! sqlx's runtime-checked queries, with the versioned migrations of
//! `migrations/sqlite` and `migrations/postgres` run at open.
//!
//! Owns connecting, migrating and the SQL. The two engines share every
//! statement (both take `$N` parameters); [`on_pool!`] expands one body for
//! each engine's concrete pool. Must never write a row outside a
//! transaction that either commits all of a batch or none of it.

use std::path::Path;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _};

use super::error::LedgerError;
use super::row::{KeyRow, Origin, S3Object, Usage, context_name, context_of};
use crate::custody::rpc::Rpc;

/// A connection pool to one of the two engines.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// The embedded file.
    Sqlite(SqlitePool),
    /// A shared server.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's concrete pool.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

pub(crate) use on_pool;

/// The most rows one INSERT carries (21 parameters a row, well under
/// SQLite's and PostgreSQL's limits).
pub(crate) const MAX_INSERT_ROWS: usize = 1000;

const COLUMNS: &str = "entry_id, recorded_at_ms, identity, rpc, request_id, kms_key_arn, service_context, mode, \
                       key_bits, wrapped_key, iv, key_md5, fingerprint, job_id, job_place, s3_bucket, s3_key, \
                       s3_version_id, s3_etag, rewrapped_from";

/// One call's rows, as queued for a commit.
pub(crate) struct Entry {
    /// Names the call's rows together.
    pub(crate) entry_id: String,
    pub(crate) origin: Origin,
    pub(crate) rows: Vec<KeyRow>,
}

/// A row read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedKey {
    /// The row's id.
    pub id: i64,
    /// When it was recorded, milliseconds since the Unix epoch.
    pub recorded_at_ms: i64,
    /// The call's rows share it.
    pub entry_id: String,
    /// Who asked, by which RPC, in which request.
    pub origin: Origin,
    /// The key.
    pub key: KeyRow,
}

/// What to look rows up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// The keys of an Elastic Transcoder job.
    JobId(String),
    /// The key of an S3 object (every version the broker wrote).
    Object {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A key by its audit fingerprint.
    Fingerprint(String),
    /// A key by its wrapped form, base64, as handed out.
    WrappedKey(String),
    /// The keys one call recorded.
    Entry(String),
    /// The keys rewrapped from the key with this fingerprint.
    RewrappedFrom(String),
}

impl Store {
    /// Opens the PostgreSQL at `url`, or else the SQLite `file` (created,
    /// with its directory, when absent), and brings its schema up to date.
    pub(crate) async fn open(url: Option<&str>, file: &Path, connect_timeout: Duration) -> Result<Store, LedgerError> {
        let store = match url {
            Some(url) => {
                let pool =
                    PgPoolOptions::new().max_connections(8).acquire_timeout(connect_timeout).connect(url).await?;
                Store::Postgres(pool)
            }
            None => {
                if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| LedgerError::File { path: dir.to_owned(), source })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(file)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(connect_timeout);
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(connect_timeout)
                    .connect_with(options)
                    .await?;
                Store::Sqlite(pool)
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// How many group commits may run at once: SQLite has one writer;
    /// PostgreSQL commits concurrent transactions, and keeps connections
    /// of its pool free for the other queries.
    pub(crate) fn concurrent_commits(&self) -> usize {
        match self {
            Store::Sqlite(_) => 1,
            Store::Postgres(_) => 4,
        }
    }

    /// The engine's name, for logs.
    pub(crate) fn engine(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    async fn migrate(&self) -> Result<(), LedgerError> {
        match self {
            Store::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
            Store::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        }
        .map_err(|e| LedgerError::Migrate(Box::new(e)))
    }

    /// Writes every row of `entries` in one transaction: all or none.
    pub(crate) async fn insert(&self, entries: &[Entry], now_ms: i64) -> Result<(), sqlx::Error> {
        let rows: Vec<(&Entry, &KeyRow)> =
            entries.iter().flat_map(|entry| entry.rows.iter().map(move |row| (entry, row))).collect();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(MAX_INSERT_ROWS) {
                let mut insert = QueryBuilder::new(format!("INSERT INTO ledger_keys ({COLUMNS}) "));
                insert.push_values(chunk, |mut values, (entry, row)| {
                    let (job_id, job_place) = match &row.usage {
                        Usage::Job { job_id, place } => (job_id.clone(), Some(place.clone())),
                        _ => (None, None),
                    };
                    let object = match &row.usage {
                        Usage::Object(object) => Some(object.clone()),
                        _ => None,
                    };
                    let object = object.unwrap_or_default();
                    let some = |text: String| Some(text).filter(|t| !t.is_empty());
                    values
                        .push_bind(entry.entry_id.clone())
                        .push_bind(now_ms)
                        .push_bind(entry.origin.identity.clone())
                        .push_bind(entry.origin.rpc.name())
                        .push_bind(entry.origin.request_id.clone())
                        .push_bind(row.kms_key_arn.clone())
                        .push_bind(context_name(row.context))
                        .push_bind(row.mode.clone())
                        .push_bind(row.key_bits.map(i64::from))
                        .push_bind(row.wrapped_key.clone())
                        .push_bind(row.iv.clone())
                        .push_bind(row.key_md5.clone())
                        .push_bind(row.fingerprint.clone())
                        .push_bind(job_id)
                        .push_bind(job_place)
                        .push_bind(some(object.bucket))
                        .push_bind(some(object.key))
                        .push_bind(object.version_id)
                        .push_bind(object.etag)
                        .push_bind(row.rewrapped_from.clone());
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// Names the job an entry's rows are the keys of.
    pub(crate) async fn attach_job(&self, entry_id: &str, job_id: &str) -> Result<u64, sqlx::Error> {
        const SQL: &str = "UPDATE ledger_keys SET job_id = $1 WHERE entry_id = $2 AND job_place IS NOT NULL";
        on_pool!(self, |pool| { Ok(sqlx::query(SQL).bind(job_id).bind(entry_id).execute(pool).await?.rows_affected()) })
    }

    /// The first `limit` rows `filter` selects, oldest first.
    pub(crate) async fn find(&self, filter: &Filter, limit: i64) -> Result<Vec<RecordedKey>, LedgerError> {
        let (condition, first, second) = match filter {
            Filter::JobId(id) => ("job_id = $1", id.as_str(), None),
            Filter::Object { bucket, key } => ("s3_bucket = $1 AND s3_key = $2", bucket.as_str(), Some(key.as_str())),
            // The same slices as the indexes of migration 0004, so both
            // engines use them.
            Filter::Fingerprint(fingerprint) => {
                ("substr(fingerprint, 13, 16) = substr($1, 13, 16) AND fingerprint = $1", fingerprint.as_str(), None)
            }
            Filter::WrappedKey(key) => (
                "substr(wrapped_key, length(wrapped_key) - 15) = substr($1, length($1) - 15) AND wrapped_key = $1",
                key.as_str(),
                None,
            ),
            Filter::Entry(entry) => ("entry_id = $1", entry.as_str(), None),
            Filter::RewrappedFrom(fingerprint) => ("rewrapped_from = $1", fingerprint.as_str(), None),
        };
        let at = if second.is_some() { 3 } else { 2 };
        let sql = format!("SELECT id, {COLUMNS} FROM ledger_keys WHERE {condition} ORDER BY id LIMIT ${at}");
        on_pool!(self, |pool| {
            let mut query = sqlx::query(&sql).bind(first);
            if let Some(second) = second {
                query = query.bind(second);
            }
            let query = query.bind(limit);
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    let text = |name: &str| row.try_get::<String, _>(name);
                    let optional = |name: &str| row.try_get::<Option<String>, _>(name);
                    let rpc = text("rpc")?;
                    let context = text("service_context")?;
                    let bad = |what: String| LedgerError::Corrupt(what);
                    let usage = match (optional("job_place")?, optional("s3_bucket")?) {
                        (Some(place), _) => Usage::Job { job_id: optional("job_id")?, place },
                        (None, Some(bucket)) => Usage::Object(S3Object {
                            bucket,
                            key: optional("s3_key")?.unwrap_or_default(),
                            version_id: optional("s3_version_id")?,
                            etag: optional("s3_etag")?,
                        }),
                        (None, None) => Usage::Unattached,
                    };
                    Ok(RecordedKey {
                        id: row.try_get("id")?,
                        recorded_at_ms: row.try_get("recorded_at_ms")?,
                        entry_id: text("entry_id")?,
                        origin: Origin {
                            identity: text("identity")?,
                            rpc: Rpc::from_name(&rpc).ok_or_else(|| bad(format!("unknown rpc {rpc:?}")))?,
                            request_id: text("request_id")?,
                        },
                        key: KeyRow {
                            wrapped_key: text("wrapped_key")?,
                            kms_key_arn: text("kms_key_arn")?,
                            context: context_of(&context)
                                .ok_or_else(|| bad(format!("unknown service context {context:?}")))?,
                            mode: text("mode")?,
                            key_bits: row
                                .try_get::<Option<i64>, _>("key_bits")?
                                .map(|bits| u32::try_from(bits).map_err(|_| bad(format!("key_bits {bits}"))))
                                .transpose()?,
                            iv: optional("iv")?,
                            key_md5: text("key_md5")?,
                            fingerprint: text("fingerprint")?,
                            usage,
                            rewrapped_from: optional("rewrapped_from")?,
                        },
                    })
                })
                .collect()
        })
    }

    /// Closes the pool, waiting for its connections to finish.
    pub(crate) async fn close(&self) {
        on_pool!(self, |pool| pool.close().await);
    }
}
