//! The registrar's location service: devices, refresh, expiry, wildcard, refusals, flows.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use cpm_proxy::RegistrarConfig;
use cpm_proxy::registrar::Registrar;
use cpm_sip::{Request, StatusCode};
use cpm_sip_core::{ConnId, Peer};

use cpm_sip::Message;

fn register(contacts: &str, extra: &str, cseq: u32) -> Request {
    let raw = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}\r\n\
         From: <sip:alice@localhost>;tag=1\r\nTo: <sip:alice@localhost>\r\nCall-ID: reg1\r\n\
         CSeq: {cseq} REGISTER\r\n{contacts}{extra}Content-Length: 0\r\n\r\n"
    );
    match Message::parse(raw.into_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// The origin of virtual time; the only clock read, and only in tests.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn flow() -> Peer {
    Peer::udp("127.0.0.1:5070".parse().unwrap())
}

#[test]
fn devices_refresh_and_unregister() {
    let t0 = origin();
    let cfg = RegistrarConfig::default();
    let mut r = Registrar::default();
    let phone = "Contact: <sip:alice@127.0.0.1:5070>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\"\r\n";
    let laptop = "Contact: <sip:alice@127.0.0.1:5080>;+sip.instance=\"<urn:uuid:2>\";reg-id=1\r\n";
    let b = r
        .apply(t0, "alice@localhost", &register(phone, "", 1), flow(), &cfg)
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].instance.as_deref(), Some("<urn:uuid:1>"));
    assert!(b[0].contact.param("+g.3gpp.icsi-ref").is_some());
    let b = r
        .apply(
            t0,
            "alice@localhost",
            &register(laptop, "Expires: 60\r\n", 2),
            flow(),
            &cfg,
        )
        .unwrap();
    assert_eq!(b.len(), 2);
    // Same device with a new contact address replaces its binding.
    let moved = phone.replace("5070>", "5071>");
    let b = r
        .apply(
            t0,
            "alice@localhost",
            &register(&moved, "", 3),
            flow(),
            &cfg,
        )
        .unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(r.len(), 2);
    // The laptop lapses after 60 s.
    r.handle_timeout(t0 + Duration::from_secs(61));
    assert_eq!(
        r.lookup("alice@localhost", t0 + Duration::from_secs(61))
            .count(),
        1
    );
    // `*` removes everything.
    let b = r
        .apply(
            t0,
            "alice@localhost",
            &register("Contact: *\r\n", "Expires: 0\r\n", 4),
            flow(),
            &cfg,
        )
        .unwrap();
    assert!(b.is_empty());
    assert!(r.is_empty());
}

#[test]
fn refusals() {
    let t0 = origin();
    let cfg = RegistrarConfig::default();
    let mut r = Registrar::default();
    let e = r
        .apply(
            t0,
            "a@localhost",
            &register("Contact: <sip:a@h>;expires=5\r\n", "", 1),
            flow(),
            &cfg,
        )
        .unwrap_err();
    assert_eq!(e.status, StatusCode::INTERVAL_TOO_BRIEF);
    assert_eq!(e.min_expires, Some(10));
    let e = r
        .apply(
            t0,
            "a@localhost",
            &register("Contact: *\r\n", "", 1),
            flow(),
            &cfg,
        )
        .unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    // A query (no Contact) lists the bindings without change.
    assert!(
        r.apply(t0, "a@localhost", &register("", "", 1), flow(), &cfg)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn closed_connection_drops_outbound_bindings_only() {
    let t0 = origin();
    let cfg = RegistrarConfig::default();
    let mut r = Registrar::default();
    let tcp = Peer::tcp("127.0.0.1:6000".parse().unwrap(), Some(ConnId(9)));
    let plain = "Contact: <sip:a@127.0.0.1:6000;transport=tcp>\r\n";
    let outbound =
        "Contact: <sip:a@127.0.0.1:6001;transport=tcp>;+sip.instance=\"<urn:uuid:9>\";reg-id=1\r\n";
    r.apply(t0, "a@localhost", &register(plain, "", 1), tcp, &cfg)
        .unwrap();
    r.apply(t0, "a@localhost", &register(outbound, "", 2), tcp, &cfg)
        .unwrap();
    assert!(r.is_registered_flow("a@localhost", &tcp, t0));
    assert_eq!(r.flow_closed(ConnId(9)), vec!["a@localhost".to_owned()]);
    let left: Vec<_> = r.lookup("a@localhost", t0).collect();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].flow.conn, None,
        "the plain binding now goes to its Contact"
    );
}

/// A UDP binding goes to the store and comes back after a restart with its contact, feature
/// tags, flow and the time it has left; a binding over a connection is not durable.
#[test]
fn bindings_round_trip_through_store_records() {
    use cpm_proxy::registrar::Binding;
    let t0 = origin();
    let cfg = RegistrarConfig::default();
    let mut reg = Registrar::default();
    let contact = "Contact: <sip:alice@127.0.0.1:5070>;+sip.instance=\"<urn:uuid:00000000-0000-4000-8000-000000000001>\";+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\"\r\n";
    let bindings = reg
        .apply(
            t0,
            "alice@localhost",
            &register(contact, "Expires: 600\r\n", 1),
            flow(),
            &cfg,
        )
        .unwrap();
    let b = &bindings[0];
    assert!(b.is_durable());
    let unix_ms = 1_795_622_400_000;
    let rec = b.to_record("alice@localhost", t0 + Duration::from_secs(100), unix_ms);
    assert_eq!(rec.key, "<urn:uuid:00000000-0000-4000-8000-000000000001>");
    assert_eq!(rec.destination, "udp:127.0.0.1:5070");
    assert_eq!(rec.expires_at_ms, unix_ms + 500_000);
    // "Restart": a new time origin, 10 s later on the wall clock.
    let t1 = origin() + Duration::from_secs(1000);
    let back = Binding::from_record(&rec, t1, unix_ms + 10_000).unwrap();
    assert_eq!(back.contact, b.contact);
    assert_eq!(back.instance, b.instance);
    assert_eq!(back.flow, flow());
    assert_eq!(back.remaining(t1), 490);
    let mut fresh = Registrar::default();
    fresh.restore("alice@localhost", back);
    assert_eq!(fresh.lookup("alice@localhost", t1).count(), 1);
    // Lapsed: not restored.
    assert!(Binding::from_record(&rec, t1, unix_ms + 600_000).is_none());
    // Over TCP: reached over its connection, which a restart closes.
    let tcp = Peer::tcp("127.0.0.1:5071".parse().unwrap(), Some(ConnId(7)));
    let bindings = reg
        .apply(
            t0,
            "bob@localhost",
            &register("Contact: <sip:bob@127.0.0.1:5071;transport=tcp>\r\n", "", 1),
            tcp,
            &cfg,
        )
        .unwrap();
    assert!(!bindings[0].is_durable());
}
