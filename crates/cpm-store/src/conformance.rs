//! The conformance tests every [`Backend`] passes: one function per behaviour, generic over
//! the backend, and [`suite!`] to instantiate them as `#[test]`s for one backend.
//!
//! Each function takes `make` (a fresh, empty backend) and `break_next` (makes the next batch
//! fail at commit, as a full disk would).

use crate::ops::{
    Backend, BindingRecord, DeferredQuota, DeliveryState, Direction, HistoryQuery, MessageRecord,
    OpError, OpId, Outcome, QuotaExceeded, StoreOp,
};

/// Instantiates every conformance test for one backend:
/// `suite!(|| make_backend(), |backend: &mut B| break_next_batch(backend));`
macro_rules! suite {
    ($make:expr, $break_next:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn append_and_duplicate() {
                crate::conformance::append_and_duplicate($make);
            }

            #[test]
            fn records_round_trip() {
                crate::conformance::records_round_trip($make);
            }

            #[test]
            fn state_transitions() {
                crate::conformance::state_transitions($make);
            }

            #[test]
            fn pending_deferred() {
                crate::conformance::pending_deferred($make);
            }

            #[test]
            fn deferred_quota() {
                crate::conformance::deferred_quota($make);
            }

            #[test]
            fn expiry() {
                crate::conformance::expiry($make);
            }

            #[test]
            fn history_filters() {
                crate::conformance::history_filters($make);
            }

            #[test]
            fn bindings() {
                crate::conformance::bindings($make);
            }

            #[test]
            fn failed_commit_applies_nothing() {
                crate::conformance::failed_commit_applies_nothing($make, $break_next);
            }

            #[test]
            fn invalid_ops_are_answered_alone() {
                crate::conformance::invalid_ops_are_answered_alone($make);
            }

            #[test]
            fn media_objects() {
                crate::conformance::media_objects($make);
            }
        }
    };
}
pub(crate) use suite;

/// A pending record with predictable field values.
pub(crate) fn record(
    owner: &str,
    direction: Direction,
    peer: &str,
    message_id: &str,
    created_at_ms: u64,
) -> MessageRecord {
    let (sender, recipient) = match direction {
        Direction::Sent => (owner, peer),
        Direction::Received => (peer, owner),
    };
    MessageRecord {
        owner: owner.to_owned(),
        direction,
        peer: peer.to_owned(),
        conversation_id: "conv-1".to_owned(),
        contribution_id: format!("contrib-{message_id}"),
        in_reply_to: None,
        message_id: message_id.to_owned(),
        sender: format!("sip:{sender}"),
        recipient: format!("sip:{recipient}"),
        content_type: "text/plain".to_owned(),
        body: format!("body of {message_id}").into_bytes(),
        disposition: Vec::new(),
        created_at_ms,
        expires_at_ms: None,
        state: DeliveryState::Pending,
        state_at_ms: created_at_ms,
    }
}

fn binding(aor: &str, key: &str, expires_at_ms: u64) -> BindingRecord {
    BindingRecord {
        aor: aor.to_owned(),
        key: key.to_owned(),
        contact: format!("<sip:{key}@192.0.2.1:5060>;expires=3600"),
        destination: "udp:192.0.2.1:5060".to_owned(),
        path: Vec::new(),
        expires_at_ms,
    }
}

/// Runs one operation as a batch of its own.
fn one<B: Backend>(backend: &mut B, op: StoreOp) -> Result<Outcome, OpError> {
    let mut answers = backend.execute(vec![(OpId(0), op)]);
    assert_eq!(answers.len(), 1);
    let (id, result) = answers.remove(0);
    assert_eq!(id, OpId(0));
    result
}

fn append<B: Backend>(backend: &mut B, record: MessageRecord) -> (bool, DeliveryState) {
    match one(backend, StoreOp::AppendMessage(record)) {
        Ok(Outcome::Appended {
            receipt,
            duplicate,
            state,
        }) => {
            assert_eq!(receipt.op(), OpId(0));
            (duplicate, state)
        }
        other => panic!("expected Appended, got {other:?}"),
    }
}

fn update<B: Backend>(
    backend: &mut B,
    owner: &str,
    peer: Option<&str>,
    direction: Option<Direction>,
    message_id: &str,
    state: DeliveryState,
    at_ms: u64,
) -> u32 {
    let op = StoreOp::UpdateState {
        owner: owner.to_owned(),
        peer: peer.map(str::to_owned),
        direction,
        message_id: message_id.to_owned(),
        state,
        at_ms,
    };
    match one(backend, op) {
        Ok(Outcome::Updated { receipt, changed }) => {
            assert_eq!(receipt.op(), OpId(0));
            changed
        }
        other => panic!("expected Updated, got {other:?}"),
    }
}

