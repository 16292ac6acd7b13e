//! The client core against scripted server responses on virtual time: registration with
//! digest, refresh, 407 retry of MESSAGE, incoming messages with automatic IMDN, duplicate
//! suppression, UDP retransmission, the 1-N body, TCP framing and reconnection.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_client::{
    Client, ClientConfig, DeliveryStatus, DisplayStatus, Event, Notification, ReceivedMessage,
    Transmit, TransportKind, instance_id,
};
use cpm_content::{Cpim, Disposition, Imdn, Multipart, ResourceList};
use cpm_sip::{HeaderName, Message, Method, Request, Response, StatusCode};
use cpm_sip_core::digest::{self, Algorithm, Credentials};
use cpm_sip_core::transaction::response_to;

const PW: &str = "alicepw";

/// The origin of virtual time; the only clock read, and only in tests.
fn origin() -> Instant {
    Instant::now()
}

fn server() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

fn config(transport: TransportKind) -> ClientConfig {
    let mut c = ClientConfig::new(
        "alice@localhost",
        PW,
        server(),
        "127.0.0.1:40000".parse().unwrap(),
    );
    c.transport = transport;
    c.seed = 7;
    c
}

fn client(transport: TransportKind, t0: Instant) -> Client {
    Client::new(config(transport), t0, 1_795_622_400_000).unwrap()
}

fn drain(c: &mut Client) -> Vec<Transmit> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn events(c: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn parse(t: &Transmit) -> Message {
    Message::parse(t.payload.clone()).unwrap()
}

fn requests(ts: &[Transmit]) -> Vec<Request> {
    ts.iter()
        .filter_map(|t| match parse(t) {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        })
        .collect()
}

fn responses(ts: &[Transmit]) -> Vec<Response> {
    ts.iter()
        .filter_map(|t| match parse(t) {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        })
        .collect()
}

fn only_request(c: &mut Client) -> Request {
    let r = requests(&drain(c));
    assert_eq!(r.len(), 1, "{r:?}");
    r.into_iter().next().unwrap()
}

fn header(r: &Request, name: HeaderName) -> Option<String> {
    r.headers
        .get(&name)
        .map(|h| h.value().unwrap().into_owned())
}

fn feed(c: &mut Client, now: Instant, resp: &Response) {
    c.handle_datagram(now, server(), resp.to_bytes());
}

/// Runs every timer up to `end`; returns what was sent, with when.
fn run_until(c: &mut Client, end: Instant) -> Vec<(Instant, Transmit)> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let Some(t) = c.poll_timeout() else { break };
        if t > end {
            break;
        }
        c.handle_timeout(t);
        assert!(c.poll_timeout().is_none_or(|n| n > t), "timer did not move");
        out.extend(drain(c).into_iter().map(|x| (t, x)));
    }
    out
}

