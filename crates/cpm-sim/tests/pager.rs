//! Pager-mode scenarios on the simulated network (PROTOCOL.md section 2: 1-1 and 1-N pager,
//! multiple devices, deferred delivery, IMDN, expiry, store failure, network hardship, two
//! domains). Each runs on virtual time from a fixed seed.

use std::time::Duration;

use cpm_client::{DeliveryStatus, DisplayStatus, Notification};
use cpm_sim::{ClientId, LinkConfig, Network};
use cpm_store::{DeliveryState, Direction, MessageRecord};

const DEFERRED_ICSI: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.deferred";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One domain `a.test` with alice, bob and carol in the directory.
fn one_domain(seed: u64) -> Network {
    let mut net = Network::new(seed);
    net.add_domain("a.test");
    for u in ["alice", "bob", "carol"] {
        net.add_user(&format!("{u}@a.test"), &format!("{u}-pw"));
    }
    net
}

/// The records of `owner`'s history about `message_id`.
fn records<'a>(h: &'a [MessageRecord], message_id: &str) -> Vec<&'a MessageRecord> {
    h.iter().filter(|r| r.message_id == message_id).collect()
}

fn state_of(net: &Network, owner: &str, peer: &str, message_id: &str) -> Option<DeliveryState> {
    net.history(owner)
        .into_iter()
        .find(|r| r.message_id == message_id && r.peer == peer)
        .map(|r| r.state)
}

fn wait_status(net: &mut Network, c: ClientId, id: cpm_client::SendId) -> u16 {
    net.wait_for("the send's final answer", secs(40), |n| {
        n.send_status(c, id).is_some()
    });
    net.send_status(c, id).unwrap_or_default()
}

#[test]
fn one_to_one_pager() {
    let mut net = one_domain(1);
    net.set_capture(true);
    let alice = net.add_client("alice@a.test", "phone");
    let bob = net.add_client("bob@a.test", "phone");
    net.register_all(&[alice, bob]);

    let id = net.send(alice, &["bob@a.test"], "hello bob");
    let status = wait_status(&mut net, alice, id);
    if status != 200 {
        net.fail(&format!("alice's send answered {status}"));
    }
    let message_id = net.send_outcome(alice, id).unwrap().message_id;
    net.wait_for("bob's record delivered", secs(10), |n| {
        n.received(bob).len() == 1
            && state_of(n, "bob@a.test", "alice@a.test", &message_id)
                == Some(DeliveryState::Delivered)
    });

    // The identifiers alice's client put on the wire.
    let requests = net.captured_requests("alice@a.test/phone", "a.test");
    let message = requests
        .iter()
        .find(|r| r.method == cpm_sip::Method::Message)
        .expect("alice's MESSAGE on the wire");
    let conversation = message.headers.conversation_id().unwrap();
    let contribution = message.headers.contribution_id().unwrap();
    assert!(conversation.is_some() && contribution.is_some());

    let got = net.received(bob);
    let m = got[0];
    assert_eq!(m.conversation_id, conversation);
    assert_eq!(m.contribution_id, contribution);
    assert_eq!(m.text, "hello bob");
    assert_eq!(m.from, "alice@a.test");
    assert_eq!(m.message_id, message_id);
    assert!(!m.deferred);

    let sent = net.history("alice@a.test");
    let received = net.history("bob@a.test");
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(received.len(), 1, "{received:#?}");
    let (s, r) = (&sent[0], &received[0]);
    assert_eq!(
        (s.direction, s.peer.as_str()),
        (Direction::Sent, "bob@a.test")
    );
    assert_eq!(
        (r.direction, r.peer.as_str()),
        (Direction::Received, "alice@a.test")
    );
    for rec in [s, r] {
        assert_eq!(rec.message_id, message_id);
        assert_eq!(Some(&rec.conversation_id), m.conversation_id.as_ref());
        assert_eq!(Some(&rec.contribution_id), m.contribution_id.as_ref());
    }
    assert_eq!(r.state, DeliveryState::Delivered);
}