fn messages<B: Backend>(backend: &mut B, op: StoreOp) -> Vec<MessageRecord> {
    match one(backend, op) {
        Ok(Outcome::Messages(records)) => records,
        other => panic!("expected Messages, got {other:?}"),
    }
}

fn history<B: Backend>(backend: &mut B, query: HistoryQuery) -> Vec<MessageRecord> {
    messages(backend, StoreOp::History(query))
}

fn all_of<B: Backend>(backend: &mut B, owner: &str) -> Vec<MessageRecord> {
    history(
        backend,
        HistoryQuery {
            owner: owner.to_owned(),
            limit: usize::MAX,
            ..HistoryQuery::default()
        },
    )
}

fn ids(records: &[MessageRecord]) -> Vec<&str> {
    records.iter().map(|r| r.message_id.as_str()).collect()
}

fn pending<B: Backend>(backend: &mut B, owner: &str, limit: usize) -> Vec<MessageRecord> {
    messages(
        backend,
        StoreOp::PendingDeferred {
            owner: owner.to_owned(),
            limit,
        },
    )
}

fn expire<B: Backend>(backend: &mut B, now_ms: u64, limit: usize) -> Vec<MessageRecord> {
    match one(backend, StoreOp::ExpireDeferred { now_ms, limit }) {
        Ok(Outcome::Expired { receipt, records }) => {
            assert_eq!(receipt.op(), OpId(0));
            records
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

fn load_bindings<B: Backend>(backend: &mut B, now_ms: u64) -> Vec<BindingRecord> {
    match one(backend, StoreOp::LoadBindings { now_ms }) {
        Ok(Outcome::Bindings(bindings)) => bindings,
        other => panic!("expected Bindings, got {other:?}"),
    }
}

fn done<B: Backend>(backend: &mut B, op: StoreOp) {
    match one(backend, op) {
        Ok(Outcome::Done { receipt }) => assert_eq!(receipt.op(), OpId(0)),
        other => panic!("expected Done, got {other:?}"),
    }
}

/// Appending stores a record once per `(owner, direction, peer, message_id)`.
pub(crate) fn append_and_duplicate<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    let first = record("alice@x", Direction::Received, "bob@x", "m1", 10);
    assert_eq!(
        append(&mut b, first.clone()),
        (false, DeliveryState::Pending)
    );

    // The same key again, even with another body, is a duplicate and changes nothing.
    let mut again = first.clone();
    again.body = b"another body".to_vec();
    again.state = DeliveryState::Delivered;
    assert_eq!(
        append(&mut b, again.clone()),
        (true, DeliveryState::Pending)
    );
    assert_eq!(all_of(&mut b, "alice@x"), std::slice::from_ref(&first));

    // The duplicate answer gives the stored record's current state.
    assert_eq!(
        update(
            &mut b,
            "alice@x",
            None,
            None,
            "m1",
            DeliveryState::Delivered,
            11
        ),
        1
    );
    assert_eq!(append(&mut b, again), (true, DeliveryState::Delivered));

    // Another direction, peer or owner with the same message id is another record.
    let mut sent = first.clone();
    sent.direction = Direction::Sent;
    assert_eq!(append(&mut b, sent), (false, DeliveryState::Pending));
    let mut other_peer = first.clone();
    other_peer.peer = "carol@x".to_owned();
    assert_eq!(append(&mut b, other_peer), (false, DeliveryState::Pending));
    let mut other_owner = first;
    other_owner.owner = "bob@x".to_owned();
    assert_eq!(append(&mut b, other_owner), (false, DeliveryState::Pending));
    assert_eq!(all_of(&mut b, "alice@x").len(), 3);
    assert_eq!(all_of(&mut b, "bob@x").len(), 1);

    // Within one batch the second append of a key is the duplicate; answers keep the order.
    let r2 = record("alice@x", Direction::Received, "bob@x", "m2", 12);
    let answers = b.execute(vec![
        (OpId(7), StoreOp::AppendMessage(r2.clone())),
        (OpId(8), StoreOp::AppendMessage(r2)),
    ]);
    let summary: Vec<(OpId, bool)> = answers
        .into_iter()
        .map(|(id, result)| match result {
            Ok(Outcome::Appended {
                receipt, duplicate, ..
            }) => {
                assert_eq!(receipt.op(), id);
                (id, duplicate)
            }
            other => panic!("expected Appended, got {other:?}"),
        })
        .collect();
    assert_eq!(summary, [(OpId(7), false), (OpId(8), true)]);
}

/// Every field of a record reads back as written.
pub(crate) fn records_round_trip<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    let mut full = record(
        "alice@x",
        Direction::Received,
        "bob@x",
        "m1",
        1_700_000_000_000,
    );
    full.in_reply_to = Some("contrib-0".to_owned());
    full.content_type = "message/cpim".to_owned();
    full.body = vec![0, 159, 146, 150, b'\r', b'\n', 255];
    full.disposition = vec!["positive-delivery".to_owned(), "display".to_owned()];
    full.expires_at_ms = Some(crate::MAX_TIME_MS);
    full.state_at_ms = 1_700_000_000_001;
    let plain = record("alice@x", Direction::Sent, "bob@x", "m2", 0);
    append(&mut b, full.clone());
    append(&mut b, plain.clone());
    assert_eq!(all_of(&mut b, "alice@x"), [full, plain]);
}

/// States only move forward, `Failed` only from `Pending`; filters narrow the update.
pub(crate) fn state_transitions<B: Backend>(make: impl Fn() -> B) {
    use DeliveryState::*;
    let mut b = make();
    // One message alice sent to two recipients, and the copy bob received.
    append(&mut b, record("alice@x", Direction::Sent, "bob@x", "m1", 1));
    append(
        &mut b,
        record("alice@x", Direction::Sent, "carol@x", "m1", 1),
    );
    append(
        &mut b,
        record("alice@x", Direction::Received, "bob@x", "m1", 1),
    );
    append(
        &mut b,
        record("bob@x", Direction::Received, "alice@x", "m1", 1),
    );

    let state_of = |b: &mut B, owner: &str, dir: Direction, peer: &str| {
        all_of(b, owner)
            .into_iter()
            .find(|r| r.direction == dir && r.peer == peer)
            .map(|r| (r.state, r.state_at_ms))
    };

    // Peer and direction narrow the match.
    assert_eq!(
        update(
            &mut b,
            "alice@x",
            Some("bob@x"),
            Some(Direction::Sent),
            "m1",
            Delivered,
            5
        ),
        1
    );
    assert_eq!(
        state_of(&mut b, "alice@x", Direction::Sent, "bob@x"),
        Some((Delivered, 5))
    );
    assert_eq!(
        state_of(&mut b, "alice@x", Direction::Received, "bob@x"),
        Some((Pending, 1))
    );
    assert_eq!(
        state_of(&mut b, "bob@x", Direction::Received, "alice@x"),
        Some((Pending, 1))
    );

    // Backwards, sideways and to the same state: nothing changes, not even the time.
    assert_eq!(
        update(
            &mut b,
            "alice@x",
            Some("bob@x"),
            Some(Direction::Sent),
            "m1",
            Pending,
            6
        ),
        0
    );
    assert_eq!(
        update(
            &mut b,
            "alice@x",
            Some("bob@x"),
            Some(Direction::Sent),
            "m1",
            Failed,
            6
        ),
        0
    );
    assert_eq!(
        update(
            &mut b,
            "alice@x",
            Some("bob@x"),
            Some(Direction::Sent),
            "m1",
            Delivered,
            6
        ),
        0
    );
    assert_eq!(
        state_of(&mut b, "alice@x", Direction::Sent, "bob@x"),
        Some((Delivered, 5))
    );

    // Without filters every record of the owner with that id that may move does; here the
    // delivered one moves on to displayed, the two pending ones skip ahead.
    assert_eq!(update(&mut b, "alice@x", None, None, "m1", Displayed, 7), 3);
    assert_eq!(update(&mut b, "alice@x", None, None, "m1", Displayed, 8), 0);

    // The direction filter alone.
    append(&mut b, record("alice@x", Direction::Sent, "bob@x", "m2", 2));
    append(
        &mut b,
        record("alice@x", Direction::Received, "bob@x", "m2", 2),
    );
    assert_eq!(
        update(
            &mut b,
            "alice@x",
            None,
            Some(Direction::Received),
            "m2",
            Failed,
            9
        ),
        1
    );
    let m2: Vec<(Direction, DeliveryState, u64)> = all_of(&mut b, "alice@x")
        .into_iter()
        .filter(|r| r.message_id == "m2")
        .map(|r| (r.direction, r.state, r.state_at_ms))
        .collect();
    assert_eq!(
        m2,
        [
            (Direction::Sent, Pending, 2),
            (Direction::Received, Failed, 9)
        ]
    );
    // Nothing leaves Failed.
    for next in [Pending, Delivered, Displayed, Failed] {
        assert_eq!(
            update(
                &mut b,
                "alice@x",
                None,
                Some(Direction::Received),
                "m2",
                next,
                10
            ),
            0
        );
    }

    // Unknown ids and other owners' records are not touched.
    assert_eq!(
        update(&mut b, "alice@x", None, None, "nope", Delivered, 11),
        0
    );
    assert_eq!(
        state_of(&mut b, "bob@x", Direction::Received, "alice@x"),
        Some((Pending, 1))
    );
}

/// The deferred queue: an owner's pending received records, in acceptance order.
pub(crate) fn pending_deferred<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    // Created times deliberately out of order: the queue is in acceptance order.
    append(
        &mut b,
        record("alice@x", Direction::Received, "bob@x", "a1", 50),
    );
    append(
        &mut b,
        record("bob@x", Direction::Received, "alice@x", "b1", 10),
    );
    append(
        &mut b,
        record("alice@x", Direction::Sent, "bob@x", "a2", 10),
    );
    append(
        &mut b,
        record("alice@x", Direction::Received, "carol@x", "a3", 40),
    );
    append(
        &mut b,
        record("alice@x", Direction::Received, "carol@x", "a4", 30),
    );
    append(
        &mut b,
        record("alice@x", Direction::Received, "bob@x", "a5", 20),
    );
    update(
        &mut b,
        "alice@x",
        None,
        None,
        "a4",
        DeliveryState::Delivered,
        60,
    );

    assert_eq!(ids(&pending(&mut b, "alice@x", 100)), ["a1", "a3", "a5"]);
    assert_eq!(ids(&pending(&mut b, "alice@x", 2)), ["a1", "a3"]);
    assert_eq!(ids(&pending(&mut b, "bob@x", 100)), ["b1"]);
    assert!(pending(&mut b, "nobody@x", 100).is_empty());
    // A read is not a dequeue.
    assert_eq!(ids(&pending(&mut b, "alice@x", 100)), ["a1", "a3", "a5"]);
}

