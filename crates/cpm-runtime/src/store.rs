//! The store executor: one OS thread that runs the cores' store operations against a
//! [`Backend`] in batches (group commit), so that the event loop never waits for the disk.
//!
//! [`StoreExecutor::submit`] queues an operation and returns at once. The thread, named
//! `cpm-store`, blocks until an operation arrives, then takes every operation already queued
//! (up to `max_batch`) and runs them as one [`Backend::execute`] (one transaction, one disk
//! sync). While it commits, new operations queue up and form the next batch: the batch grows
//! with the load, and a lone operation is not delayed. The answers arrive, one per
//! operation, in submission order, on [`StoreResults`].
//!
//! ```no_run
//! use cpm_runtime::store::StoreExecutor;
//! use cpm_store::{OpId, SqliteBackend, StoreOp};
//!
//! # async fn run() -> Result<(), cpm_store::StoreError> {
//! let backend = SqliteBackend::open(std::path::Path::new("cpm-data"))?;
//! let (executor, mut results) = StoreExecutor::spawn(Box::new(backend), 512);
//! executor.submit(OpId(1), StoreOp::LoadBindings { now_ms: 0 });
//! while let Some((id, outcome)) = results.recv().await {
//!     // core.handle_input(now, Input::Stored { id, outcome }) ...
//! #   let _ = (id, outcome);
//! #   break;
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use cpm_store::{Backend, OpError, OpId, Outcome, StoreOp};
use tokio::sync::mpsc as tokio_mpsc;
use tracing::{error, warn};

/// One operation's answer, as [`StoreResults`] delivers it.
pub type StoreResult = (OpId, Result<Outcome, OpError>);

/// The executor's counters, shared with the thread; read them with
/// [`StoreCounters::snapshot`] (for example from a metrics endpoint).
#[derive(Debug, Default)]
pub struct StoreCounters {
    batches: AtomicU64,
    ops: AtomicU64,
    failed_batches: AtomicU64,
    last_batch: AtomicU64,
    queued: AtomicU64,
    execute_nanos: AtomicU64,
}

impl StoreCounters {
    /// The counters now (each read on its own; they may be a few operations apart).
    pub fn snapshot(&self) -> StoreStats {
        StoreStats {
            batches: self.batches.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            last_batch: self.last_batch.load(Ordering::Relaxed),
            queue_depth: self.queued.load(Ordering::Relaxed),
            execute_nanos: self.execute_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a [`StoreExecutor`]'s counters.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct StoreStats {
    /// Batches executed (each one transaction).
    pub batches: u64,
    /// Operations executed.
    pub ops: u64,
    /// Batches in which the backend failed (answered with [`OpError::Backend`]).
    pub failed_batches: u64,
    /// Operations in the last batch.
    pub last_batch: u64,
    /// Operations submitted and not yet taken into a batch.
    pub queue_depth: u64,
    /// Time spent in [`Backend::execute`], in total (nanoseconds).
    pub execute_nanos: u64,
}

impl StoreStats {
    /// Operations per batch on average (0 before the first batch).
    pub fn avg_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.ops as f64 / self.batches as f64
        }
    }

    /// Time per batch on average, in seconds (the commit latency; 0 before the first batch).
    pub fn avg_execute_secs(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.execute_nanos as f64 / 1e9 / self.batches as f64
        }
    }
}

/// Runs store operations on a dedicated thread, in batches. Every submitted operation gets
/// exactly one answer. Dropping the executor lets the thread
/// finish every operation already submitted (their answers still reach [`StoreResults`]),
/// then waits for the thread to end; this blocks for up to one batch per queued
/// `max_batch` operations.
#[derive(Debug)]
pub struct StoreExecutor {
    ops: Option<mpsc::Sender<(OpId, StoreOp)>>,
    /// For answering operations submitted after the thread ended.
    results: Answers,
    counters: Arc<StoreCounters>,
    thread: Option<JoinHandle<()>>,
}

/// Where answers go: one queue, or one per node shard with the rule that picks it.
#[derive(Clone, Debug)]
struct Answers {
    queues: Vec<tokio_mpsc::UnboundedSender<StoreResult>>,
    route: fn(OpId) -> usize,
}

impl Answers {
    fn send(&self, answer: StoreResult) {
        let i = (self.route)(answer.0).min(self.queues.len() - 1);
        // A receiver that is gone (the node stopped) needs no answer.
        let _ = self.queues[i].send(answer);
    }
}

/// The answers of a [`StoreExecutor`], one per submitted operation, in submission order.
#[derive(Debug)]
pub struct StoreResults {
    results: tokio_mpsc::UnboundedReceiver<StoreResult>,
}

impl StoreExecutor {
    /// Starts the `cpm-store` thread running `backend`, with batches of at most `max_batch`
    /// operations (0 counts as 1).
    ///
    /// # Panics
    ///
    /// If the operating system cannot start a thread.
    pub fn spawn(backend: Box<dyn Backend + Send>, max_batch: usize) -> (Self, StoreResults) {
        let (executor, mut results) = Self::spawn_sharded(backend, max_batch, 1, |_| 0);
        let results = results.pop().expect("one receiver");
        (executor, results)
    }

