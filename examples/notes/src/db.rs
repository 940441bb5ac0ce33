//! Where notes are kept: SQLite (a file under the data directory, the default) or PostgreSQL
//! (`database = "postgres://..."`), behind one [`Db`] with the same operations.
//!
//! The schema evolves by *expand, then use*. Schema 1 is `notes(id, author, text, created)`.
//! Schema 2 adds `tags TEXT NOT NULL DEFAULT ''`: a version built for schema 2 adds the column
//! while it warms up, and only then reads and writes it. Version 1 names its columns in every
//! query (never `*`) and leaves `tags` to its default, so both versions work on one database
//! at once, during a swap or on hosts of a fleet deployed one by one. Applied steps are listed
//! in `schema_migrations(version)`; each step is idempotent and runs under a lock (SQLite's
//! write lock, a PostgreSQL advisory lock), so hosts warming up together apply it once.
//!
//! SQLite and hot swaps: each build of the app links its own copy of SQLite, and during a swap
//! two of them use one file in one process. SQLite's file locks are POSIX record locks, which
//! never conflict within a process, and closing any descriptor of a file drops them all: two
//! copies cannot see each other's locks, and in WAL mode the old version closing its last
//! connection deletes the write-ahead log the new one is still writing (a corrupt database).
//! So the SQLite store uses a rollback journal (no shared WAL files) and every use of a
//! connection holds an exclusive `flock` on `notes.db.lock`, opened for that use: `flock` locks
//! belong to the open file, so they exclude each other across copies, versions and threads.

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_sdk::tracing;
use postgres::fallible_iterator::FallibleIterator;

use crate::note::{Note, join_tags, now_ms, rfc3339, split_tags};
use crate::pool::{Pool, Pooled};

/// The newest schema this code knows.
pub(crate) const LATEST_SCHEMA: u32 = 2;

/// Most notes one call of [`Db::after`] returns.
const AFTER_BATCH: i64 = 100;

/// A failed database operation, with what was being done.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The SQLite file could not be opened or set up.
    #[error("cannot open the SQLite database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The lock file beside the SQLite file could not be opened or locked.
    #[error("cannot lock the SQLite database with {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// PostgreSQL did not accept a connection (the URL's password is not shown).
    #[error("cannot connect to PostgreSQL")]
    Connect {
        #[source]
        source: postgres::Error,
    },
    /// A SQLite statement failed.
    #[error("{what} failed")]
    Sqlite {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A PostgreSQL statement failed.
    #[error("{what} failed")]
    Postgres {
        what: &'static str,
        #[source]
        source: postgres::Error,
    },
    /// Whoever took the rows of [`Db::for_each`] failed (a client gone mid-export).
    #[error("cannot pass a row on")]
    Emit {
        #[source]
        source: std::io::Error,
    },
}

/// Where the notes live, from the app config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/database`).
    Postgres(String),
}

enum Backend {
    Sqlite(Sqlite),
    Postgres(Pool<postgres::Client>),
}

/// SQLite connections, each used under the lock that keeps the versions in one process apart.
struct Sqlite {
    pool: Pool<rusqlite::Connection>,
    /// `notes.db.lock` beside the database.
    lock: PathBuf,
}

impl Sqlite {
    /// A connection, used alone: waits for the exclusive lock, then borrows (or opens) one.
    fn get(&self) -> Result<Locked<'_>, DbError> {
        let fail = |source| DbError::Lock {
            path: self.lock.clone(),
            source,
        };
        // A file opened for this use: a lock held through another descriptor (another
        // thread's, another version's) excludes this one.
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(fail)?;
        lock.lock().map_err(fail)?;
        Ok(Locked {
            conn: self.pool.get()?,
            _lock: lock,
        })
    }

    /// Closes the idle connections.
    fn clear(&self) {
        self.pool.clear();
    }
}

/// A borrowed SQLite connection and the lock held while it is used (released after the
/// connection went back: fields drop in order).
struct Locked<'p> {
    conn: Pooled<'p, rusqlite::Connection>,
    _lock: File,
}

impl Deref for Locked<'_> {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        &self.conn
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut rusqlite::Connection {
        &mut self.conn
    }
}

/// The notes store, as one version of the app uses it.
pub(crate) struct Db {
    backend: Backend,
    /// The schema this version reads and writes (1 or 2).
    schema: u32,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("Db")
            .field("backend", &kind)
            .field("schema", &self.schema)
            .finish()
    }
}