/// Expiry fails exactly the pending received records due, and returns them.
pub(crate) fn expiry<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    let due = |mut r: MessageRecord, at: Option<u64>| {
        r.expires_at_ms = at;
        r
    };
    let rec = |owner: &str, dir, id: &str| record(owner, dir, "peer@x", id, 1);
    append(
        &mut b,
        due(rec("alice@x", Direction::Received, "a20"), Some(20)),
    );
    append(
        &mut b,
        due(rec("alice@x", Direction::Received, "a10"), Some(10)),
    );
    append(
        &mut b,
        due(rec("alice@x", Direction::Received, "never"), None),
    );
    append(
        &mut b,
        due(rec("bob@x", Direction::Received, "b15"), Some(15)),
    );
    append(
        &mut b,
        due(rec("alice@x", Direction::Sent, "sent5"), Some(5)),
    );
    append(
        &mut b,
        due(rec("alice@x", Direction::Received, "delivered5"), Some(5)),
    );
    update(
        &mut b,
        "alice@x",
        None,
        None,
        "delivered5",
        DeliveryState::Delivered,
        2,
    );
    append(
        &mut b,
        due(rec("alice@x", Direction::Received, "a16"), Some(16)),
    );

    assert!(expire(&mut b, 9, 100).is_empty());
    // At or before now, earliest expiry first; the records come back failed as of now.
    let expired = expire(&mut b, 15, 100);
    assert_eq!(ids(&expired), ["a10", "b15"]);
    for r in &expired {
        assert_eq!((r.state, r.state_at_ms), (DeliveryState::Failed, 15));
    }
    let mut a10 = due(rec("alice@x", Direction::Received, "a10"), Some(10));
    a10.state = DeliveryState::Failed;
    a10.state_at_ms = 15;
    assert_eq!(expired[0], a10);
    assert!(expire(&mut b, 15, 100).is_empty());

    // The limit, then the rest.
    assert_eq!(ids(&expire(&mut b, 100, 1)), ["a16"]);
    assert_eq!(ids(&expire(&mut b, 100, 1)), ["a20"]);
    assert!(expire(&mut b, u64::MAX, 100).is_empty());

    assert_eq!(ids(&pending(&mut b, "alice@x", 100)), ["never"]);
    assert!(pending(&mut b, "bob@x", 100).is_empty());
    // Expired means failed for good.
    assert_eq!(
        update(
            &mut b,
            "alice@x",
            None,
            None,
            "a10",
            DeliveryState::Delivered,
            20
        ),
        0
    );
    let states: Vec<(String, DeliveryState)> = all_of(&mut b, "alice@x")
        .into_iter()
        .map(|r| (r.message_id, r.state))
        .collect();
    let expect = [
        ("a20", DeliveryState::Failed),
        ("a10", DeliveryState::Failed),
        ("never", DeliveryState::Pending),
        ("sent5", DeliveryState::Pending),
        ("delivered5", DeliveryState::Delivered),
        ("a16", DeliveryState::Failed),
    ]
    .map(|(id, s)| (id.to_owned(), s));
    assert_eq!(states, expect);
}

