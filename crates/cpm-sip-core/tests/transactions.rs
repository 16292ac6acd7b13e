//! RFC 3261 section 17 transactions on virtual time: retransmission schedules, timers,
//! ACK and CANCEL generation, absorption of retransmissions.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use cpm_sip::{HeaderName, Method, Request, Response, StatusCode};
use cpm_sip_core::transaction::*;
use cpm_sip_core::{Peer, Transmit};

use cpm_sip::Message;
use cpm_sip_core::TransportKind;

fn req(raw: &str) -> Request {
    match Message::parse(raw.replace('\n', "\r\n").into_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn resp(raw: &str) -> Response {
    match Message::parse(raw.replace('\n', "\r\n").into_bytes()) {
        Ok(Message::Response(r)) => r,
        other => panic!("{other:?}"),
    }
}

const INVITE: &str = "INVITE sip:bob@b.example SIP/2.0\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKinv1\nMax-Forwards: 70\nFrom: <sip:alice@a.example>;tag=1\nTo: <sip:bob@b.example>\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n";
const MESSAGE: &str = "MESSAGE sip:bob@b.example SIP/2.0\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKmsg1\nMax-Forwards: 70\nFrom: <sip:alice@a.example>;tag=1\nTo: <sip:bob@b.example>\nCall-ID: c2\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n";

/// The origin of virtual time; the only clock read, and only in tests.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn peer(kind: TransportKind) -> Peer {
    let addr = "192.0.2.1:5060".parse().unwrap();
    Peer {
        transport: kind,
        addr,
        conn: None,
    }
}

fn drain(l: &mut TransactionLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

fn run_until(l: &mut TransactionLayer, end: Instant) -> Vec<(Instant, Transmit)> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let Some(t) = l.poll_timeout() else { break };
        if t > end {
            break;
        }
        l.handle_timeout(t);
        assert!(l.poll_timeout().is_none_or(|n| n > t), "timer did not move");
        out.extend(drain(l).into_iter().map(|x| (t, x)));
    }
    out
}

#[test]
fn non_invite_client_retransmits_with_backoff_then_times_out() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    let key = l
        .send_request(t0, req(MESSAGE), peer(TransportKind::Udp))
        .unwrap();
    assert_eq!(drain(&mut l).len(), 1);
    let sends = run_until(&mut l, t0 + Duration::from_secs(40));
    let offsets: Vec<u64> = sends
        .iter()
        .map(|(t, _)| (*t - t0).as_millis() as u64)
        .collect();
    // E: 0.5, 1.5, 3.5, 7.5, 11.5, ... (capped at T2 = 4 s) until F at 32 s.
    assert_eq!(&offsets[..5], &[500, 1500, 3500, 7500, 11500]);
    assert!(offsets.iter().all(|&o| o < 32_000));
    assert_eq!(l.poll_event(), Some(TxEvent::Timeout(key)));
    assert!(l.is_empty());
}

#[test]
fn non_invite_client_over_tcp_never_retransmits() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    l.send_request(t0, req(MESSAGE), peer(TransportKind::Tcp))
        .unwrap();
    drain(&mut l);
    assert!(run_until(&mut l, t0 + Duration::from_secs(40)).is_empty());
    assert!(matches!(l.poll_event(), Some(TxEvent::Timeout(_))));
}

#[test]
fn non_invite_final_response_ends_after_timer_k() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    let key = l
        .send_request(t0, req(MESSAGE), peer(TransportKind::Udp))
        .unwrap();
    drain(&mut l);
    let ok = resp(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKmsg1\nFrom: <sip:alice@a.example>;tag=1\nTo: <sip:bob@b.example>;tag=2\nCall-ID: c2\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n",
    );
    assert_eq!(l.handle_response(t0, &ok), ResponseDisposition::Pass(key));
    assert_eq!(l.handle_response(t0, &ok), ResponseDisposition::Absorbed);
    assert!(run_until(&mut l, t0 + Duration::from_secs(6)).is_empty());
    assert!(l.is_empty());
    assert_eq!(l.handle_response(t0, &ok), ResponseDisposition::Stray);
}

#[test]
fn invite_client_acks_failure_and_absorbs_retransmissions() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    l.send_request(t0, req(INVITE), peer(TransportKind::Udp))
        .unwrap();
    drain(&mut l);
    // Timer A doubles: 0.5, 1.5, 3.5 s...
    let sends = run_until(&mut l, t0 + Duration::from_millis(3600));
    assert_eq!(sends.len(), 3);
    let busy = resp(
        "SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKinv1\nFrom: <sip:alice@a.example>;tag=1\nTo: <sip:bob@b.example>;tag=xyz\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
    );
    assert!(matches!(
        l.handle_response(t0, &busy),
        ResponseDisposition::Pass(_)
    ));
    let ack = drain(&mut l);
    assert_eq!(ack.len(), 1);
    let Ok(Message::Request(a)) = Message::parse(ack[0].payload.clone()) else {
        panic!("ack")
    };
    assert_eq!(a.method, Method::Ack);
    assert_eq!(a.headers.to().unwrap().unwrap().tag(), Some("xyz"));
    assert_eq!(a.headers.cseq().unwrap().unwrap().method, Method::Ack);
    assert_eq!(l.handle_response(t0, &busy), ResponseDisposition::Absorbed);
    assert_eq!(
        drain(&mut l).len(),
        1,
        "ACK re-sent for the retransmitted 486"
    );
    run_until(&mut l, t0 + Duration::from_secs(40));
    assert!(l.is_empty());
}

