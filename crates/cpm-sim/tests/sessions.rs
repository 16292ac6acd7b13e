//! CPM session scenarios on the simulated network (issue 13; PROTOCOL.md flows 2.2-2.3):
//! chat across two domains through both PFs with the SIP links losing datagrams, a session
//! to a user with no device delivered when a device registers, and a lost MSRP connection.
//! MSRP runs over the simulator's reliable, ordered connections; each scenario runs on
//! virtual time from a fixed seed.

use std::time::Duration;

use cpm_client::{Event, SendId, SessionId};
use cpm_sim::{ClientId, LinkConfig, Network};
use cpm_store::{DeliveryState, Direction};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Domains `a.test` (alice) and `b.test` (bob), both users in their directories.
fn two_domains(seed: u64) -> (Network, ClientId, ClientId) {
    let mut net = Network::new(seed);
    net.add_domain("a.test");
    net.add_domain("b.test");
    net.add_user("alice@a.test", "alice-pw");
    net.add_user("bob@b.test", "bob-pw");
    let alice = net.add_client("alice@a.test", "phone");
    let bob = net.add_client("bob@b.test", "phone");
    (net, alice, bob)
}

fn start(net: &mut Network, c: ClientId, to: &str) -> SessionId {
    net.with_client(c, |cl, now| cl.start_session(now, to))
        .unwrap_or_else(|e| panic!("start a session: {e}"))
}

fn chat(net: &mut Network, c: ClientId, s: SessionId, text: &str) -> SendId {
    net.with_client(c, |cl, now| cl.send_chat(now, s, text))
        .unwrap_or_else(|e| panic!("send a chat message: {e}"))
}

fn status_of(net: &Network, c: ClientId, id: SendId) -> Option<u16> {
    net.events(c).iter().find_map(|(_, e)| match e {
        Event::SendResult { id: i, status, .. } if *i == id => Some(*status),
        _ => None,
    })
}

fn texts(net: &Network, c: ClientId) -> Vec<String> {
    net.received(c).iter().map(|m| m.text.clone()).collect()
}

fn count(net: &Network, owner: &str, direction: Direction) -> usize {
    net.history(owner)
        .iter()
        .filter(|r| r.direction == direction)
        .count()
}

#[test]
fn a_chat_across_two_domains_survives_lossy_sip_links() {
    let (mut net, alice, bob) = two_domains(21);
    let a = net.domain("a.test");
    let b = net.domain("b.test");
    // The SIP signalling between the domains loses, duplicates and reorders datagrams.
    net.set_link(a, b, LinkConfig::lossy(0.2, 0.1, 0.1));
    net.register_all(&[alice, bob]);
    let s = start(&mut net, alice, "bob@b.test");
    let ids: Vec<SendId> = (1..=5)
        .map(|n| chat(&mut net, alice, s, &format!("line {n}")))
        .collect();
    net.wait_for("every line acknowledged", secs(60), |n| {
        ids.iter().all(|id| status_of(n, alice, *id).is_some())
    });
    for id in &ids {
        assert_eq!(status_of(&net, alice, *id), Some(200));
    }
    net.wait_for("bob has every line", secs(10), |n| texts(n, bob).len() == 5);
    assert_eq!(
        texts(&net, bob),
        (1..=5).map(|n| format!("line {n}")).collect::<Vec<_>>(),
        "in order"
    );
    // Each PF stored its own user's copy, once.
    assert_eq!(count(&net, "alice@a.test", Direction::Sent), 5);
    assert_eq!(count(&net, "bob@b.test", Direction::Received), 5);
    net.wait_for("bob's copies delivered", secs(10), |n| {
        n.history("bob@b.test")
            .iter()
            .all(|r| r.state >= DeliveryState::Delivered)
    });
}

#[test]
fn a_session_to_a_user_with_no_device_is_delivered_when_a_device_registers() {
    let (mut net, alice, bob) = two_domains(22);
    net.register_all(&[alice]);
    let s = start(&mut net, alice, "bob@b.test");
    let first = chat(&mut net, alice, s, "are you there?");
    let second = chat(&mut net, alice, s, "call me");
    net.wait_for("both acknowledged", secs(30), |n| {
        status_of(n, alice, first).is_some() && status_of(n, alice, second).is_some()
    });
    // The terminating PF accepted the session for bob and keeps what he is sent.
    assert_eq!(status_of(&net, alice, first), Some(200));
    assert_eq!(status_of(&net, alice, second), Some(200));
    assert_eq!(net.pending_deferred("bob@b.test").len(), 2);
    assert!(texts(&net, bob).is_empty());
    // bob's device comes: the messages arrive in order, as deferred messages.
    net.register_all(&[bob]);
    net.wait_for("bob got both", secs(30), |n| texts(n, bob).len() == 2);
    assert_eq!(texts(&net, bob), ["are you there?", "call me"]);
    assert!(net.received(bob).iter().all(|m| m.deferred));
    net.wait_for("the deferred queue emptied", secs(10), |n| {
        n.pending_deferred("bob@b.test").is_empty()
    });
}

#[test]
fn a_lost_msrp_connection_ends_the_session_on_both_sides_and_keeps_what_was_acknowledged() {
    let (mut net, alice, bob) = two_domains(23);
    net.register_all(&[alice, bob]);
    let s = start(&mut net, alice, "bob@b.test");
    let id = chat(&mut net, alice, s, "before the cut");
    net.wait_for("acknowledged", secs(30), |n| {
        status_of(n, alice, id).is_some()
    });
    assert_eq!(status_of(&net, alice, id), Some(200));
    net.cut_msrp(alice);
    let ended = |n: &Network, c: ClientId| {
        n.events(c)
            .iter()
            .any(|(_, e)| matches!(e, Event::SessionEnded { .. }))
    };
    net.wait_for("both sides see the end", secs(30), |n| {
        ended(n, alice) && ended(n, bob)
    });
    assert_eq!(net.pf(net.domain("a.test")).sessions(), 0);
    assert_eq!(net.pf(net.domain("b.test")).sessions(), 0);
    assert_eq!(count(&net, "alice@a.test", Direction::Sent), 1);
    assert_eq!(count(&net, "bob@b.test", Direction::Received), 1);
    assert_eq!(texts(&net, bob), ["before the cut"]);
}
