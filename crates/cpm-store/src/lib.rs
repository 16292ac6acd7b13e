//! Storage backends for the CPM cores: the store operations and their commit receipts
//! ([`ops`], pure), a memory backend ([`MemoryStore`]) and, with the `sqlite` feature, the
//! SQLite backend (`SqliteBackend`) and the user directory (`Store`).
//!
//! # Operations, batches and receipts
//!
//! A sans-IO core emits [`StoreOp`]s; the driver hands them to a [`Backend`] in batches, and
//! the backend answers each with an [`Outcome`] or an [`OpError`]. A batch is one
//! transaction (group commit: one disk sync for many operations). The receipt rule: a write's
//! outcome carries a [`Receipt`], which only this crate creates, and only after the batch
//! committed; if the commit (or any statement of the batch) fails, nothing of the batch is
//! applied and every operation is answered with [`OpError::Backend`], so nothing is
//! acknowledged. An operation with invalid values ([`StoreOp::validate`]) is answered with
//! [`OpError::Invalid`] and takes no part in the batch, so it cannot fail other requests'
//! operations batched with it.
//!
//! [`MemoryStore`] has exactly the semantics of the SQLite backend; the same conformance
//! tests run against both.
//!
//! # The SQLite database
//!
//! `Store` and `SqliteBackend` use one SQLite database, `DATA_DIR/cpm.db`, opened in WAL
//! mode with a 5 s busy timeout so that several connections and processes can use it at
//! once: the node's store executor (one `SqliteBackend`, the only writer of messages), the
//! node's `Store` (users, history reads for the admin API) and the `cpm admin` command. A
//! `Store` method's write is committed when it returns; another connection sees it from
//! its next statement. `SqliteBackend` syncs every commit by default
//! (`Synchronous::Full`).
//!
//! The schema is versioned with `PRAGMA user_version` and migrated forward when the database
//! is opened (`Store::open`, `SqliteBackend::open`); a database written by a newer build
//! is refused (`StoreError::SchemaTooNew`).
//!
//! Tables:
//!
//! - `users` (migration 1): one row per account, keyed by AOR (`alice@localhost`), holding
//!   the realm and the four digest HA1 values (MD5 and SHA-256, each for the user part and the
//!   full AOR as the digest `username`), never the password. See `Store::add_user` and
//!   `Store::user_credentials`.
//! - `messages` (migration 2): the conversation histories, one row per [`MessageRecord`]; `seq`
//!   (the rowid) is the acceptance order, `(owner, message_id, direction, peer)` is unique.
//!   The `Received` rows still `pending` are the deferred queue. Indexes serve history reads
//!   by owner and peer, conversation or creation time, the deferred queue
//!   (`owner, direction, state`) and expiry (`state, expires_at_ms`).
//! - `bindings` (migration 2): registrations ([`BindingRecord`]) keyed by `(aor, key)`, to
//!   restore the location service after a restart.
//!
//! This crate does IO but reads no clock: times such as `created_at_ms` come from the caller.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod batch;
#[cfg(test)]
mod conformance;
mod memory;
pub mod ops;

pub use memory::MemoryStore;
pub use ops::{
    Backend, BindingRecord, DeferredQuota, DeliveryState, Direction, HistoryQuery, MAX_MEDIA_SIZE,
    MAX_TIME_MS, MessageRecord, OpError, OpId, Outcome, QuotaExceeded, Receipt, StoreOp,
    media_id_ok,
};

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::*;