#[test]
fn invite_client_cancel_waits_for_provisional() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    let key = l
        .send_request(t0, req(INVITE), peer(TransportKind::Udp))
        .unwrap();
    drain(&mut l);
    l.cancel(t0, &key);
    assert!(
        drain(&mut l).is_empty(),
        "no CANCEL before a provisional response"
    );
    let ringing = resp(
        "SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKinv1\nFrom: <sip:alice@a.example>;tag=1\nTo: <sip:bob@b.example>;tag=xyz\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
    );
    l.handle_response(t0, &ringing);
    let sent = drain(&mut l);
    assert_eq!(sent.len(), 1);
    let Ok(Message::Request(c)) = Message::parse(sent[0].payload.clone()) else {
        panic!("cancel")
    };
    assert_eq!(c.method, Method::Cancel);
    assert_eq!(
        c.headers.top_via().unwrap().unwrap().branch(),
        Some("z9hG4bKinv1")
    );
    assert_eq!(l.poll_event(), Some(TxEvent::CancelSent(key)));
}

#[test]
fn invite_server_retransmits_failure_until_ack() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    let invite = req(INVITE);
    let RequestDisposition::New(key) = l
        .handle_request(t0, &invite, peer(TransportKind::Udp))
        .unwrap()
    else {
        panic!("new")
    };
    assert_eq!(
        l.handle_request(t0, &invite, peer(TransportKind::Udp))
            .unwrap(),
        RequestDisposition::Retransmission
    );
    let trying = response_to(&invite, StatusCode::TRYING, None);
    l.respond(t0, &key, &trying).unwrap();
    assert_eq!(drain(&mut l).len(), 1);
    l.handle_request(t0, &invite, peer(TransportKind::Udp))
        .unwrap();
    assert_eq!(
        drain(&mut l).len(),
        1,
        "100 re-sent on INVITE retransmission"
    );
    let busy = response_to(&invite, StatusCode::BUSY_HERE, Some("t1"));
    l.respond(t0, &key, &busy).unwrap();
    drain(&mut l);
    // Timer G: 0.5, 1.5, 3.5, 7.5 s (capped at T2)...
    let sends = run_until(&mut l, t0 + Duration::from_millis(7600));
    assert_eq!(sends.len(), 4);
    let mut ack = req(INVITE
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK")
        .as_str());
    ack.headers
        .set(HeaderName::To, "<sip:bob@b.example>;tag=t1");
    assert_eq!(
        l.handle_request(t0 + Duration::from_secs(8), &ack, peer(TransportKind::Udp))
            .unwrap(),
        RequestDisposition::AckAbsorbed
    );
    assert!(run_until(&mut l, t0 + Duration::from_secs(20)).is_empty());
    assert!(l.is_empty());
}

#[test]
fn invite_server_without_ack_reports_timer_h() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    let invite = req(INVITE);
    let RequestDisposition::New(key) = l
        .handle_request(t0, &invite, peer(TransportKind::Tcp))
        .unwrap()
    else {
        panic!("new")
    };
    l.respond(
        t0,
        &key,
        &response_to(&invite, StatusCode::NOT_FOUND, Some("x")),
    )
    .unwrap();
    drain(&mut l);
    assert!(
        run_until(&mut l, t0 + Duration::from_secs(40)).is_empty(),
        "no G over TCP"
    );
    assert_eq!(l.poll_event(), Some(TxEvent::AckTimeout(key)));
}

#[test]
fn ack_for_2xx_is_stray_and_cancel_finds_invite() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    let invite = req(INVITE);
    let RequestDisposition::New(key) = l
        .handle_request(t0, &invite, peer(TransportKind::Udp))
        .unwrap()
    else {
        panic!("new")
    };
    let cancel = cancel_for(&invite);
    let RequestDisposition::New(ckey) = l
        .handle_request(t0, &cancel, peer(TransportKind::Udp))
        .unwrap()
    else {
        panic!("cancel is its own transaction")
    };
    assert_eq!(l.invite_for_cancel(&ckey), Some(key.clone()));
    l.respond(t0, &key, &response_to(&invite, StatusCode::OK, Some("x")))
        .unwrap();
    let ack2xx = req(&INVITE
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK")
        .replace("z9hG4bKinv1", "z9hG4bKack2"));
    assert_eq!(
        l.handle_request(t0, &ack2xx, peer(TransportKind::Udp))
            .unwrap(),
        RequestDisposition::Stray
    );
}

