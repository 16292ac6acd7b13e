//! Hole 4: forged and look-alike identities. A sender of a domain the node does not serve is
//! taken only from that domain's configured core (or a trusted peer); a host that is one of
//! the node's own names or addresses (`localhost.`, `127.0.0.1`, `[::1]`, `im:`) is the
//! node's domain, so its user must authenticate; a From the core cannot verify (`tel:`) is
//! refused from strangers. The peer core and the real user still get through.

use crate::common::Node;
use crate::ua::{self, Tcp, Udp, status};

/// A CPM pager message's service (the Participating Function stores it).
const CPM: &str = "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\n";

/// bob's stored history as JSON lines (through `cpm client history`).
fn bobs_history(node: &Node) -> String {
    let (code, out, err) = crate::common::run_client(&[
        "--server",
        &node.sip.to_string(),
        "--http",
        &node.http.to_string(),
        "--user",
        "bob@localhost",
        "--password",
        "bobpw",
        "--json",
        "history",
    ]);
    assert_eq!(code, 0, "history: {err}");
    out
}

#[test]
fn a_foreign_domain_is_taken_only_from_its_core() {
    let _g = ua::shared();
    let core = Udp::new();
    let flag = format!("otherdomain.test={}", core.addr());
    let node = Node::start(&[("bob@localhost", "bobpw")], &["--peer-domain", &flag]);
    // Anyone else claiming the domain: 403, over UDP, TCP and through `cpm client`.
    let stranger = Udp::new();
    let text = ua::message(
        "sip:bob@localhost",
        "sip:mallory@otherdomain.test",
        stranger.addr(),
        "UDP",
        "foreign-udp",
        CPM,
        "hi bob",
    );
    let r = stranger.request(node.sip, &text);
    assert_eq!(status(&r), 403, "{r:?}");
    // (Over TCP a peer core is known by its address alone, its port being the connection's:
    // the stranger connects from another address than the core's.)
    let mut tcp = Tcp::connect_from("127.0.0.5", node.sip);
    let text = ua::message(
        "sip:bob@localhost",
        "sip:mallory@otherdomain.test",
        tcp.addr(),
        "TCP",
        "foreign-tcp",
        CPM,
        "hi bob",
    );
    assert_eq!(status(&tcp.request(&text)), 403);
    let (code, _, err) = crate::common::run_client(&[
        "--server",
        &node.sip.to_string(),
        "--user",
        "mallory@otherdomain.test",
        "--password",
        "x",
        "send",
        "bob@localhost",
        "hi",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("403"), "{err}");
    // A domain that is not a peer at all: the same.
    let text = ua::message(
        "sip:bob@localhost",
        "sip:eve@nowhere.test",
        stranger.addr(),
        "UDP",
        "foreign-unknown",
        CPM,
        "hi",
    );
    assert_eq!(status(&stranger.request(node.sip, &text)), 403);
    assert!(!bobs_history(&node).contains("otherdomain"));

    // The domain's own core is heard: the message waits for bob (202) and is stored.
    let text = ua::message(
        "sip:bob@localhost",
        "sip:mallory@otherdomain.test",
        core.addr(),
        "UDP",
        "foreign-core",
        CPM,
        "hello from a peer",
    );
    assert_eq!(status(&core.request(node.sip, &text)), 202);
    let history = bobs_history(&node);
    assert!(history.contains("mallory@otherdomain.test"), "{history}");
    assert!(node.metric("cpm_sip_sender_refused_total").unwrap_or(0) >= 4);
}

#[test]
fn look_alike_hosts_must_authenticate_and_unverifiable_senders_are_refused() {
    let _g = ua::shared();
    let node = Node::start(
        &[("alice@localhost", "alicepw"), ("bob@localhost", "bobpw")],
        &[],
    );
    let stranger = Udp::new();
    let look_alikes = [
        "sip:alice@localhost.",
        "sip:alice@LOCALHOST",
        "sip:alice@127.0.0.1",
        "sip:alice@127.0.0.1:5999",
        "sip:alice@[::1]",
        "im:alice@localhost",
    ];
    for (i, from) in look_alikes.iter().enumerate() {
        let text = ua::message(
            "sip:bob@localhost",
            from,
            stranger.addr(),
            "UDP",
            &format!("look-alike-{i}"),
            CPM,
            "it's me, alice",
        );
        let r = stranger.request(node.sip, &text);
        assert_eq!(status(&r), 407, "{from}: {r:?}");
    }
    for (i, from) in ["tel:+15551234", "urn:service:sos", "sip:x@203.0.113.5"]
        .iter()
        .enumerate()
    {
        let text = ua::message(
            "sip:bob@localhost",
            from,
            stranger.addr(),
            "UDP",
            &format!("unverifiable-{i}"),
            CPM,
            "who am i",
        );
        assert_eq!(status(&stranger.request(node.sip, &text)), 403, "{from}");
    }
    assert_eq!(bobs_history(&node).trim(), "", "nothing stored for bob");

    // alice herself, from her registered flow, may write her address any of these ways: she
    // is stored as alice@localhost.
    let alice = Udp::new();
    ua::register_udp(&alice, node.sip, "alice", "alicepw");
    let text = ua::message(
        "sip:bob@localhost",
        "sip:alice@127.0.0.1",
        alice.addr(),
        "UDP",
        "real-alice",
        CPM,
        "really me",
    );
    assert_eq!(status(&alice.request(node.sip, &text)), 202);
    let history = bobs_history(&node);
    assert!(
        history.contains("\"peer\":\"alice@localhost\""),
        "{history}"
    );
    assert!(history.contains("really me"));
}