#[test]
fn multi_device_delivery() {
    let mut net = one_domain(2);
    let alice = net.add_client("alice@a.test", "phone");
    let bobs: Vec<ClientId> = ["phone", "tablet", "laptop"]
        .iter()
        .map(|d| net.add_client("bob@a.test", d))
        .collect();
    net.register_all(&[alice]);
    net.register_all(&bobs);
    assert_eq!(net.proxy(net.domain("a.test")).registrations(), 4);

    let id = net.send(alice, &["bob@a.test"], "to every device");
    assert_eq!(wait_status(&mut net, alice, id), 200);
    let message_id = net.send_outcome(alice, id).unwrap().message_id;
    net.wait_for("every device got it", secs(10), |n| {
        bobs.iter().all(|&b| !n.received(b).is_empty())
    });
    net.run_for(secs(30));

    for &b in &bobs {
        let got = net.received(b);
        assert_eq!(got.len(), 1, "device {b:?}: {got:#?}");
        assert_eq!(got[0].message_id, message_id);
    }
    assert_eq!(records(&net.history("alice@a.test"), &message_id).len(), 1);
    let received = net.history("bob@a.test");
    assert_eq!(records(&received, &message_id).len(), 1, "{received:#?}");
    assert_eq!(received[0].state, DeliveryState::Delivered);
}

#[test]
fn offline_recipient_gets_deferred_messages_in_order() {
    let mut net = one_domain(3);
    net.set_capture(true);
    let alice = net.add_client("alice@a.test", "phone");
    let bob = net.add_client("bob@a.test", "phone");
    net.register_all(&[alice]);

    let mut ids = Vec::new();
    for i in 0..3 {
        let id = net.send(alice, &["bob@a.test"], &format!("deferred {i}"));
        let status = wait_status(&mut net, alice, id);
        if status != 202 {
            net.fail(&format!("send {i} answered {status}, not 202"));
        }
        ids.push(net.send_outcome(alice, id).unwrap().message_id);
    }
    let queue = net.pending_deferred("bob@a.test");
    let queued: Vec<&str> = queue.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(queued, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(net.received(bob).is_empty());

    net.register_all(&[bob]);
    net.wait_for("bob got the three", secs(30), |n| {
        n.received(bob).len() == 3
    });
    net.wait_for("the queue is empty", secs(30), |n| {
        n.pending_deferred("bob@a.test").is_empty()
    });
    let got = net.received(bob);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.message_id, ids[i], "order");
        assert_eq!(m.text, format!("deferred {i}"));
        assert_eq!(m.from, "alice@a.test");
        assert!(m.deferred);
        let r = &queue[i];
        assert_eq!(m.conversation_id.as_ref(), Some(&r.conversation_id));
        assert_eq!(m.contribution_id.as_ref(), Some(&r.contribution_id));
    }
    // On the wire: the deferred ICSI, and the original sender asserted.
    let deliveries = net.captured_requests("a.test", "bob@a.test/phone");
    assert_eq!(deliveries.len(), 3, "{deliveries:#?}");
    for r in &deliveries {
        let services = r.headers.p_asserted_service().unwrap();
        assert_eq!(services, [DEFERRED_ICSI]);
        let pai = r.headers.p_asserted_identity().unwrap();
        assert_eq!(pai[0].uri.to_string(), "sip:alice@a.test");
        let from = r.headers.from().unwrap().unwrap();
        assert_eq!(from.uri.to_string(), "sip:alice@a.test");
    }
    net.wait_for("every state delivered", secs(30), |n| {
        ids.iter().all(|m| {
            state_of(n, "bob@a.test", "alice@a.test", m) == Some(DeliveryState::Delivered)
                && state_of(n, "alice@a.test", "bob@a.test", m) == Some(DeliveryState::Delivered)
        })
    });
}

