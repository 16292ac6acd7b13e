//! [`SqliteBackend`]: the store operations on the node's SQLite database, one transaction per
//! batch (group commit).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};

use super::{StoreError, media, messages, open_connection};
use crate::batch::{self, Answer};
use crate::ops::{Backend, OpError, OpId, Outcome, StoreOp};

/// How many prepared statements a backend keeps (the history query has 16 forms).
const STATEMENT_CACHE: usize = 64;

/// When SQLite waits for the disk (`PRAGMA synchronous`), in WAL mode.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum Synchronous {
    /// Every commit is on disk when it returns (an fsync of the WAL per transaction): a
    /// receipt survives a power loss. The default; group commit amortises the fsync.
    #[default]
    Full,
    /// Commits are not synced; the WAL is synced at checkpoints. The database stays
    /// consistent, but the last transactions before a power loss (not a process crash) may
    /// be lost, receipts included.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Settings of a [`SqliteBackend`].
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Durability of each commit; [`Synchronous::Full`] by default.
    pub synchronous: Synchronous,
}

impl SqliteOptions {
    /// These options with `synchronous`.
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }
}

/// The store operations on `DATA_DIR/cpm.db` (the file and migrations of [`super::Store`]):
/// each [`Backend::execute`] is one `BEGIN IMMEDIATE … COMMIT` transaction. If any statement
/// or the commit fails, the transaction is rolled back and every valid operation of the batch
/// is answered with [`OpError::Backend`]; receipts are made only after the commit returned.
///
/// Meant for one writer thread (the store executor of `cpm-runtime`); other connections
/// ([`super::Store`], the `cpm admin` command) may read and write the same file meanwhile.
#[derive(Debug)]
pub struct SqliteBackend {
    conn: Connection,
    path: PathBuf,
    /// Where media objects are kept (`data_dir/media`).
    media: PathBuf,
}

impl SqliteBackend {
    /// Opens `data_dir/cpm.db` as [`super::Store::open`] does (creating and migrating it),
    /// with the default [`SqliteOptions`] (commits synced: [`Synchronous::Full`]).
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, SqliteOptions::default())
    }

    /// [`SqliteBackend::open`] with `options`.
    pub fn open_with(data_dir: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let (conn, path) = open_connection(data_dir)?;
        conn.pragma_update(None, "synchronous", options.synchronous.pragma())?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let media = data_dir.join("media");
        std::fs::create_dir_all(&media).map_err(|source| StoreError::DataDir {
            path: media.clone(),
            source,
        })?;
        Ok(Self { conn, path, media })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the valid operations of a batch in one transaction; the answers exist only if
    /// it committed.
    fn transaction(&mut self, ops: &[&StoreOp]) -> rusqlite::Result<Vec<Answer>> {
        // A batch of reads takes no write lock (it still reads one snapshot).
        let behavior = if ops.iter().any(|op| op.is_write()) {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = self.conn.transaction_with_behavior(behavior)?;
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            answers.push(apply(&tx, &self.media, op)?);
        }
        // On an error above, or of the commit, dropping `tx` rolls back.
        tx.commit()?;
        Ok(answers)
    }
}

fn apply(conn: &Connection, media_dir: &Path, op: &StoreOp) -> rusqlite::Result<Answer> {
    Ok(match op {
        StoreOp::WriteMedia { id, offset, data } => media::write(media_dir, id, *offset, data),
        StoreOp::FinishMedia { id, size, record } => {
            if let Some(answer) = media::finish(media_dir, id, *size) {
                return Ok(answer);
            }
            match record {
                Some(record) => {
                    let (duplicate, state) = messages::append(conn, record)?;
                    Answer::Appended { duplicate, state }
                }
                None => Answer::Done,
            }
        }
        StoreOp::DropMedia { id } => media::drop_incomplete(media_dir, id),
        StoreOp::AppendMessage(record) => {
            let (duplicate, state) = messages::append(conn, record)?;
            Answer::Appended { duplicate, state }
        }
        StoreOp::AppendDeferred { record, quota } => {
            match messages::append_deferred(conn, record, quota)? {
                Ok((duplicate, state)) => Answer::Appended { duplicate, state },
                Err(exceeded) => Answer::Refused(OpError::QuotaExceeded(exceeded)),
            }
        }
        StoreOp::UpdateState {
            owner,
            peer,
            direction,
            message_id,
            state,
            at_ms,
        } => Answer::Updated {
            changed: messages::update_state(
                conn,
                owner,
                peer.as_deref(),
                *direction,
                message_id,
                *state,
                *at_ms,
            )?,
        },
        StoreOp::PendingDeferred { owner, limit } => {
            Answer::Messages(messages::pending_deferred(conn, owner, *limit)?)
        }
        StoreOp::ExpireDeferred { now_ms, limit } => {
            Answer::Expired(messages::expire_deferred(conn, *now_ms, *limit)?)
        }
        StoreOp::History(query) => Answer::Messages(messages::history(conn, query)?),
        StoreOp::SaveBinding(binding) => {
            messages::save_binding(conn, binding)?;
            Answer::Done
        }
        StoreOp::RemoveBinding { aor, key } => {
            messages::remove_binding(conn, aor, key)?;
            Answer::Done
        }
        StoreOp::LoadBindings { now_ms } => {
            Answer::Bindings(messages::load_bindings(conn, *now_ms)?)
        }
    })
}

