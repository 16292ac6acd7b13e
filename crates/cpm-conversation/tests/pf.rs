//! The Participating Function alone, driven with raw requests as the core would send them:
//! bad input gets its status code and nothing is stored, overload is 503, retransmissions
//! are absorbed, and a 2xx only follows a store commit. (The whole flows with clients and
//! the core are in `cpm-sim`.)

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use bytes::Bytes;
use cpm_conversation::{Input, Output, ParticipatingFunction, PfConfig};
use cpm_sip::{Message, Response};
use cpm_sip_core::Peer;
use cpm_store::{Backend, MemoryStore, OpId, StoreOp};

const PF: &str = "127.0.0.1:1";
const CORE: &str = "127.0.0.1:5060";

struct Harness {
    pf: ParticipatingFunction,
    store: MemoryStore,
    now: Instant,
    /// Store operations held back (not yet committed).
    held: Vec<(OpId, StoreOp)>,
    hold: bool,
    sent: Vec<Message>,
}

impl Harness {
    fn new(cfg: impl FnOnce(&mut PfConfig)) -> Self {
        let now = Instant::now();
        let mut c = PfConfig::new(PF.parse().unwrap(), Peer::udp(CORE.parse().unwrap()));
        cfg(&mut c);
        Self {
            pf: ParticipatingFunction::new(c, now, 1_795_622_400_000),
            store: MemoryStore::new(),
            now,
            held: Vec::new(),
            hold: false,
            sent: Vec::new(),
        }
    }

    fn pump(&mut self) {
        loop {
            let mut batch = Vec::new();
            while let Some(out) = self.pf.poll_output() {
                match out {
                    Output::Transmit(t) => self
                        .sent
                        .push(Message::parse(t.payload).expect("the PF's output parses")),
                    Output::Store { id, op } => batch.push((id, op)),
                    Output::Handoff(h) => panic!("no in-node peer here, yet {h:?}"),
                    Output::Msrp(c) => panic!("no sessions here, yet {c:?}"),
                }
            }
            if self.hold {
                self.held.extend(batch);
                return;
            }
            if batch.is_empty() {
                return;
            }
            for (id, result) in self.store.execute(batch) {
                self.pf.handle_input(self.now, Input::Stored { id, result });
            }
        }
    }

    fn release(&mut self) {
        self.hold = false;
        let batch = std::mem::take(&mut self.held);
        for (id, result) in self.store.execute(batch) {
            self.pf.handle_input(self.now, Input::Stored { id, result });
        }
        self.pump();
    }

    fn send(&mut self, raw: &str) {
        let message = Message::parse(Bytes::from(raw.to_owned())).expect("test input");
        self.pf.handle_input(
            self.now,
            Input::Message {
                peer: Peer::udp(CORE.parse().unwrap()),
                message,
            },
        );
        self.pump();
    }

    fn responses(&mut self) -> Vec<Response> {
        let mut out = Vec::new();
        self.sent.retain(|m| match m {
            Message::Response(r) => {
                out.push(r.clone());
                false
            }
            Message::Request(_) => true,
        });
        out
    }

    fn statuses(&mut self) -> Vec<u16> {
        self.responses().iter().map(|r| r.status.as_u16()).collect()
    }
}

/// A MESSAGE as the core sends it to the PF (CRLF line ends, the body's too).
fn message(phase: &str, branch: &str, headers: &str, content_type: &str, body: &str) -> String {
    let body = body.replace('\n', "\r\n");
    let head = format!(
        "MESSAGE sip:bob@localhost SIP/2.0\n\
         Via: SIP/2.0/UDP {CORE};branch=z9hG4bK{branch}\n\
         Max-Forwards: 69\n\
         Route: <sip:{PF};lr>, <sip:{CORE};lr;cpm={phase}>\n\
         From: <sip:alice@localhost>;tag=a1\n\
         To: <sip:bob@localhost>\n\
         Call-ID: {branch}@test\n\
         CSeq: 1 MESSAGE\n\
         {headers}\
         Content-Type: {content_type}\n\
         Content-Length: {}\n\n",
        body.len()
    );
    head.replace('\n', "\r\n") + &body
}

