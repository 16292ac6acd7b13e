//! The SQLite store: one database file, WAL mode, versioned migrations.

mod backend;
mod media;
mod messages;
mod users;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::ops::{HistoryQuery, MessageRecord, OpError};

pub use backend::{SqliteBackend, SqliteOptions, Synchronous};
pub use users::{Aor, UserCredentials, UserRecord};

/// The database file name inside the data directory.
pub const DB_FILE: &str = "cpm.db";

/// How long a statement waits for another process's lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
/// Never edit one that has shipped; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: accounts and their digest credentials.
    "CREATE TABLE users (
        aor             TEXT PRIMARY KEY NOT NULL,
        realm           TEXT NOT NULL,
        ha1_md5_user    TEXT NOT NULL,
        ha1_md5_aor     TEXT NOT NULL,
        ha1_sha256_user TEXT NOT NULL,
        ha1_sha256_aor  TEXT NOT NULL,
        created_at      INTEGER NOT NULL
    ) STRICT;",
    // 2: message histories (with the deferred queue) and registration bindings.
    // Every index keyed by owner costs about a quarter of the append rate with many users
    // (each append dirties one page per such index): there is none for creation time (a
    // time range is filtered within the owner's rows), and the deferred queue and expiry
    // indexes are partial (pending received records only).
    "CREATE TABLE messages (
        seq             INTEGER PRIMARY KEY,
        owner           TEXT NOT NULL,
        direction       TEXT NOT NULL CHECK (direction IN ('sent', 'received')),
        peer            TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        contribution_id TEXT NOT NULL,
        in_reply_to     TEXT,
        message_id      TEXT NOT NULL,
        sender          TEXT NOT NULL,
        recipient       TEXT NOT NULL,
        content_type    TEXT NOT NULL,
        body            BLOB NOT NULL,
        disposition     TEXT NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        expires_at_ms   INTEGER,
        state           TEXT NOT NULL
                        CHECK (state IN ('pending', 'delivered', 'displayed', 'failed')),
        state_at_ms     INTEGER NOT NULL,
        UNIQUE (owner, message_id, direction, peer)
    ) STRICT;
    CREATE INDEX messages_history_peer ON messages (owner, peer);
    CREATE INDEX messages_history_conversation ON messages (owner, conversation_id);
    CREATE INDEX messages_deferred ON messages (owner)
        WHERE direction = 'received' AND state = 'pending';
    CREATE INDEX messages_expiry ON messages (expires_at_ms)
        WHERE direction = 'received' AND state = 'pending' AND expires_at_ms IS NOT NULL;
    CREATE TABLE bindings (
        aor             TEXT NOT NULL,
        key             TEXT NOT NULL,
        contact         TEXT NOT NULL,
        destination     TEXT NOT NULL,
        path            TEXT NOT NULL,
        expires_at_ms   INTEGER NOT NULL,
        PRIMARY KEY (aor, key)
    ) STRICT, WITHOUT ROWID;",
    // 3: the deferred queue's limits (`StoreOp::AppendDeferred`) read a queue's size from a
    // covering partial index, one range of index entries per check and never the bodies:
    // `body_bytes` is `length(body)`, written with every row from now on. Of the older rows
    // only those in a deferred queue need it (states only move forward, so a row never
    // re-enters the queue), which keeps the migration from reading every stored body.
    "ALTER TABLE messages ADD COLUMN body_bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET body_bytes = length(body)
        WHERE direction = 'received' AND state = 'pending';
    CREATE INDEX messages_deferred_usage ON messages (owner, peer, body_bytes)
        WHERE direction = 'received' AND state = 'pending';",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What went wrong in a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// [`Store::add_user`]: an account with this AOR exists already.
    #[error("user {0} exists")]
    UserExists(String),
    /// The AOR is not `user@domain` (non-empty user and domain, no spaces).
    #[error("invalid AOR {aor:?}: {reason}")]
    InvalidAor {
        /// The AOR as given.
        aor: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`Store::add_user`] with an empty password.
    #[error("the password is empty")]
    EmptyPassword,
    /// [`Store::add_user`] with an empty realm.
    #[error("the realm is empty")]
    EmptyRealm,
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database was written by a newer build of CPM.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// The version found in the file.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// [`Store::history`] with an invalid query (empty owner, limit 0).
    #[error("invalid history query: {0}")]
    InvalidQuery(String),
    /// SQLite failed (IO error, corrupt file, lock held longer than the busy timeout...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The CPM database: one SQLite connection to `DATA_DIR/cpm.db`.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating the directory and the file if missing) `data_dir/cpm.db`, switches it to
    /// WAL mode, sets the busy timeout and applies the pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let (conn, path) = open_connection(data_dir)?;
        Ok(Self { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database ([`SCHEMA_VERSION`] after [`Store::open`]).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(user_version(&self.conn)?)
    }

    /// Reads history as [`crate::StoreOp::History`] does (the newest `limit` matches, oldest
    /// first), outside the store executor: WAL lets this connection read while the node's
    /// [`SqliteBackend`] writes, and the read sees the last committed batch.
    pub fn history(&self, query: &HistoryQuery) -> Result<Vec<MessageRecord>, StoreError> {
        query.validate().map_err(|e| match e {
            OpError::Invalid(reason) | OpError::Backend(reason) => StoreError::InvalidQuery(reason),
            OpError::QuotaExceeded(q) => StoreError::InvalidQuery(q.to_string()),
        })?;
        Ok(messages::history(&self.conn, query)?)
    }
}

/// Opens (creating the directory and the file if missing) `data_dir/cpm.db`, switches it to
/// WAL mode, sets the busy timeout and applies the pending migrations: what [`Store::open`]
/// and [`SqliteBackend::open`] share.
fn open_connection(data_dir: &Path) -> Result<(Connection, PathBuf), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let mut conn = Connection::open(&path)?;
    // Set first: the statements below may meet another process's lock.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers do not block the writer and the writer does not block readers, which
    // is what two processes on one file need. The mode is persistent in the file.
    // The pragma answers with the resulting mode; a file system without shared memory may
    // keep the rollback journal, and the store then still works with coarser locking.
    let _mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    migrate(&mut conn)?;
    Ok((conn, path))
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the schema to [`SCHEMA_VERSION`]. The check and the migrations run in one
/// `BEGIN IMMEDIATE` transaction, so two processes opening a new file at once migrate it once.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    if user_version(conn)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = user_version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (1i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_dir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> Self {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("cpm-store-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_dir::TempDir;
    use super::*;

    #[test]
    fn open_creates_the_directory_in_wal_mode_at_the_current_version() {
        let dir = TempDir::new("open");
        let data = dir.path().join("nested/data");
        let store = Store::open(&data).unwrap();
        assert_eq!(store.path(), data.join(DB_FILE));
        assert!(store.path().is_file());
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        // Opening again migrates nothing and keeps the version.
        let store = Store::open(&data).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = TempDir::new("newer");
        let store = Store::open(dir.path()).unwrap();
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(store);
        match Store::open(dir.path()) {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
                assert_eq!(supported, SCHEMA_VERSION);
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn unusable_data_dir_is_an_error() {
        let dir = TempDir::new("file");
        std::fs::create_dir_all(dir.path()).unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(matches!(err, StoreError::DataDir { .. }), "{err}");
    }
}
