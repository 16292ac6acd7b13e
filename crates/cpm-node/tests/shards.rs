//! A node of two shards on virtual time, driven the way `cpm serve --threads 2` drives it:
//! network input dispatched by the node's [`Router`], cross-shard hops carried as values,
//! store receipts routed back by their ids. A user's bindings live on the user's shard only,
//! and a message or a call between users of different shards still arrives, with one
//! Record-Route, and its answer finds the way back.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use cpm_node::{Input, Node, NodeConfig, Output, Router, Shards, shard_of_op};
use cpm_proxy::{Input as CoreInput, ProxyConfig, TrustedPeer, UserRecord};
use cpm_sip::{HeaderName, Message, Request, StatusCode};
use cpm_sip_core::{Peer, Transmit};
use cpm_store::{Backend, Direction, MemoryStore};

const UNIX_MS: u64 = 1_795_622_400_000;
const NODE: &str = "127.0.0.1:5060";
/// A trusted edge proxy in front of the users: it asserts who sends (P-Asserted-Identity).
const EDGE: &str = "127.0.0.9:5060";
const DEVICE: &str = "127.0.0.1:5072";

struct Shards2 {
    nodes: Vec<Node>,
    router: Router,
    now: Instant,
    store: MemoryStore,
    /// What each shard sent to the network.
    sent: Vec<(u16, Transmit)>,
    /// Messages that crossed from one shard to another.
    crossings: usize,
}

impl Shards2 {
    /// Two shards that trust the edge. `dispatch_trusts_edge: false` dispatches as if the
    /// edge were an ordinary client (by sender: the path of a user's own registered
    /// device), so the crossing between shards is exercised; `true` is the real router.
    fn new(dispatch_trusts_edge: bool) -> Self {
        let now = Instant::now();
        let mut core = ProxyConfig::new("localhost", NODE.parse().unwrap());
        let untrusted = core.clone();
        core.trusted_peers
            .push(TrustedPeer::parse("127.0.0.9").unwrap());
        let router = Router::new(
            if dispatch_trusts_edge {
                &core
            } else {
                &untrusted
            },
            2,
        );
        let nodes = (0..2)
            .map(|index| {
                let mut cfg = NodeConfig::new(core.clone());
                cfg.shards = Shards { index, count: 2 };
                Node::new(cfg, now, UNIX_MS)
            })
            .collect();
        Self {
            nodes,
            router,
            now,
            store: MemoryStore::new(),
            sent: Vec::new(),
            crossings: 0,
        }
    }

    /// Carries every output until nothing moves: hops to their shard, store operations
    /// committed at once and their receipts to the shard that asked.
    fn drain(&mut self) {
        loop {
            let mut hops = Vec::new();
            let mut ops = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while let Some(out) = node.poll_output() {
                    match out {
                        Output::Transmit(t) => self.sent.push((i as u16, t)),
                        Output::Close(_) | Output::Event(_) | Output::Msrp(_) => {}
                        Output::Store { id, op } => ops.push((id, op)),
                        // Every user exists (the edge is trusted: no digest to check).
                        Output::LookupUser {
                            query,
                            username,
                            realm,
                        } => {
                            let aor = if username.contains('@') {
                                username
                            } else {
                                format!("{username}@{realm}")
                            };
                            let user = Some(UserRecord {
                                aor,
                                ha1_md5: String::new(),
                                ha1_sha256: String::new(),
                            });
                            node.handle_input(
                                self.now,
                                Input::Core(CoreInput::User { query, user }),
                            );
                        }
                        Output::Shard(hop) => {
                            assert_ne!(usize::from(hop.shard), i, "a hop to its own shard");
                            hops.push(hop);
                        }
                    }
                }
            }
            if hops.is_empty() && ops.is_empty() {
                return;
            }
            self.crossings += hops.len();
            for hop in hops {
                let to = usize::from(hop.shard);
                self.nodes[to].handle_input(self.now, Input::Shard(hop));
            }
            if !ops.is_empty() {
                for (id, result) in self.store.execute(ops) {
                    let shard = usize::from(shard_of_op(id));
                    self.nodes[shard].handle_input(self.now, Input::Stored { id, result });
                }
            }
        }
    }

    /// Delivers a message from the network to the shard the router picks; returns it.
    fn receive(&mut self, from: &str, message: Message) -> u16 {
        let source = from.parse().unwrap();
        let shard = self.router.shard_of(&message, source);
        let peer = Peer::udp(source);
        self.nodes[usize::from(shard)]
            .handle_input(self.now, Input::Core(CoreInput::Message { peer, message }));
        self.drain();
        shard
    }

    fn take_sent(&mut self) -> Vec<(u16, String, Message)> {
        std::mem::take(&mut self.sent)
            .into_iter()
            .map(|(s, t)| {
                (
                    s,
                    t.peer.addr.to_string(),
                    Message::parse(t.payload).unwrap(),
                )
            })
            .collect()
    }

    fn registrations(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.stats().registrations).collect()
    }
}