#[test]
fn imdn_round_trip() {
    let mut net = one_domain(4);
    let alice = net.add_client("alice@a.test", "phone");
    let bob = net.add_client("bob@a.test", "phone");
    net.register_all(&[alice, bob]);

    let id = net.send(alice, &["bob@a.test"], "read me");
    assert_eq!(wait_status(&mut net, alice, id), 200);
    let message_id = net.send_outcome(alice, id).unwrap().message_id;
    net.wait_for("the delivered IMDN reached alice", secs(10), |n| {
        n.imdns(alice).iter().any(|i| {
            i.message_id == message_id
                && i.notification == Notification::Delivery(DeliveryStatus::Delivered)
        })
    });
    assert_eq!(
        state_of(&net, "alice@a.test", "bob@a.test", &message_id),
        Some(DeliveryState::Delivered)
    );

    assert!(net.send_displayed(bob, &message_id));
    net.wait_for("the displayed IMDN reached alice", secs(10), |n| {
        n.imdns(alice).iter().any(|i| {
            i.message_id == message_id
                && i.notification == Notification::Display(DisplayStatus::Displayed)
        })
    });
    net.wait_for("both records displayed", secs(10), |n| {
        state_of(n, "alice@a.test", "bob@a.test", &message_id) == Some(DeliveryState::Displayed)
            && state_of(n, "bob@a.test", "alice@a.test", &message_id)
                == Some(DeliveryState::Displayed)
    });
    let imdns = net.imdns(alice);
    assert_eq!(imdns.len(), 2, "{imdns:#?}");
    assert!(imdns.iter().all(|i| i.from == "bob@a.test"));
    // The notifications are not messages in anyone's history.
    assert_eq!(net.history("alice@a.test").len(), 1);
    assert_eq!(net.history("bob@a.test").len(), 1);
}

#[test]
fn one_to_many_pager() {
    let mut net = one_domain(5);
    let alice = net.add_client("alice@a.test", "phone");
    let bob = net.add_client("bob@a.test", "phone");
    let carol = net.add_client("carol@a.test", "phone");
    net.register_all(&[alice, bob, carol]);

    let id = net.send(
        alice,
        &["bob@a.test", "carol@a.test", "dave@a.test"],
        "hello all",
    );
    let status = wait_status(&mut net, alice, id);
    if status != 202 {
        net.fail(&format!("1-N send answered {status}, not 202"));
    }
    let message_id = net.send_outcome(alice, id).unwrap().message_id;
    net.wait_for(
        "bob and carol got it, alice the failure for dave",
        secs(20),
        |n| {
            !n.received(bob).is_empty()
                && !n.received(carol).is_empty()
                && n.imdns(alice).iter().any(|i| {
                    i.message_id == message_id
                        && i.notification == Notification::Delivery(DeliveryStatus::Failed)
                })
        },
    );
    net.run_for(secs(10));

    let (b, c) = (net.received(bob), net.received(carol));
    assert_eq!((b.len(), c.len()), (1, 1));
    assert_eq!(b[0].message_id, message_id);
    assert_eq!(c[0].message_id, message_id);
    assert_eq!(b[0].conversation_id, c[0].conversation_id);
    assert_ne!(b[0].contribution_id, c[0].contribution_id);

    let sent = net.history("alice@a.test");
    assert_eq!(sent.len(), 3, "{sent:#?}");
    let mut peers: Vec<&str> = sent.iter().map(|r| r.peer.as_str()).collect();
    peers.sort_unstable();
    assert_eq!(peers, ["bob@a.test", "carol@a.test", "dave@a.test"]);
    assert!(sent.iter().all(|r| r.direction == Direction::Sent
        && r.message_id == message_id
        && r.conversation_id == sent[0].conversation_id));
    let contributions: std::collections::BTreeSet<&str> =
        sent.iter().map(|r| r.contribution_id.as_str()).collect();
    assert_eq!(contributions.len(), 3);
    let to_dave = sent.iter().find(|r| r.peer == "dave@a.test").unwrap();
    assert_eq!(to_dave.state, DeliveryState::Failed);
    for peer in ["bob@a.test", "carol@a.test"] {
        let r = sent.iter().find(|r| r.peer == peer).unwrap();
        assert_ne!(r.state, DeliveryState::Failed, "{peer}");
    }
    // Each delivered copy carries the contribution of its own record.
    let to_bob = sent.iter().find(|r| r.peer == "bob@a.test").unwrap();
    assert_eq!(b[0].contribution_id.as_ref(), Some(&to_bob.contribution_id));
    let failed: Vec<_> = net
        .imdns(alice)
        .into_iter()
        .filter(|i| i.notification == Notification::Delivery(DeliveryStatus::Failed))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].from, "dave@a.test");
}