fn challenge_401(req: &Request, algs: &[Algorithm], proxy: bool) -> Response {
    let status = if proxy {
        StatusCode::PROXY_AUTHENTICATION_REQUIRED
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut resp = response_to(req, status, Some("srv"));
    let name = if proxy {
        HeaderName::ProxyAuthenticate
    } else {
        HeaderName::WwwAuthenticate
    };
    for alg in algs {
        let v = digest::challenge("localhost", "nonce-1", *alg, false, None);
        resp.headers.push(cpm_sip::Header::new(name.clone(), &v));
    }
    resp
}

fn check_credentials(req: &Request, proxy: bool, alg: Algorithm) {
    let name = if proxy {
        HeaderName::ProxyAuthorization
    } else {
        HeaderName::Authorization
    };
    let creds = Credentials::parse(&header(req, name).expect("credentials")).unwrap();
    assert_eq!(creds.username, "alice@localhost");
    assert_eq!(creds.algorithm, alg);
    assert_eq!(creds.uri, req.uri.to_string());
    let ha1 = digest::ha1(alg, "alice@localhost", "localhost", PW);
    assert!(digest::verify(&creds, req.method.as_str(), &ha1));
}

fn register_ok(req: &Request, expires: u32) -> Response {
    let mut resp = response_to(req, StatusCode::OK, Some("srv"));
    let contact = header(req, HeaderName::Contact).unwrap();
    resp.headers.push(cpm_sip::Header::new(
        HeaderName::Contact,
        &format!("{contact};expires={expires}"),
    ));
    resp
}

/// A client registered over UDP (401 challenge answered).
fn registered(t0: Instant) -> Client {
    let mut c = client(TransportKind::Udp, t0);
    c.register(t0);
    let reg = only_request(&mut c);
    feed(&mut c, t0, &challenge_401(&reg, &[Algorithm::Md5], false));
    let reg = only_request(&mut c);
    feed(&mut c, t0, &register_ok(&reg, 600));
    assert_eq!(events(&mut c), vec![Event::Registered { expires: 600 }]);
    c
}

#[test]
fn register_digest_sha256_then_refresh_at_half_expiry() {
    let t0 = origin();
    let mut c = client(TransportKind::Udp, t0);
    c.register(t0);
    let reg = only_request(&mut c);
    assert_eq!(reg.method, Method::Register);
    assert_eq!(reg.uri.to_string(), "sip:localhost");
    assert_eq!(header(&reg, HeaderName::Expires).as_deref(), Some("600"));
    let contact = header(&reg, HeaderName::Contact).unwrap();
    let instance = instance_id("alice@localhost", "default");
    assert_eq!(
        contact,
        format!(
            "<sip:alice@127.0.0.1:40000>;+sip.instance=\"<{instance}>\";+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg,urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.largemsg,urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.deferred,urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session\""
        )
    );
    assert!(header(&reg, HeaderName::Authorization).is_none());
    // The server offers SHA-256 and MD5: the client picks SHA-256.
    feed(
        &mut c,
        t0,
        &challenge_401(&reg, &[Algorithm::Md5, Algorithm::Sha256], false),
    );
    let reg2 = only_request(&mut c);
    check_credentials(&reg2, false, Algorithm::Sha256);
    assert_eq!(reg2.headers.cseq().unwrap().unwrap().seq, 2);
    assert_eq!(
        reg2.headers.call_id().unwrap(),
        reg.headers.call_id().unwrap()
    );
    assert_ne!(
        reg2.headers.top_via().unwrap().unwrap().branch(),
        reg.headers.top_via().unwrap().unwrap().branch()
    );
    // The registrar grants less than asked.
    feed(&mut c, t0, &register_ok(&reg2, 300));
    assert_eq!(events(&mut c), vec![Event::Registered { expires: 300 }]);
    assert!(c.is_registered());
    // Nothing until half the granted expiry, then a refresh with cached credentials.
    let sent = run_until(&mut c, t0 + Duration::from_secs(149));
    assert!(sent.is_empty(), "{sent:?}");
    let sent = run_until(&mut c, t0 + Duration::from_millis(150_400));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, t0 + Duration::from_secs(150));
    let Message::Request(refresh) = parse(&sent[0].1) else {
        panic!("request")
    };
    assert_eq!(refresh.method, Method::Register);
    assert_eq!(refresh.headers.cseq().unwrap().unwrap().seq, 3);
    check_credentials(&refresh, false, Algorithm::Sha256);
    let now = t0 + Duration::from_secs(150);
    feed(&mut c, now, &register_ok(&refresh, 300));
    assert_eq!(events(&mut c), vec![Event::Registered { expires: 300 }]);
}