const PAI: &str = "P-Asserted-Identity: <sip:alice@localhost>\n";

fn cpim(text: &str) -> String {
    format!(
        "From: <sip:alice@localhost>\nTo: <sip:bob@localhost>\nNS: imdn <urn:ietf:params:imdn>\n\
         imdn.Message-ID: m-{text}\nimdn.Disposition-Notification: positive-delivery\n\n\
         Content-Type: text/plain\n\n{text}"
    )
}

#[test]
fn malformed_cpim_is_400_and_nothing_is_stored() {
    let mut h = Harness::new(|_| {});
    h.send(&message(
        "orig",
        "b1",
        PAI,
        "message/cpim",
        "not a cpim body",
    ));
    assert_eq!(h.statuses(), [400]);
    assert!(h.store.messages().is_empty());
}

#[test]
fn without_asserted_identity_or_phase_it_is_403() {
    let mut h = Harness::new(|_| {});
    h.send(&message("orig", "b1", "", "message/cpim", &cpim("x")));
    assert_eq!(h.statuses(), [403]);
    // No CPM phase on the core's Route: the request did not come through the core's routing.
    let raw = message("orig", "b2", PAI, "message/cpim", &cpim("y")).replace(";cpm=orig", "");
    h.send(&raw);
    assert_eq!(h.statuses(), [403]);
    h.send(&message("orig", "b3", PAI, "text/plain", ""));
    assert_eq!(h.statuses(), [400], "an empty message");
    assert!(h.store.messages().is_empty());
}

#[test]
fn bad_recipient_list_is_400() {
    let mut h = Harness::new(|_| {});
    let body = "--b\nContent-Type: application/resource-lists+xml\nContent-Disposition: recipient-list\n\n<not-xml\n--b\nContent-Type: message/cpim\n\nFrom: <sip:alice@localhost>\n\nContent-Type: text/plain\n\nhi\n--b--\n";
    h.send(&message(
        "orig",
        "b1",
        &format!("{PAI}Require: recipient-list-message\n"),
        "multipart/mixed;boundary=b",
        body,
    ));
    assert_eq!(h.statuses(), [400]);
    assert!(h.store.messages().is_empty());
}

#[test]
fn no_answer_before_the_commit_and_retransmissions_are_absorbed() {
    let mut h = Harness::new(|_| {});
    h.hold = true;
    let raw = message("orig", "b1", PAI, "message/cpim", &cpim("hello"));
    h.send(&raw);
    h.send(&raw); // a retransmission while the store has not answered
    assert!(
        h.responses().is_empty(),
        "nothing may be answered before the commit"
    );
    assert_eq!(h.held.len(), 1, "one append for one message");
    assert!(
        !h.sent.iter().any(|m| matches!(m, Message::Request(_))),
        "nothing goes on before the commit"
    );
    h.release();
    // Committed: the onward request goes to the core; its 200 becomes the sender's 200.
    assert!(h.sent.iter().any(|m| matches!(m, Message::Request(_))));
    assert_eq!(h.store.messages().len(), 1);
    device_accepts(&mut h);
    assert_eq!(h.statuses(), [200]);
}

#[test]
fn a_failed_commit_is_500_never_2xx() {
    let mut h = Harness::new(|_| {});
    h.store.fail_next_commit();
    h.send(&message("orig", "b1", PAI, "message/cpim", &cpim("x")));
    assert_eq!(h.statuses(), [500]);
    assert!(h.sent.is_empty(), "nothing sent on");
    // Terminating side: delivered first, stored with the outcome; that commit fails, so the
    // sender gets 500 although a device took it (it will send again; the device drops the
    // duplicate by Message-ID).
    h.send(&message("term", "b2", PAI, "message/cpim", &cpim("y")));
    h.store.fail_next_commit();
    device_accepts(&mut h);
    assert_eq!(h.statuses(), [500]);
    assert!(h.store.messages().is_empty());
}

