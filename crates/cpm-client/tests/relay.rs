//! Sessions through an MSRP relay (RFC 4976) against a scripted relay and network on virtual
//! time: the connection to the relay opened first, AUTH answered 401 with a digest challenge,
//! the AUTH with credentials, the 200's Use-Path in our `a=path` before our URI, the session's
//! SENDs on the relay connection with the Use-Path before the peer's path in To-Path, SENDs
//! from the peer arriving through the relay; an incoming session answered only once the relay
//! authenticated us; a refusing or silent relay.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_client::{
    Client, ClientConfig, ConnCommand, ConnEvent, ConnId, Event, MsrpRelay, SessionId, SessionKind,
    Transmit, TransportKind,
};
use cpm_content::{CpimAddress, CpimBuilder};
use cpm_msrp::{
    ByteRange, Decoder, Flag, Head, Header as MsrpHeader, Headers as MsrpHeaders, Message as Msrp,
    Method as MsrpMethod, MsrpUri, Request as MsrpRequest, Response as MsrpResponse,
    StatusCode as MsrpStatus, TransactId,
};
use cpm_sdp::{Direction, MsrpMedia, Sdp, Setup};
use cpm_sip::{Header, HeaderName, Message, Method, Request, Response, StatusCode};
use cpm_sip_core::digest::{self, Algorithm, Credentials};
use cpm_sip_core::transaction::response_to;

const ICSI_SESSION: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session";
const RELAY_CONN: ConnId = ConnId(3);
const REALM: &str = "relay.test";

fn server() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

fn relay_uri() -> MsrpUri {
    "msrp://127.0.0.1:2856;tcp".parse().unwrap()
}

/// The relay's Use-Path for us.
fn use_path() -> MsrpUri {
    "msrp://127.0.0.1:2856/r3l4y;tcp".parse().unwrap()
}

fn client(t0: Instant) -> Client {
    let mut cfg = ClientConfig::new(
        "alice@localhost",
        "alicepw",
        server(),
        "127.0.0.1:40000".parse().unwrap(),
    );
    cfg.seed = 5;
    cfg.transport = TransportKind::Udp;
    cfg.msrp_relay = Some(MsrpRelay::from_uri(relay_uri()).unwrap());
    let mut c = Client::new(cfg, t0, 1_795_622_400_000).unwrap();
    c.register(t0);
    let reg = only_request(&mut c);
    let mut ok = response_to(&reg, StatusCode::OK, Some("srv"));
    let contact = reg
        .headers
        .get(&HeaderName::Contact)
        .unwrap()
        .value()
        .unwrap()
        .into_owned();
    ok.headers.push(Header::new(
        HeaderName::Contact,
        &format!("{contact};expires=600"),
    ));
    c.handle_datagram(t0, server(), ok.to_bytes());
    assert_eq!(events(&mut c), vec![Event::Registered { expires: 600 }]);
    c
}

fn drain(c: &mut Client) -> Vec<Transmit> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn events(c: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn commands(c: &mut Client) -> Vec<ConnCommand> {
    std::iter::from_fn(|| c.poll_conn_command()).collect()
}

fn sip(ts: &[Transmit]) -> Vec<Message> {
    ts.iter()
        .map(|t| Message::parse(t.payload.clone()).unwrap())
        .collect()
}

fn only_request(c: &mut Client) -> Request {
    let mut r: Vec<Request> = sip(&drain(c))
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        })
        .collect();
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

fn statuses(ts: &[Transmit]) -> Vec<Response> {
    sip(ts)
        .into_iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        })
        .collect()
}

/// The MSRP messages written, each with its connection.
fn written(cmds: &[ConnCommand]) -> Vec<(ConnId, Msrp)> {
    cmds.iter()
        .filter_map(|c| match c {
            ConnCommand::Send { conn, bytes } => Some((*conn, Msrp::parse(bytes).unwrap())),
            _ => None,
        })
        .collect()
}

fn only_written(c: &mut Client) -> MsrpRequest {
    let w = written(&commands(c));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, RELAY_CONN);
    match &w[0].1.head {
        Head::Request(r) => r.clone(),
        Head::Response(r) => panic!("a response: {r:?}"),
    }
}

