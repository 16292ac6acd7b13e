//! A CPM session through the node's terminating PF, on virtual time: the INVITE is answered
//! with the PF's own MSRP path, the media is anchored (the peer's PF and bob's device each
//! connect to the node), every message is stored before its MSRP 200, and BYE ends both legs.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cpm_msrp::{ConnCommand, ConnEvent, ConnId, Decoder, Head};
use cpm_node::{Input, Node, NodeConfig, Output};
use cpm_proxy::{Input as CoreInput, ProxyConfig, TrustedPeer};
use cpm_sdp::Sdp;
use cpm_sip::{Message, Method, StatusCode};
use cpm_sip_core::Peer;
use cpm_store::{Backend, BindingRecord, MemoryStore, OpId, StoreOp};

const UNIX_MS: u64 = 1_795_622_400_000;
const NODE: &str = "127.0.0.1:5060";
const MSRP: &str = "127.0.0.1:2855";
const PEER_CORE: &str = "127.0.0.9:5060";
const BOB: &str = "127.0.0.1:5072";
const ALICE: &str = "127.0.0.1:5071";

struct Harness {
    node: Node,
    now: Instant,
    store: MemoryStore,
    held: Vec<(OpId, StoreOp)>,
    sent: Vec<(String, Message)>,
    msrp: Vec<ConnCommand>,
    /// Connections the node opened to its own listener, both ends (the loopback).
    loops: Vec<(ConnId, ConnId)>,
    next_conn: u64,
    /// The last session `alice_to_bob` set up: the 200 alice got, the INVITE bob got.
    setup: Option<(cpm_sip::Response, cpm_sip::Request)>,
}

impl Harness {
    fn new() -> Self {
        let mut h = Self {
            node: Self::node(Instant::now()),
            now: Instant::now(),
            store: MemoryStore::new(),
            held: Vec::new(),
            sent: Vec::new(),
            msrp: Vec::new(),
            loops: Vec::new(),
            next_conn: 100,
            setup: None,
        };
        h.drain();
        h.commit();
        h.sent.clear();
        h
    }

    /// The node crashes: what it had not committed is lost, its sessions and connections
    /// with it; a new node starts on the same store.
    fn crash_and_restart(&mut self) {
        self.held.clear();
        self.msrp.clear();
        self.loops.clear();
        self.node = Self::node(self.now);
        self.drain();
        self.commit();
        self.sent.clear();
    }

    fn node(now: Instant) -> Node {
        let mut core = ProxyConfig::new("localhost", NODE.parse().unwrap());
        core.trusted_peers
            .push(TrustedPeer::parse("127.0.0.9").unwrap());
        let mut cfg = NodeConfig::new(core);
        if let Some(pf) = &mut cfg.participating {
            pf.msrp = Some(MSRP.parse().unwrap());
        }
        let mut node = Node::new(cfg, now, UNIX_MS);
        let bob = BindingRecord {
            aor: "bob@localhost".into(),
            key: "<sip:bob@127.0.0.1:5072>".into(),
            contact: "<sip:bob@127.0.0.1:5072>".into(),
            destination: format!("udp:{BOB}"),
            path: Vec::new(),
            expires_at_ms: UNIX_MS + 3_600_000,
        };
        let alice = BindingRecord {
            aor: "alice@localhost".into(),
            key: "<sip:alice@127.0.0.1:5071>".into(),
            contact: "<sip:alice@127.0.0.1:5071>".into(),
            destination: format!("udp:{ALICE}"),
            path: Vec::new(),
            expires_at_ms: UNIX_MS + 3_600_000,
        };
        node.restore_bindings(now, UNIX_MS, &[bob, alice]);
        node
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit(t) => self
                    .sent
                    .push((t.peer.addr.to_string(), Message::parse(t.payload).unwrap())),
                Output::Store { id, op } => self.held.push((id, op)),
                Output::LookupUser {
                    query, username, ..
                } => {
                    // dave exists, with no device registered.
                    let user = username.starts_with("dave").then(|| cpm_proxy::UserRecord {
                        aor: "dave@localhost".into(),
                        ha1_md5: String::new(),
                        ha1_sha256: String::new(),
                    });
                    self.node
                        .handle_input(self.now, Input::Core(CoreInput::User { query, user }));
                }
                Output::Msrp(c) => self.msrp_command(c),
                Output::Close(_) | Output::Event(_) => {}
                Output::Shard(h) => panic!("one shard here, yet {h:?}"),
            }
        }
    }

    /// The node's MSRP commands: a connection to its own listener is looped back (the PF of
    /// one user relaying to the PF of another on the same node); the rest is kept for the
    /// test to read.
    fn msrp_command(&mut self, c: ConnCommand) {
        match c {
            ConnCommand::Connect { token, addr } if addr.to_string() == MSRP => {
                let (a, b) = (ConnId(self.next_conn), ConnId(self.next_conn + 1));
                self.next_conn += 2;
                self.loops.push((a, b));
                self.node.handle_input(
                    self.now,
                    Input::Msrp(ConnEvent::Accepted {
                        conn: b,
                        peer: addr,
                    }),
                );
                self.node.handle_input(
                    self.now,
                    Input::Msrp(ConnEvent::Connected { token, conn: a }),
                );
            }
            ConnCommand::Send { conn, bytes } => {
                let other = self.loops.iter().find_map(|&(a, b)| {
                    (a == conn)
                        .then_some(b)
                        .or_else(|| (b == conn).then_some(a))
                });
                match other {
                    Some(to) => {
                        let mut buf = BytesMut::from(&bytes[..]);
                        let mut d = Decoder::default();
                        while let Some(frame) = d.decode(&mut buf).unwrap() {
                            self.node.handle_input(
                                self.now,
                                Input::Msrp(ConnEvent::Frame { conn: to, frame }),
                            );
                        }
                    }
                    None => self.msrp.push(ConnCommand::Send { conn, bytes }),
                }
            }
            ConnCommand::Close { conn } => {
                // A looped connection closes at both ends, as TCP would tell them.
                if let Some(i) = self.loops.iter().position(|&(a, b)| a == conn || b == conn) {
                    let (a, b) = self.loops.remove(i);
                    for c in [a, b] {
                        self.node
                            .handle_input(self.now, Input::Msrp(ConnEvent::Closed { conn: c }));
                    }
                } else {
                    self.msrp.push(ConnCommand::Close { conn });
                }
            }
            other => self.msrp.push(other),
        }
    }

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

    fn sip(&mut self, from: &str, message: Message) {
        let peer = Peer::udp(from.parse().unwrap());
        self.node
            .handle_input(self.now, Input::Core(CoreInput::Message { peer, message }));
        self.drain();
    }

    /// Feeds the node what a peer wrote on an MSRP connection, decoded as the transport
    /// would.
    fn msrp_in(&mut self, conn: ConnId, raw: &str) {
        let mut buf = BytesMut::from(raw.replace('\n', "\r\n").as_bytes());
        let mut d = Decoder::default();
        while let Some(frame) = d.decode(&mut buf).unwrap() {
            self.node
                .handle_input(self.now, Input::Msrp(ConnEvent::Frame { conn, frame }));
        }
        self.drain();
    }

    /// What the node wrote on a connection since the last call, as (start line, body).
    fn msrp_out(&mut self, conn: ConnId) -> Vec<(String, Option<Bytes>)> {
        let mut out = Vec::new();
        for c in std::mem::take(&mut self.msrp) {
            match c {
                ConnCommand::Send { conn: c, bytes } if c == conn => {
                    let m = cpm_msrp::Message::parse(&bytes).unwrap();
                    let line = match &m.head {
                        Head::Request(r) => {
                            format!("{} {}", r.method.as_str(), r.transact_id.as_str())
                        }
                        Head::Response(r) => format!("{} {}", r.status, r.transact_id.as_str()),
                    };
                    out.push((line, m.body));
                }
                other => self.msrp.push(other),
            }
        }
        out
    }
}