#[test]
fn overload_is_503_with_retry_after() {
    let mut h = Harness::new(|c| c.max_in_progress = 2);
    h.hold = true;
    for b in ["b1", "b2", "b3"] {
        h.send(&message("orig", b, PAI, "message/cpim", &cpim(b)));
    }
    let rs = h.responses();
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].status.as_u16(), 503);
    assert!(
        rs[0]
            .headers
            .get(&cpm_sip::HeaderName::RetryAfter)
            .is_some()
    );
}

/// Delivers what the PF sent to the core with a 200 from the device.
fn device_accepts(h: &mut Harness) {
    devices_answer(h, cpm_sip::StatusCode::OK);
}

/// Answers what the PF sent to the core with `status` (480: no device).
fn devices_answer(h: &mut Harness, status: cpm_sip::StatusCode) {
    let legs: Vec<_> = h
        .sent
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    h.sent.retain(|m| matches!(m, Message::Response(_)));
    for leg in legs {
        let ok = cpm_sip_core::transaction::response_to(&leg, status, Some("d"));
        h.pf.handle_input(
            h.now,
            Input::Message {
                peer: Peer::udp(CORE.parse().unwrap()),
                message: Message::Response(ok),
            },
        );
    }
    h.pump();
}

#[test]
fn a_resent_message_is_stored_once() {
    let mut h = Harness::new(|_| {});
    let raw = message("term", "b1", PAI, "message/cpim", &cpim("once"));
    h.send(&raw);
    device_accepts(&mut h);
    assert_eq!(h.statuses(), [200]);
    // The same message again in a new transaction (a resend after a crash upstream): the
    // device gets it again (and drops it by Message-ID), the history keeps one record.
    h.send(&raw.replace("branch=z9hG4bKb1", "branch=z9hG4bKb1again"));
    device_accepts(&mut h);
    assert_eq!(h.statuses(), [200]);
    assert_eq!(h.store.messages().len(), 1);
    assert_eq!(
        h.store.messages()[0].state,
        cpm_store::DeliveryState::Delivered
    );
}

/// Issue 10, hole 4: a CPIM `From` that is not the asserted sender (alice writing as bob, or
/// as a look-alike of herself) is set to the asserted identity, in what goes on and in
/// what is stored; a display name survives only when the URI was already right.
#[test]
fn cpim_from_is_the_asserted_identity() {
    let mut h = Harness::new(|_| {});
    for (i, forged) in [
        "From: \"Alice\" <sip:bob@localhost>",
        "From: <sip:alice@127.0.0.1>",
        "To: <sip:nobody@localhost>",
    ]
    .iter()
    .enumerate()
    {
        let body = cpim(&format!("forged{i}")).replacen("From: <sip:alice@localhost>", forged, 1);
        h.send(&message(
            "orig",
            &format!("f{i}"),
            PAI,
            "message/cpim",
            &body,
        ));
    }
    let onward: Vec<String> = h
        .sent
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(String::from_utf8_lossy(&r.body).into_owned()),
            Message::Response(_) => None,
        })
        .collect();
    assert_eq!(onward.len(), 3);
    for body in &onward {
        let c = cpm_content::Cpim::parse(Bytes::from(body.clone())).unwrap();
        let from = c.from().unwrap().unwrap();
        assert_eq!(from.uri, "sip:alice@localhost", "{body}");
        assert_eq!(from.display_name, None, "{body}");
        assert!(!body.contains("bob@localhost>\r\nTo") && !body.contains("127.0.0.1"));
    }
    for r in h.store.messages() {
        let c = cpm_content::Cpim::parse(Bytes::from(r.body.clone())).unwrap();
        assert_eq!(c.from().unwrap().unwrap().uri, "sip:alice@localhost");
    }
    assert_eq!(h.pf.stats().cpim_from_corrected, 3);
    // The right sender with a display name keeps it, byte for byte.
    let body = cpim("fine").replacen(
        "From: <sip:alice@localhost>",
        "From: \"Alice\" <sip:alice@localhost>",
        1,
    );
    h.send(&message("orig", "ok", PAI, "message/cpim", &body));
    let last = h
        .sent
        .iter()
        .rev()
        .find_map(|m| match m {
            Message::Request(r) => Some(r.body.clone()),
            Message::Response(_) => None,
        })
        .unwrap();
    assert_eq!(&last[..], body.replace('\n', "\r\n").as_bytes());
    assert_eq!(h.pf.stats().cpim_from_corrected, 3);
}

