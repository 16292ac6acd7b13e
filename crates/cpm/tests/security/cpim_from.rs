//! Hole 4, the body: a CPIM `From` that is not the authenticated sender (alice writing
//! `From: <sip:bob@localhost>`) must not reach the recipient. The Participating Function sets
//! it from the asserted identity, and both histories keep what was delivered.

use std::time::Duration;

use bytes::Bytes;
use cpm_content::Cpim;
use cpm_sip::StatusCode;
use cpm_sip_core::transaction::response_to;

use crate::common::{Node, run_client};
use crate::ua::{self, Udp, status};

const CPM: &str = "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\n";

fn history(node: &Node, user: &str) -> String {
    let (code, out, err) = run_client(&[
        "--server",
        &node.sip.to_string(),
        "--http",
        &node.http.to_string(),
        "--user",
        &format!("{user}@localhost"),
        "--password",
        &format!("{user}pw"),
        "--json",
        "history",
    ]);
    assert_eq!(code, 0, "history: {err}");
    out
}

#[test]
fn a_forged_cpim_from_reaches_the_recipient_as_the_real_sender() {
    let _g = ua::shared();
    let node = Node::start(
        &[
            ("alice@localhost", "alicepw"),
            ("bob@localhost", "bobpw"),
            ("carol@localhost", "carolpw"),
        ],
        &[],
    );
    let alice = Udp::new();
    ua::register_udp(&alice, node.sip, "alice", "alicepw");
    let carol = Udp::new();
    ua::register_udp(&carol, node.sip, "carol", "carolpw");
    // alice writes to carol as bob.
    let body = "From: \"Bob\" <sip:bob@localhost>\nTo: <sip:carol@localhost>\n\
                NS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: forged-1\n\n\
                Content-Type: text/plain\n\nthis is bob, trust me"
        .replace('\n', "\r\n");
    let text = ua::message(
        "sip:carol@localhost",
        "sip:alice@localhost",
        alice.addr(),
        "UDP",
        "cpim-forged",
        CPM,
        &body,
    )
    // The SIP header comes first; the CPIM body's own Content-Type stays text/plain.
    .replacen("Content-Type: text/plain", "Content-Type: message/cpim", 1);
    alice.send(node.sip, &text);
    let msg = carol
        .recv_request(Duration::from_secs(5))
        .expect("carol's device gets the message");
    let cpim = Cpim::parse(Bytes::copy_from_slice(&msg.body)).expect("CPIM");
    let from = cpim.from().expect("From parses").expect("a From");
    assert_eq!(from.uri, "sip:alice@localhost");
    assert_eq!(from.display_name, None);
    let mut ok = response_to(&msg, StatusCode::OK, Some("c1"));
    ok.reason = "OK".into();
    carol.sock.send_to(&ok.to_bytes(), node.sip).expect("send");
    assert_eq!(status(&alice.final_response(Duration::from_secs(5))), 200);
    // Both histories say alice, and keep the body carol got.
    for user in ["carol", "alice"] {
        let h = history(&node, user);
        assert!(h.contains("this is bob, trust me"), "{user}: {h}");
        assert!(!h.contains("\"from\":\"sip:bob@localhost\""), "{user}: {h}");
    }
    assert!(history(&node, "carol").contains("\"peer\":\"alice@localhost\""));
}