#[test]
fn register_md5_only_and_wrong_password_fails() {
    let t0 = origin();
    let mut cfg = config(TransportKind::Udp);
    cfg.password = "wrong".into();
    let mut c = Client::new(cfg, t0, 0).unwrap();
    c.register(t0);
    let mut reg = only_request(&mut c);
    for _ in 0..2 {
        feed(&mut c, t0, &challenge_401(&reg, &[Algorithm::Md5], false));
        reg = only_request(&mut c);
        let creds = Credentials::parse(&header(&reg, HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!(creds.algorithm, Algorithm::Md5);
    }
    // After two authenticated attempts, the third 401 is final.
    feed(&mut c, t0, &challenge_401(&reg, &[Algorithm::Md5], false));
    assert!(drain(&mut c).is_empty());
    assert_eq!(
        events(&mut c),
        vec![Event::RegistrationFailed {
            status: 401,
            reason: "Unauthorized".into(),
            will_retry: false
        }]
    );
    assert!(!c.is_registered());
}

#[test]
fn interval_too_brief_retries_with_min_expires() {
    let t0 = origin();
    let mut cfg = config(TransportKind::Udp);
    cfg.expires = 5;
    let mut c = Client::new(cfg, t0, 0).unwrap();
    c.register(t0);
    let reg = only_request(&mut c);
    let mut resp = response_to(&reg, StatusCode::INTERVAL_TOO_BRIEF, Some("s"));
    resp.headers
        .push(cpm_sip::Header::new(HeaderName::MinExpires, "60"));
    feed(&mut c, t0, &resp);
    let reg = only_request(&mut c);
    assert_eq!(header(&reg, HeaderName::Expires).as_deref(), Some("60"));
    feed(&mut c, t0, &register_ok(&reg, 60));
    assert_eq!(events(&mut c), vec![Event::Registered { expires: 60 }]);
}

#[test]
fn message_407_retry_then_200() {
    let t0 = origin();
    let mut c = client(TransportKind::Udp, t0);
    let id = c
        .send_message(t0, &["bob@localhost".to_owned()], "hello")
        .unwrap();
    let msg = only_request(&mut c);
    assert_eq!(msg.method, Method::Message);
    assert_eq!(msg.uri.to_string(), "sip:bob@localhost");
    assert_eq!(
        header(&msg, HeaderName::PPreferredService).as_deref(),
        Some("urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg")
    );
    assert_eq!(
        header(&msg, HeaderName::AcceptContact).as_deref(),
        Some("*;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\"")
    );
    let conv = msg.headers.conversation_id().unwrap().unwrap();
    let contrib = msg.headers.contribution_id().unwrap().unwrap();
    assert_eq!(conv.len(), 36);
    assert_eq!(contrib.len(), 36);
    assert_eq!(
        header(&msg, HeaderName::ContentType).as_deref(),
        Some("message/cpim")
    );
    let cpim = Cpim::parse(msg.body.clone()).unwrap();
    assert_eq!(cpim.from().unwrap().unwrap().uri, "sip:alice@localhost");
    assert_eq!(cpim.to().unwrap().unwrap().uri, "sip:bob@localhost");
    assert_eq!(cpim.date_time(), Some("2026-11-25T16:00:00.000Z"));
    assert_eq!(
        cpim.disposition_notification(),
        vec![
            Disposition::PositiveDelivery,
            Disposition::NegativeDelivery,
            Disposition::Display
        ]
    );
    assert_eq!(cpim.content_type(), Some("text/plain;charset=UTF-8"));
    assert_eq!(&cpim.body[..], b"hello");
    let message_id = cpim.message_id().unwrap().to_owned();
    assert_eq!(c.message_id(id), Some(message_id.as_str()));

    feed(&mut c, t0, &challenge_401(&msg, &[Algorithm::Md5], true));
    let retry = only_request(&mut c);
    check_credentials(&retry, true, Algorithm::Md5);
    assert_eq!(retry.headers.cseq().unwrap().unwrap().seq, 2);
    assert_eq!(retry.body, msg.body);
    assert_eq!(retry.headers.conversation_id().unwrap().unwrap(), conv);
    feed(&mut c, t0, &response_to(&retry, StatusCode::OK, Some("b")));
    assert_eq!(
        events(&mut c),
        vec![Event::SendResult {
            id,
            status: 200,
            reason: "OK".into(),
            message_id
        }]
    );

    // The next message to bob is in the same conversation, with a new contribution, and
    // carries the cached proxy credentials at once.
    let id2 = c
        .send_message(t0, &["sip:bob@localhost".to_owned()], "again")
        .unwrap();
    assert_ne!(id, id2);
    let msg2 = only_request(&mut c);
    assert_eq!(msg2.headers.conversation_id().unwrap().unwrap(), conv);
    assert_ne!(msg2.headers.contribution_id().unwrap().unwrap(), contrib);
    check_credentials(&msg2, true, Algorithm::Md5);
    feed(
        &mut c,
        t0,
        &response_to(&msg2, StatusCode::NOT_FOUND, Some("b")),
    );
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SendResult { status: 404, .. }]
    ));
}