#[test]
fn deferred_message_expires() {
    let mut net = Network::new(6);
    net.add_domain_with("a.test", |c| {
        c.pf.deferred_ttl = Some(secs(30));
        c.pf.expiry_interval = secs(5);
    });
    net.add_user("alice@a.test", "alice-pw");
    net.add_user("bob@a.test", "bob-pw");
    let alice = net.add_client("alice@a.test", "phone");
    net.register_all(&[alice]);

    let id = net.send(alice, &["bob@a.test"], "too late");
    assert_eq!(wait_status(&mut net, alice, id), 202);
    let message_id = net.send_outcome(alice, id).unwrap().message_id;
    assert_eq!(net.pending_deferred("bob@a.test").len(), 1);
    net.run_for(secs(20));
    assert_eq!(
        state_of(&net, "bob@a.test", "alice@a.test", &message_id),
        Some(DeliveryState::Pending),
        "not before the TTL"
    );
    net.wait_for("alice got the failure IMDN", secs(30), |n| {
        n.imdns(alice).iter().any(|i| {
            i.message_id == message_id
                && i.notification == Notification::Delivery(DeliveryStatus::Failed)
        })
    });
    net.run_for(secs(1));
    assert_eq!(
        state_of(&net, "bob@a.test", "alice@a.test", &message_id),
        Some(DeliveryState::Failed)
    );
    assert_eq!(
        state_of(&net, "alice@a.test", "bob@a.test", &message_id),
        Some(DeliveryState::Failed)
    );
    assert!(net.pending_deferred("bob@a.test").is_empty());
}

#[test]
fn store_failure_is_never_acknowledged() {
    let mut net = one_domain(7);
    let alice = net.add_client("alice@a.test", "phone");
    let bob = net.add_client("bob@a.test", "phone");
    net.register_all(&[alice, bob]);
    net.run_for(secs(1));

    let a = net.domain("a.test");
    net.fail_next_commit(a);
    let first = net.send(alice, &["bob@a.test"], "lost to the disk");
    let status = wait_status(&mut net, alice, first);
    if status != 500 {
        net.fail(&format!("send during a failed commit answered {status}"));
    }
    net.run_for(secs(5));
    assert!(net.received(bob).is_empty());
    assert!(net.history("alice@a.test").is_empty());
    assert!(net.history("bob@a.test").is_empty());

    let second = net.send(alice, &["bob@a.test"], "after the disk recovered");
    assert_eq!(wait_status(&mut net, alice, second), 200);
    net.wait_for("bob got the second", secs(10), |n| {
        n.received(bob).len() == 1
    });
    assert_eq!(net.received(bob)[0].text, "after the disk recovered");
    assert_eq!(net.history("alice@a.test").len(), 1);
    assert_eq!(net.history("bob@a.test").len(), 1);
}