impl Backend for SqliteBackend {
    fn execute(&mut self, batch: Vec<(OpId, StoreOp)>) -> Vec<(OpId, Result<Outcome, OpError>)> {
        batch::run(batch, |ops| {
            self.transaction(ops).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::record;
    use crate::ops::{DeliveryState, Direction, HistoryQuery, MessageRecord};
    use crate::sqlite::test_dir::TempDir;
    use crate::sqlite::{MIGRATIONS, SCHEMA_VERSION, Store};

    /// A backend in its own temporary directory, and a switch that makes its next batch fail
    /// at `COMMIT` (a deferred foreign key left violated by a temporary trigger).
    struct TestSqlite {
        backend: SqliteBackend,
        fail_next: bool,
        _dir: TempDir,
    }

    impl TestSqlite {
        fn new() -> Self {
            let dir = TempDir::new("backend");
            Self {
                backend: SqliteBackend::open(dir.path()).unwrap(),
                fail_next: false,
                _dir: dir,
            }
        }
    }

    impl Backend for TestSqlite {
        fn execute(
            &mut self,
            batch: Vec<(OpId, StoreOp)>,
        ) -> Vec<(OpId, Result<Outcome, OpError>)> {
            if !std::mem::take(&mut self.fail_next) {
                return self.backend.execute(batch);
            }
            let conn = &self.backend.conn;
            conn.execute_batch(
                "CREATE TEMP TABLE fail_parent (id INTEGER PRIMARY KEY);
                 CREATE TEMP TABLE fail_child (
                     parent INTEGER REFERENCES fail_parent (id) DEFERRABLE INITIALLY DEFERRED
                 );
                 CREATE TEMP TRIGGER fail_commit AFTER INSERT ON main.messages
                 BEGIN INSERT INTO fail_child VALUES (1); END;",
            )
            .unwrap();
            let answers = self.backend.execute(batch);
            self.backend
                .conn
                .execute_batch(
                    "DROP TRIGGER temp.fail_commit;
                     DROP TABLE temp.fail_child;
                     DROP TABLE temp.fail_parent;",
                )
                .unwrap();
            answers
        }
    }

    crate::conformance::suite!(TestSqlite::new, |b: &mut TestSqlite| b.fail_next = true);

    fn append_op(id: u64, r: MessageRecord) -> (OpId, StoreOp) {
        (OpId(id), StoreOp::AppendMessage(r))
    }

    fn everything(owner: &str) -> HistoryQuery {
        HistoryQuery {
            owner: owner.to_owned(),
            limit: usize::MAX,
            ..HistoryQuery::default()
        }
    }

    #[test]
    fn a_statement_failing_mid_batch_rolls_back_the_batch() {
        let mut b = TestSqlite::new();
        b.backend
            .conn
            .execute_batch(
                "CREATE TEMP TRIGGER boom BEFORE INSERT ON main.messages
                 WHEN NEW.message_id = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END;",
            )
            .unwrap();
        let answers = b.execute(vec![
            append_op(1, record("alice@x", Direction::Sent, "bob@x", "m1", 1)),
            (
                OpId(2),
                StoreOp::SaveBinding(crate::BindingRecord {
                    aor: "alice@x".to_owned(),
                    key: "phone".to_owned(),
                    contact: "<sip:a@192.0.2.1>".to_owned(),
                    destination: "udp:192.0.2.1:5060".to_owned(),
                    path: Vec::new(),
                    expires_at_ms: 100,
                }),
            ),
            append_op(3, record("alice@x", Direction::Sent, "bob@x", "boom", 2)),
            append_op(4, record("alice@x", Direction::Sent, "bob@x", "m3", 3)),
        ]);
        for (id, result) in &answers {
            match result {
                Err(OpError::Backend(reason)) => assert!(reason.contains("boom"), "{reason}"),
                other => panic!("{id}: expected a backend error, got {other:?}"),
            }
        }
        let store = Store::open(b._dir.path()).unwrap();
        assert!(store.history(&everything("alice@x")).unwrap().is_empty());
        let bindings: i64 = store
            .conn
            .query_row("SELECT count(*) FROM bindings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bindings, 0);
    }

    #[test]
    fn a_media_object_is_a_file_under_the_data_directory_once_complete() {
        let dir = TempDir::new("media-files");
        let mut backend = SqliteBackend::open(dir.path()).unwrap();
        let ops = vec![
            (
                OpId(1),
                StoreOp::WriteMedia {
                    id: "ft-1".into(),
                    offset: 0,
                    data: b"content".to_vec(),
                },
            ),
            (
                OpId(2),
                StoreOp::FinishMedia {
                    id: "ft-1".into(),
                    size: 7,
                    record: None,
                },
            ),
        ];
        assert!(backend.execute(ops).iter().all(|(_, r)| r.is_ok()));
        let media = dir.path().join("media");
        assert_eq!(std::fs::read(media.join("ft-1")).unwrap(), b"content");
        assert!(!media.join("ft-1.part").exists());
        // An interrupted one leaves no file behind.
        let ops = vec![
            (
                OpId(3),
                StoreOp::WriteMedia {
                    id: "ft-2".into(),
                    offset: 0,
                    data: b"half".to_vec(),
                },
            ),
            (OpId(4), StoreOp::DropMedia { id: "ft-2".into() }),
        ];
        assert!(backend.execute(ops).iter().all(|(_, r)| r.is_ok()));
        assert!(!media.join("ft-2.part").exists() && !media.join("ft-2").exists());
    }

    #[test]
    fn data_survives_close_and_reopen() {
        let dir = TempDir::new("reopen");
        let mut r = record("alice@x", Direction::Received, "bob@x", "m1", 5);
        r.expires_at_ms = Some(1_000);
        {
            let mut b = SqliteBackend::open(dir.path()).unwrap();
            let answers = b.execute(vec![append_op(1, r.clone())]);
            assert!(answers[0].1.is_ok());
        }
        let mut b = SqliteBackend::open(dir.path()).unwrap();
        let answers = b.execute(vec![
            append_op(1, r.clone()),
            (
                OpId(2),
                StoreOp::PendingDeferred {
                    owner: "alice@x".to_owned(),
                    limit: 10,
                },
            ),
        ]);
        assert!(matches!(
            answers[0].1,
            Ok(Outcome::Appended {
                duplicate: true,
                state: DeliveryState::Pending,
                ..
            })
        ));
        assert_eq!(answers[1].1, Ok(Outcome::Messages(vec![r])));
    }

    /// Frames in the WAL (the checkpoint pragma answers `busy, log frames, checkpointed`).
    fn wal_frames(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    #[test]
    fn a_batch_is_one_transaction() {
        let dir = TempDir::new("group");
        let mut b = SqliteBackend::open(dir.path()).unwrap();
        // Keep every frame in the WAL, and start from an empty one.
        b.conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        b.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let appends = |from: u64| {
            (from..from + 1000)
                .map(|i| {
                    append_op(
                        i,
                        record("alice@x", Direction::Received, "bob@x", &format!("m{i}"), i),
                    )
                })
                .collect::<Vec<_>>()
        };

        // 1000 appends as 1000 batches: each commit appends at least one frame.
        for op in appends(0) {
            assert!(b.execute(vec![op])[0].1.is_ok());
        }
        let one_by_one = wal_frames(&b.conn);
        assert!(one_by_one >= 1000, "{one_by_one} frames for 1000 commits");

        b.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        assert_eq!(wal_frames(&b.conn), 0);
        let before = b.conn.total_changes();
        let answers = b.execute(appends(1000));
        assert!(answers.iter().all(|(_, r)| r.is_ok()));
        assert_eq!(b.conn.total_changes() - before, 1000);
        // One batch: each dirty page is written once, at the one commit.
        let batched = wal_frames(&b.conn);
        assert!(
            batched * 5 < one_by_one,
            "{batched} frames for one batch vs {one_by_one} for 1000"
        );
    }

    #[test]
    fn migrating_a_version_1_database_keeps_its_users() {
        let dir = TempDir::new("migrate");
        std::fs::create_dir_all(dir.path()).unwrap();
        {
            // A database as the first release wrote it.
            let conn = Connection::open(dir.path().join(super::super::DB_FILE)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO users VALUES ('alice@x', 'x', 'a', 'b', 'c', 'd', 42)",
                [],
            )
            .unwrap();
        }
        let mut b = SqliteBackend::open(dir.path()).unwrap();
        let answers = b.execute(vec![append_op(
            1,
            record("alice@x", Direction::Sent, "bob@x", "m1", 1),
        )]);
        assert!(answers[0].1.is_ok());
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 3);
        let users: Vec<String> = store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.aor)
            .collect();
        assert_eq!(users, ["alice@x"]);
        assert_eq!(store.history(&everything("alice@x")).unwrap().len(), 1);
    }

    #[test]
    fn migration_3_counts_the_bytes_already_queued() {
        let dir = TempDir::new("migrate3");
        std::fs::create_dir_all(dir.path()).unwrap();
        {
            // A version 2 database with one message in bob's deferred queue.
            let conn = Connection::open(dir.path().join(super::super::DB_FILE)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO messages (owner, direction, peer, conversation_id, contribution_id, \
                 message_id, sender, recipient, content_type, body, disposition, created_at_ms, \
                 state, state_at_ms) VALUES ('bob@x', 'received', 'alice@x', 'c', 'k', 'm0', \
                 's', 'r', 'text/plain', zeroblob(60), '', 1, 'pending', 1)",
                [],
            )
            .unwrap();
        }
        let mut b = SqliteBackend::open(dir.path()).unwrap();
        let quota = crate::ops::DeferredQuota {
            max_messages: 10,
            max_bytes: 100,
            max_per_sender: 10,
        };
        let mut r = record("bob@x", Direction::Received, "carol@x", "m1", 2);
        r.body = vec![0; 50];
        let answers = b.execute(vec![(
            OpId(1),
            StoreOp::AppendDeferred { record: r, quota },
        )]);
        assert!(
            matches!(
                answers[0].1,
                Err(OpError::QuotaExceeded(
                    crate::ops::QuotaExceeded::RecipientBytes
                ))
            ),
            "the 60 bytes queued before the migration count: {:?}",
            answers[0].1
        );
    }

    #[test]
    fn store_history_reads_what_the_backend_wrote() {
        let dir = TempDir::new("history");
        let mut b = SqliteBackend::open(dir.path()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ops = (0..5)
            .map(|i| {
                append_op(
                    i,
                    record("alice@x", Direction::Sent, "bob@x", &format!("m{i}"), i),
                )
            })
            .collect();
        assert!(b.execute(ops).iter().all(|(_, r)| r.is_ok()));
        let mut q = everything("alice@x");
        q.limit = 2;
        let ids: Vec<String> = store
            .history(&q)
            .unwrap()
            .into_iter()
            .map(|r| r.message_id)
            .collect();
        assert_eq!(ids, ["m3", "m4"]);
        q.limit = 0;
        assert!(matches!(
            store.history(&q),
            Err(StoreError::InvalidQuery(_))
        ));
    }

    #[test]
    fn synchronous_is_as_asked() {
        let dir = TempDir::new("sync");
        let level = |b: &SqliteBackend| -> i64 {
            b.conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(level(&SqliteBackend::open(dir.path()).unwrap()), 2);
        let normal = SqliteOptions::default().with_synchronous(Synchronous::Normal);
        assert_eq!(
            level(&SqliteBackend::open_with(dir.path(), normal).unwrap()),
            1
        );
    }

    #[test]
    fn reads_use_the_indexes() {
        let dir = TempDir::new("plan");
        let b = SqliteBackend::open(dir.path()).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = b
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let deferred = plan(messages::PENDING_DEFERRED);
        assert!(deferred.contains("messages_deferred"), "{deferred}");
        assert!(!deferred.contains("TEMP B-TREE"), "{deferred}");
        let expiry = plan(messages::EXPIRE_DUE);
        assert!(expiry.contains("messages_expiry"), "{expiry}");
        assert!(!expiry.contains("TEMP B-TREE"), "{expiry}");
        let history = |f: &dyn Fn(&mut HistoryQuery)| {
            let mut q = everything("alice@x");
            f(&mut q);
            plan(&messages::history_sql(&q).0)
        };
        let with = history(&|q| q.with = Some("bob@x".to_owned()));
        assert!(with.contains("messages_history_peer"), "{with}");
        assert!(!with.contains("TEMP B-TREE"), "{with}");
        let conversation = history(&|q| q.conversation_id = Some("c".to_owned()));
        assert!(
            conversation.contains("messages_history_conversation"),
            "{conversation}"
        );
        let owner = history(&|q| q.since_ms = Some(5));
        assert!(!owner.contains("SCAN messages"), "{owner}");
        // The deferred queue's size comes from the covering index alone.
        let usage = plan(messages::QUEUE_USAGE);
        assert!(
            usage.contains("COVERING INDEX messages_deferred_usage"),
            "{usage}"
        );
        let update = plan("SELECT seq, state FROM messages WHERE owner = ?1 AND message_id = ?2");
        assert!(update.contains("sqlite_autoindex_messages_1"), "{update}");
    }
}