#[test]
fn udp_message_retransmitted_then_times_out() {
    let t0 = origin();
    let mut c = client(TransportKind::Udp, t0);
    let id = c.send_message(t0, &["bob".to_owned()], "hi").unwrap();
    let first = only_request(&mut c);
    assert_eq!(first.uri.to_string(), "sip:bob@localhost");
    let sent = run_until(&mut c, t0 + Duration::from_secs(40));
    let offsets: Vec<u128> = sent.iter().map(|(t, _)| (*t - t0).as_millis()).collect();
    assert_eq!(&offsets[..4], &[500, 1500, 3500, 7500]);
    assert!(
        sent.iter()
            .all(|(_, t)| t.payload == first.to_bytes() && t.peer.addr == server())
    );
    match events(&mut c).as_slice() {
        [Event::SendResult { id: i, status, .. }] => {
            assert_eq!((*i, *status), (id, 408));
        }
        other => panic!("{other:?}"),
    }
}

fn incoming(call_id: &str, branch: &str, message_id: &str, extra: &str) -> Bytes {
    let cpim = format!(
        "From: <sip:bob@localhost>\r\nTo: <sip:alice@localhost>\r\nDateTime: 2026-11-25T10:00:00.000Z\r\nNS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: {message_id}\r\nimdn.Disposition-Notification: positive-delivery, display\r\n\r\nContent-Type: text/plain;charset=UTF-8\r\n\r\nhi alice"
    );
    Bytes::from(format!(
        "MESSAGE sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=b1\r\nTo: <sip:alice@localhost>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nConversation-ID: 11111111-2222-4333-8444-555555555555\r\nContribution-ID: 66666666-7777-4888-9999-000000000000\r\n{extra}Content-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{cpim}",
        cpim.len()
    ))
}

#[test]
fn incoming_message_gets_200_and_delivery_notification_once() {
    let t0 = origin();
    let mut c = registered(t0);
    let raw = incoming(
        "c1",
        "z9hG4bKin1",
        "Msg-1",
        "Accept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.deferred\"\r\n",
    );
    c.handle_datagram(t0, server(), raw.clone());
    let out = drain(&mut c);
    let resp = responses(&out);
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].status, StatusCode::OK);
    assert!(resp[0].headers.to().unwrap().unwrap().tag().is_some());
    let reqs = requests(&out);
    assert_eq!(reqs.len(), 1, "one delivery notification");
    let imdn_req = &reqs[0];
    assert_eq!(imdn_req.uri.to_string(), "sip:bob@localhost");
    assert_eq!(
        header(imdn_req, HeaderName::PPreferredService).as_deref(),
        Some("urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg")
    );
    assert_eq!(
        imdn_req.headers.conversation_id().unwrap().as_deref(),
        Some("11111111-2222-4333-8444-555555555555")
    );
    let cpim = Cpim::parse(imdn_req.body.clone()).unwrap();
    assert_eq!(cpim.from().unwrap().unwrap().uri, "sip:alice@localhost");
    assert_eq!(cpim.to().unwrap().unwrap().uri, "sip:bob@localhost");
    assert!(cpim.message_id().is_some_and(|m| m != "Msg-1"));
    assert_eq!(cpim.content_type(), Some("message/imdn+xml"));
    assert_eq!(
        cpim.content_header("Content-Disposition"),
        Some("notification")
    );
    let imdn = Imdn::parse(&cpim.body).unwrap();
    assert_eq!(imdn.message_id, "Msg-1");
    assert_eq!(
        imdn.notification,
        Notification::Delivery(DeliveryStatus::Delivered)
    );
    assert_eq!(imdn.recipient_uri.as_deref(), Some("sip:alice@localhost"));
    assert_eq!(
        imdn.original_recipient_uri.as_deref(),
        Some("sip:alice@localhost")
    );
    assert_eq!(
        events(&mut c),
        vec![Event::Message(Box::new(ReceivedMessage {
            from: "bob@localhost".into(),
            to: "alice@localhost".into(),
            recipients: vec!["alice@localhost".into()],
            text: "hi alice".into(),
            content_type: "text/plain;charset=UTF-8".into(),
            conversation_id: Some("11111111-2222-4333-8444-555555555555".into()),
            contribution_id: Some("66666666-7777-4888-9999-000000000000".into()),
            message_id: "Msg-1".into(),
            date_time: Some("2026-11-25T10:00:00.000Z".into()),
            deferred: true,
            display_requested: true,
        }))]
    );

    // A retransmission (same branch) is absorbed by the transaction: the 200 again only.
    c.handle_datagram(t0, server(), raw);
    let out = drain(&mut c);
    assert_eq!(responses(&out).len(), 1);
    assert!(requests(&out).is_empty());
    assert!(events(&mut c).is_empty());

    // The same message in a new transaction (resent by the network): 200, no event, no IMDN.
    c.handle_datagram(t0, server(), incoming("c2", "z9hG4bKin2", "Msg-1", ""));
    let out = drain(&mut c);
    assert_eq!(responses(&out)[0].status, StatusCode::OK);
    assert!(requests(&out).is_empty());
    assert!(events(&mut c).is_empty());

    // The delivery notification's own response ends it quietly (an event for the app).
    feed(
        &mut c,
        t0,
        &response_to(imdn_req, StatusCode::OK, Some("x")),
    );
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::NotificationSent {
            status: 200,
            notification: Notification::Delivery(DeliveryStatus::Delivered),
            ..
        }]
    ));

    // Display notification on request, once.
    assert!(c.send_displayed(t0, "Msg-1"));
    let disp = only_request(&mut c);
    let cpim = Cpim::parse(disp.body).unwrap();
    let imdn = Imdn::parse(&cpim.body).unwrap();
    assert_eq!(
        imdn.notification,
        Notification::Display(DisplayStatus::Displayed)
    );
    assert!(!c.send_displayed(t0, "Msg-1"));
    assert!(!c.send_displayed(t0, "unknown"));
}