fn invite() -> Message {
    let sdp = "v=0
o=carol 1 1 IN IP4 127.0.0.9
s=-
c=IN IP4 127.0.0.9
t=0 0
m=message 2855 TCP/MSRP *
a=path:msrp://127.0.0.9:2855/carolpf1;tcp
a=setup:actpass
a=accept-types:message/cpim
a=accept-wrapped-types:text/plain message/imdn+xml
"
    .replace('\n', "\r\n");
    let head = format!(
        "INVITE sip:bob@localhost SIP/2.0
Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKinv1
Max-Forwards: 70
From: <sip:carol@peer.test>;tag=c1
To: <sip:bob@localhost>
Call-ID: sess-call-1
CSeq: 1 INVITE
Contact: <sip:127.0.0.9:5060>
P-Asserted-Identity: <sip:carol@peer.test>
P-Asserted-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session
Accept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session\"
Content-Type: application/sdp
Content-Length: {}

",
        sdp.len()
    )
    .replace('\n', "\r\n");
    Message::parse(format!("{head}{sdp}").into_bytes()).unwrap()
}

fn path_of(body: &[u8]) -> String {
    let (_, m) = Sdp::parse(body).unwrap().msrp().unwrap().unwrap();
    m.path[0].to_string()
}

/// carol (behind the trusted peer core) invites bob, whose device answers: the PFs' MSRP
/// URIs on bob's leg and on carol's, and the 200 carol got.
fn established(h: &mut Harness) -> (String, String, cpm_sip::Response) {
    h.sip(PEER_CORE, invite());
    // The terminating PF offered bob its own MSRP path.
    let to_bob: Vec<_> = h.sent.drain(..).filter(|(a, _)| a == BOB).collect();
    let Some((_, Message::Request(bob_invite))) = to_bob.first() else {
        panic!("an INVITE to bob: {to_bob:?}")
    };
    assert_eq!(bob_invite.method, Method::Invite);
    let pf_down = path_of(&bob_invite.body);
    assert!(
        pf_down.starts_with("msrp://127.0.0.1:2855/s0-"),
        "{pf_down}"
    );

    // bob's device answers, active (it connects).
    let answer = "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 9 TCP/MSRP *\r\na=path:msrp://127.0.0.1:9/bob1;tcp\r\na=setup:active\r\na=accept-types:message/cpim\r\n";
    let mut ok = cpm_sip_core::transaction::response_to(bob_invite, StatusCode::OK, Some("b1"));
    ok.headers.push(cpm_sip::Header::new(
        cpm_sip::HeaderName::Contact,
        "<sip:bob@127.0.0.1:5072>",
    ));
    // A UA copies the Record-Route into its 2xx (RFC 3261 12.1.1).
    for rr in bob_invite
        .headers
        .get_all(&cpm_sip::HeaderName::RecordRoute)
    {
        ok.headers.push(rr.clone());
    }
    ok.headers
        .set(cpm_sip::HeaderName::ContentType, "application/sdp");
    ok.headers.set(
        cpm_sip::HeaderName::ContentLength,
        &answer.len().to_string(),
    );
    ok.body = Bytes::from(answer);
    h.sip(BOB, Message::Response(ok));
    let sent = std::mem::take(&mut h.sent);
    assert!(
        sent.iter()
            .any(|(a, m)| a == BOB && matches!(m, Message::Request(r) if r.method == Method::Ack)),
        "bob's 200 is ACKed: {sent:?}"
    );
    let Some((_, Message::Response(up_ok))) = sent.iter().find(|(a, m)| {
        a == PEER_CORE && matches!(m, Message::Response(r) if r.status == StatusCode::OK)
    }) else {
        panic!("200 to the inviter: {sent:?}")
    };
    let pf_up = path_of(&up_ok.body);
    assert!(pf_up.starts_with("msrp://127.0.0.1:2855/s0-") && pf_up != pf_down);
    (pf_down, pf_up, up_ok.clone())
}