/// History filters combine; `limit` keeps the newest, returned oldest first.
pub(crate) fn history_filters<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    let rec = |dir, peer: &str, conv: &str, id: &str, at| {
        let mut r = record("alice@x", dir, peer, id, at);
        r.conversation_id = conv.to_owned();
        r
    };
    append(&mut b, rec(Direction::Sent, "bob@x", "c1", "h1", 100));
    append(&mut b, rec(Direction::Received, "bob@x", "c1", "h2", 200));
    append(&mut b, rec(Direction::Sent, "carol@x", "c2", "h3", 300));
    append(&mut b, rec(Direction::Received, "bob@x", "c3", "h4", 400));
    append(&mut b, rec(Direction::Received, "carol@x", "c2", "h5", 500));
    append(
        &mut b,
        record("bob@x", Direction::Received, "alice@x", "h1", 100),
    );

    let q = |f: &dyn Fn(&mut HistoryQuery)| {
        let mut query = HistoryQuery {
            owner: "alice@x".to_owned(),
            limit: 100,
            ..HistoryQuery::default()
        };
        f(&mut query);
        query
    };
    let mut run = |query| ids(&history(&mut b, query)).join(" ");

    assert_eq!(run(q(&|_| {})), "h1 h2 h3 h4 h5");
    assert_eq!(run(q(&|q| q.with = Some("bob@x".to_owned()))), "h1 h2 h4");
    assert_eq!(
        run(q(&|q| q.conversation_id = Some("c2".to_owned()))),
        "h3 h5"
    );
    assert_eq!(run(q(&|q| q.since_ms = Some(300))), "h3 h4 h5");
    assert_eq!(run(q(&|q| q.until_ms = Some(300))), "h1 h2");
    assert_eq!(
        run(q(&|q| {
            q.since_ms = Some(200);
            q.until_ms = Some(500);
        })),
        "h2 h3 h4"
    );
    assert_eq!(run(q(&|q| q.limit = 2)), "h4 h5");
    assert_eq!(
        run(q(&|q| {
            q.with = Some("bob@x".to_owned());
            q.limit = 2;
        })),
        "h2 h4"
    );
    assert_eq!(
        run(q(&|q| {
            q.with = Some("bob@x".to_owned());
            q.conversation_id = Some("c1".to_owned());
            q.since_ms = Some(150);
        })),
        "h2"
    );
    assert_eq!(run(q(&|q| q.with = Some("dave@x".to_owned()))), "");
    assert_eq!(run(q(&|q| q.since_ms = Some(u64::MAX))), "");
    assert_eq!(run(q(&|q| q.until_ms = Some(u64::MAX))), "h1 h2 h3 h4 h5");
    assert_eq!(run(q(&|q| q.until_ms = Some(0))), "");
    assert_eq!(run(q(&|q| q.owner = "bob@x".to_owned())), "h1");
    assert_eq!(run(q(&|q| q.owner = "nobody@x".to_owned())), "");
}