fn parse(raw: &str) -> Message {
    Message::parse(raw.replace('\n', "\r\n").into_bytes()).unwrap()
}

/// Two users of the node on different shards.
fn users_on_two_shards() -> (String, String) {
    let shards = Shards { index: 0, count: 2 };
    let a = "alice".to_owned();
    let b = (0..)
        .map(|i| format!("bob{i}"))
        .find(|b| shards.of_user(b) != shards.of_user(&a))
        .unwrap();
    (a, b)
}

fn register(user: &str, n: u32) -> Message {
    parse(&format!(
        "REGISTER sip:localhost SIP/2.0
Via: SIP/2.0/UDP {EDGE};branch=z9hG4bKreg-{n}
Max-Forwards: 70
From: <sip:{user}@localhost>;tag=r{n}
To: <sip:{user}@localhost>
Call-ID: reg-{n}
CSeq: 1 REGISTER
Contact: <sip:{user}@{DEVICE}>
Expires: 3600
Content-Length: 0

"
    ))
}

fn request(method: &str, from: &str, to: &str, n: u32, cpm: bool, body: &str) -> Message {
    let service = if cpm {
        "P-Asserted-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\n"
    } else {
        ""
    };
    let contact = if method == "INVITE" {
        format!("Contact: <sip:{from}@{EDGE}>\n")
    } else {
        String::new()
    };
    parse(&format!(
        "{method} sip:{to}@localhost SIP/2.0
Via: SIP/2.0/UDP {EDGE};branch=z9hG4bKedge-{n}
Max-Forwards: 70
From: <sip:{from}@localhost>;tag=f{n}
To: <sip:{to}@localhost>
Call-ID: call-{n}
CSeq: 1 {method}
P-Asserted-Identity: <sip:{from}@localhost>
{service}{contact}Content-Type: text/plain
Content-Length: {}

{body}",
        body.len()
    ))
}

fn ok(to: &Request) -> Message {
    let mut r = cpm_sip_core::transaction::response_to(to, StatusCode::OK, Some("dev1"));
    r.reason = "OK".into();
    if to.method == cpm_sip::Method::Invite {
        r.headers.push(cpm_sip::Header::new(
            HeaderName::Contact,
            &format!("<sip:dev@{DEVICE}>"),
        ));
    }
    Message::Response(r)
}

#[test]
fn a_users_registration_lives_on_the_users_shard_only() {
    let (alice, bob) = users_on_two_shards();
    let mut n = Shards2::new(false);
    let shard = n.receive(EDGE, register(&bob, 1));
    assert_eq!(shard, n.router.shard_of_aor(&format!("{bob}@localhost")));
    let mut expect = vec![0, 0];
    expect[usize::from(shard)] = 1;
    assert_eq!(n.registrations(), expect);
    let ok: Vec<_> = n.take_sent();
    assert!(
        ok.iter().any(|(s, a, m)| *s == shard
            && a == EDGE
            && matches!(m, Message::Response(r) if r.status == StatusCode::OK)),
        "{ok:?}"
    );
    n.receive(EDGE, register(&alice, 2));
    assert_eq!(n.registrations(), vec![1, 1]);
    // Stored, each binding once.
    assert_eq!(n.store.bindings().count(), 2);
}