/// Issue 10, hole 6: the deferred queue of an offline recipient has limits per sender, in
/// messages and in bytes; past them the sender gets 486 (413 for a message larger than a
/// whole queue) and nothing is stored.
#[test]
fn a_full_deferred_queue_refuses_with_486_and_stores_nothing() {
    let mut h = Harness::new(|c| {
        c.deferred_quota = Some(cpm_store::DeferredQuota {
            max_messages: 3,
            max_bytes: 2000,
            max_per_sender: 2,
        });
    });
    let offline = cpm_sip::StatusCode::TEMPORARILY_UNAVAILABLE;
    let from = |who: &str| format!("P-Asserted-Identity: <sip:{who}@localhost>\n");
    let send = |h: &mut Harness, who: &str, n: usize, text: &str| {
        let body = cpim(&format!("{who}{n}{text}"))
            .replace("alice@localhost>\nTo", &format!("{who}@localhost>\nTo"));
        let raw = message(
            "term",
            &format!("{who}{n}"),
            &from(who),
            "message/cpim",
            &body,
        )
        .replace(
            "sip:alice@localhost>;tag=a1",
            &format!("sip:{who}@localhost>;tag=a1"),
        );
        h.send(&raw);
        devices_answer(h, offline);
        h.statuses()
    };
    assert_eq!(send(&mut h, "alice", 1, ""), [202]);
    assert_eq!(send(&mut h, "alice", 2, ""), [202]);
    assert_eq!(
        send(&mut h, "alice", 3, ""),
        [486],
        "alice's third is refused"
    );
    assert_eq!(send(&mut h, "carol", 1, ""), [202]);
    assert_eq!(send(&mut h, "dave", 1, ""), [486], "the queue holds 3");
    assert_eq!(send(&mut h, "erin", 1, &"x".repeat(3000)), [413]);
    assert_eq!(h.store.messages().len(), 3);
    assert_eq!(h.pf.stats().deferred_refused, 3);
}

/// A body that binds the default CPIM namespace elsewhere cannot be made to name its sender
/// (an unprefixed `From` would then mean something else): 403, nothing stored.
#[test]
fn a_cpim_body_that_rebinds_the_default_namespace_is_403() {
    let mut h = Harness::new(|_| {});
    let body = "NS: <urn:example:other>\nFrom: <sip:bob@localhost>\nTo: <sip:bob@localhost>\n\n\
                Content-Type: text/plain\n\nhi";
    h.send(&message("orig", "ns1", PAI, "message/cpim", body));
    assert_eq!(h.statuses(), [403]);
    assert!(h.store.messages().is_empty());
}

/// OMA CPM 5.2.2: pager mode carries up to 1,300 octets of content (the body inside CPIM);
/// a larger message is refused before anything is stored, so the client sends it in Large
/// Message Mode.
#[test]
fn a_pager_message_over_1300_octets_is_413_use_large_message_mode() {
    let mut h = Harness::new(|_| {});
    h.send(&message(
        "orig",
        "b1",
        PAI,
        "message/cpim",
        &cpim(&"x".repeat(1301)),
    ));
    let r = h.responses();
    assert_eq!(
        r.iter()
            .map(|r| (r.status.as_u16(), r.reason.as_str()))
            .collect::<Vec<_>>(),
        [(413, "Use Large Message Mode")]
    );
    assert!(h.store.messages().is_empty());
    // 1,300 octets of text (the CPIM around it does not count) is a pager message.
    h.send(&message(
        "orig",
        "b2",
        PAI,
        "message/cpim",
        &cpim(&"y".repeat(1300)),
    ));
    assert!(!h.store.messages().is_empty(), "stored: {:?}", h.statuses());
}