/// Bindings: save inserts or replaces, remove deletes, load skips expired ones.
pub(crate) fn bindings<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    let mut phone = binding("alice@x", "phone", 1_000);
    phone.path = vec!["<sip:p1.x;lr>".to_owned(), "<sip:p2.x;lr;ob>".to_owned()];
    let laptop = binding("alice@x", "laptop", 2_000);
    let old = binding("bob@x", "desk", 500);
    for r in [&phone, &laptop, &old] {
        done(&mut b, StoreOp::SaveBinding(r.clone()));
    }
    // Ordered by (aor, key); expired at or before now are left out.
    assert_eq!(
        load_bindings(&mut b, 499),
        [laptop.clone(), phone.clone(), old.clone()]
    );
    assert_eq!(load_bindings(&mut b, 500), [laptop.clone(), phone.clone()]);
    assert_eq!(load_bindings(&mut b, 1_000), std::slice::from_ref(&laptop));

    // Save replaces by (aor, key).
    let mut moved = phone;
    moved.contact = "<sip:phone@198.51.100.7:5070>".to_owned();
    moved.destination = "tcp:198.51.100.7:5070".to_owned();
    moved.path = Vec::new();
    moved.expires_at_ms = 3_000;
    done(&mut b, StoreOp::SaveBinding(moved.clone()));
    assert_eq!(load_bindings(&mut b, 1_500), [laptop, moved.clone()]);

    // Remove, and removing what is not there is fine too.
    let remove = |aor: &str, key: &str| StoreOp::RemoveBinding {
        aor: aor.to_owned(),
        key: key.to_owned(),
    };
    done(&mut b, remove("alice@x", "laptop"));
    done(&mut b, remove("alice@x", "laptop"));
    done(&mut b, remove("carol@x", "phone"));
    assert_eq!(load_bindings(&mut b, 0), [moved, old]);
}