fn feed_msrp(c: &mut Client, now: Instant, bytes: &[u8]) {
    let mut d = Decoder::default();
    let mut buf = BytesMut::from(bytes);
    while let Some(frame) = d.decode(&mut buf).unwrap() {
        c.handle_conn_event(
            now,
            ConnEvent::Frame {
                conn: RELAY_CONN,
                frame,
            },
        );
    }
}

/// The relay's answer to AUTH (RFC 4976 section 5.1: To-Path the client, From-Path the
/// relay), with these headers.
fn auth_answer(auth: &MsrpRequest, status: u16, comment: &str, extra: Vec<MsrpHeader>) -> Bytes {
    let mut headers =
        MsrpHeaders::new(auth.headers.from_path().to_vec(), vec![relay_uri()]).unwrap();
    for h in extra {
        headers.set(h);
    }
    let resp = MsrpResponse {
        transact_id: auth.transact_id.clone(),
        status,
        comment: Some(comment.to_owned()),
        headers,
    };
    let mut out = BytesMut::new();
    cpm_msrp::encode(&Head::Response(resp), None, Flag::Complete, &mut out).unwrap();
    out.freeze()
}

fn challenge() -> MsrpHeader {
    MsrpHeader::WwwAuthenticate(format!(
        "Digest realm=\"{REALM}\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", qop=\"auth\""
    ))
}

/// Runs the relay's side of the authentication: Connect, AUTH, 401, AUTH with credentials
/// (checked), 200 with the Use-Path.
fn authenticate(c: &mut Client, t0: Instant, session: SessionId) {
    let cmds = commands(c);
    let [ConnCommand::Connect { token, addr }] = cmds.as_slice() else {
        panic!("{cmds:?}");
    };
    assert_eq!(*token, session.0);
    assert_eq!(*addr, "127.0.0.1:2856".parse().unwrap());
    c.handle_conn_event(
        t0,
        ConnEvent::Connected {
            token: *token,
            conn: RELAY_CONN,
        },
    );
    // RFC 4976 section 5.1: To-Path the relay, From-Path our URI, no credentials yet.
    let first = only_written(c);
    assert_eq!(first.method, MsrpMethod::Auth);
    assert_eq!(first.headers.to_path(), &[relay_uri()]);
    assert_eq!(first.headers.from_path().len(), 1);
    assert_eq!(first.headers.from_path()[0].port(), Some(9));
    assert!(
        first
            .headers
            .fields()
            .iter()
            .all(|h| !matches!(h, MsrpHeader::Authorization(_)))
    );
    feed_msrp(
        c,
        t0,
        &auth_answer(&first, 401, "Unauthorized", vec![challenge()]),
    );
    // The digest of RFC 2617 with the method AUTH and the relay's URI, the user's
    // credentials.
    let second = only_written(c);
    assert_eq!(second.method, MsrpMethod::Auth);
    assert_ne!(second.transact_id, first.transact_id);
    assert_eq!(second.headers.to_path(), &[relay_uri()]);
    assert_eq!(second.headers.from_path(), first.headers.from_path());
    let value = second
        .headers
        .fields()
        .iter()
        .find_map(|h| match h {
            MsrpHeader::Authorization(v) => Some(v.clone()),
            _ => None,
        })
        .expect("Authorization");
    let creds = Credentials::parse(&value).unwrap();
    assert_eq!(creds.username, "alice@localhost");
    assert_eq!(creds.realm, REALM);
    assert_eq!(creds.uri, relay_uri().to_string());
    assert_eq!(creds.nc.as_deref(), Some("00000001"));
    let ha1 = digest::ha1(Algorithm::Md5, "alice@localhost", REALM, "alicepw");
    assert!(digest::verify(&creds, "AUTH", &ha1), "{value}");
    assert!(!digest::verify(&creds, "SEND", &ha1));
    feed_msrp(
        c,
        t0,
        &auth_answer(
            &second,
            200,
            "OK",
            vec![
                MsrpHeader::UsePath(vec![use_path()]),
                MsrpHeader::Expires(900),
            ],
        ),
    );
}

fn pf_path(id: &str) -> MsrpUri {
    MsrpUri::new(false, "127.0.0.1", 2855, id).unwrap()
}

