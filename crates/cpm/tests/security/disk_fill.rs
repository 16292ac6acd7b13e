//! Hole 6: disk fill. What one sender may queue for an offline recipient, and what the
//! recipient's deferred queue may hold (messages and bytes), is capped in the store
//! transaction that queues it: past a cap the sender gets `486` with a clear reason and
//! nothing is written; the recipient later gets exactly what was accepted.

use std::io::Write;
use std::time::Duration;

use cpm_sip::StatusCode;
use cpm_sip_core::transaction::response_to;

use crate::common::{Node, TempDir};
use crate::ua::{self, Tcp};

const CPM: &str = "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\n";
/// A large message (the node takes up to 1 MiB).
const LARGE: usize = 1_000_000;

/// Sends a CPM pager message of `len` bytes to bob over `tcp`; the final status and reason.
fn send(tcp: &mut Tcp, user: &str, n: usize, len: usize) -> (u16, String) {
    let body = format!("{user}-{n}-").repeat(len / 8 + 1)[..len].to_owned();
    let text = ua::message(
        "sip:bob@localhost",
        &format!("sip:{user}@localhost"),
        tcp.addr(),
        "TCP",
        &format!("fill-{user}-{n}"),
        CPM,
        &body,
    );
    tcp.send(&text);
    let r = tcp
        .final_response(Duration::from_secs(10))
        .expect("an answer");
    (r.status.as_u16(), r.reason)
}

#[test]
fn a_full_deferred_queue_is_refused_and_only_what_was_accepted_arrives() {
    let _g = ua::shared();
    let dir = TempDir::new("disk-fill");
    let config = dir.path().join("cpm.toml");
    std::fs::write(
        &config,
        // Large pager messages (past the 1,300-octet pager limit, which is lifted here) fill
        // the queue quickest.
        "[pf]\nmax_deferred_per_sender = 3\nmax_deferred_per_recipient = 5\n\
         max_deferred_bytes_per_recipient = 4500000\nmax_pager_bytes = 1048576\n",
    )
    .expect("config");
    let node = Node::start(
        &[
            ("alice@localhost", "alicepw"),
            ("bob@localhost", "bobpw"),
            ("carol@localhost", "carolpw"),
        ],
        &["--config", config.to_str().expect("path")],
    );
    let mut alice = Tcp::connect(node.sip);
    ua::register_tcp(&mut alice, "alice", "alicepw");
    let mut carol = Tcp::connect(node.sip);
    ua::register_tcp(&mut carol, "carol", "carolpw");
    // bob is offline: alice's share of his queue is three messages.
    for n in 1..=3 {
        assert_eq!(send(&mut alice, "alice", n, LARGE).0, 202, "alice #{n}");
    }
    let (status, reason) = send(&mut alice, "alice", 4, LARGE);
    assert_eq!(
        (status, reason.as_str()),
        (486, "Too Many Deferred Messages From You")
    );
    // carol still has room, until the bytes run out (4.5 MB)...
    assert_eq!(send(&mut carol, "carol", 1, LARGE).0, 202);
    let (status, reason) = send(&mut carol, "carol", 2, LARGE);
    assert_eq!(
        (status, reason.as_str()),
        (486, "Recipient Deferred Queue Full")
    );
    // ...and the count (5).
    assert_eq!(send(&mut carol, "carol", 3, 100).0, 202);
    assert_eq!(send(&mut carol, "carol", 4, 100).0, 486);
    // Metrics are published after the loop turn that answered.
    assert_eq!(
        node.wait_metric(
            "cpm_pf_deferred_refused_total",
            |v| v == 3,
            Duration::from_secs(2)
        ),
        Some(3)
    );

    // bob's device comes: it gets the five accepted messages, no more.
    let mut bob = Tcp::connect(node.sip);
    ua::register_tcp(&mut bob, "bob", "bobpw");
    let mut got = Vec::new();
    while let Some(m) = bob.recv(Duration::from_secs(5)) {
        if let cpm_sip::Message::Request(r) = m {
            let mut ok = response_to(&r, StatusCode::OK, Some("bob"));
            ok.reason = "OK".into();
            bob.stream.write_all(&ok.to_bytes()).expect("write");
            got.push(r.body.len());
            if got.len() == 6 {
                break;
            }
        }
    }
    assert_eq!(got.len(), 5, "the accepted messages arrive: {got:?}");
    assert_eq!(got.iter().filter(|&&l| l == LARGE).count(), 4);
}