/// A batch whose commit fails answers every operation with a backend error, hands out no
/// receipt and applies nothing; the next batch works again.
pub(crate) fn failed_commit_applies_nothing<B: Backend>(
    make: impl Fn() -> B,
    break_next: impl Fn(&mut B),
) {
    let mut b = make();
    let seed = record("alice@x", Direction::Received, "bob@x", "seed", 1);
    append(&mut b, seed.clone());
    let batch = || {
        vec![
            (
                OpId(1),
                StoreOp::AppendMessage(record("alice@x", Direction::Received, "bob@x", "new", 2)),
            ),
            (
                OpId(2),
                StoreOp::UpdateState {
                    owner: "alice@x".to_owned(),
                    peer: None,
                    direction: None,
                    message_id: "seed".to_owned(),
                    state: DeliveryState::Delivered,
                    at_ms: 3,
                },
            ),
            (
                OpId(3),
                StoreOp::SaveBinding(binding("alice@x", "phone", 10_000)),
            ),
            (
                OpId(4),
                StoreOp::PendingDeferred {
                    owner: "alice@x".to_owned(),
                    limit: 10,
                },
            ),
            (
                OpId(5),
                StoreOp::ExpireDeferred {
                    now_ms: 5,
                    limit: 10,
                },
            ),
        ]
    };

    break_next(&mut b);
    let answers = b.execute(batch());
    assert_eq!(answers.len(), 5);
    for (expect, (id, result)) in (1..).zip(answers) {
        assert_eq!(id, OpId(expect));
        assert!(
            matches!(result, Err(OpError::Backend(_))),
            "{id}: {result:?}"
        );
    }
    assert_eq!(all_of(&mut b, "alice@x"), [seed]);
    assert!(load_bindings(&mut b, 0).is_empty());

    // The same batch again commits.
    let answers = b.execute(batch());
    assert!(answers.iter().all(|(_, r)| r.is_ok()), "{answers:?}");
    let states: Vec<DeliveryState> = all_of(&mut b, "alice@x").iter().map(|r| r.state).collect();
    assert_eq!(states, [DeliveryState::Delivered, DeliveryState::Pending]);
    assert_eq!(load_bindings(&mut b, 0).len(), 1);
}