#[test]
fn non_invite_server_resends_final_and_ends_after_timer_j() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    let m = req(MESSAGE);
    let RequestDisposition::New(key) = l.handle_request(t0, &m, peer(TransportKind::Udp)).unwrap()
    else {
        panic!("new")
    };
    assert_eq!(
        l.handle_request(t0, &m, peer(TransportKind::Udp)).unwrap(),
        RequestDisposition::Retransmission
    );
    assert!(
        drain(&mut l).is_empty(),
        "nothing to re-send before a response"
    );
    l.respond(t0, &key, &response_to(&m, StatusCode::OK, Some("x")))
        .unwrap();
    drain(&mut l);
    l.handle_request(t0 + Duration::from_secs(1), &m, peer(TransportKind::Udp))
        .unwrap();
    assert_eq!(drain(&mut l).len(), 1);
    assert!(
        l.respond(t0, &key, &response_to(&m, StatusCode::OK, None))
            .is_err()
    );
    run_until(&mut l, t0 + Duration::from_secs(33));
    assert!(l.is_empty());
}

#[test]
fn rfc2543_requests_match_without_branch() {
    let t0 = origin();
    let mut l = TransactionLayer::default();
    let m = req(&MESSAGE.replace(";branch=z9hG4bKmsg1", ""));
    assert!(matches!(
        l.handle_request(t0, &m, peer(TransportKind::Udp)).unwrap(),
        RequestDisposition::New(_)
    ));
    assert_eq!(
        l.handle_request(t0, &m, peer(TransportKind::Udp)).unwrap(),
        RequestDisposition::Retransmission
    );
}

/// An in-node hop (a function of the same node) gets the message as a value, no bytes, and
/// no retransmission: the link is reliable; a failure response is ACKed as a value too.
#[test]
fn local_peer_gets_values_and_no_retransmissions() {
    use cpm_sip_core::Function;
    let t0 = origin();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let pf = Peer::local(Function::Participating, "192.0.2.9:5060".parse().unwrap());
    let key = l.send_request(t0, req(INVITE), pf).unwrap();
    assert!(drain(&mut l).is_empty(), "no bytes for an in-node hop");
    let h = l.poll_handoff().expect("the request as a value");
    assert_eq!(h.to, Function::Participating);
    assert!(matches!(&h.message, Message::Request(r) if r.method == Method::Invite));
    // Nothing is retransmitted before timer B.
    assert!(run_until(&mut l, t0 + Duration::from_secs(31)).is_empty());
    assert!(l.poll_handoff().is_none());
    let busy = resp(
        "SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKinv1\nFrom: <sip:alice@a.example>;tag=1\nTo: <sip:bob@b.example>;tag=2\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
    );
    assert_eq!(l.handle_response(t0, &busy), ResponseDisposition::Pass(key));
    let ack = l.poll_handoff().expect("the ACK as a value");
    assert!(matches!(&ack.message, Message::Request(r) if r.method == Method::Ack));

    // A server transaction whose request came from a function answers with a value.
    let core = Peer::local(Function::Core, "192.0.2.9:5060".parse().unwrap());
    let RequestDisposition::New(skey) = l.handle_request(t0, &req(MESSAGE), core).unwrap() else {
        panic!("new transaction");
    };
    let ok = response_to(&req(MESSAGE), StatusCode::OK, Some("t"));
    l.respond(t0, &skey, &ok).unwrap();
    assert!(drain(&mut l).is_empty());
    let h = l.poll_handoff().expect("the response as a value");
    assert_eq!(h.to, Function::Core);
    assert!(matches!(&h.message, Message::Response(r) if r.status == StatusCode::OK));
}

/// A non-INVITE request handed to a function of the node is moved, not copied: the
/// transaction keeps no request it would never use again (an INVITE keeps its own, for the
/// ACK and CANCEL).
#[test]
fn a_non_invite_handed_over_is_not_kept() {
    use cpm_sip_core::Function;
    let t0 = origin();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let pf = Peer::local(Function::Participating, "192.0.2.9:5060".parse().unwrap());
    let msg = l.send_request(t0, req(MESSAGE), pf).unwrap();
    assert!(l.client_request(&msg).is_none());
    assert!(l.poll_handoff().is_some());
    let inv = l.send_request(t0, req(INVITE), pf).unwrap();
    assert!(l.client_request(&inv).is_some());
    // Over the network the request stays until the final response, as before.
    let net = l
        .send_request(
            t0,
            req(&MESSAGE.replace("msg1", "msg2")),
            peer(TransportKind::Udp),
        )
        .unwrap();
    assert!(l.client_request(&net).is_some());
}
