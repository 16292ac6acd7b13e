//! The store executor: group commit over the SQLite backend, answers, shutdown, failures.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpm_runtime::store::{StoreExecutor, StoreResults};
use cpm_store::{
    Backend, DeliveryState, Direction, HistoryQuery, MessageRecord, OpError, OpId, Outcome,
    SqliteBackend, Store, StoreOp,
};
use tokio::time::timeout;

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "cpm-runtime-store-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record(owner: &str, message_id: &str, at: u64) -> MessageRecord {
    MessageRecord {
        owner: owner.to_owned(),
        direction: Direction::Received,
        peer: "bob@localhost".to_owned(),
        conversation_id: "conv".to_owned(),
        contribution_id: format!("contrib-{message_id}"),
        in_reply_to: None,
        message_id: message_id.to_owned(),
        sender: "sip:bob@localhost".to_owned(),
        recipient: format!("sip:{owner}"),
        content_type: "text/plain".to_owned(),
        body: b"hello".to_vec(),
        disposition: vec!["positive-delivery".to_owned()],
        created_at_ms: at,
        expires_at_ms: None,
        state: DeliveryState::Pending,
        state_at_ms: at,
    }
}

fn append(i: u64) -> StoreOp {
    StoreOp::AppendMessage(record(
        &format!("user{}@localhost", i % 10),
        &format!("m{i}"),
        i,
    ))
}

async fn next(results: &mut StoreResults) -> Option<(OpId, Result<Outcome, OpError>)> {
    timeout(Duration::from_secs(60), results.recv())
        .await
        .expect("a store answer within 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_are_group_committed() {
    const TASKS: u64 = 50;
    const PER_TASK: u64 = 100;
    const OPS: u64 = TASKS * PER_TASK;
    let dir = TempDir::new("group");
    let backend = SqliteBackend::open(dir.path()).expect("open");
    let (executor, mut results) = StoreExecutor::spawn(Box::new(backend), 512);
    let executor = Arc::new(executor);

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let executor = Arc::clone(&executor);
            tokio::spawn(async move {
                for i in t * PER_TASK..(t + 1) * PER_TASK {
                    executor.submit(OpId(i), append(i));
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("submit task");
    }

    let mut answered = HashSet::new();
    for _ in 0..OPS {
        let (id, result) = next(&mut results).await.expect("an answer per op");
        match result {
            Ok(Outcome::Appended {
                receipt,
                duplicate: false,
                state: DeliveryState::Pending,
            }) => assert_eq!(receipt.op(), id),
            other => panic!("{id}: {other:?}"),
        }
        assert!(answered.insert(id), "{id} answered twice");
    }
    assert_eq!(answered.len() as u64, OPS);
    assert!(results.try_recv().is_none());

    let stats = executor.stats();
    assert_eq!(stats.ops, OPS);
    assert_eq!(stats.queue_depth, 0);
    assert_eq!(stats.failed_batches, 0);
    assert!(stats.batches < OPS, "no group commit: {stats:?}");
    assert!(stats.avg_batch() > 1.0, "{stats:?}");
    assert!(
        stats.last_batch >= 1 && stats.last_batch <= 512,
        "{stats:?}"
    );
    eprintln!(
        "{OPS} ops in {} batches (avg {:.1}, {:.2} ms per batch)",
        stats.batches,
        stats.avg_batch(),
        stats.avg_execute_secs() * 1e3
    );

    // Dropping the executor ends the thread and the answers.
    let executor = Arc::into_inner(executor).expect("the tasks are done");
    drop(executor);
    assert!(next(&mut results).await.is_none());

    // Everything is in the file.
    let store = Store::open(dir.path()).expect("reopen");
    let mut total = 0;
    for owner in 0..10 {
        let history = store
            .history(&HistoryQuery {
                owner: format!("user{owner}@localhost"),
                limit: usize::MAX,
                ..HistoryQuery::default()
            })
            .expect("history");
        assert_eq!(history.len() as u64, OPS / 10);
        total += history.len() as u64;
    }
    assert_eq!(total, OPS);
}

#[tokio::test]
async fn dropping_the_executor_finishes_the_queue() {
    let dir = TempDir::new("drop");
    let backend = SqliteBackend::open(dir.path()).expect("open");
    let (executor, mut results) = StoreExecutor::spawn(Box::new(backend), 64);
    for i in 0..1000 {
        executor.submit(OpId(i), append(i));
    }
    drop(executor);
    for i in 0..1000 {
        let (id, result) = results
            .try_recv()
            .expect("answered before the drop returned");
        assert_eq!(id, OpId(i), "answers come in submission order");
        assert!(result.is_ok(), "{result:?}");
    }
    assert!(results.recv().await.is_none());
}

/// A backend that records its batch sizes and takes its time.
struct Slow {
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Backend for Slow {
    fn execute(&mut self, batch: Vec<(OpId, StoreOp)>) -> Vec<(OpId, Result<Outcome, OpError>)> {
        self.sizes.lock().expect("lock").push(batch.len());
        std::thread::sleep(Duration::from_millis(2));
        batch
            .into_iter()
            .map(|(id, _)| (id, Ok(Outcome::Messages(Vec::new()))))
            .collect()
    }
}

#[tokio::test]
async fn batches_hold_at_most_max_batch() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let backend = Slow {
        sizes: Arc::clone(&sizes),
    };
    let (executor, mut results) = StoreExecutor::spawn(Box::new(backend), 8);
    for i in 0..100 {
        executor.submit(OpId(i), StoreOp::LoadBindings { now_ms: 0 });
    }
    for i in 0..100 {
        let (id, _) = next(&mut results).await.expect("answer");
        assert_eq!(id, OpId(i));
    }
    let sizes = sizes.lock().expect("lock").clone();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!(sizes.iter().all(|&n| (1..=8).contains(&n)), "{sizes:?}");
    assert!(sizes.len() < 100, "{sizes:?}");
    assert_eq!(executor.stats().batches, sizes.len() as u64);
}

/// A backend that panics.
struct Panics;

impl Backend for Panics {
    fn execute(&mut self, _: Vec<(OpId, StoreOp)>) -> Vec<(OpId, Result<Outcome, OpError>)> {
        panic!("backend bug");
    }
}

#[tokio::test]
async fn a_panicking_backend_answers_errors_and_stops() {
    let (executor, mut results) = StoreExecutor::spawn(Box::new(Panics), 8);
    executor.submit(OpId(1), StoreOp::LoadBindings { now_ms: 0 });
    let (id, result) = next(&mut results).await.expect("answer");
    assert_eq!(id, OpId(1));
    assert!(matches!(result, Err(OpError::Backend(_))), "{result:?}");
    // Later operations are answered with errors, without the broken backend.
    executor.submit(OpId(2), StoreOp::LoadBindings { now_ms: 0 });
    let (id, result) = next(&mut results).await.expect("answer");
    assert_eq!(id, OpId(2));
    assert!(matches!(result, Err(OpError::Backend(_))), "{result:?}");
    assert_eq!(executor.stats().failed_batches, 1);
}