    /// [`StoreExecutor::spawn`] with one [`StoreResults`] per node shard: `route` says
    /// which one an operation's answer goes to, from its id (the shard that asked is in the
    /// id). The batches still mix every shard's operations: one writer, one commit.
    ///
    /// # Panics
    ///
    /// If the operating system cannot start a thread.
    pub fn spawn_sharded(
        backend: Box<dyn Backend + Send>,
        max_batch: usize,
        receivers: usize,
        route: fn(OpId) -> usize,
    ) -> (Self, Vec<StoreResults>) {
        let (ops_tx, ops_rx) = mpsc::channel();
        let (queues, receivers): (Vec<_>, Vec<_>) = (0..receivers.max(1))
            .map(|_| tokio_mpsc::unbounded_channel())
            .unzip();
        let results_tx = Answers { queues, route };
        let counters = Arc::new(StoreCounters::default());
        let worker = Worker {
            backend: Some(backend),
            ops: ops_rx,
            results: results_tx.clone(),
            counters: Arc::clone(&counters),
            max_batch: max_batch.max(1),
        };
        let thread = thread::Builder::new()
            .name("cpm-store".to_owned())
            .spawn(move || worker.run())
            .expect("failed to spawn the cpm-store thread");
        (
            Self {
                ops: Some(ops_tx),
                results: results_tx,
                counters,
                thread: Some(thread),
            },
            receivers
                .into_iter()
                .map(|results| StoreResults { results })
                .collect(),
        )
    }

    /// Queues `op`; never blocks. Its answer comes through [`StoreResults`] under `id`. After
    /// the backend panicked, every operation is answered with [`OpError::Backend`].
    pub fn submit(&self, id: OpId, op: StoreOp) {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let sent = match &self.ops {
            Some(ops) => ops.send((id, op)).is_ok(),
            None => false,
        };
        if !sent {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.results.send((
                id,
                Err(OpError::Backend(
                    "the store executor has stopped".to_owned(),
                )),
            ));
        }
    }

    /// The counters now.
    pub fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    /// The live counters, to keep for a metrics endpoint.
    pub fn counters(&self) -> Arc<StoreCounters> {
        Arc::clone(&self.counters)
    }
}

impl Drop for StoreExecutor {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has run what is queued.
        self.ops = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl StoreResults {
    /// The next answer; `None` once the executor is dropped and every answer was taken.
    pub async fn recv(&mut self) -> Option<StoreResult> {
        self.results.recv().await
    }

    /// The next answer if one is waiting (never blocks).
    pub fn try_recv(&mut self) -> Option<StoreResult> {
        self.results.try_recv().ok()
    }
}

/// The `cpm-store` thread.
struct Worker {
    /// `None` once it panicked: its state is unknown, and every operation is answered with
    /// an error from then on.
    backend: Option<Box<dyn Backend + Send>>,
    ops: mpsc::Receiver<(OpId, StoreOp)>,
    results: Answers,
    counters: Arc<StoreCounters>,
    max_batch: usize,
}

impl Worker {
    fn run(mut self) {
        // Blocks for the first operation; ends when the executor is dropped and the queue
        // is empty.
        while let Ok(first) = self.ops.recv() {
            let mut batch = Vec::with_capacity(self.max_batch.min(1024));
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let n = batch.len() as u64;
            self.counters.queued.fetch_sub(n, Ordering::Relaxed);
            self.execute(batch);
        }
    }

    /// Runs one batch and sends its answers.
    fn execute(&mut self, batch: Vec<(OpId, StoreOp)>) {
        let ids: Vec<OpId> = batch.iter().map(|(id, _)| *id).collect();
        let Some(backend) = self.backend.as_mut() else {
            for id in ids {
                self.results.send((
                    id,
                    Err(OpError::Backend("the store backend has failed".to_owned())),
                ));
            }
            return;
        };
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| backend.execute(batch)));
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let n = ids.len() as u64;
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.ops.fetch_add(n, Ordering::Relaxed);
        self.counters.last_batch.store(n, Ordering::Relaxed);
        self.counters
            .execute_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        let Ok(answers) = outcome else {
            error!(
                ops = n,
                "the store backend panicked; every store operation fails from now on"
            );
            self.backend = None;
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            for id in ids {
                self.results.send((
                    id,
                    Err(OpError::Backend("the store backend panicked".to_owned())),
                ));
            }
            return;
        };
        let failed = answers
            .iter()
            .filter(|(_, r)| matches!(r, Err(OpError::Backend(_))))
            .count();
        if failed > 0 {
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            if let Some((_, Err(reason))) = answers
                .iter()
                .find(|(_, r)| matches!(r, Err(OpError::Backend(_))))
            {
                warn!(ops = n, failed, %reason, "store batch failed");
            }
        }
        // Every operation gets exactly one answer, even from a backend that skipped one.
        if answers.len() != ids.len() || answers.iter().zip(&ids).any(|((a, _), b)| a != b) {
            error!(
                ops = n,
                answers = answers.len(),
                "the store backend answered out of order"
            );
            let mut missing: HashSet<OpId> = ids.iter().copied().collect();
            for (id, result) in answers {
                if missing.remove(&id) {
                    self.results.send((id, result));
                }
            }
            for id in ids.into_iter().filter(|id| missing.contains(id)) {
                self.results.send((
                    id,
                    Err(OpError::Backend(
                        "the store backend gave no answer".to_owned(),
                    )),
                ));
            }
            return;
        }
        for answer in answers {
            // The receiver gone means nobody waits for answers any more.
            self.results.send(answer);
        }
    }
}
