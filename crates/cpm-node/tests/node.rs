//! The composed node on virtual time: a pager message crosses core → PF → core inside one
//! `Node` as values, nothing is sent to a made-up address, and the sender's 2xx waits for
//! the store.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use cpm_node::{Event, Input, Node, NodeConfig, Output};
use cpm_proxy::{Input as CoreInput, ProxyConfig, TrustedPeer};
use cpm_sip::{Message, StatusCode};
use cpm_sip_core::{Function, Peer, Transmit};
use cpm_store::{Backend, BindingRecord, MemoryStore, OpId, StoreOp};

const UNIX_MS: u64 = 1_795_622_400_000;
const NODE: &str = "127.0.0.1:5060";
const PEER_CORE: &str = "127.0.0.9:5060";
const BOB: &str = "127.0.0.1:5072";

struct Harness {
    node: Node,
    now: Instant,
    store: MemoryStore,
    /// Store operations not answered yet (the test decides when they commit).
    held: Vec<(OpId, StoreOp)>,
    sent: Vec<Transmit>,
    hops: Vec<(Function, Function, String)>,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// A node whose configuration `change` adjusts first.
    fn with(change: impl FnOnce(&mut NodeConfig)) -> Self {
        let now = Instant::now();
        let mut core = ProxyConfig::new("localhost", NODE.parse().unwrap());
        core.trusted_peers
            .push(TrustedPeer::parse("127.0.0.9").unwrap());
        let mut cfg = NodeConfig::new(core);
        cfg.trace_hops = true;
        change(&mut cfg);
        let mut node = Node::new(cfg, now, UNIX_MS);
        let bob = BindingRecord {
            aor: "bob@localhost".into(),
            key: "<sip:bob@127.0.0.1:5072>".into(),
            contact: "<sip:bob@127.0.0.1:5072>".into(),
            destination: format!("udp:{BOB}"),
            path: Vec::new(),
            expires_at_ms: UNIX_MS + 3_600_000,
        };
        assert_eq!(node.restore_bindings(now, UNIX_MS, &[bob]), 1);
        let mut h = Self {
            node,
            now,
            store: MemoryStore::new(),
            held: Vec::new(),
            sent: Vec::new(),
            hops: Vec::new(),
        };
        h.drain();
        h.commit();
        h
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit(t) => self.sent.push(t),
                Output::Close(_) => {}
                Output::Store { id, op } => self.held.push((id, op)),
                Output::LookupUser { query, .. } => {
                    self.node
                        .handle_input(self.now, Input::Core(CoreInput::User { query, user: None }));
                }
                Output::Event(Event::Hop { from, to, message }) => {
                    let line = match *message {
                        Message::Request(r) => r.method.to_string(),
                        Message::Response(r) => r.status.as_u16().to_string(),
                    };
                    self.hops.push((from, to, line));
                }
                Output::Event(e) => panic!("unexpected event {e:?}"),
                Output::Shard(h) => panic!("one shard here, yet {h:?}"),
                Output::Msrp(c) => panic!("no sessions here, yet {c:?}"),
            }
        }
    }

    /// Commits what the node asked the store for, and hands the outcomes back.
    fn commit(&mut self) {
        while !self.held.is_empty() {
            let batch = std::mem::take(&mut self.held);
            for (id, result) in self.store.execute(batch) {
                self.node
                    .handle_input(self.now, Input::Stored { id, result });
            }
            self.drain();
        }
    }

    fn receive(&mut self, from: &str, raw: &str) {
        let message = Message::parse(raw.replace('\n', "\r\n").into_bytes()).unwrap();
        self.receive_message(from, message);
    }

    fn receive_message(&mut self, from: &str, message: Message) {
        let peer = Peer::udp(from.parse().unwrap());
        self.node
            .handle_input(self.now, Input::Core(CoreInput::Message { peer, message }));
        self.drain();
    }

    fn take_sent(&mut self) -> Vec<(String, Message)> {
        std::mem::take(&mut self.sent)
            .into_iter()
            .map(|t| (t.peer.addr.to_string(), Message::parse(t.payload).unwrap()))
            .collect()
    }
}

const MESSAGE: &str = "MESSAGE sip:bob@localhost SIP/2.0
Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKpeer1
Max-Forwards: 70
From: <sip:carol@peer.test>;tag=c1
To: <sip:bob@localhost>
Call-ID: peer-call-1
CSeq: 1 MESSAGE
P-Asserted-Identity: <sip:carol@peer.test>
P-Asserted-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg
Content-Type: text/plain
Content-Length: 5

hello";