fn pf_media(path: &MsrpUri, setup: Setup) -> MsrpMedia {
    MsrpMedia {
        port: 2855,
        secure: false,
        path: vec![path.clone()],
        accept_types: vec![
            "message/cpim".into(),
            "application/im-iscomposing+xml".into(),
        ],
        accept_wrapped_types: vec!["text/plain".into(), "message/imdn+xml".into()],
        setup: Some(setup),
        max_size: None,
        direction: Direction::SendRecv,
        file: None,
        connection: None,
        other: Vec::new(),
    }
}

fn sdp_of(media: &MsrpMedia) -> Vec<u8> {
    Sdp::for_msrp("pf", 1, 1, "127.0.0.1".parse().unwrap(), media).to_bytes()
}

fn msrp_of(body: &[u8]) -> MsrpMedia {
    Sdp::parse(body).unwrap().msrp().unwrap().unwrap().1
}

fn answer_ok(invite: &Request, media: &MsrpMedia) -> Response {
    let mut ok = response_to(invite, StatusCode::OK, Some("pftag"));
    ok.headers
        .push(Header::new(HeaderName::Contact, "<sip:pf@127.0.0.1:5062>"));
    let body = sdp_of(media);
    ok.headers.set(HeaderName::ContentType, "application/sdp");
    ok.headers
        .set(HeaderName::ContentLength, &body.len().to_string());
    ok.body = Bytes::from(body);
    ok
}

/// The relay's hop-by-hop 200 to a SEND (RFC 4976 section 7.3).
fn relay_ok(send: &MsrpRequest) -> Bytes {
    // As Kamailio's msrp_reply: To-Path the previous hop, From-Path the relay (the first
    // To-Path URI).
    assert_eq!(send.headers.to_path()[0], use_path());
    let resp = MsrpResponse {
        transact_id: send.transact_id.clone(),
        status: MsrpStatus::Ok.code(),
        comment: Some("OK".into()),
        headers: MsrpHeaders::new(
            vec![send.headers.from_path()[0].clone()],
            vec![send.headers.to_path()[0].clone()],
        )
        .unwrap(),
    };
    let mut out = BytesMut::new();
    cpm_msrp::encode(&Head::Response(resp), None, Flag::Complete, &mut out).unwrap();
    out.freeze()
}

/// The REPORT the PF sends for `send` (To-Path the SEND's From-Path as it arrived there:
/// the relay, then us), as the relay passes it on: itself taken off the To-Path and put
/// first in the From-Path.
fn relayed_report(
    send: &MsrpRequest,
    ours: &MsrpUri,
    theirs: &MsrpUri,
    code: u16,
    reason: &str,
) -> Bytes {
    let mut h = MsrpHeaders::new(vec![ours.clone()], vec![use_path(), theirs.clone()]).unwrap();
    h.set(MsrpHeader::MessageId(
        send.headers.message_id().unwrap().to_owned(),
    ));
    h.set(MsrpHeader::ByteRange(send.headers.byte_range().unwrap()));
    h.set(MsrpHeader::Status(cpm_msrp::Status::new(
        code,
        Some(reason),
    )));
    let head = Head::Request(MsrpRequest {
        transact_id: TransactId::new("reporttid").unwrap(),
        method: MsrpMethod::Report,
        headers: h,
    });
    let mut out = BytesMut::new();
    cpm_msrp::encode(&head, None, Flag::Complete, &mut out).unwrap();
    out.freeze()
}

