//! RFC 3261 section 12 dialogs: state from both sides, in-dialog requests, CSeq ordering.

use cpm_sip::{HeaderName, Message, Method, Request, Response};
use cpm_sip_core::dialog::{Dialog, DialogError, DialogState};

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

const INVITE: &str = "INVITE sip:bob@b.example SIP/2.0\nVia: SIP/2.0/UDP a.example;branch=z9hG4bK1\nFrom: \"Alice\" <sip:alice@a.example>;tag=a1\nTo: <sip:bob@b.example>\nCall-ID: d1\nCSeq: 7 INVITE\nContact: <sip:alice@192.0.2.1:5070>\nRecord-Route: <sip:p2.example;lr>, <sip:p1.example;lr>\nContent-Length: 0\n\n";
const OK: &str = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP a.example;branch=z9hG4bK1\nFrom: \"Alice\" <sip:alice@a.example>;tag=a1\nTo: <sip:bob@b.example>;tag=b9\nCall-ID: d1\nCSeq: 7 INVITE\nContact: <sip:bob@192.0.2.2:5080>\nRecord-Route: <sip:p2.example;lr>, <sip:p1.example;lr>\nContent-Length: 0\n\n";

#[test]
fn uac_dialog_routes_in_reverse_and_counts_up() {
    let mut d = Dialog::from_uac(&req(INVITE), &resp(OK)).unwrap();
    assert_eq!(d.state, DialogState::Confirmed);
    assert_eq!(d.id.local_tag, "a1");
    assert_eq!(d.id.remote_tag, "b9");
    assert_eq!(d.remote_target.to_string(), "sip:bob@192.0.2.2:5080");
    let routes: Vec<String> = d.route_set.iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(routes, ["sip:p1.example;lr", "sip:p2.example;lr"]);
    let ack = d.request(Method::Ack, Some(7));
    assert_eq!(ack.headers.cseq().unwrap().unwrap().seq, 7);
    let bye = d.request(Method::Bye, None);
    assert_eq!(bye.uri.to_string(), "sip:bob@192.0.2.2:5080");
    assert_eq!(bye.headers.cseq().unwrap().unwrap().seq, 8);
    assert_eq!(bye.headers.to().unwrap().unwrap().tag(), Some("b9"));
    assert_eq!(
        bye.headers.route().unwrap()[0].uri.to_string(),
        "sip:p1.example;lr"
    );
    assert_eq!(
        bye.headers
            .get(&HeaderName::CallId)
            .unwrap()
            .value()
            .unwrap(),
        "d1"
    );
}

#[test]
fn uas_dialog_keeps_route_order_and_rejects_old_cseq() {
    let invite = req(INVITE);
    let mut d = Dialog::from_uas(&invite, "b9", DialogState::Confirmed).unwrap();
    assert_eq!(d.id.remote_tag, "a1");
    assert_eq!(d.remote_target.to_string(), "sip:alice@192.0.2.1:5070");
    assert_eq!(d.route_set[0].uri.to_string(), "sip:p2.example;lr");
    let bye = d.request(Method::Bye, None);
    assert_eq!(bye.headers.from().unwrap().unwrap().tag(), Some("b9"));
    assert_eq!(bye.headers.to().unwrap().unwrap().tag(), Some("a1"));
    // The peer's next request must have a higher CSeq; a re-INVITE refreshes the target.
    let old = req(&INVITE.replace("7 INVITE", "6 INVITE"));
    assert!(!d.on_remote_request(&old));
    let reinvite = req(&INVITE
        .replace("7 INVITE", "8 INVITE")
        .replace("192.0.2.1:5070", "192.0.2.9:5070"));
    assert!(d.on_remote_request(&reinvite));
    assert_eq!(d.remote_target.to_string(), "sip:alice@192.0.2.9:5070");
}

#[test]
fn failures_and_100_create_no_dialog() {
    let busy = resp(&OK.replace("200 OK", "486 Busy Here"));
    assert_eq!(
        Dialog::from_uac(&req(INVITE), &busy),
        Err(DialogError::NoDialog)
    );
    let ringing_without_tag = resp(&OK.replace("200 OK", "180 Ringing").replace(";tag=b9", ""));
    assert_eq!(
        Dialog::from_uac(&req(INVITE), &ringing_without_tag),
        Err(DialogError::NoDialog)
    );
    let mut early =
        Dialog::from_uac(&req(INVITE), &resp(&OK.replace("200 OK", "180 Ringing"))).unwrap();
    assert_eq!(early.state, DialogState::Early);
    early.on_success(&resp(OK));
    assert_eq!(early.state, DialogState::Confirmed);
}