#[test]
fn a_session_to_a_device_is_anchored_stored_before_its_200_and_ended_by_bye() {
    let mut h = Harness::new();
    let (pf_down, pf_up, up_ok) = established(&mut h);
    // bob's device connects and binds its connection with an empty SEND.
    let bob_conn = ConnId(1);
    h.msrp_in(
        bob_conn,
        &format!("MSRP bnd0 SEND\nTo-Path: {pf_down}\nFrom-Path: msrp://127.0.0.1:9/bob1;tcp\nMessage-ID: msg0\n-------bnd0$\n"),
    );
    assert_eq!(h.msrp_out(bob_conn), vec![("200 bnd0".to_owned(), None)]);

    // A SEND from another session id on this connection: refused (it is bound).
    h.msrp_in(
        bob_conn,
        "MSRP bad9 SEND\nTo-Path: msrp://127.0.0.1:2855/nosuch;tcp\nFrom-Path: msrp://127.0.0.1:9/bob1;tcp\nMessage-ID: msg9\n-------bad9$\n",
    );
    assert_eq!(h.msrp_out(bob_conn), vec![("481 bad9".to_owned(), None)]);

    // carol's PF connects and sends a message: stored in bob's history before the 200.
    let carol_conn = ConnId(2);
    let cpim = "From: <sip:carol@peer.test>\nTo: <sip:bob@localhost>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: cm1\nDateTime: 2026-12-04T10:00:00Z\n\nContent-Type: text/plain\n\nhello bob";
    h.msrp_in(
        carol_conn,
        &format!(
            "MSRP car1 SEND\nTo-Path: {pf_up}\nFrom-Path: msrp://127.0.0.9:2855/carolpf1;tcp\nMessage-ID: cmsg1\nByte-Range: 1-{n}/{n}\nContent-Type: message/cpim\n\n{cpim}\n-------car1$\n",
            n = cpim.replace('\n', "\r\n").len()
        ),
    );
    let early = h.msrp_out(carol_conn);
    assert!(early.is_empty(), "no 200 before the commit: {early:?}");
    assert!(
        h.held.iter().any(|(_, op)| matches!(op, StoreOp::AppendDeferred { record, .. } if record.owner == "bob@localhost" && record.message_id == "cm1")),
        "{:?}",
        h.held
    );
    h.commit();
    assert_eq!(h.msrp_out(carol_conn), vec![("200 car1".to_owned(), None)]);
    // Relayed to bob's device on its connection.
    let relayed = h.msrp_out(bob_conn);
    assert_eq!(relayed.len(), 1, "{relayed:?}");
    assert!(relayed[0].0.starts_with("SEND "));
    let body = relayed[0].1.clone().unwrap();
    assert!(std::str::from_utf8(&body).unwrap().contains("hello bob"));
    // bob's 200 marks it delivered.
    let tid = relayed[0].0.trim_start_matches("SEND ").to_owned();
    h.msrp_in(
        bob_conn,
        &format!("MSRP {tid} 200 OK\nTo-Path: {pf_down}\nFrom-Path: msrp://127.0.0.1:9/bob1;tcp\n-------{tid}$\n"),
    );
    assert!(
        h.held.iter().any(|(_, op)| matches!(
            op,
            StoreOp::UpdateState {
                state: cpm_store::DeliveryState::Delivered,
                ..
            }
        )),
        "{:?}",
        h.held
    );
    h.commit();

    // The inviter hangs up: 200, BYE to bob, the connections closed.
    // Along the route the 200 set up (RFC 3261 12.2.1.1), to the PF's Contact.
    let value = |n: cpm_sip::HeaderName| {
        up_ok
            .headers
            .get(&n)
            .map(|t| t.value().unwrap().into_owned())
    };
    let contact = value(cpm_sip::HeaderName::Contact).unwrap();
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let route =
        value(cpm_sip::HeaderName::RecordRoute).expect("the core record-routes the session");
    let bye = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKbye1\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:carol@peer.test>;tag=c1\r\nTo: {}\r\nCall-ID: sess-call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        value(cpm_sip::HeaderName::To).unwrap()
    );
    h.sip(PEER_CORE, Message::parse(bye.into_bytes()).unwrap());
    let sent = std::mem::take(&mut h.sent);
    assert!(
        sent.iter().any(|(a, m)| a == PEER_CORE
            && matches!(m, Message::Response(r) if r.status == StatusCode::OK)),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(a, m)| a == BOB && matches!(m, Message::Request(r) if r.method == Method::Bye)),
        "{sent:?}"
    );
    assert!(
        h.msrp
            .iter()
            .any(|c| matches!(c, ConnCommand::Close { conn } if *conn == bob_conn))
    );
    assert_eq!(h.node.participating().unwrap().sessions(), 0);
}