/// An invalid operation is answered with [`OpError::Invalid`] and does not fail the batch.
pub(crate) fn invalid_ops_are_answered_alone<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    let good = record("alice@x", Direction::Received, "bob@x", "m1", 1);
    let mut no_owner = good.clone();
    no_owner.owner = String::new();
    let mut comma = good.clone();
    comma.message_id = "m2".to_owned();
    comma.disposition = vec!["display,negative-delivery".to_owned()];
    let mut too_late = good.clone();
    too_late.message_id = "m3".to_owned();
    too_late.created_at_ms = crate::MAX_TIME_MS + 1;
    let mut bad_path = binding("alice@x", "phone", 10);
    bad_path.path = vec!["<sip:p1;lr>\r\n".to_owned()];
    let answers = b.execute(vec![
        (OpId(1), StoreOp::AppendMessage(no_owner)),
        (OpId(2), StoreOp::AppendMessage(good.clone())),
        (OpId(3), StoreOp::AppendMessage(comma)),
        (OpId(4), StoreOp::AppendMessage(too_late)),
        (
            OpId(5),
            StoreOp::History(HistoryQuery {
                owner: "alice@x".to_owned(),
                limit: 0,
                ..HistoryQuery::default()
            }),
        ),
        (OpId(6), StoreOp::SaveBinding(bad_path)),
        (
            OpId(7),
            StoreOp::PendingDeferred {
                owner: String::new(),
                limit: 1,
            },
        ),
        (
            OpId(8),
            StoreOp::ExpireDeferred {
                now_ms: 0,
                limit: 0,
            },
        ),
        (
            OpId(9),
            StoreOp::RemoveBinding {
                aor: "alice@x".to_owned(),
                key: String::new(),
            },
        ),
        (
            OpId(10),
            StoreOp::UpdateState {
                owner: "alice@x".to_owned(),
                peer: None,
                direction: None,
                message_id: String::new(),
                state: DeliveryState::Delivered,
                at_ms: 2,
            },
        ),
        (OpId(11), StoreOp::LoadBindings { now_ms: 0 }),
    ]);
    let verdicts: Vec<(u64, &str)> = answers
        .iter()
        .map(|(id, r)| {
            let v = match r {
                Ok(_) => "ok",
                Err(OpError::Invalid(_)) => "invalid",
                Err(_) => "backend",
            };
            (id.0, v)
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (1, "invalid"),
            (2, "ok"),
            (3, "invalid"),
            (4, "invalid"),
            (5, "invalid"),
            (6, "invalid"),
            (7, "invalid"),
            (8, "invalid"),
            (9, "invalid"),
            (10, "invalid"),
            (11, "ok"),
        ]
    );
    assert_eq!(all_of(&mut b, "alice@x"), [good]);
    // A batch of invalid operations only.
    let answers = b.execute(vec![(
        OpId(12),
        StoreOp::ExpireDeferred {
            now_ms: 0,
            limit: 0,
        },
    )]);
    assert!(matches!(
        answers[..],
        [(OpId(12), Err(OpError::Invalid(_)))]
    ));
}