#[test]
fn incoming_imdn_and_plain_text() {
    let t0 = origin();
    let mut c = registered(t0);
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>Orig-9</message-id><datetime>2026-11-25T10:00:01.000Z</datetime><recipient-uri>sip:bob@localhost</recipient-uri><delivery-notification><status><delivered/></status></delivery-notification></imdn>";
    let cpim = format!(
        "From: <sip:bob@localhost>\r\nTo: <sip:alice@localhost>\r\nNS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: N-1\r\n\r\nContent-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n{xml}"
    );
    let raw = format!(
        "MESSAGE sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKimdn\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=b1\r\nTo: <sip:alice@localhost>\r\nCall-ID: ci\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{cpim}",
        cpim.len()
    );
    c.handle_datagram(t0, server(), Bytes::from(raw));
    let out = drain(&mut c);
    assert_eq!(responses(&out)[0].status, StatusCode::OK);
    assert!(requests(&out).is_empty(), "no IMDN for an IMDN");
    match events(&mut c).as_slice() {
        [Event::Imdn(i)] => {
            assert_eq!(i.from, "bob@localhost");
            assert_eq!(i.message_id, "Orig-9");
            assert_eq!(
                i.notification,
                Notification::Delivery(DeliveryStatus::Delivered)
            );
            assert_eq!(i.recipient.as_deref(), Some("sip:bob@localhost"));
        }
        other => panic!("{other:?}"),
    }

    let plain = "MESSAGE sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtxt\r\nMax-Forwards: 69\r\nFrom: \"Bob\" <sip:bob@localhost>;tag=b2\r\nTo: <sip:alice@localhost>\r\nCall-ID: plain-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhey!!";
    c.handle_datagram(t0, server(), Bytes::from(plain));
    let out = drain(&mut c);
    assert_eq!(responses(&out)[0].status, StatusCode::OK);
    assert!(requests(&out).is_empty());
    match events(&mut c).as_slice() {
        [Event::Message(m)] => {
            assert_eq!(m.from, "bob@localhost");
            assert_eq!(m.text, "hey!!");
            assert_eq!(m.message_id, "plain-1");
            assert_eq!(m.content_type, "text/plain");
            assert!(!m.deferred && !m.display_requested);
        }
        other => panic!("{other:?}"),
    }

    // A malformed CPIM body is a 400, no event.
    let bad = "MESSAGE sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbad\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=b3\r\nTo: <sip:alice@localhost>\r\nCall-ID: bad-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\nContent-Length: 7\r\n\r\ngarbage";
    c.handle_datagram(t0, server(), Bytes::from(bad));
    assert_eq!(responses(&drain(&mut c))[0].status, StatusCode::BAD_REQUEST);
    assert!(events(&mut c).is_empty());

    // Other methods: 405 with Allow; OPTIONS: 200; a BYE outside any dialog: 481.
    let sub = "SUBSCRIBE sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsub\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=b4\r\nTo: <sip:alice@localhost>\r\nCall-ID: sub-1\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContact: <sip:bob@127.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n";
    c.handle_datagram(t0, server(), Bytes::from(sub));
    let r = responses(&drain(&mut c));
    assert_eq!(r[0].status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r[0].headers.contains(&HeaderName::Allow));
    let bye = "BYE sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=b4\r\nTo: <sip:alice@localhost>;tag=a4\r\nCall-ID: bye-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
    c.handle_datagram(t0, server(), Bytes::from(bye));
    let r = responses(&drain(&mut c));
    assert_eq!(r[0].status, StatusCode::CALL_DOES_NOT_EXIST);
}