#[test]
fn outgoing_chat_through_a_relay() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let session = c.start_session(t0, "bob@localhost").unwrap();
    let early = c.send_chat(t0, session, "hello via the relay").unwrap();
    // No INVITE before the relay gave its Use-Path.
    assert!(drain(&mut c).is_empty());
    authenticate(&mut c, t0, session);
    let invite = only_request(&mut c);
    assert_eq!(invite.method, Method::Invite);
    // RFC 4976 section 6: a=path is the Use-Path, then our URI.
    let offer = msrp_of(&invite.body);
    assert_eq!(offer.path.len(), 2, "{offer:?}");
    assert_eq!(offer.path[0], use_path());
    let ours = offer.path[1].clone();
    assert_eq!(ours.port(), Some(9));
    assert_eq!(offer.setup, Some(Setup::Active));
    assert!(commands(&mut c).is_empty());

    let theirs = pf_path("s0-pfup");
    c.handle_datagram(
        t0,
        server(),
        answer_ok(&invite, &pf_media(&theirs, Setup::Passive)).to_bytes(),
    );
    assert_eq!(only_request(&mut c).method, Method::Ack);
    // The relay connection is the session's: no new connection, the queued message goes.
    assert_eq!(
        events(&mut c),
        vec![Event::SessionStarted {
            session,
            peer: "bob@localhost".into(),
            kind: SessionKind::Chat,
            incoming: false,
        }]
    );
    let send = only_written(&mut c);
    assert_eq!(send.method, MsrpMethod::Send);
    assert_eq!(send.headers.to_path(), &[use_path(), theirs.clone()]);
    assert_eq!(send.headers.from_path(), std::slice::from_ref(&ours));
    // RFC 4976 section 7.3: the relay's 200 is hop by hop, so the message asks for the
    // success REPORT (RFC 4975 section 7.1.2) that says the network stored it.
    assert!(send.headers.success_report());
    feed_msrp(&mut c, t0, &relay_ok(&send));
    assert!(events(&mut c).is_empty());
    feed_msrp(
        &mut c,
        t0,
        &relayed_report(&send, &ours, &theirs, 200, "OK"),
    );
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SendResult { id, status: 200, .. }] if *id == early
    ));
    // A message whose REPORT never comes fails after 30 s; a failure REPORT fails at once.
    let late = c.send_chat(t0, session, "no report").unwrap();
    let send = only_written(&mut c);
    feed_msrp(&mut c, t0, &relay_ok(&send));
    c.handle_timeout(t0 + Duration::from_secs(29));
    assert!(events(&mut c).is_empty());
    c.handle_timeout(t0 + Duration::from_secs(30));
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SendResult { id, status: 408, .. }] if *id == late
    ));
    let refused = c.send_chat(t0, session, "refused").unwrap();
    let send = only_written(&mut c);
    feed_msrp(&mut c, t0, &relay_ok(&send));
    feed_msrp(
        &mut c,
        t0,
        &relayed_report(&send, &ours, &theirs, 403, "Forbidden"),
    );
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SendResult { id, status: 403, .. }] if *id == refused
    ));

    // From the peer, through the relay: From-Path lists the relay first.
    let cpim = CpimBuilder::new()
        .from(&CpimAddress::new("sip:bob@localhost".to_owned()))
        .to(&CpimAddress::new("sip:alice@localhost".to_owned()))
        .date_time("2026-11-25T16:00:00.000Z".to_owned())
        .message_id("bobmsg1".to_owned())
        .content_type("text/plain;charset=UTF-8")
        .body(Bytes::from_static(b"hi alice, relayed"))
        .build()
        .unwrap()
        .to_bytes();
    let mut h = MsrpHeaders::new(vec![ours], vec![use_path(), theirs.clone()]).unwrap();
    h.set(MsrpHeader::MessageId("inmsg1".into()));
    h.set(MsrpHeader::ByteRange(ByteRange::whole(cpim.len() as u64)));
    h.set(MsrpHeader::ContentType("message/cpim".into()));
    let head = Head::Request(MsrpRequest {
        transact_id: TransactId::new("relayedtid").unwrap(),
        method: MsrpMethod::Send,
        headers: h,
    });
    let mut bytes = BytesMut::new();
    cpm_msrp::encode(&head, Some(&cpim), Flag::Complete, &mut bytes).unwrap();
    feed_msrp(&mut c, t0, &bytes);
    let w = written(&commands(&mut c));
    // The 200 goes back one hop, to the relay.
    let resp = w
        .iter()
        .find_map(|(_, m)| match &m.head {
            Head::Response(r) => Some(r.clone()),
            Head::Request(_) => None,
        })
        .expect("a 200");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers.to_path(), &[use_path()]);
    assert!(
        events(&mut c)
            .iter()
            .any(|e| matches!(e, Event::Message(m) if m.text == "hi alice, relayed")),
    );
    // A notification back goes the same way (To-Path through the relay).
    for (_, m) in &w {
        if let Head::Request(r) = &m.head {
            assert_eq!(r.headers.to_path(), &[use_path(), theirs.clone()]);
        }
    }
}

