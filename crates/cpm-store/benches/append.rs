//! Appends per second on the SQLite backend with `synchronous=FULL` (every commit synced),
//! by batch size: what group commit buys.
//!
//! `cargo bench -p cpm-store --features sqlite --bench append`. The database lives in a
//! fresh directory under `$CPM_BENCH_DIR` (default: the system temp dir); put it on the disk
//! you care about, since the figures are mostly the disk's sync latency.

use std::hint::black_box;
use std::path::PathBuf;

use cpm_store::{
    Backend, DeliveryState, Direction, MessageRecord, OpId, SqliteBackend, SqliteOptions, StoreOp,
    Synchronous,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// A CPIM body of a typical short chat message.
const BODY: &str = "From: <sip:alice@localhost>\r\nTo: <sip:bob@localhost>\r\n\
    NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: 34jk324j\r\n\
    DateTime: 2024-01-01T12:00:00.000Z\r\nimdn.Disposition-Notification: positive-delivery, display\r\n\
    \r\nContent-Type: text/plain;charset=utf-8\r\nContent-Length: 12\r\n\r\nHello world!";

fn record(n: u64) -> MessageRecord {
    MessageRecord {
        owner: format!("user{}@localhost", n % 1000),
        direction: Direction::Received,
        peer: "alice@localhost".to_owned(),
        conversation_id: "5f0c1a8e-2b9d-4d61-9c57-0e4b5d4c9a11".to_owned(),
        contribution_id: format!("c-{n}"),
        in_reply_to: None,
        message_id: format!("m-{n}"),
        sender: "sip:alice@localhost".to_owned(),
        recipient: format!("sip:user{}@localhost", n % 1000),
        content_type: "message/cpim".to_owned(),
        body: BODY.as_bytes().to_vec(),
        disposition: vec!["positive-delivery".to_owned(), "display".to_owned()],
        created_at_ms: 1_700_000_000_000 + n,
        expires_at_ms: Some(1_700_000_000_000 + n + 86_400_000),
        state: DeliveryState::Pending,
        state_at_ms: 1_700_000_000_000 + n,
    }
}

fn bench_append(c: &mut Criterion) {
    let base = std::env::var_os("CPM_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(format!("cpm-store-bench-append-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = SqliteOptions::default().with_synchronous(Synchronous::Full);
    let mut backend = SqliteBackend::open_with(&dir, options).expect("open the database");
    let mut next = 0u64;

    let mut group = c.benchmark_group("sqlite_append_sync_full");
    group.sample_size(10);
    for batch in [1u64, 64, 512] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    (0..batch)
                        .map(|_| {
                            next += 1;
                            (OpId(next), StoreOp::AppendMessage(record(next)))
                        })
                        .collect::<Vec<_>>()
                },
                |ops| {
                    let answers = backend.execute(ops);
                    assert!(answers.iter().all(|(_, r)| r.is_ok()));
                    black_box(answers)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
    drop(backend);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
