//! Storage backends for the CPM cores: users (digest credentials), later messages and
//! conversations. SQLite.
//!
//! [`Store`] is one SQLite database, `DATA_DIR/cpm.db`, opened in WAL mode with a 5 s busy
//! timeout so that several processes can use it at once: the running node and the
//! `cpm admin` command. Each [`Store`] holds one connection; a write is committed when the
//! method returns, and another process sees it from its next statement.
//!
//! The schema is versioned with `PRAGMA user_version` and migrated forward when the store is
//! opened ([`Store::open`]); a database written by a newer build is refused
//! ([`StoreError::SchemaTooNew`]).
//!
//! Tables:
//!
//! - `users` (migration 1): one row per account, keyed by AOR (`alice@localhost`), holding
//!   the realm and the four digest HA1 values (MD5 and SHA-256, each for the user part and the
//!   full AOR as the digest `username`), never the password. See [`Store::add_user`] and
//!   [`Store::user_credentials`].
//!
//! This crate does IO but reads no clock: times such as `created_at` come from the caller.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod ops;

pub use ops::{
    Backend, BindingRecord, DeliveryState, Direction, HistoryQuery, MessageRecord, OpError,
    OpId, Outcome, Receipt, StoreOp,
};

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::*;