fn sdp_body(user: &str, port: u16, session: &str, setup: &str) -> String {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message {port} TCP/MSRP *\r\na=path:msrp://127.0.0.1:{port}/{session};tcp\r\na=setup:{setup}\r\na=accept-types:message/cpim\r\na=accept-wrapped-types:text/plain message/imdn+xml\r\n"
    )
}

fn with_body(mut m: cpm_sip::Response, body: String) -> Message {
    m.headers
        .set(cpm_sip::HeaderName::ContentType, "application/sdp");
    m.headers
        .set(cpm_sip::HeaderName::ContentLength, &body.len().to_string());
    m.body = Bytes::from(body);
    Message::Response(m)
}

#[test]
fn a_chat_between_two_users_of_one_node_crosses_both_pfs_and_is_in_both_histories_before_its_200() {
    let mut h = Harness::new();
    let offer = sdp_body("alice", 9, "alice1", "active");
    let raw = format!(
        "INVITE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKa1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=a1\r\nTo: <sip:bob@localhost>\r\nCall-ID: chat-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{ALICE}>\r\nP-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session\r\nAccept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session\"\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    h.sip(ALICE, Message::parse(raw.into_bytes()).unwrap());
    let sent = std::mem::take(&mut h.sent);
    let Some((_, Message::Request(bob_invite))) = sent
        .iter()
        .find(|(a, m)| a == BOB && matches!(m, Message::Request(r) if r.method == Method::Invite))
    else {
        panic!("the INVITE reaches bob through both PFs: {sent:?}")
    };
    let pf_b = path_of(&bob_invite.body);
    let mut ok = cpm_sip_core::transaction::response_to(bob_invite, StatusCode::OK, Some("b1"));
    ok.headers.push(cpm_sip::Header::new(
        cpm_sip::HeaderName::Contact,
        "<sip:bob@127.0.0.1:5072>",
    ));
    for rr in bob_invite
        .headers
        .get_all(&cpm_sip::HeaderName::RecordRoute)
    {
        ok.headers.push(rr.clone());
    }
    h.sip(BOB, with_body(ok, sdp_body("bob", 9, "bob1", "active")));
    let sent = std::mem::take(&mut h.sent);
    let Some((_, Message::Response(alice_ok))) = sent.iter().find(|(a, m)| {
        a == ALICE && matches!(m, Message::Response(r) if r.status == StatusCode::OK)
    }) else {
        panic!("alice gets 200: {sent:?}")
    };
    let pf_a = path_of(&alice_ok.body);
    assert_ne!(pf_a, pf_b, "each PF anchors its user's leg");
    assert_eq!(h.loops.len(), 1, "PF A connected to PF B");
    assert_eq!(h.node.participating().unwrap().sessions(), 2);

    let (alice_conn, bob_conn) = (ConnId(1), ConnId(2));
    h.msrp_in(alice_conn, &format!("MSRP abnd SEND\nTo-Path: {pf_a}\nFrom-Path: msrp://127.0.0.1:9/alice1;tcp\nMessage-ID: amsg0\n-------abnd$\n"));
    h.msrp_in(bob_conn, &format!("MSRP bbnd SEND\nTo-Path: {pf_b}\nFrom-Path: msrp://127.0.0.1:9/bob1;tcp\nMessage-ID: bmsg0\n-------bbnd$\n"));
    assert_eq!(h.msrp_out(alice_conn), vec![("200 abnd".to_owned(), None)]);
    assert_eq!(h.msrp_out(bob_conn), vec![("200 bbnd".to_owned(), None)]);

    let cpim = "From: <sip:alice@localhost>\nTo: <sip:bob@localhost>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: chat1\nDateTime: 2026-12-04T10:00:00Z\n\nContent-Type: text/plain\n\nhi bob";
    h.msrp_in(
        alice_conn,
        &format!(
            "MSRP asnd1 SEND\nTo-Path: {pf_a}\nFrom-Path: msrp://127.0.0.1:9/alice1;tcp\nMessage-ID: amsg1\nByte-Range: 1-{n}/{n}\nContent-Type: message/cpim\n\n{cpim}\n-------asnd1$\n",
            n = cpim.replace('\n', "\r\n").len()
        ),
    );
    // Alice's record first; no 200 until bob's is committed too.
    assert!(h.msrp_out(alice_conn).is_empty());
    h.commit();
    assert_eq!(h.msrp_out(alice_conn), vec![("200 asnd1".to_owned(), None)]);
    let to_bob = h.msrp_out(bob_conn);
    assert_eq!(to_bob.len(), 1, "{to_bob:?}");
    assert!(
        std::str::from_utf8(to_bob[0].1.as_ref().unwrap())
            .unwrap()
            .contains("hi bob")
    );
    let sent = h.store.execute(vec![(
        OpId(9_000),
        StoreOp::History(cpm_store::HistoryQuery {
            owner: "alice@localhost".into(),
            with: Some("bob@localhost".into()),
            conversation_id: None,
            since_ms: None,
            until_ms: None,
            limit: 10,
        }),
    )]);
    let received = h.store.execute(vec![(
        OpId(9_001),
        StoreOp::History(cpm_store::HistoryQuery {
            owner: "bob@localhost".into(),
            with: Some("alice@localhost".into()),
            conversation_id: None,
            since_ms: None,
            until_ms: None,
            limit: 10,
        }),
    )]);
    for (who, out) in [("alice", sent), ("bob", received)] {
        let Some((_, Ok(cpm_store::Outcome::Messages(m)))) = out.into_iter().next() else {
            panic!("{who}'s history")
        };
        assert_eq!(m.len(), 1, "{who}: {m:?}");
        assert_eq!(m[0].message_id, "chat1");
    }
}

#[test]
fn a_session_to_a_user_with_no_device_is_accepted_for_them_and_delivered_when_a_device_registers() {
    let mut h = Harness::new();
    let invite = invite();
    let Message::Request(mut req) = invite else {
        unreachable!()
    };
    req.uri = cpm_sip::Uri::parse("sip:dave@localhost").unwrap();
    req.headers
        .set(cpm_sip::HeaderName::To, "<sip:dave@localhost>");
    req.headers.set(cpm_sip::HeaderName::CallId, "sess-dave-1");
    h.sip(PEER_CORE, Message::Request(req));
    let sent = std::mem::take(&mut h.sent);
    let Some((_, Message::Response(ok))) = sent.iter().find(|(a, m)| {
        a == PEER_CORE && matches!(m, Message::Response(r) if r.status.is_success())
    }) else {
        panic!("the terminating PF answers for dave: {sent:?}")
    };
    let pf_up = path_of(&ok.body);
    let conn = ConnId(7);
    let cpim = "From: <sip:carol@peer.test>\nTo: <sip:dave@localhost>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: offline1\nDateTime: 2026-12-04T10:00:00Z\n\nContent-Type: text/plain\n\nwhile you were out";
    h.msrp_in(
        conn,
        &format!(
            "MSRP dsnd1 SEND\nTo-Path: {pf_up}\nFrom-Path: msrp://127.0.0.9:2855/carolpf1;tcp\nMessage-ID: dmsg1\nByte-Range: 1-{n}/{n}\nContent-Type: message/cpim\n\n{cpim}\n-------dsnd1$\n",
            n = cpim.replace('\n', "\r\n").len()
        ),
    );
    assert!(h.msrp_out(conn).is_empty(), "no 200 before the commit");
    h.commit();
    assert_eq!(h.msrp_out(conn), vec![("200 dsnd1".to_owned(), None)]);

    // dave's device registers: the deferred queue goes out, as a deferred pager message.
    let dave = BindingRecord {
        aor: "dave@localhost".into(),
        key: "<sip:dave@127.0.0.1:5073>".into(),
        contact: "<sip:dave@127.0.0.1:5073>".into(),
        destination: "udp:127.0.0.1:5073".into(),
        path: Vec::new(),
        expires_at_ms: UNIX_MS + 3_600_000,
    };
    h.node.restore_bindings(h.now, UNIX_MS, &[dave]);
    h.drain();
    h.commit();
    let sent = std::mem::take(&mut h.sent);
    let delivered = sent.iter().find(|(a, m)| {
        a == "127.0.0.1:5073"
            && matches!(m, Message::Request(r) if r.method == Method::Message
                && std::str::from_utf8(&r.body).is_ok_and(|b| b.contains("while you were out")))
    });
    assert!(delivered.is_some(), "{sent:?}");
}

#[test]
fn messages_that_arrive_before_the_devices_connection_wait_for_it() {
    let mut h = Harness::new();
    let (pf_down, pf_up, _) = established(&mut h);
    // carol's PF sends before bob's device has connected.
    let carol_conn = ConnId(2);
    let cpim = "From: <sip:carol@peer.test>\nTo: <sip:bob@localhost>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: early1\nDateTime: 2026-12-04T10:00:00Z\n\nContent-Type: text/plain\n\nearly bird";
    h.msrp_in(
        carol_conn,
        &format!(
            "MSRP early1 SEND\nTo-Path: {pf_up}\nFrom-Path: msrp://127.0.0.9:2855/carolpf1;tcp\nMessage-ID: emsg1\nByte-Range: 1-{n}/{n}\nContent-Type: message/cpim\n\n{cpim}\n-------early1$\n",
            n = cpim.replace('\n', "\r\n").len()
        ),
    );
    h.commit();
    assert_eq!(
        h.msrp_out(carol_conn),
        vec![("200 early1".to_owned(), None)]
    );
    // bob's device connects (we are passive on its leg): the message follows its binding.
    let bob_conn = ConnId(1);
    h.msrp_in(
        bob_conn,
        &format!("MSRP bnd0 SEND\nTo-Path: {pf_down}\nFrom-Path: msrp://127.0.0.1:9/bob1;tcp\nMessage-ID: msg0\n-------bnd0$\n"),
    );
    let out = h.msrp_out(bob_conn);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out[0].0.starts_with("SEND ") || out[1].0.starts_with("SEND "),
        "{out:?}"
    );
    assert!(out.iter().any(|(l, _)| l == "200 bnd0"), "{out:?}");
    assert!(out.iter().any(|(_, b)| {
        b.as_ref()
            .is_some_and(|b| std::str::from_utf8(b).unwrap().contains("early bird"))
    }));
}