#[test]
fn one_to_many_body_parses_back() {
    let t0 = origin();
    let mut c = registered(t0);
    let to = ["bob@localhost".to_owned(), "carol@localhost".to_owned()];
    let id = c.send_message(t0, &to, "hi both").unwrap();
    let req = only_request(&mut c);
    assert_eq!(req.uri.to_string(), "sip:cpm-exploder@localhost");
    assert_eq!(
        req.headers.to().unwrap().unwrap().uri.to_string(),
        "sip:cpm-exploder@localhost"
    );
    assert_eq!(
        req.headers.require().unwrap(),
        vec!["recipient-list-message"]
    );
    assert_eq!(
        header(&req, HeaderName::PPreferredService).as_deref(),
        Some("urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg.group")
    );
    assert_eq!(
        header(&req, HeaderName::AcceptContact).as_deref(),
        Some("*;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg.group\"")
    );
    // Registered over this flow: no proxy credentials.
    assert!(header(&req, HeaderName::ProxyAuthorization).is_none());
    let ct = header(&req, HeaderName::ContentType).unwrap();
    assert!(ct.starts_with("multipart/mixed"));
    let mp = Multipart::parse_with_content_type(&ct, req.body.clone()).unwrap();
    assert_eq!(mp.parts.len(), 2);
    assert_eq!(
        mp.parts[0].content_type(),
        Some("application/resource-lists+xml")
    );
    assert_eq!(
        mp.parts[0].header("Content-Disposition"),
        Some("recipient-list")
    );
    let list = ResourceList::parse(&mp.parts[0].body).unwrap();
    let uris: Vec<&str> = list.entries.iter().map(|e| e.uri.as_str()).collect();
    assert_eq!(uris, ["sip:bob@localhost", "sip:carol@localhost"]);
    assert!(
        list.entries
            .iter()
            .all(|e| e.copy_control == Some(cpm_content::CopyControl::To))
    );
    assert_eq!(mp.parts[1].content_type(), Some("message/cpim"));
    let cpim = Cpim::parse(mp.parts[1].body.clone()).unwrap();
    let tos: Vec<String> = cpim.to_all().unwrap().into_iter().map(|a| a.uri).collect();
    assert_eq!(tos, ["sip:bob@localhost", "sip:carol@localhost"]);
    assert_eq!(&cpim.body[..], b"hi both");
    feed(
        &mut c,
        t0,
        &response_to(&req, StatusCode::ACCEPTED, Some("x")),
    );
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SendResult { id: i, status: 202, .. }] if *i == id
    ));
    assert_eq!(
        c.send_message(t0, &[], "x"),
        Err(cpm_client::SendError::NoRecipient)
    );
    assert!(
        c.send_message(t0, &["bad uri@x y".to_owned()], "x")
            .is_err()
    );
}