/// One seed of the hardship matrix: bob has two devices; every link loses 20%, duplicates
/// 10% and reorders 10% of the datagrams. Invariants: a message alice got a 2xx for is
/// exactly once in each history; one she got 200 for reached each of bob's devices (a 202
/// means no device answered in time, so a device may lack it); no device reports a message
/// twice or one alice never sent.
fn hardship(seed: u64) {
    let mut net = one_domain(seed);
    net.set_default_link(LinkConfig::lossy(0.2, 0.1, 0.1));
    let alice = net.add_client("alice@a.test", "phone");
    let bobs = [
        net.add_client("bob@a.test", "phone"),
        net.add_client("bob@a.test", "tablet"),
    ];
    net.register_all(&[alice, bobs[0], bobs[1]]);

    let mut sends = Vec::new();
    for i in 0..10 {
        sends.push(net.send(alice, &["bob@a.test"], &format!("message {i}")));
        net.run_for(Duration::from_millis(300));
    }
    net.wait_for("every send answered", secs(120), |n| {
        sends.iter().all(|&s| n.send_status(alice, s).is_some())
    });
    net.run_for(secs(60));

    let sent = net.history("alice@a.test");
    let received = net.history("bob@a.test");
    let mut acknowledged = 0;
    for &s in &sends {
        let outcome = net.send_outcome(alice, s).unwrap();
        if !(200..300).contains(&outcome.status) {
            continue;
        }
        acknowledged += 1;
        let m = &outcome.message_id;
        if records(&sent, m).len() != 1 || records(&received, m).len() != 1 {
            net.fail(&format!(
                "seed {seed}: acknowledged {m} ({}) is not exactly once in each history: \
                 sent {}, received {}",
                outcome.status,
                records(&sent, m).len(),
                records(&received, m).len()
            ));
        }
    }
    // Nothing is in a history twice, and no device reports a message twice or one that
    // was never sent.
    for h in [&sent, &received] {
        let mut ids: Vec<&str> = h.iter().map(|r| r.message_id.as_str()).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "seed {seed}: duplicate records");
    }
    for &b in &bobs {
        let got = net.received(b);
        let mut ids: Vec<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        if ids.len() != n {
            net.fail(&format!(
                "seed {seed}: device {b:?} reported a message twice"
            ));
        }
        for id in ids {
            assert!(
                sent.iter().any(|r| r.message_id == id),
                "seed {seed}: device {b:?} got {id}, which alice's history lacks"
            );
        }
        for &s in &sends {
            let outcome = net.send_outcome(alice, s).unwrap();
            if outcome.status == 200 && !got.iter().any(|m| m.message_id == outcome.message_id) {
                net.fail(&format!(
                    "seed {seed}: device {b:?} never got acknowledged {}",
                    outcome.message_id
                ));
            }
        }
    }
    assert!(acknowledged > 0, "seed {seed}: nothing got through");
    let wire = net.wire_stats();
    assert!(
        wire.lost > 0 && wire.duplicated > 0,
        "seed {seed}: {wire:?}"
    );
}

#[test]
fn network_hardship() {
    for seed in 100..124 {
        hardship(seed);
    }
}

#[test]
fn two_domains() {
    let mut net = Network::new(9);
    let a = net.add_domain("a.test");
    let b = net.add_domain("b.test");
    net.add_user("alice@a.test", "alice-pw");
    net.add_user("bob@b.test", "bob-pw");
    let alice = net.add_client("alice@a.test", "phone");
    let bob = net.add_client("bob@b.test", "phone");
    net.register_all(&[alice, bob]);

    let id = net.send(alice, &["bob@b.test"], "across domains");
    let status = wait_status(&mut net, alice, id);
    if status != 200 {
        net.fail(&format!("inter-domain send answered {status}"));
    }
    let message_id = net.send_outcome(alice, id).unwrap().message_id;
    net.wait_for("bob got it and alice the delivered IMDN", secs(10), |n| {
        n.received(bob).len() == 1 && n.imdns(alice).iter().any(|i| i.message_id == message_id)
    });
    assert_eq!(net.received(bob)[0].from, "alice@a.test");

    // Each PF stored its own user's side in its own store.
    let in_a: Vec<&MessageRecord> = net.store(a).messages().iter().collect();
    let in_b: Vec<&MessageRecord> = net.store(b).messages().iter().collect();
    assert_eq!(in_a.len(), 1, "{in_a:#?}");
    assert_eq!(in_b.len(), 1, "{in_b:#?}");
    assert_eq!(
        (
            in_a[0].owner.as_str(),
            in_a[0].direction,
            in_a[0].peer.as_str()
        ),
        ("alice@a.test", Direction::Sent, "bob@b.test")
    );
    assert_eq!(
        (
            in_b[0].owner.as_str(),
            in_b[0].direction,
            in_b[0].peer.as_str()
        ),
        ("bob@b.test", Direction::Received, "alice@a.test")
    );
    assert_eq!(in_a[0].message_id, message_id);
    assert_eq!(in_b[0].message_id, message_id);
    assert_eq!(in_a[0].conversation_id, in_b[0].conversation_id);
    assert_eq!(in_b[0].state, DeliveryState::Delivered);
    net.wait_for("alice's record delivered", secs(10), |n| {
        state_of(n, "alice@a.test", "bob@b.test", &message_id) == Some(DeliveryState::Delivered)
    });
}