#[test]
fn a_pager_message_between_shards_is_stored_on_both_sides_and_answered_once_committed() {
    let (alice, bob) = users_on_two_shards();
    let mut n = Shards2::new(false);
    n.receive(EDGE, register(&bob, 1));
    n.take_sent();
    n.crossings = 0;
    let from = n.receive(EDGE, request("MESSAGE", &alice, &bob, 10, true, "hello"));
    let bob_shard = n.router.shard_of_aor(&format!("{bob}@localhost"));
    assert_eq!(from, n.router.shard_of_aor(&format!("{alice}@localhost")));
    assert_ne!(from, bob_shard);
    // Core A → PF A (originating) → core A → core B → PF B (terminating) → core B → device.
    assert!(n.crossings >= 1, "the terminating part crossed");
    let sent = n.take_sent();
    let to_device: Vec<_> = sent
        .iter()
        .filter_map(|(s, a, m)| match m {
            Message::Request(r) if a == DEVICE => Some((*s, r.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(to_device.len(), 1, "{sent:?}");
    assert_eq!(
        to_device[0].0, bob_shard,
        "bob's shard delivers to bob's device"
    );
    let delivered = &to_device[0].1;
    assert_eq!(delivered.body.as_ref(), b"hello");
    // The device's answer goes to the shard named in the top Via, then back across.
    assert_eq!(n.receive(DEVICE, ok(delivered)), bob_shard);
    let answers = n.take_sent();
    let to_edge: Vec<_> = answers
        .iter()
        .filter(|(_, a, m)| a == EDGE && matches!(m, Message::Response(_)))
        .collect();
    assert_eq!(to_edge.len(), 1, "{answers:?}");
    assert_eq!(to_edge[0].0, from, "the sender's shard answers the sender");
    assert!(matches!(&to_edge[0].2, Message::Response(r) if r.status == StatusCode::OK));
    // Both histories hold the message, once each.
    let records = n.store.messages();
    let count = |d: Direction| records.iter().filter(|r| r.direction == d).count();
    assert_eq!(
        (count(Direction::Sent), count(Direction::Received)),
        (1, 1),
        "{records:?}"
    );
    // Counters add up over the shards.
    let mut total = n.nodes[0].stats();
    total += n.nodes[1].stats();
    let pf = total.participating.unwrap();
    assert_eq!(
        (pf.messages_sent, pf.messages_received, pf.delivered),
        (1, 1, 1)
    );
}

#[test]
fn a_call_between_shards_is_record_routed_once_and_its_answer_goes_back() {
    let (alice, bob) = users_on_two_shards();
    let mut n = Shards2::new(false);
    n.receive(EDGE, register(&bob, 1));
    n.take_sent();
    let from = n.receive(EDGE, request("INVITE", &alice, &bob, 20, false, "v=0\n"));
    let sent = n.take_sent();
    let invite = sent
        .iter()
        .find_map(|(_, a, m)| match m {
            Message::Request(r) if a == DEVICE => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the INVITE reaches bob's device: {sent:?}"));
    let rr: Vec<_> = invite.headers.get_all(&HeaderName::RecordRoute).collect();
    assert_eq!(rr.len(), 1, "one Record-Route for the node: {rr:?}");
    n.receive(DEVICE, ok(&invite));
    let answers = n.take_sent();
    assert!(
        answers.iter().any(|(s, a, m)| *s == from
            && a == EDGE
            && matches!(m, Message::Response(r) if r.status == StatusCode::OK)),
        "200 to the caller from the caller's shard: {answers:?}"
    );
}

#[test]
fn behind_a_trusted_edge_a_message_stays_on_the_targets_shard() {
    let (alice, bob) = users_on_two_shards();
    let mut n = Shards2::new(true);
    n.receive(EDGE, register(&bob, 1));
    n.take_sent();
    n.crossings = 0;
    let bob_shard = n.router.shard_of_aor(&format!("{bob}@localhost"));
    // The edge asserts alice: both halves run on bob's shard, nothing crosses.
    let shard = n.receive(EDGE, request("MESSAGE", &alice, &bob, 30, true, "hi"));
    assert_eq!(shard, bob_shard);
    let sent = n.take_sent();
    let delivered = sent
        .iter()
        .find_map(|(s, a, m)| match m {
            Message::Request(r) if a == DEVICE => Some((*s, r.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("delivered: {sent:?}"));
    assert_eq!(delivered.0, bob_shard);
    n.receive(DEVICE, ok(&delivered.1));
    assert!(
        n.take_sent().iter().any(|(s, a, m)| *s == bob_shard
            && a == EDGE
            && matches!(m, Message::Response(r) if r.status == StatusCode::OK)),
        "200 to the edge"
    );
    assert_eq!(n.crossings, 0, "nothing crossed between the shards");
    assert_eq!(n.store.messages().len(), 2, "both histories");
}
