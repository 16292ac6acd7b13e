//! The user directory, read off the node's loop: a thread with its own read connection to
//! the store answers the core's lookups ([`cpm_node::Output::LookupUser`]); the answers come
//! back to the loop as `cpm_node::Input::Core(cpm_proxy::Input::User { .. })`. The loop never
//! waits on SQLite.

use std::path::Path;
use std::sync::mpsc;

use cpm_proxy::{QueryId, UserRecord};
use cpm_sip_core::digest::Algorithm;
use cpm_store::Store;
use tokio::sync::mpsc as tokio_mpsc;

/// One lookup for the reader thread.
struct Query {
    /// The node shard that asked, whose queue gets the answer.
    shard: usize,
    query: QueryId,
    username: String,
    realm: String,
}

/// The handle the loops ask through; dropping every clone ends the thread.
#[derive(Clone)]
pub(crate) struct Directory {
    queries: mpsc::Sender<Query>,
}

/// Where the answers arrive, for the loop's `select!`.
pub(crate) type Answers = tokio_mpsc::UnboundedReceiver<(QueryId, Option<UserRecord>)>;

impl Directory {
    /// Opens a read connection to the store in `data_dir` and starts the reader thread,
    /// with one answer queue per node shard.
    ///
    /// The queue is unbounded here because its length is bounded upstream: every query is a
    /// request parked in the core, and the core refuses new ones past its parked limit.
    pub(crate) fn spawn(data_dir: &Path, shards: usize) -> Result<(Self, Vec<Answers>), String> {
        let store = Store::open(data_dir).map_err(|e| format!("cannot open the store: {e}"))?;
        let (tx, rx) = mpsc::channel::<Query>();
        let (answer_tx, answers): (Vec<_>, Vec<_>) = (0..shards.max(1))
            .map(|_| tokio_mpsc::unbounded_channel())
            .unzip();
        std::thread::Builder::new()
            .name("cpm-directory".into())
            .spawn(move || {
                while let Ok(q) = rx.recv() {
                    let user = lookup(&store, &q.username, &q.realm);
                    let queue = &answer_tx[q.shard.min(answer_tx.len() - 1)];
                    if queue.send((q.query, user)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start the directory thread: {e}"))?;
        Ok((Self { queries: tx }, answers))
    }

    /// Asks for a user for `shard`; the answer arrives on that shard's [`Answers`].
    pub(crate) fn ask(&self, shard: usize, query: QueryId, username: String, realm: String) {
        // The thread only ends when every handle is dropped.
        let _ = self.queries.send(Query {
            shard,
            query,
            username,
            realm,
        });
    }
}

fn lookup(store: &Store, username: &str, realm: &str) -> Option<UserRecord> {
    match store.user_credentials(username, realm) {
        Ok(Some(c)) => Some(UserRecord {
            aor: c.aor.clone(),
            ha1_md5: c.ha1(Algorithm::Md5).to_owned(),
            ha1_sha256: c.ha1(Algorithm::Sha256).to_owned(),
        }),
        Ok(None) => None,
        Err(e) => {
            // A store failure must not look like "no such user" forever; it is logged, and the
            // request is answered as for an unknown user (a challenge or 404), never accepted.
            tracing::error!(error = %e, "user directory read failed");
            None
        }
    }
}