/// A message for a user the directory does not know is refused by the core (404) before any
/// Participating Function stores it: no history is created for a made-up name.
#[test]
fn unknown_recipient_gets_no_history() {
    let mut net = one_domain(5);
    let alice = net.add_client("alice@a.test", "phone");
    net.register_all(&[alice]);
    let id = net.send(alice, &["nobody-at-all@a.test"], "hi");
    assert_eq!(wait_status(&mut net, alice, id), 404);
    net.run_for(secs(2));
    assert!(net.history("nobody-at-all@a.test").is_empty());
    let h = net.history("alice@a.test");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].state, DeliveryState::Failed);
}

/// A hostile device of alice's: every CPIM `From` it writes names bob instead, with a
/// trustworthy display name (the SIP request is rebuilt with the right Content-Length).
fn claim_to_be_bob(datagram: bytes::Bytes) -> bytes::Bytes {
    let Ok(cpm_sip::Message::Request(mut req)) = cpm_sip::Message::parse(datagram.clone()) else {
        return datagram;
    };
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let forged = body.replace(
        "From: <sip:alice@a.test>",
        "From: \"Bob (verified)\" <sip:bob@a.test>",
    );
    if forged == body {
        return datagram;
    }
    req.body = bytes::Bytes::from(forged);
    req.headers.set(
        cpm_sip::HeaderName::ContentLength,
        &req.body.len().to_string(),
    );
    req.to_bytes()
}

/// The `From` lines of a stored record's CPIM header block, joined.
fn stored_from(r: &MessageRecord) -> Option<String> {
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let head = body.split("\r\n\r\n").next()?;
    let froms: Vec<&str> = head
        .lines()
        .filter_map(|l| l.strip_prefix("From: "))
        .collect();
    (!froms.is_empty()).then(|| froms.join(", "))
}

#[test]
fn a_forged_cpim_from_reaches_everyone_as_the_real_sender() {
    let mut net = one_domain(21);
    let alice = net.add_client("alice@a.test", "phone");
    let bob = net.add_client("bob@a.test", "phone");
    let carol = net.add_client("carol@a.test", "phone");
    net.register_all(&[alice, bob, carol]);
    net.set_tamper(alice, Some(claim_to_be_bob));

    // 1-1: carol sees alice, and both histories hold what carol got.
    let id = net.send(alice, &["carol@a.test"], "it is me, bob");
    assert_eq!(wait_status(&mut net, alice, id), 200);
    net.wait_for("carol got it", secs(10), |n| n.received(carol).len() == 1);
    assert_eq!(net.received(carol)[0].from, "alice@a.test");
    let alice_from = Some("<sip:alice@a.test>".to_owned());
    for owner in ["alice@a.test", "carol@a.test"] {
        let h = net.history(owner);
        assert_eq!(h.len(), 1, "{owner}: {h:#?}");
        assert_eq!(stored_from(&h[0]), alice_from, "{owner}");
        assert_eq!(h[0].sender, "sip:alice@a.test");
    }

    // 1-N: every copy names alice.
    let id = net.send(alice, &["bob@a.test", "carol@a.test"], "to you both");
    assert_eq!(wait_status(&mut net, alice, id), 202);
    net.wait_for("both got it", secs(10), |n| {
        n.received(bob).len() == 1 && n.received(carol).len() == 2
    });
    assert_eq!(net.received(bob)[0].from, "alice@a.test");
    assert_eq!(net.received(carol)[1].from, "alice@a.test");
    assert!(
        net.history("bob@a.test")
            .iter()
            .all(|r| stored_from(r) == alice_from)
    );

    // alice's own notifications name her too: bob's message gets a delivered IMDN from
    // alice, not from bob.
    let id = net.send(bob, &["alice@a.test"], "for alice");
    assert_eq!(wait_status(&mut net, bob, id), 200);
    let message_id = net.send_outcome(bob, id).unwrap().message_id;
    net.wait_for("the IMDN reached bob", secs(10), |n| {
        n.imdns(bob).iter().any(|i| i.message_id == message_id)
    });
    assert!(
        net.imdns(bob).iter().all(|i| i.from == "alice@a.test"),
        "{:#?}",
        net.imdns(bob)
    );
    assert_eq!(
        state_of(&net, "bob@a.test", "alice@a.test", &message_id),
        Some(DeliveryState::Delivered)
    );
    // The 1-1 message, the 1-N request and the notification.
    assert_eq!(net.pf(net.domain("a.test")).stats().cpim_from_corrected, 3);
}