#[test]
fn a_device_that_connects_before_its_answer_arrives_is_bound() {
    let mut h = Harness::new();
    h.sip(PEER_CORE, invite());
    let to_bob: Vec<_> = h.sent.drain(..).filter(|(a, _)| a == BOB).collect();
    let Some((_, Message::Request(bob_invite))) = to_bob.first() else {
        panic!("an INVITE to bob: {to_bob:?}")
    };
    let pf_down = path_of(&bob_invite.body);
    // The MSRP connection overtakes the 200 (TCP and UDP race): bound all the same.
    let bob_conn = ConnId(1);
    h.msrp_in(
        bob_conn,
        &format!("MSRP bnd0 SEND\nTo-Path: {pf_down}\nFrom-Path: msrp://127.0.0.1:9/bob1;tcp\nMessage-ID: msg0\n-------bnd0$\n"),
    );
    assert_eq!(h.msrp_out(bob_conn), vec![("200 bnd0".to_owned(), None)]);
}

/// alice invites bob with `icsi` and an SDP offer with `alice_extra` lines; bob answers with
/// `bob_extra`; both connect and bind. The PF URIs on alice's leg and on bob's.
fn alice_to_bob(
    h: &mut Harness,
    icsi: &str,
    alice_extra: &str,
    bob_extra: &str,
) -> (String, String) {
    let offer = sdp_body("alice", 9, "alice1", "active") + alice_extra;
    let tag = icsi.replace(':', "%3A");
    let raw = format!(
        "INVITE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKft1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=a1\r\nTo: <sip:bob@localhost>\r\nCall-ID: ft-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{ALICE}>\r\nP-Preferred-Service: {icsi}\r\nAccept-Contact: *;+g.3gpp.icsi-ref=\"{tag}\"\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    h.sip(ALICE, Message::parse(raw.into_bytes()).unwrap());
    let sent = std::mem::take(&mut h.sent);
    let Some((_, Message::Request(bob_invite))) = sent
        .iter()
        .find(|(a, m)| a == BOB && matches!(m, Message::Request(r) if r.method == Method::Invite))
    else {
        panic!("the INVITE reaches bob: {sent:?}")
    };
    let pf_b = path_of(&bob_invite.body);
    let mut ok = cpm_sip_core::transaction::response_to(bob_invite, StatusCode::OK, Some("b1"));
    ok.headers.push(cpm_sip::Header::new(
        cpm_sip::HeaderName::Contact,
        "<sip:bob@127.0.0.1:5072>",
    ));
    for rr in bob_invite
        .headers
        .get_all(&cpm_sip::HeaderName::RecordRoute)
    {
        ok.headers.push(rr.clone());
    }
    h.sip(
        BOB,
        with_body(ok, sdp_body("bob", 9, "bob1", "active") + bob_extra),
    );
    let sent = std::mem::take(&mut h.sent);
    let Some((_, Message::Response(alice_ok))) = sent.iter().find(|(a, m)| {
        a == ALICE && matches!(m, Message::Response(r) if r.status == StatusCode::OK)
    }) else {
        panic!("alice gets 200: {sent:?}")
    };
    let pf_a = path_of(&alice_ok.body);
    h.setup = Some((alice_ok.clone(), bob_invite.clone()));
    h.msrp_in(ConnId(1), &format!("MSRP abnd SEND\nTo-Path: {pf_a}\nFrom-Path: msrp://127.0.0.1:9/alice1;tcp\nMessage-ID: amsg0\n-------abnd$\n"));
    h.msrp_in(ConnId(2), &format!("MSRP bbnd SEND\nTo-Path: {pf_b}\nFrom-Path: msrp://127.0.0.1:9/bob1;tcp\nMessage-ID: bmsg0\n-------bbnd$\n"));
    assert_eq!(h.msrp_out(ConnId(1)).len(), 1);
    assert_eq!(h.msrp_out(ConnId(2)).len(), 1);
    (pf_a, pf_b)
}

/// The SHA-1 of `data` in RFC 5547's `hash:sha-1:` form.
fn sha1_selector(data: &[u8]) -> String {
    use sha1::Digest as _;
    let d = sha1::Sha1::digest(data);
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn chunk(pf: &str, tid: &str, data: &str, start: usize, total: usize, flag: char) -> String {
    let end = start + data.len() - 1;
    format!(
        "MSRP {tid} SEND\nTo-Path: {pf}\nFrom-Path: msrp://127.0.0.1:9/alice1;tcp\nMessage-ID: file1\nByte-Range: {start}-{end}/{total}\nContent-Type: text/plain\n\n{data}\n-------{tid}{flag}\n"
    )
}

/// Answers the node's SEND on `conn` (the first one written since the last read) with 200.
fn answer_send(h: &mut Harness, conn: ConnId, pf: &str) -> String {
    let out = h.msrp_out(conn);
    let Some((line, Some(body))) = out.iter().find(|(l, _)| l.starts_with("SEND ")) else {
        panic!("a SEND on {conn:?}: {out:?}")
    };
    let tid = line.trim_start_matches("SEND ").to_owned();
    let body = String::from_utf8(body.to_vec()).unwrap();
    h.msrp_in(
        conn,
        &format!("MSRP {tid} 200 OK\nTo-Path: {pf}\nFrom-Path: msrp://127.0.0.1:9/bob1;tcp\n-------{tid}$\n"),
    );
    body
}

#[test]
fn a_file_crosses_both_pfs_chunk_by_chunk_and_is_a_media_object_linked_from_both_histories() {
    let mut h = Harness::new();
    let file = "hello world, this is a file!";
    let attrs = format!(
        "a=file-selector:name:\"greeting.txt\" type:text/plain size:{} hash:sha-1:{}\r\na=file-transfer-id:xfer1\r\n",
        file.len(),
        sha1_selector(file.as_bytes())
    );
    let (pf_a, pf_b) = alice_to_bob(
        &mut h,
        cpm_sip::cpm::ICSI_FILETRANSFER,
        &format!("a=sendonly\r\n{attrs}"),
        &format!("a=recvonly\r\n{attrs}"),
    );
    let (alice, bob) = (ConnId(1), ConnId(2));
    let (first, rest) = file.split_at(10);
    h.msrp_in(alice, &chunk(&pf_a, "fch1", first, 1, file.len(), '+'));
    h.commit();
    // Written at both PFs and relayed to bob; alice hears 200 only when bob took it.
    assert!(h.msrp_out(alice).is_empty());
    assert_eq!(answer_send(&mut h, bob, &pf_b), first);
    h.commit();
    assert_eq!(h.msrp_out(alice), vec![("200 fch1".to_owned(), None)]);
    h.msrp_in(alice, &chunk(&pf_a, "fch2", rest, 11, file.len(), '$'));
    h.commit();
    assert_eq!(answer_send(&mut h, bob, &pf_b), rest);
    h.commit();
    assert_eq!(h.msrp_out(alice), vec![("200 fch2".to_owned(), None)]);
    // Both histories link a complete media object holding the file.
    for owner in ["alice@localhost", "bob@localhost"] {
        let linked: Vec<_> = h
            .store
            .messages()
            .iter()
            .filter(|r| r.owner == owner && r.content_type == cpm_conversation::FILE_RECORD_TYPE)
            .collect();
        assert_eq!(linked.len(), 1, "{owner}");
        let body = String::from_utf8(linked[0].body.clone()).unwrap();
        assert!(body.contains("\"name\":\"greeting.txt\""), "{body}");
        let id = body
            .split("\"media\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(h.store.media(id), Some(file.as_bytes()), "{owner}'s object");
        assert_eq!(
            linked[0].state,
            cpm_store::DeliveryState::Delivered,
            "{owner}"
        );
    }
}

#[test]
fn an_interrupted_transfer_or_a_wrong_hash_leaves_no_file_in_any_history() {
    for (name, last_flag, hash_of) in [
        ("aborted", '#', "hello world, this is a file!"),
        ("wrong hash", '$', "something else"),
    ] {
        let mut h = Harness::new();
        let file = "hello world, this is a file!";
        let attrs = format!(
            "a=file-selector:name:\"f.txt\" type:text/plain size:{} hash:sha-1:{}\r\n",
            file.len(),
            sha1_selector(hash_of.as_bytes())
        );
        let (pf_a, pf_b) = alice_to_bob(
            &mut h,
            cpm_sip::cpm::ICSI_FILETRANSFER,
            &format!("a=sendonly\r\n{attrs}"),
            &format!("a=recvonly\r\n{attrs}"),
        );
        let (alice, bob) = (ConnId(1), ConnId(2));
        let (first, rest) = file.split_at(10);
        h.msrp_in(alice, &chunk(&pf_a, "fch1", first, 1, file.len(), '+'));
        h.commit();
        answer_send(&mut h, bob, &pf_b);
        h.commit();
        h.msrp_in(
            alice,
            &chunk(&pf_a, "fch2", rest, 11, file.len(), last_flag),
        );
        h.commit();
        assert!(
            !h.store
                .messages()
                .iter()
                .any(|r| r.content_type == cpm_conversation::FILE_RECORD_TYPE),
            "{name}: nothing linked"
        );
        assert_eq!(
            h.node.participating().unwrap().sessions(),
            0,
            "{name}: the sessions ended"
        );
        let sent = std::mem::take(&mut h.sent);
        assert!(
            sent.iter()
                .any(|(a, m)| a == BOB
                    && matches!(m, Message::Request(r) if r.method == Method::Bye)),
            "{name}: bob's client hears the end: {sent:?}"
        );
    }
}

fn chat_send(pf: &str, tid: &str, message_id: &str, text: &str) -> String {
    let cpim = format!(
        "From: <sip:alice@localhost>\nTo: <sip:bob@localhost>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: {message_id}\nDateTime: 2026-12-04T10:00:00Z\n\nContent-Type: text/plain\n\n{text}"
    );
    format!(
        "MSRP {tid} SEND\nTo-Path: {pf}\nFrom-Path: msrp://127.0.0.1:9/alice1;tcp\nMessage-ID: m-{tid}\nByte-Range: 1-{n}/{n}\nContent-Type: message/cpim\n\n{cpim}\n-------{tid}$\n",
        n = cpim.replace('\n', "\r\n").len()
    )
}

fn records_of(h: &Harness, owner: &str, message_id: &str) -> usize {
    h.store
        .messages()
        .iter()
        .filter(|r| r.owner == owner && r.message_id == message_id)
        .count()
}

/// The node crashes after alice's copy committed and before bob's did: alice never got her
/// 200, so her client sends the message again in a new session; each history holds it once.
#[test]
fn a_crash_between_a_send_and_its_commit_costs_a_resend_and_stores_nothing_twice() {
    let mut h = Harness::new();
    let (pf_a, _) = alice_to_bob(&mut h, cpm_sip::cpm::ICSI_SESSION, "", "");
    h.msrp_in(
        ConnId(1),
        &chat_send(&pf_a, "snd1", "crash1", "before the crash"),
    );
    // alice's record commits; PF B asks for bob's, and the node dies before that commit.
    let first = std::mem::take(&mut h.held);
    for (id, result) in h.store.execute(first) {
        h.node.handle_input(h.now, Input::Stored { id, result });
    }
    h.drain();
    assert!(
        !h.held.is_empty(),
        "bob's record is on its way to the store"
    );
    assert!(
        h.msrp_out(ConnId(1)).is_empty(),
        "no 200 for alice before bob's commit"
    );
    h.crash_and_restart();
    assert_eq!(records_of(&h, "alice@localhost", "crash1"), 1);
    assert_eq!(records_of(&h, "bob@localhost", "crash1"), 0);
    // alice's client resends in a new session.
    let (pf_a, pf_b) = alice_to_bob(&mut h, cpm_sip::cpm::ICSI_SESSION, "", "");
    h.msrp_in(
        ConnId(1),
        &chat_send(&pf_a, "snd2", "crash1", "before the crash"),
    );
    h.commit();
    assert_eq!(h.msrp_out(ConnId(1)), vec![("200 snd2".to_owned(), None)]);
    assert!(answer_send(&mut h, ConnId(2), &pf_b).contains("before the crash"));
    h.commit();
    assert_eq!(
        records_of(&h, "alice@localhost", "crash1"),
        1,
        "alice's history: once"
    );
    assert_eq!(
        records_of(&h, "bob@localhost", "crash1"),
        1,
        "bob's history: once"
    );
}

/// Both ends hang up at the same moment: every leg ends, nothing is left behind, and the
/// crossing BYEs are answered (200 or 481), never left hanging.
#[test]
fn both_sides_bye_at_once() {
    let mut h = Harness::new();
    alice_to_bob(&mut h, cpm_sip::cpm::ICSI_SESSION, "", "");
    assert_eq!(h.node.participating().unwrap().sessions(), 2);
    h.sent.clear();
    let (alice_ok, bob_invite) = h.setup.clone().expect("a session");
    let value = |m: &cpm_sip::Headers, n: cpm_sip::HeaderName| {
        m.get(&n).map(|h| h.value().unwrap().into_owned()).unwrap()
    };
    let target = |contact: String| {
        contact
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned()
    };
    let routes = |m: &cpm_sip::Headers| {
        m.get_all(&cpm_sip::HeaderName::RecordRoute)
            .map(|r| format!("Route: {}\r\n", r.value().unwrap()))
            .collect::<String>()
    };
    let bye = |target: String,
               route: String,
               from: String,
               to: String,
               call_id: String,
               via: &str| {
        Message::parse(
            format!("BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKbye{}\r\nMax-Forwards: 70\r\n{route}From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n", via.len())
                .into_bytes(),
        )
        .unwrap()
    };
    // alice's BYE to PF A, bob's to PF B, one right after the other (they cross inside).
    let a = bye(
        target(value(&alice_ok.headers, cpm_sip::HeaderName::Contact)),
        routes(&alice_ok.headers),
        "<sip:alice@localhost>;tag=a1".into(),
        value(&alice_ok.headers, cpm_sip::HeaderName::To),
        "ft-1".into(),
        ALICE,
    );
    let b = bye(
        target(value(&bob_invite.headers, cpm_sip::HeaderName::Contact)),
        routes(&bob_invite.headers),
        format!(
            "{};tag=b1",
            value(&bob_invite.headers, cpm_sip::HeaderName::To)
        ),
        value(&bob_invite.headers, cpm_sip::HeaderName::From),
        value(&bob_invite.headers, cpm_sip::HeaderName::CallId),
        BOB,
    );
    h.sip(ALICE, a);
    h.sip(BOB, b);
    h.commit();
    let sent = std::mem::take(&mut h.sent);
    for who in [ALICE, BOB] {
        assert!(
            sent.iter().any(|(a, m)| a == who && matches!(m, Message::Response(r) if r.status == StatusCode::OK || r.status.as_u16() == 481)),
            "{who}'s BYE is answered: {sent:?}"
        );
    }
    assert_eq!(h.node.participating().unwrap().sessions(), 0);
}

/// alice hangs up right after her message got its 200 (as Large Message Mode does), while
/// it is still on its way to bob's device: the connection from PF A to PF B closes before
/// any BYE reaches PF B (PF A may run on another shard, and connections and SIP hops travel
/// apart); bob still gets the message, then his BYE.
#[test]
fn a_message_on_its_way_to_the_device_is_delivered_before_the_session_ends() {
    let mut h = Harness::new();
    let (pf_a, pf_b) = alice_to_bob(&mut h, cpm_sip::cpm::ICSI_SESSION, "", "");
    h.msrp_in(ConnId(1), &chat_send(&pf_a, "last1", "lmm1", "the big one"));
    h.commit();
    assert_eq!(h.msrp_out(ConnId(1)), vec![("200 last1".to_owned(), None)]);
    // The connection between the PFs goes: PF B hears it first.
    let (a, b) = h.loops.pop().expect("PF A's connection to PF B");
    for c in [b, a] {
        h.node
            .handle_input(h.now, Input::Msrp(ConnEvent::Closed { conn: c }));
        h.drain();
    }
    h.commit();
    // bob's device still gets the message and acknowledges it; then its leg ends.
    assert!(answer_send(&mut h, ConnId(2), &pf_b).contains("the big one"));
    h.commit();
    assert_eq!(records_of(&h, "bob@localhost", "lmm1"), 1);
    let sent = std::mem::take(&mut h.sent);
    assert!(
        sent.iter()
            .any(|(a, m)| a == BOB && matches!(m, Message::Request(r) if r.method == Method::Bye)),
        "{sent:?}"
    );
    assert_eq!(h.node.participating().unwrap().sessions(), 0);
    assert!(h.store.messages().iter().any(|r| r.owner == "bob@localhost"
        && r.message_id == "lmm1"
        && r.state == cpm_store::DeliveryState::Delivered));
}