#[test]
fn a_pager_message_crosses_the_node_as_values_and_is_acknowledged_after_its_commit() {
    let mut h = Harness::new();
    // The restore told the node's PF, inside the node, that bob registered.
    assert!(
        h.hops
            .contains(&(Function::Core, Function::Participating, "REGISTER".into())),
        "{:?}",
        h.hops
    );
    h.hops.clear();
    h.take_sent();

    h.receive(PEER_CORE, MESSAGE);
    // core → terminating PF → core, as values; then out to bob's device.
    assert_eq!(
        h.hops,
        vec![
            (Function::Core, Function::Participating, "MESSAGE".into()),
            (Function::Participating, Function::Core, "MESSAGE".into()),
        ]
    );
    let sent = h.take_sent();
    let to_bob: Vec<_> = sent.iter().filter(|(a, _)| a == BOB).collect();
    assert_eq!(to_bob.len(), 1, "{sent:?}");
    assert!(
        sent.iter().all(|(a, _)| a == BOB || a == PEER_CORE),
        "only real peers get bytes: {sent:?}"
    );
    let Message::Request(delivered) = &to_bob[0].1 else {
        panic!("a request to bob")
    };

    // bob's device accepts; the PF stores the outcome before the sender hears 200.
    let mut ok = cpm_sip_core::transaction::response_to(delivered, StatusCode::OK, Some("b1"));
    ok.reason = "OK".into();
    h.receive_message(BOB, Message::Response(ok));
    let before: Vec<_> = h.take_sent();
    assert!(
        !before
            .iter()
            .any(|(a, m)| a == PEER_CORE
                && matches!(m, Message::Response(r) if r.status.is_success())),
        "no 2xx before the store committed: {before:?}"
    );
    assert!(
        !h.held.is_empty(),
        "the PF asked the store to keep the message"
    );
    h.commit();
    let after = h.take_sent();
    assert!(
        after.iter().any(|(a, m)| a == PEER_CORE
            && matches!(m, Message::Response(r) if r.status == StatusCode::OK)),
        "200 once committed: {after:?}"
    );
    assert_eq!(h.node.stats().participating.unwrap().delivered, 1);
}

impl Harness {
    /// Delivers `raw` as the network would, after it waited `waited` in the driver's queue.
    fn receive_waited(&mut self, from: &str, raw: &str, waited: std::time::Duration) {
        let message = Message::parse(raw.replace('\n', "\r\n").into_bytes()).unwrap();
        let peer = Peer::udp(from.parse().unwrap());
        let received = self.now - waited;
        self.node.handle_input(
            self.now,
            Input::Network {
                received,
                input: CoreInput::Message { peer, message },
            },
        );
        self.drain();
    }

    /// What was sent since the last call: the statuses (with Retry-After) sent to the peer
    /// core, and how many requests went to bob's device; bob's device answers each with 200.
    fn exchange(&mut self) -> (Vec<(u16, Option<String>)>, usize) {
        let mut statuses = Vec::new();
        let mut to_bob = Vec::new();
        for (addr, m) in self.take_sent() {
            match m {
                Message::Response(r) if addr == PEER_CORE => statuses.push((
                    r.status.as_u16(),
                    r.headers
                        .get(&cpm_sip::HeaderName::RetryAfter)
                        .and_then(|h| h.value().ok().map(|v| v.to_string())),
                )),
                Message::Request(r) if addr == BOB => to_bob.push(r),
                _ => {}
            }
        }
        let n = to_bob.len();
        for r in to_bob {
            let mut ok = cpm_sip_core::transaction::response_to(&r, StatusCode::OK, Some("b1"));
            ok.reason = "OK".into();
            self.receive_message(BOB, Message::Response(ok));
        }
        (statuses, n)
    }
}

/// The peer core's MESSAGE number `n` (its own branch and Call-ID).
fn message(n: u32) -> String {
    MESSAGE
        .replace("branch=z9hG4bKpeer1", &format!("branch=z9hG4bKpeer-{n}"))
        .replace("Call-ID: peer-call-1", &format!("Call-ID: peer-call-{n}"))
}

fn refusals(statuses: &[(u16, Option<String>)]) -> usize {
    statuses.iter().filter(|(s, _)| *s == 503).count()
}