#[test]
fn the_deferred_queue_has_limits_per_sender_and_per_recipient() {
    let mut net = Network::new(22);
    net.add_domain_with("a.test", |c| {
        c.pf.deferred_quota = Some(cpm_store::DeferredQuota {
            max_messages: 3,
            max_bytes: 1 << 20,
            max_per_sender: 2,
        });
    });
    for u in ["alice", "bob", "carol"] {
        net.add_user(&format!("{u}@a.test"), &format!("{u}-pw"));
    }
    let alice = net.add_client("alice@a.test", "phone");
    let carol = net.add_client("carol@a.test", "phone");
    let bob = net.add_client("bob@a.test", "phone");
    net.register_all(&[alice, carol]);

    let send = |net: &mut Network, from: ClientId, text: &str| {
        let id = net.send(from, &["bob@a.test"], text);
        wait_status(net, from, id);
        net.send_outcome(from, id).unwrap()
    };
    let a1 = send(&mut net, alice, "a1");
    let a2 = send(&mut net, alice, "a2");
    let a3 = send(&mut net, alice, "a3");
    let c1 = send(&mut net, carol, "c1");
    let c2 = send(&mut net, carol, "c2");
    let answers: Vec<(u16, &str)> = [&a1, &a2, &a3, &c1, &c2]
        .iter()
        .map(|o| (o.status, o.reason.as_str()))
        .collect();
    assert_eq!(
        answers,
        [
            (202, "Accepted"),
            (202, "Accepted"),
            (486, "Too Many Deferred Messages From You"),
            (202, "Accepted"),
            (486, "Recipient Deferred Queue Full"),
        ]
    );
    // The refused ones failed in their senders' histories and are nowhere else.
    net.run_for(secs(1));
    for (owner, o) in [("alice@a.test", &a3), ("carol@a.test", &c2)] {
        assert_eq!(
            state_of(&net, owner, "bob@a.test", &o.message_id),
            Some(DeliveryState::Failed)
        );
    }
    let queued: Vec<String> = net
        .pending_deferred("bob@a.test")
        .into_iter()
        .map(|r| r.message_id)
        .collect();
    assert_eq!(queued, [&a1, &a2, &c1].map(|o| o.message_id.clone()));
    assert_eq!(net.pf(net.domain("a.test")).stats().deferred_refused, 2);

    // bob comes online and gets exactly the accepted ones, in order.
    net.register_all(&[bob]);
    net.wait_for("bob got the three", secs(30), |n| {
        n.received(bob).len() == 3
    });
    net.run_for(secs(10));
    let texts: Vec<&str> = net.received(bob).iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["a1", "a2", "c1"]);
    assert!(net.pending_deferred("bob@a.test").is_empty());
    // Online, bob takes what comes at once (the limits are the deferred queue's only).
    let again = send(&mut net, carol, "c3");
    assert_eq!(again.status, 200);
}