#[test]
fn tcp_framing_keepalive_and_reregistration_after_close() {
    let t0 = origin();
    let mut c = client(TransportKind::Tcp, t0);
    c.handle_connected(t0, "127.0.0.1:41000".parse().unwrap());
    c.register(t0);
    let reg = only_request(&mut c);
    assert!(
        header(&reg, HeaderName::Contact)
            .unwrap()
            .starts_with("<sip:alice@127.0.0.1:41000;transport=tcp>")
    );
    assert!(
        header(&reg, HeaderName::Via)
            .unwrap()
            .starts_with("SIP/2.0/TCP 127.0.0.1:41000;")
    );
    // The 200 arrives in two pieces, with a keep-alive CRLF in front.
    let ok = register_ok(&reg, 600).to_bytes();
    c.handle_stream_data(t0, b"\r\n");
    c.handle_stream_data(t0, &ok[..10]);
    assert!(events(&mut c).is_empty());
    c.handle_stream_data(t0, &ok[10..]);
    assert_eq!(events(&mut c), vec![Event::Registered { expires: 600 }]);

    // A CRLFCRLF keep-alive every 120 s.
    let sent = run_until(&mut c, t0 + Duration::from_secs(121));
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0].1.payload[..], b"\r\n\r\n");

    // A message in flight when the connection closes fails with 503, and the client
    // registers again at once (which makes the driver reconnect).
    let now = t0 + Duration::from_secs(130);
    let id = c
        .send_message(now, &["bob@localhost".to_owned()], "x")
        .unwrap();
    drain(&mut c);
    c.handle_connection_closed(now);
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SendResult { id: i, status: 503, .. }] if *i == id
    ));
    assert!(!c.is_registered());
    let sent = run_until(&mut c, now);
    assert_eq!(sent.len(), 1);
    c.handle_connected(now, "127.0.0.1:41001".parse().unwrap());
    let Message::Request(rereg) = parse(&sent[0].1) else {
        panic!("request")
    };
    assert_eq!(rereg.method, Method::Register);
    feed_tcp(&mut c, now, &register_ok(&rereg, 600));
    assert_eq!(events(&mut c), vec![Event::Registered { expires: 600 }]);

    // The connection fails again and again: the retries back off.
    c.handle_connection_closed(now);
    let first = c.poll_timeout().unwrap();
    assert_eq!(first, now);
    let sent = run_until(&mut c, now);
    assert_eq!(sent.len(), 1);
    c.handle_connection_closed(now);
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::RegistrationFailed {
            status: 503,
            will_retry: true,
            ..
        }]
    ));
    assert!(c.poll_timeout().unwrap() >= now + Duration::from_secs(1));

    // Garbage on the stream: the core asks for the connection to be closed.
    c.handle_stream_data(now, b"NOT SIP AT ALL\r\nContent-Length: x\r\n\r\n");
    assert!(c.poll_close());
    assert!(!c.poll_close());
}

fn feed_tcp(c: &mut Client, now: Instant, resp: &Response) {
    c.handle_stream_data(now, &resp.to_bytes());
}

#[test]
fn unregister_sends_expires_zero() {
    let t0 = origin();
    let mut c = registered(t0);
    c.unregister(t0);
    let req = only_request(&mut c);
    assert_eq!(header(&req, HeaderName::Expires).as_deref(), Some("0"));
    // The cached challenge is reused.
    assert!(header(&req, HeaderName::Authorization).is_some());
    feed(&mut c, t0, &response_to(&req, StatusCode::OK, Some("s")));
    assert_eq!(events(&mut c), vec![Event::Unregistered { status: 200 }]);
    // No refresh any more.
    let sent = run_until(&mut c, t0 + Duration::from_secs(1000));
    assert!(requests(&sent.into_iter().map(|x| x.1).collect::<Vec<_>>()).is_empty());

    // Unregistering a client that never registered reports at once.
    let mut fresh = client(TransportKind::Udp, t0);
    fresh.unregister(t0);
    assert!(drain(&mut fresh).is_empty());
    assert_eq!(events(&mut fresh), vec![Event::Unregistered { status: 0 }]);
}

#[test]
fn instance_ids_are_stable_per_device() {
    let a = instance_id("alice@localhost", "phone");
    assert_eq!(a, instance_id("alice@localhost", "phone"));
    assert_ne!(a, instance_id("alice@localhost", "laptop"));
    assert_ne!(a, instance_id("bob@localhost", "phone"));
    let uuid = a.strip_prefix("urn:uuid:").unwrap();
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "8");
    assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"));
}

#[test]
fn same_seed_same_bytes() {
    let t0 = origin();
    let run = || {
        let mut c = client(TransportKind::Udp, t0);
        c.register(t0);
        c.send_message(t0, &["bob@localhost".to_owned()], "x")
            .unwrap();
        drain(&mut c)
    };
    assert_eq!(run(), run());
}