/// Maps a SQLite error to a [`DbError`] saying what failed.
fn lite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError {
    move |source| DbError::Sqlite { what, source }
}

/// Maps a PostgreSQL error to a [`DbError`] saying what failed.
fn pg(what: &'static str) -> impl FnOnce(postgres::Error) -> DbError {
    move |source| DbError::Postgres { what, source }
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, DbError> {
    let fail = |source| DbError::Open {
        path: path.to_owned(),
        source,
    };
    let conn = rusqlite::Connection::open(path).map_err(fail)?;
    // A rollback journal, not WAL: see the module's overview. Uses are one at a time anyway
    // (the lock file); the busy timeout covers another process on the file.
    conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
    conn.pragma_update(None, "journal_mode", "DELETE")
        .map_err(fail)?;
    Ok(conn)
}

fn connect_postgres(config: &postgres::Config) -> Result<postgres::Client, DbError> {
    config
        .connect(postgres::NoTls)
        .map_err(|source| DbError::Connect { source })
}

impl Db {
    /// Opens the store at `location` for a version using `schema`, keeping up to `pool_size`
    /// idle connections, and checks that it answers.
    ///
    /// # Errors
    /// The directory, file or server cannot be reached.
    pub(crate) fn open(location: &Location, schema: u32, pool_size: usize) -> Result<Db, DbError> {
        let backend = match location {
            Location::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| DbError::DataDir {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                let mut lock = path.clone().into_os_string();
                lock.push(".lock");
                let path = path.clone();
                Backend::Sqlite(Sqlite {
                    pool: Pool::new(pool_size, move || open_sqlite(&path)),
                    lock: lock.into(),
                })
            }
            Location::Postgres(url) => {
                let mut config: postgres::Config =
                    url.parse().map_err(|source| DbError::Connect { source })?;
                if config.get_connect_timeout().is_none() {
                    config.connect_timeout(Duration::from_secs(5));
                }
                config.application_name("baton-notes");
                Backend::Postgres(Pool::new(pool_size, move || connect_postgres(&config)))
            }
        };
        let db = Db { backend, schema };
        // Open one connection now: a wrong path or URL fails the load, not the first request.
        match &db.backend {
            Backend::Sqlite(pool) => drop(pool.get()?),
            Backend::Postgres(pool) => drop(pool.get()?),
        }
        Ok(db)
    }

    /// The schema this version uses.
    pub(crate) fn schema(&self) -> u32 {
        self.schema
    }

    /// Applies the schema steps up to this version's, those not applied yet; returns the steps
    /// it applied. Newer steps (another version's) are left as they are.
    ///
    /// # Errors
    /// A statement failed; nothing of the failed step stays applied.
    pub(crate) fn migrate(&self) -> Result<Vec<u32>, DbError> {
        let applied = match &self.backend {
            Backend::Sqlite(pool) => {
                let mut conn = pool.get()?;
                // IMMEDIATE: take the write lock first, so two versions (or hosts) migrating at
                // once run one after the other.
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(lite("starting the migration"))?;
                tx.execute_batch(
                    "CREATE TABLE IF NOT EXISTS notes (
                         id INTEGER PRIMARY KEY AUTOINCREMENT,
                         author TEXT NOT NULL,
                         text TEXT NOT NULL,
                         created INTEGER NOT NULL
                     );
                     CREATE TABLE IF NOT EXISTS schema_migrations (
                         version INTEGER PRIMARY KEY,
                         applied INTEGER NOT NULL
                     );",
                )
                .map_err(lite("creating the tables"))?;
                let mut applied = Vec::new();
                for step in 1..=self.schema {
                    let done: bool = tx
                        .query_row(
                            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                            [step],
                            |row| row.get(0),
                        )
                        .map_err(lite("reading schema_migrations"))?;
                    if done {
                        continue;
                    }
                    if step == 2 {
                        // SQLite has no ADD COLUMN IF NOT EXISTS: look first.
                        let has_tags: bool = tx
                            .query_row(
                                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('notes') \
                                 WHERE name = 'tags')",
                                [],
                                |row| row.get(0),
                            )
                            .map_err(lite("reading the columns of notes"))?;
                        if !has_tags {
                            tx.execute(
                                "ALTER TABLE notes ADD COLUMN tags TEXT NOT NULL DEFAULT ''",
                                [],
                            )
                            .map_err(lite("adding notes.tags"))?;
                        }
                    }
                    tx.execute(
                        "INSERT INTO schema_migrations (version, applied) VALUES (?1, ?2) \
                         ON CONFLICT DO NOTHING",
                        rusqlite::params![step, now_ms()],
                    )
                    .map_err(lite("recording the migration"))?;
                    applied.push(step);
                }
                tx.commit().map_err(lite("committing the migration"))?;
                applied
            }
            Backend::Postgres(pool) => {
                let mut client = pool.get()?;
                let mut tx = client.transaction().map_err(pg("starting the migration"))?;
                // One migrating transaction at a time, across versions and hosts; released at
                // commit or rollback.
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('baton-notes.schema'))",
                    &[],
                )
                .map_err(pg("locking the schema"))?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS notes (
                         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                         author TEXT NOT NULL,
                         text TEXT NOT NULL,
                         created BIGINT NOT NULL
                     );
                     CREATE TABLE IF NOT EXISTS schema_migrations (
                         version INTEGER PRIMARY KEY,
                         applied BIGINT NOT NULL
                     );",
                )
                .map_err(pg("creating the tables"))?;
                let mut applied = Vec::new();
                for step in 1..=self.schema {
                    let version = i32::try_from(step).unwrap_or(i32::MAX);
                    let done: bool = tx
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)",
                            &[&version],
                        )
                        .map_err(pg("reading schema_migrations"))?
                        .get(0);
                    if done {
                        continue;
                    }
                    if step == 2 {
                        tx.execute(
                            "ALTER TABLE notes ADD COLUMN IF NOT EXISTS tags TEXT NOT NULL \
                             DEFAULT ''",
                            &[],
                        )
                        .map_err(pg("adding notes.tags"))?;
                    }
                    tx.execute(
                        "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                        &[&version, &now_ms()],
                    )
                    .map_err(pg("recording the migration"))?;
                    applied.push(step);
                }
                tx.commit().map_err(pg("committing the migration"))?;
                applied
            }
        };
        for step in &applied {
            tracing::info!(step, "schema migration applied");
        }
        Ok(applied)
    }

    /// The columns this version selects, in [`Db::row`] order.
    fn columns(&self) -> &'static str {
        if self.schema >= 2 {
            "id, author, text, created, tags"
        } else {
            "id, author, text, created"
        }
    }

    /// A note from its columns.
    fn note(
        &self,
        id: i64,
        author: String,
        text: String,
        created: i64,
        tags: Option<String>,
    ) -> Note {
        Note {
            id,
            author,
            text,
            created: rfc3339(created),
            tags: (self.schema >= 2).then(|| split_tags(tags.as_deref().unwrap_or(""))),
        }
    }

    fn lite_row(&self, row: &rusqlite::Row<'_>) -> rusqlite::Result<Note> {
        let tags = if self.schema >= 2 { row.get(4)? } else { None };
        Ok(self.note(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, tags))
    }

    fn pg_row(&self, row: &postgres::Row) -> Result<Note, postgres::Error> {
        let tags = if self.schema >= 2 {
            row.try_get(4)?
        } else {
            None
        };
        Ok(self.note(
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            tags,
        ))
    }

    /// Stores a new note; `tags` only where the schema has them.
    ///
    /// # Errors
    /// The insert failed.
    pub(crate) fn insert(
        &self,
        author: &str,
        text: &str,
        tags: &[String],
    ) -> Result<Note, DbError> {
        let created = now_ms();
        let tags_column = join_tags(tags);
        let id: i64 = match &self.backend {
            Backend::Sqlite(pool) => {
                let conn = pool.get()?;
                let result = if self.schema >= 2 {
                    conn.query_row(
                        "INSERT INTO notes (author, text, created, tags) VALUES (?1, ?2, ?3, ?4) \
                         RETURNING id",
                        rusqlite::params![author, text, created, tags_column],
                        |row| row.get(0),
                    )
                } else {
                    conn.query_row(
                        "INSERT INTO notes (author, text, created) VALUES (?1, ?2, ?3) \
                         RETURNING id",
                        rusqlite::params![author, text, created],
                        |row| row.get(0),
                    )
                };
                result.map_err(lite("storing a note"))?
            }
            Backend::Postgres(pool) => {
                let mut client = pool.get()?;
                // Ids must become visible in increasing order, or a live stream that has seen
                // id 8 would never send a 7 committed after it: one insert at a time (the
                // lock is taken before the id is drawn, and released at commit).
                let mut tx = client.transaction().map_err(pg("storing a note"))?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('baton-notes.insert'))",
                    &[],
                )
                .map_err(pg("storing a note"))?;
                let row = if self.schema >= 2 {
                    tx.query_one(
                        "INSERT INTO notes (author, text, created, tags) VALUES ($1, $2, $3, $4) \
                         RETURNING id",
                        &[&author, &text, &created, &tags_column],
                    )
                } else {
                    tx.query_one(
                        "INSERT INTO notes (author, text, created) VALUES ($1, $2, $3) \
                         RETURNING id",
                        &[&author, &text, &created],
                    )
                };
                let id = row.map_err(pg("storing a note"))?.get(0);
                tx.commit().map_err(pg("storing a note"))?;
                id
            }
        };
        Ok(self.note(
            id,
            author.to_owned(),
            text.to_owned(),
            created,
            Some(tags_column),
        ))
    }

    /// The newest `limit` notes, newest first.
    ///
    /// # Errors
    /// The query failed.
    pub(crate) fn list(&self, limit: u32) -> Result<Vec<Note>, DbError> {
        let sql = format!(
            "SELECT {} FROM notes ORDER BY id DESC LIMIT {limit}",
            self.columns()
        );
        self.select(&sql, 0, "listing notes")
    }

    /// Up to a hundred notes with an id above `id`, oldest first: what a live client has not
    /// seen yet.
    ///
    /// # Errors
    /// The query failed.
    pub(crate) fn after(&self, id: i64) -> Result<Vec<Note>, DbError> {
        let sql = match &self.backend {
            Backend::Sqlite(_) => "WHERE id > ?1",
            Backend::Postgres(_) => "WHERE id > $1",
        };
        let sql = format!(
            "SELECT {} FROM notes {sql} ORDER BY id LIMIT {AFTER_BATCH}",
            self.columns()
        );
        self.select(&sql, id, "reading new notes")
    }

    /// Runs a query of notes with at most one parameter, an id (`id` is ignored without it).
    fn select(&self, sql: &str, id: i64, what: &'static str) -> Result<Vec<Note>, DbError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let conn = pool.get()?;
                let mut stmt = conn.prepare_cached(sql).map_err(lite(what))?;
                let params: &[&dyn rusqlite::ToSql] = if stmt.parameter_count() == 1 {
                    &[&id]
                } else {
                    &[]
                };
                let rows = stmt
                    .query_map(params, |row| self.lite_row(row))
                    .map_err(lite(what))?;
                rows.collect::<Result<_, _>>().map_err(lite(what))
            }
            Backend::Postgres(pool) => {
                let mut client = pool.get()?;
                let rows = if sql.contains("$1") {
                    client.query(sql, &[&id])
                } else {
                    client.query(sql, &[])
                }
                .map_err(pg(what))?;
                rows.iter()
                    .map(|row| self.pg_row(row))
                    .collect::<Result<_, _>>()
                    .map_err(pg(what))
            }
        }
    }

    /// The highest note id, 0 when there is none.
    ///
    /// # Errors
    /// The query failed.
    pub(crate) fn latest_id(&self) -> Result<i64, DbError> {
        const SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM notes";
        match &self.backend {
            Backend::Sqlite(pool) => pool
                .get()?
                .query_row(SQL, [], |row| row.get(0))
                .map_err(lite("reading the latest id")),
            Backend::Postgres(pool) => Ok(pool
                .get()?
                .query_one(SQL, &[])
                .map_err(pg("reading the latest id"))?
                .get(0)),
        }
    }

    /// Passes every note to `emit`, oldest first, as the rows arrive from the database (never
    /// all in memory at once; from SQLite, in batches of 100).
    ///
    /// # Errors
    /// The query failed, or `emit` did ([`DbError::Emit`]).
    pub(crate) fn for_each(
        &self,
        mut emit: impl FnMut(&Note) -> std::io::Result<()>,
    ) -> Result<(), DbError> {
        let sql = format!("SELECT {} FROM notes ORDER BY id", self.columns());
        let emit_err = |source| DbError::Emit { source };
        match &self.backend {
            Backend::Sqlite(_) => {
                // In batches: the lock a SQLite use holds is not held while a slow client
                // takes the rows. Ids only grow, so the batches go on where the last one ended.
                let mut last = 0;
                loop {
                    let batch = self.after(last)?;
                    let Some(end) = batch.last().map(|note| note.id) else {
                        break;
                    };
                    for note in &batch {
                        emit(note).map_err(emit_err)?;
                    }
                    last = end;
                }
            }
            Backend::Postgres(pool) => {
                let mut client = pool.get()?;
                // A cursor-like stream of rows: `query_raw` hands each row over as it comes.
                let mut rows = client
                    .query_raw(sql.as_str(), std::iter::empty::<i64>())
                    .map_err(pg("exporting notes"))?;
                while let Some(row) = rows.next().map_err(pg("exporting notes"))? {
                    let note = self.pg_row(&row).map_err(pg("exporting notes"))?;
                    emit(&note).map_err(emit_err)?;
                }
            }
        }
        Ok(())
    }

    /// Closes the idle connections (the version is shutting down).
    pub(crate) fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.clear(),
            Backend::Postgres(pool) => pool.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(dir: &Path, schema: u32) -> Db {
        let db = Db::open(&Location::Sqlite(dir.join("notes.db")), schema, 2).unwrap();
        db.migrate().unwrap();
        db
    }

    #[test]
    fn a_sqlite_connection_is_used_under_an_exclusive_file_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path(), 1);
        let Backend::Sqlite(store) = &db.backend else {
            unreachable!("a SQLite store")
        };
        let mode: String = store
            .get()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "no write-ahead log shared between versions");
        // Another open file (as another version has) cannot lock while a connection is in use.
        let other = File::open(dir.path().join("notes.db.lock")).unwrap();
        let held = store.get().unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().unwrap();
        other.unlock().unwrap();
        assert_eq!(db.latest_id().unwrap(), 0);
    }

    #[test]
    fn v1_and_v2_share_one_database() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = sqlite(dir.path(), 1);
        let first = v1.insert("ada", "from v1", &[]).unwrap();
        assert_eq!(first.tags, None);

        let v2 = Db::open(&Location::Sqlite(dir.path().join("notes.db")), 2, 2).unwrap();
        assert_eq!(v2.migrate().unwrap(), [2], "v2 adds its column");
        assert!(v2.migrate().unwrap().is_empty(), "and only once");

        // v1 keeps working on the expanded table; v2 sees v1's note with no tags.
        let second = v1.insert("bob", "still v1", &[]).unwrap();
        let third = v2.insert("cy", "from v2", &["x".to_owned()]).unwrap();
        let listed = v1.list(10).unwrap();
        assert_eq!(
            listed.iter().map(|n| n.id).collect::<Vec<_>>(),
            [third.id, second.id, first.id]
        );
        assert!(listed.iter().all(|n| n.tags.is_none()));
        let listed = v2.list(10).unwrap();
        assert_eq!(listed[0].tags.as_deref(), Some(&["x".to_owned()][..]));
        assert_eq!(listed[2].tags.as_deref(), Some(&[][..]));

        // v1 starting again (a rollback) leaves the newer step alone.
        assert!(v1.migrate().unwrap().is_empty());
        assert_eq!(v1.latest_id().unwrap(), third.id);
    }

    #[test]
    fn after_and_for_each_go_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path(), 2);
        assert_eq!(db.latest_id().unwrap(), 0);
        let ids: Vec<i64> = (0..3)
            .map(|i| db.insert("ada", &format!("n{i}"), &[]).unwrap().id)
            .collect();
        let after: Vec<i64> = db.after(ids[0]).unwrap().iter().map(|n| n.id).collect();
        assert_eq!(after, &ids[1..]);
        assert_eq!(db.list(2).unwrap().len(), 2);
        let mut seen = Vec::new();
        db.for_each(|n| {
            seen.push(n.text.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["n0", "n1", "n2"]);
    }

    #[test]
    fn a_bad_path_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = Db::open(&Location::Sqlite(file.join("notes.db")), 1, 1).unwrap_err();
        assert!(matches!(err, DbError::DataDir { .. }), "{err:?}");
    }
}