/// An INVITE from bob with this SDP.
fn incoming_invite(sdp: &[u8]) -> String {
    format!(
        "INVITE sip:alice@127.0.0.1:40000 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKrelayin\r\n\
         Max-Forwards: 69\r\n\
         From: <sip:bob@localhost>;tag=bobtag\r\n\
         To: <sip:alice@localhost>\r\n\
         Call-ID: call-relayin\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:pf@127.0.0.1:5062>\r\n\
         P-Asserted-Service: {ICSI_SESSION}\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{}",
        sdp.len(),
        String::from_utf8_lossy(sdp)
    )
}

#[test]
fn incoming_chat_is_answered_once_the_relay_authenticated_us() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let theirs = pf_path("s1-pfdown");
    let offer = sdp_of(&pf_media(&theirs, Setup::ActPass));
    c.handle_datagram(t0, server(), Bytes::from(incoming_invite(&offer)));
    // 180 at once; the 200 waits for the relay.
    let r = statuses(&drain(&mut c));
    assert_eq!(
        r.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
        vec![180]
    );
    let session = match events(&mut c).as_slice() {
        [Event::SessionIncoming { session, .. }] => *session,
        other => panic!("{other:?}"),
    };
    authenticate(&mut c, t0, session);
    let r = statuses(&drain(&mut c));
    assert_eq!(
        r.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
        vec![200]
    );
    let answer = msrp_of(&r[0].body);
    assert_eq!(answer.setup, Some(Setup::Active));
    assert_eq!(answer.path.len(), 2);
    assert_eq!(answer.path[0], use_path());
    let ours = answer.path[1].clone();
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SessionStarted { incoming: true, .. }]
    ));
    // The empty binding SEND on the relay connection, through the relay to the PF.
    let bind = only_written(&mut c);
    assert_eq!(bind.headers.content_type(), None);
    assert_eq!(bind.headers.to_path(), &[use_path(), theirs]);
    assert_eq!(bind.headers.from_path(), &[ours]);
}

#[test]
fn a_refusing_relay_ends_the_session() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let session = c.start_session(t0, "bob@localhost").unwrap();
    let cmds = commands(&mut c);
    let [ConnCommand::Connect { token, .. }] = cmds.as_slice() else {
        panic!("no connect: {cmds:?}");
    };
    c.handle_conn_event(
        t0,
        ConnEvent::Connected {
            token: *token,
            conn: RELAY_CONN,
        },
    );
    let first = only_written(&mut c);
    feed_msrp(
        &mut c,
        t0,
        &auth_answer(&first, 401, "Unauthorized", vec![challenge()]),
    );
    let second = only_written(&mut c);
    // Wrong credentials: a second 401 is not answered again.
    feed_msrp(
        &mut c,
        t0,
        &auth_answer(&second, 401, "Unauthorized", vec![challenge()]),
    );
    let cmds = commands(&mut c);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, ConnCommand::Close { conn } if *conn == RELAY_CONN)),
        "{cmds:?}"
    );
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SessionEnded { session: s, status: 401, .. }] if *s == session
    ));
    // No INVITE ever went out.
    assert!(drain(&mut c).is_empty());
}

#[test]
fn a_silent_relay_times_out_and_an_invitation_gets_503() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let offer = sdp_of(&pf_media(&pf_path("s1-x"), Setup::ActPass));
    c.handle_datagram(t0, server(), Bytes::from(incoming_invite(&offer)));
    drain(&mut c);
    let session = match events(&mut c).as_slice() {
        [Event::SessionIncoming { session, .. }] => *session,
        other => panic!("{other:?}"),
    };
    let cmds = commands(&mut c);
    let [ConnCommand::Connect { token, .. }] = cmds.as_slice() else {
        panic!("no connect: {cmds:?}");
    };
    c.handle_conn_event(
        t0,
        ConnEvent::Connected {
            token: *token,
            conn: RELAY_CONN,
        },
    );
    let _auth = only_written(&mut c);
    let deadline = c.poll_timeout().unwrap();
    assert!(deadline <= t0 + Duration::from_secs(30));
    c.handle_timeout(t0 + Duration::from_secs(30));
    let r = statuses(&drain(&mut c));
    assert_eq!(
        r.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
        vec![503]
    );
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SessionEnded { session: s, status: 408, .. }] if *s == session
    ));
}