/// [`StoreOp::AppendDeferred`]: the recipient's queue, by count, by bytes and per sender; a
/// refused record leaves nothing behind, a duplicate is answered whatever the quota, and
/// delivered records free their room.
pub(crate) fn deferred_quota<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    let quota = DeferredQuota {
        max_messages: 3,
        max_bytes: 100,
        max_per_sender: 2,
    };
    let deferred = |peer: &str, id: &str, len: usize| {
        let mut r = record("bob@x", Direction::Received, peer, id, 1);
        r.body = vec![b'x'; len];
        StoreOp::AppendDeferred { record: r, quota }
    };
    let refused = |r: Result<Outcome, OpError>| match r {
        Err(OpError::QuotaExceeded(q)) => q,
        other => panic!("expected a quota refusal, got {other:?}"),
    };
    assert!(matches!(
        one(&mut b, deferred("alice@x", "a1", 10)),
        Ok(Outcome::Appended {
            duplicate: false,
            ..
        })
    ));
    assert!(one(&mut b, deferred("alice@x", "a2", 10)).is_ok());
    assert_eq!(
        refused(one(&mut b, deferred("alice@x", "a3", 10))),
        QuotaExceeded::SenderMessages
    );
    // A resend of a queued message is a duplicate, not a refusal.
    assert!(matches!(
        one(&mut b, deferred("alice@x", "a2", 10)),
        Ok(Outcome::Appended {
            duplicate: true,
            ..
        })
    ));
    assert_eq!(
        refused(one(&mut b, deferred("carol@x", "c1", 81))),
        QuotaExceeded::RecipientBytes
    );
    assert_eq!(
        refused(one(&mut b, deferred("carol@x", "c2", 101))),
        QuotaExceeded::MessageTooLarge
    );
    assert!(one(&mut b, deferred("carol@x", "c3", 80)).is_ok());
    assert_eq!(
        refused(one(&mut b, deferred("dave@x", "d1", 0))),
        QuotaExceeded::RecipientMessages
    );
    // Another recipient has a queue of its own.
    let mut other = record("erin@x", Direction::Received, "alice@x", "e1", 1);
    other.body = vec![b'y'; 50];
    assert!(
        one(
            &mut b,
            StoreOp::AppendDeferred {
                record: other,
                quota
            }
        )
        .is_ok()
    );
    // A refused operation takes no part, the others of its batch commit.
    let answers = b.execute(vec![
        (OpId(1), deferred("dave@x", "d2", 1)),
        (
            OpId(2),
            StoreOp::AppendMessage(record("bob@x", Direction::Sent, "x@x", "s1", 1)),
        ),
    ]);
    assert!(matches!(answers[0].1, Err(OpError::QuotaExceeded(_))));
    assert!(answers[1].1.is_ok());
    let pending = |b: &mut B| match one(
        b,
        StoreOp::PendingDeferred {
            owner: "bob@x".into(),
            limit: 100,
        },
    ) {
        Ok(Outcome::Messages(r)) => r.iter().map(|r| r.message_id.clone()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(pending(&mut b), ["a1", "a2", "c3"]);
    // Delivered, a message leaves the queue and frees its room.
    update(
        &mut b,
        "bob@x",
        Some("alice@x"),
        Some(Direction::Received),
        "a1",
        DeliveryState::Delivered,
        2,
    );
    assert!(one(&mut b, deferred("alice@x", "a4", 10)).is_ok());
    // Nonsense is invalid: a sent record, a quota of zero.
    let mut sent = record("bob@x", Direction::Sent, "alice@x", "z1", 1);
    sent.body = vec![1];
    assert!(matches!(
        one(
            &mut b,
            StoreOp::AppendDeferred {
                record: sent,
                quota
            }
        ),
        Err(OpError::Invalid(_))
    ));
    let zero = DeferredQuota {
        max_messages: 0,
        ..quota
    };
    let r = record("bob@x", Direction::Received, "alice@x", "z2", 1);
    assert!(matches!(
        one(
            &mut b,
            StoreOp::AppendDeferred {
                record: r,
                quota: zero
            }
        ),
        Err(OpError::Invalid(_))
    ));
}

/// A media object is written in pieces (in any order), completed only at its announced size
/// together with the record that links it, refused (and deleted) at any other size, and an
/// interrupted one is dropped; ids that could escape a directory are invalid.
pub(crate) fn media_objects<B: Backend>(make: impl Fn() -> B) {
    let mut b = make();
    let write = |b: &mut B, id: &str, offset: u64, data: &[u8]| {
        done(
            b,
            StoreOp::WriteMedia {
                id: id.to_owned(),
                offset,
                data: data.to_vec(),
            },
        );
    };
    write(&mut b, "file-1", 5, b"world");
    write(&mut b, "file-1", 0, b"hello");
    let mut linked = record("bob@x", Direction::Received, "alice@x", "f1", 10);
    linked.content_type = "application/vnd.cpm.file+json".to_owned();
    match one(
        &mut b,
        StoreOp::FinishMedia {
            id: "file-1".to_owned(),
            size: 10,
            record: Some(linked),
        },
    ) {
        Ok(Outcome::Appended {
            duplicate: false, ..
        }) => {}
        other => panic!("the object completes with its record: {other:?}"),
    }
    assert_eq!(ids(&all_of(&mut b, "bob@x")), ["f1"]);
    // Short of its size: refused, nothing linked.
    write(&mut b, "file-2", 0, b"abc");
    assert!(matches!(
        one(
            &mut b,
            StoreOp::FinishMedia {
                id: "file-2".to_owned(),
                size: 4,
                record: Some(record("bob@x", Direction::Received, "alice@x", "f2", 11)),
            }
        ),
        Err(OpError::Invalid(_))
    ));
    assert_eq!(ids(&all_of(&mut b, "bob@x")), ["f1"]);
    // An interrupted transfer is dropped; finishing it afterwards finds nothing.
    write(&mut b, "file-3", 0, b"abc");
    done(
        &mut b,
        StoreOp::DropMedia {
            id: "file-3".to_owned(),
        },
    );
    assert!(
        one(
            &mut b,
            StoreOp::FinishMedia {
                id: "file-3".to_owned(),
                size: 3,
                record: None
            }
        )
        .is_err()
    );
    for id in ["", "../x", "a/b", "a.part", &"x".repeat(65)] {
        assert!(
            matches!(
                one(
                    &mut b,
                    StoreOp::WriteMedia {
                        id: id.to_owned(),
                        offset: 0,
                        data: b"x".to_vec()
                    }
                ),
                Err(OpError::Invalid(_))
            ),
            "{id:?}"
        );
    }
}
