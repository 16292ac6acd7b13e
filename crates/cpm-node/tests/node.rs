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
        let now = Instant::now();
        let mut core = ProxyConfig::new("localhost", NODE.parse().unwrap());
        core.trusted_peers
            .push(TrustedPeer::parse("127.0.0.9").unwrap());
        let mut cfg = NodeConfig::new(core);
        cfg.trace_hops = true;
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