#[test]
fn an_overloaded_node_refuses_new_requests_with_503_and_keeps_serving_what_it_accepted() {
    use std::time::Duration;
    let ms = Duration::from_millis;
    let mut h = Harness::new();
    h.take_sent();
    // Message 1 arrives before the overload and is delivered to bob, who has not answered.
    h.receive_waited(PEER_CORE, &message(1), ms(0));
    assert_eq!(
        h.take_sent().iter().filter(|(a, _)| a == BOB).count(),
        1,
        "message 1 is with bob's device"
    );

    // A standing queue: every message waits 50 ms, for longer than the 100 ms interval.
    // The ones inside the first interval are still served.
    let mut served = 0;
    for n in 2..=12 {
        h.now += ms(10);
        h.receive_waited(PEER_CORE, &message(n), ms(50));
        served += h.exchange().1;
    }
    assert!(
        served >= 9,
        "the burst inside the interval is served ({served})"
    );
    let load = h.node.stats().load;
    assert!(load.shedding, "{load:?}");
    h.commit();
    h.exchange();
    let refused = h.node.stats().load.refused;
    let transactions = h.node.stats().transactions;

    // A new request that waited: 503 with Retry-After at once, no transaction, no delivery.
    h.now += ms(10);
    h.receive_waited(PEER_CORE, &message(100), ms(50));
    assert!(h.held.is_empty(), "no store work for a refused request");
    let (answers, delivered) = h.exchange();
    assert_eq!((answers.len(), delivered), (1, 0), "{answers:?}");
    assert_eq!(answers[0].0, 503);
    let secs: u32 = answers[0].1.as_deref().unwrap().parse().unwrap();
    assert!((1..=2).contains(&secs), "Retry-After {secs}");
    assert_eq!(h.node.stats().load.refused, refused + 1);
    assert_eq!(h.node.stats().transactions, transactions);

    // The attack: a To tag added to a new request to pass as in-dialog. Without our
    // Record-Route token it is new work like any other, and refused.
    h.now += ms(10);
    let forged = message(102).replace("To: <sip:bob@localhost>", "To: <sip:bob@localhost>;tag=x");
    h.receive_waited(PEER_CORE, &forged, ms(50));
    let (answers, delivered) = h.exchange();
    assert_eq!((refusals(&answers), delivered), (1, 0), "{answers:?}");

    // A retransmission of message 1 (accepted before the overload) is absorbed, not refused.
    h.now += ms(10);
    h.receive_waited(PEER_CORE, &message(1), ms(50));
    assert_eq!(
        refusals(&h.exchange().0),
        0,
        "accepted work is never refused"
    );
    // A request that did not wait is served even while shedding (the queue is short).
    h.now += ms(10);
    h.receive_waited(PEER_CORE, &message(101), ms(1));
    let (answers, delivered) = h.exchange();
    assert_eq!((refusals(&answers), delivered), (0, 1));

    // The load drops: after an interval of short waits the node serves everything again.
    for n in 200..=212 {
        h.now += ms(10);
        h.receive_waited(PEER_CORE, &message(n), ms(1));
        h.exchange();
    }
    assert!(!h.node.stats().load.shedding);
    h.now += ms(10);
    h.receive_waited(PEER_CORE, &message(300), ms(50));
    let (answers, delivered) = h.exchange();
    assert_eq!((refusals(&answers), delivered), (0, 1), "clean again");
    h.commit();
    assert_eq!(h.node.stats().store_in_flight, 0);
}

#[test]
fn a_slow_store_makes_the_node_refuse_new_requests_until_it_catches_up() {
    use std::time::Duration;
    let ms = Duration::from_millis;
    let mut h = Harness::new();
    h.take_sent();
    // Store operations answered 300 ms after they were asked, for longer than an interval.
    for n in 1..=6 {
        h.receive_waited(PEER_CORE, &message(n), ms(0));
        h.exchange();
        h.now += ms(300);
        h.commit();
    }
    assert!(h.node.stats().load.shedding);
    h.exchange();
    // One request per interval goes through as a probe of the store; the rest are refused.
    h.receive_waited(PEER_CORE, &message(50), ms(0));
    h.receive_waited(PEER_CORE, &message(51), ms(0));
    let (answers, delivered) = h.exchange();
    assert_eq!((refusals(&answers), delivered), (1, 1), "{answers:?}");
    // Fast commits again: the node recovers by itself.
    h.commit();
    for n in 60..=75 {
        h.now += ms(10);
        h.receive_waited(PEER_CORE, &message(n), ms(0));
        h.exchange();
        h.commit();
    }
    assert!(!h.node.stats().load.shedding);
    h.receive_waited(PEER_CORE, &message(80), ms(0));
    let (answers, delivered) = h.exchange();
    assert_eq!((refusals(&answers), delivered), (0, 1));
}

#[test]
fn a_full_store_queue_makes_the_node_refuse_new_requests_until_commits_come_back() {
    use std::time::Duration;
    let mut h = Harness::with(|cfg| cfg.core.max_store_in_flight = 3);
    h.take_sent();
    // The store answers nothing: operations pile up to the bound. No request waited, so
    // queue-delay control alone would serve them all.
    let mut n = 0;
    while h.held.len() < 3 {
        n += 1;
        assert!(n <= 10, "each message gives the store work");
        h.receive_waited(PEER_CORE, &message(n), Duration::ZERO);
        let (answers, _) = h.exchange();
        assert_eq!(refusals(&answers), 0, "below the bound: served");
    }
    assert_eq!(h.node.stats().store_in_flight, 3);
    // At the bound: a new request is refused at once, and gives the store nothing more.
    h.receive_waited(PEER_CORE, &message(50), Duration::ZERO);
    let (answers, delivered) = h.exchange();
    assert_eq!((refusals(&answers), delivered), (1, 0), "{answers:?}");
    assert_eq!(h.held.len(), 3);
    // The commits come back: the node serves again.
    h.commit();
    h.exchange();
    h.commit();
    h.receive_waited(PEER_CORE, &message(51), Duration::ZERO);
    let (answers, delivered) = h.exchange();
    assert_eq!((refusals(&answers), delivered), (0, 1), "{answers:?}");
}
