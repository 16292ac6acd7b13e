//! Sessions against a scripted network on virtual time: an outgoing chat (INVITE, 1xx, 2xx
//! with the SDP answer, ACK, Connect, the binding SEND, chat SENDs and their 200s, an IMDN
//! received in the session, BYE), an incoming chat (actpass offer answered active, chunks
//! reassembled, delivered and displayed IMDNs sent back in the session, the peer's BYE),
//! Large Message Mode above 1,300 bytes, CANCEL before the answer, a lost MSRP connection,
//! and bad input (an offer without `a=path`, a SEND for an unknown session).

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cpm_client::{
    Client, ClientConfig, ConnCommand, ConnEvent, ConnId, DeliveryStatus, DisplayStatus, Event,
    Notification, SessionKind, Transmit, TransportKind,
};
use cpm_content::{Cpim, CpimAddress, CpimBuilder, Disposition, Imdn, mime};
use cpm_msrp::{
    ByteRange, Decoder, Flag, Head, Header as MsrpHeader, Headers as MsrpHeaders, Message as Msrp,
    Method as MsrpMethod, MsrpUri, Request as MsrpRequest, StatusCode as MsrpStatus, TransactId,
    report,
};
use cpm_sdp::{Direction, MsrpMedia, Sdp, Setup};
use cpm_sip::{Header, HeaderName, Message, Method, Request, Response, StatusCode};
use cpm_sip_core::transaction::response_to;

const ICSI_SESSION: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session";
const ICSI_LARGEMSG: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.largemsg";
const CONN: ConnId = ConnId(7);

fn origin() -> Instant {
    Instant::now()
}

fn server() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

fn client_with(t0: Instant, f: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut cfg = ClientConfig::new(
        "alice@localhost",
        "alicepw",
        server(),
        "127.0.0.1:40000".parse().unwrap(),
    );
    cfg.seed = 11;
    cfg.transport = TransportKind::Udp;
    f(&mut cfg);
    let mut c = Client::new(cfg, t0, 1_795_622_400_000).unwrap();
    c.register(t0);
    let reg = only_request(&mut c);
    let mut ok = response_to(&reg, StatusCode::OK, Some("srv"));
    let contact = header(&reg, HeaderName::Contact).unwrap();
    ok.headers.push(Header::new(
        HeaderName::Contact,
        &format!("{contact};expires=600"),
    ));
    feed(&mut c, t0, &ok);
    assert_eq!(events(&mut c), vec![Event::Registered { expires: 600 }]);
    c
}

fn registered(t0: Instant) -> Client {
    client_with(t0, |_| {})
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

fn messages(ts: &[Transmit]) -> Vec<Message> {
    ts.iter()
        .map(|t| Message::parse(t.payload.clone()).unwrap())
        .collect()
}

fn requests(ts: &[Transmit]) -> Vec<Request> {
    messages(ts)
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        })
        .collect()
}

fn responses(ts: &[Transmit]) -> Vec<Response> {
    messages(ts)
        .into_iter()
        .filter_map(|m| match m {
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

fn feed_text(c: &mut Client, now: Instant, text: &str) {
    c.handle_datagram(now, server(), Bytes::from(text.to_owned()));
}

/// The MSRP messages the client wrote, with the connections they went on.
fn written(cmds: &[ConnCommand]) -> Vec<(ConnId, Msrp)> {
    cmds.iter()
        .filter_map(|c| match c {
            ConnCommand::Send { conn, bytes } => Some((*conn, Msrp::parse(bytes).unwrap())),
            _ => None,
        })
        .collect()
}

fn request_of(m: &Msrp) -> &MsrpRequest {
    match &m.head {
        Head::Request(r) => r,
        Head::Response(r) => panic!("a response: {r:?}"),
    }
}

/// Feeds bytes to the client as the transport's decoder would.
fn feed_msrp(c: &mut Client, now: Instant, conn: ConnId, bytes: &[u8]) {
    let mut d = Decoder::default();
    let mut buf = BytesMut::from(bytes);
    while let Some(frame) = d.decode(&mut buf).unwrap() {
        c.handle_conn_event(now, ConnEvent::Frame { conn, frame });
    }
}

/// The 200 the network sends for a SEND.
fn ok_for(m: &Msrp) -> Bytes {
    let resp = report::response(request_of(m), MsrpStatus::Ok).unwrap();
    let mut out = BytesMut::new();
    cpm_msrp::encode(&Head::Response(resp), None, Flag::Complete, &mut out).unwrap();
    out.freeze()
}

fn msrp_send(
    to: &MsrpUri,
    from: &MsrpUri,
    tid: &str,
    message_id: &str,
    range: ByteRange,
    content_type: &str,
    body: &[u8],
    flag: Flag,
) -> Bytes {
    let mut h = MsrpHeaders::new(vec![to.clone()], vec![from.clone()]).unwrap();
    h.set(MsrpHeader::MessageId(message_id.to_owned()));
    h.set(MsrpHeader::ByteRange(range));
    h.set(MsrpHeader::ContentType(content_type.to_owned()));
    let head = Head::Request(MsrpRequest {
        transact_id: TransactId::new(tid).unwrap(),
        method: MsrpMethod::Send,
        headers: h,
    });
    let mut out = BytesMut::new();
    cpm_msrp::encode(&head, Some(body), flag, &mut out).unwrap();
    out.freeze()
}

fn pf_path(id: &str) -> MsrpUri {
    MsrpUri::new(false, "127.0.0.1", 2855, id).unwrap()
}

/// The PF's MSRP media: its path, the given setup.
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

/// The network's 2xx to our INVITE: SDP answer, Contact, Record-Route.
fn answer_ok(invite: &Request, media: &MsrpMedia) -> Response {
    let mut ok = response_to(invite, StatusCode::OK, Some("pftag"));
    ok.headers.push(Header::new(
        HeaderName::RecordRoute,
        "<sip:127.0.0.1:5060;lr;cpm-d=0011223344556677>",
    ));
    ok.headers
        .push(Header::new(HeaderName::Contact, "<sip:pf@127.0.0.1:5062>"));
    let body = sdp_of(media);
    ok.headers.set(HeaderName::ContentType, "application/sdp");
    ok.headers
        .set(HeaderName::ContentLength, &body.len().to_string());
    ok.body = Bytes::from(body);
    ok
}

/// An incoming INVITE from bob with this SDP and service.
fn incoming_invite(branch: &str, icsi: &str, sdp: &[u8]) -> String {
    format!(
        "INVITE sip:alice@127.0.0.1:40000 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
         Record-Route: <sip:127.0.0.1:5060;lr;cpm-d=8899aabbccddeeff>\r\n\
         Max-Forwards: 69\r\n\
         From: <sip:bob@localhost>;tag=bobtag\r\n\
         To: <sip:alice@localhost>\r\n\
         Call-ID: call-{branch}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:pf@127.0.0.1:5062>\r\n\
         P-Asserted-Service: {icsi}\r\n\
         Conversation-ID: conv-1\r\n\
         Contribution-ID: contrib-1\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{}",
        sdp.len(),
        String::from_utf8_lossy(sdp)
    )
}

/// Outgoing: up to the connected, bound session with one message queued before it.
struct Outgoing {
    c: Client,
    t0: Instant,
    session: cpm_client::SessionId,
    invite: Request,
    ours: MsrpUri,
    theirs: MsrpUri,
}

fn outgoing_up() -> (Outgoing, cpm_client::SendId, Msrp) {
    let t0 = origin();
    let mut c = registered(t0);
    let session = c.start_session(t0, "bob@localhost").unwrap();
    let invite = only_request(&mut c);
    let early = c.send_chat(t0, session, "hello").unwrap();
    let theirs = pf_path("pfsess1");
    feed(&mut c, t0, &response_to(&invite, StatusCode::TRYING, None));
    feed(
        &mut c,
        t0,
        &response_to(&invite, StatusCode::RINGING, Some("pftag")),
    );
    assert!(drain(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
    assert!(commands(&mut c).is_empty());
    feed(
        &mut c,
        t0,
        &answer_ok(&invite, &pf_media(&theirs, Setup::Passive)),
    );
    let ack = only_request(&mut c);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri.to_string(), "sip:pf@127.0.0.1:5062");
    assert_eq!(
        header(&ack, HeaderName::Route).as_deref(),
        Some("<sip:127.0.0.1:5060;lr;cpm-d=0011223344556677>")
    );
    assert_eq!(header(&ack, HeaderName::CSeq).as_deref(), Some("1 ACK"));
    let cmds = commands(&mut c);
    let [ConnCommand::Connect { token, addr }] = cmds.as_slice() else {
        panic!("{cmds:?}");
    };
    assert_eq!(*addr, "127.0.0.1:2855".parse().unwrap());
    c.handle_conn_event(
        t0,
        ConnEvent::Connected {
            token: *token,
            conn: CONN,
        },
    );
    assert_eq!(
        events(&mut c),
        vec![Event::SessionStarted {
            session,
            peer: "bob@localhost".into(),
            kind: SessionKind::Chat,
            incoming: false,
        }]
    );
    // The queued message is the first SEND: it binds the connection (RFC 4975 5.4).
    let sent = written(&commands(&mut c));
    assert_eq!(sent.len(), 1);
    let (conn, first) = sent.into_iter().next().unwrap();
    assert_eq!(conn, CONN);
    let ours = msrp_of(&invite.body).path[0].clone();
    (
        Outgoing {
            c,
            t0,
            session,
            invite,
            ours,
            theirs,
        },
        early,
        first,
    )
}

#[test]
fn outgoing_chat_session() {
    let (mut o, early, first) = outgoing_up();
    let (c, t0) = (&mut o.c, o.t0);

    // The INVITE: the session ICSI, our Contact with it, the SDP offer.
    let inv = &o.invite;
    assert_eq!(inv.method, Method::Invite);
    assert_eq!(inv.uri.to_string(), "sip:bob@localhost");
    assert_eq!(
        header(inv, HeaderName::PPreferredService).as_deref(),
        Some(ICSI_SESSION)
    );
    assert!(
        header(inv, HeaderName::AcceptContact)
            .unwrap()
            .contains("oma.cpm.session")
    );
    let contact = header(inv, HeaderName::Contact).unwrap();
    assert!(contact.contains("urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"));
    assert!(contact.contains("+sip.instance"));
    assert!(header(inv, HeaderName::ConversationId).is_some());
    assert!(header(inv, HeaderName::ContributionId).is_some());
    assert_eq!(
        header(inv, HeaderName::ContentType).as_deref(),
        Some("application/sdp")
    );
    let text = String::from_utf8_lossy(&inv.body);
    assert!(text.contains("m=message 9 TCP/MSRP *"), "{text}");
    let offer = msrp_of(&inv.body);
    assert_eq!(offer.setup, Some(Setup::Active));
    assert_eq!(offer.direction, Direction::SendRecv);
    assert_eq!(
        offer.accept_types,
        vec!["message/cpim", "application/im-iscomposing+xml"]
    );
    assert_eq!(
        offer.accept_wrapped_types,
        vec!["text/plain", "message/imdn+xml"]
    );
    assert_eq!(o.ours.port(), Some(9));
    assert_eq!(o.ours.host().as_str(), "127.0.0.1");

    // The first SEND: To-Path the answer's path, From-Path ours, CPIM with the text.
    let req = request_of(&first);
    assert_eq!(req.method, MsrpMethod::Send);
    assert_eq!(req.headers.to_path(), std::slice::from_ref(&o.theirs));
    assert_eq!(req.headers.from_path(), std::slice::from_ref(&o.ours));
    assert_eq!(req.headers.content_type(), Some("message/cpim"));
    let body = first.body.clone().unwrap();
    assert_eq!(
        req.headers.byte_range(),
        Some(ByteRange::whole(body.len() as u64))
    );
    assert!(!req.headers.success_report());
    let cpim = Cpim::parse(body).unwrap();
    assert_eq!(&cpim.body[..], b"hello");
    assert_eq!(
        cpim.disposition_notification(),
        vec![
            Disposition::PositiveDelivery,
            Disposition::NegativeDelivery,
            Disposition::Display
        ]
    );
    let message_id = cpim.message_id().unwrap().to_owned();

    // Its 200: the message is stored.
    feed_msrp(c, t0, CONN, &ok_for(&first));
    assert_eq!(
        events(c),
        vec![Event::SendResult {
            id: early,
            status: 200,
            reason: "OK".into(),
            message_id: message_id.clone(),
        }]
    );

    // Once up, a message goes at once.
    let id2 = c.send_chat(t0, o.session, "second").unwrap();
    let sent = written(&commands(c));
    assert_eq!(sent.len(), 1);
    feed_msrp(c, t0, CONN, &ok_for(&sent[0].1));
    assert!(matches!(
        events(c).as_slice(),
        [Event::SendResult { id, status: 200, .. }] if *id == id2
    ));

    // A delivery notification arrives in the session: 200 and the Imdn event.
    let xml = Imdn {
        message_id: message_id.clone(),
        datetime: "2026-11-25T16:00:00.000Z".into(),
        recipient_uri: Some("sip:bob@localhost".into()),
        original_recipient_uri: None,
        notification: Notification::Delivery(DeliveryStatus::Delivered),
    }
    .to_xml();
    let imdn = CpimBuilder::new()
        .from(&CpimAddress::new("sip:bob@localhost".to_owned()))
        .to(&CpimAddress::new("sip:alice@localhost".to_owned()))
        .message_id("imdnid1".to_owned())
        .content_type(mime::MESSAGE_IMDN_XML)
        .content_header("Content-Disposition", "notification")
        .body(xml)
        .build()
        .unwrap()
        .to_bytes();
    let send = msrp_send(
        &o.ours,
        &o.theirs,
        "net1tid",
        "netmsg1",
        ByteRange::whole(imdn.len() as u64),
        "message/cpim",
        &imdn,
        Flag::Complete,
    );
    feed_msrp(c, t0, CONN, &send);
    let out = written(&commands(c));
    match &out[..] {
        [(_, m)] => match &m.head {
            Head::Response(r) => assert_eq!(r.status, 200),
            h => panic!("{h:?}"),
        },
        other => panic!("{other:?}"),
    }
    match events(c).as_slice() {
        [Event::Imdn(i)] => {
            assert_eq!(i.message_id, message_id);
            assert_eq!(i.from, "bob@localhost");
            assert_eq!(
                i.notification,
                Notification::Delivery(DeliveryStatus::Delivered)
            );
        }
        other => panic!("{other:?}"),
    }

    // The peer is typing.
    let composing = b"<?xml version=\"1.0\"?><isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state></isComposing>";
    let send = msrp_send(
        &o.ours,
        &o.theirs,
        "net2tid",
        "netmsg2",
        ByteRange::whole(composing.len() as u64),
        "application/im-iscomposing+xml",
        composing,
        Flag::Complete,
    );
    feed_msrp(c, t0, CONN, &send);
    assert_eq!(written(&commands(c)).len(), 1);
    assert_eq!(
        events(c),
        vec![Event::Composing {
            session: o.session,
            from: "bob@localhost".into(),
            active: true
        }]
    );
    assert!(c.send_composing(t0, o.session, true));
    let out = written(&commands(c));
    assert_eq!(
        request_of(&out[0].1).headers.content_type(),
        Some("application/im-iscomposing+xml")
    );

    // We end it: BYE in the dialog, the connection closed, the event.
    c.end_session(t0, o.session);
    let bye = only_request(c);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri.to_string(), "sip:pf@127.0.0.1:5062");
    assert_eq!(header(&bye, HeaderName::CSeq).as_deref(), Some("2 BYE"));
    assert_eq!(
        header(&bye, HeaderName::Route).as_deref(),
        Some("<sip:127.0.0.1:5060;lr;cpm-d=0011223344556677>")
    );
    assert!(
        commands(c)
            .iter()
            .any(|x| matches!(x, ConnCommand::Close { conn } if *conn == CONN))
    );
    let evs = events(c);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::SessionEnded { session, status: 200, by_peer: false, .. } if *session == o.session
        )),
        "{evs:?}"
    );
    feed(c, t0, &response_to(&bye, StatusCode::OK, None));
    assert!(events(c).is_empty());
    assert!(c.sessions().is_empty());
}

#[test]
fn retransmitted_2xx_gets_the_ack_again() {
    let (mut o, _, _) = outgoing_up();
    let ok = answer_ok(&o.invite, &pf_media(&o.theirs, Setup::Passive));
    feed(&mut o.c, o.t0, &ok);
    let again = only_request(&mut o.c);
    assert_eq!(again.method, Method::Ack);
}

#[test]
fn refused_session_reports_the_status() {
    let t0 = origin();
    let mut c = registered(t0);
    let session = c.start_session(t0, "nobody@localhost").unwrap();
    let invite = only_request(&mut c);
    let id = c.send_chat(t0, session, "anyone?").unwrap();
    feed(
        &mut c,
        t0,
        &response_to(&invite, StatusCode::NOT_FOUND, Some("x")),
    );
    // The transaction layer ACKs the failure itself.
    assert_eq!(only_request(&mut c).method, Method::Ack);
    let evs = events(&mut c);
    assert!(
        matches!(
            evs.as_slice(),
            [
                Event::SendResult { id: i, status: 404, .. },
                Event::SessionEnded { session: s, status: 404, by_peer: true, .. },
            ] if *i == id && *s == session
        ),
        "{evs:?}"
    );
    assert!(commands(&mut c).is_empty());
    assert_eq!(
        c.send_chat(t0, session, "x"),
        Err(cpm_client::SendError::NoSession)
    );
}

#[test]
fn incoming_chat_session() {
    let t0 = origin();
    let mut c = registered(t0);
    let theirs = pf_path("pfin1");
    let offer = sdp_of(&pf_media(&theirs, Setup::ActPass));
    feed_text(&mut c, t0, &incoming_invite("inv1", ICSI_SESSION, &offer));
    let r = responses(&drain(&mut c));
    assert_eq!(
        r.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
        vec![180, 200]
    );
    let tag = |r: &Response| r.headers.to().unwrap().unwrap().tag().map(str::to_owned);
    assert!(tag(&r[0]).is_some());
    assert_eq!(tag(&r[0]), tag(&r[1]));
    let ok = &r[1];
    assert!(ok.headers.contains(&HeaderName::RecordRoute));
    let contact = ok
        .headers
        .get(&HeaderName::Contact)
        .unwrap()
        .value()
        .unwrap()
        .into_owned();
    assert!(contact.contains("oma.cpm.session"), "{contact}");
    assert!(ok.headers.contains(&HeaderName::Allow));
    let answer = msrp_of(&ok.body);
    assert_eq!(answer.setup, Some(Setup::Active));
    assert_eq!(answer.path[0].port(), Some(9));
    let ours = answer.path[0].clone();
    let session = match events(&mut c).as_slice() {
        [
            Event::SessionIncoming {
                session,
                from,
                kind: SessionKind::Chat,
            },
        ] => {
            assert_eq!(from, "bob@localhost");
            *session
        }
        other => panic!("{other:?}"),
    };
    // We are active: connect to the offer's path.
    let cmds = commands(&mut c);
    let [ConnCommand::Connect { token, addr }] = cmds.as_slice() else {
        panic!("{cmds:?}");
    };
    assert_eq!(*addr, "127.0.0.1:2855".parse().unwrap());
    c.handle_conn_event(
        t0,
        ConnEvent::Connected {
            token: *token,
            conn: CONN,
        },
    );
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SessionStarted { incoming: true, .. }]
    ));
    // The empty binding SEND: no Content-Type, no body.
    let sent = written(&commands(&mut c));
    assert_eq!(sent.len(), 1);
    let bind = &sent[0].1;
    let req = request_of(bind);
    assert_eq!(req.headers.content_type(), None);
    assert!(bind.body.is_none());
    assert_eq!(req.headers.to_path(), std::slice::from_ref(&theirs));
    assert!(req.headers.message_id().is_some());
    feed_msrp(&mut c, t0, CONN, &ok_for(bind));
    assert!(events(&mut c).is_empty());

    // The ACK for our 200 stops its retransmissions.
    let ack = format!(
        "ACK sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack1\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=bobtag\r\nTo: <sip:alice@localhost>;tag={}\r\nCall-ID: call-inv1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        tag(&r[1]).unwrap()
    );
    feed_text(&mut c, t0, &ack);
    assert!(drain(&mut c).is_empty());

    // A message in two chunks: a 200 per chunk, then the message and our delivered IMDN.
    let cpim = CpimBuilder::new()
        .from(&CpimAddress::new("sip:bob@localhost".to_owned()))
        .to(&CpimAddress::new("sip:alice@localhost".to_owned()))
        .date_time("2026-11-25T16:00:00.000Z".to_owned())
        .message_id("bobmsg1".to_owned())
        .disposition_notification(&[Disposition::PositiveDelivery, Disposition::Display])
        .content_type("text/plain;charset=UTF-8")
        .body(Bytes::from_static(b"hi alice, in two pieces"))
        .build()
        .unwrap()
        .to_bytes();
    let n = cpim.len() as u64;
    let k = 40;
    let one = msrp_send(
        &ours,
        &theirs,
        "in1tid",
        "inmsg1",
        ByteRange {
            start: 1,
            end: Some(k),
            total: Some(n),
        },
        "message/cpim",
        &cpim[..k as usize],
        Flag::Continued,
    );
    let two = msrp_send(
        &ours,
        &theirs,
        "in2tid",
        "inmsg1",
        ByteRange {
            start: k + 1,
            end: Some(n),
            total: Some(n),
        },
        "message/cpim",
        &cpim[k as usize..],
        Flag::Complete,
    );
    feed_msrp(&mut c, t0, CONN, &one);
    let out = written(&commands(&mut c));
    assert_eq!(out.len(), 1);
    assert!(matches!(&out[0].1.head, Head::Response(r) if r.status == 200));
    assert!(events(&mut c).is_empty());
    feed_msrp(&mut c, t0, CONN, &two);
    let out = written(&commands(&mut c));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0].1.head, Head::Response(r) if r.status == 200));
    match events(&mut c).as_slice() {
        [Event::Message(m)] => {
            assert_eq!(m.text, "hi alice, in two pieces");
            assert_eq!(m.from, "bob@localhost");
            assert_eq!(m.message_id, "bobmsg1");
            assert_eq!(m.conversation_id.as_deref(), Some("conv-1"));
            assert!(m.display_requested);
        }
        other => panic!("{other:?}"),
    }
    // The delivered IMDN goes back in the session (no pager MESSAGE).
    assert!(drain(&mut c).is_empty());
    let imdn_send = &out[1].1;
    let imdn = |m: &Msrp| {
        let cpim = Cpim::parse(m.body.clone().unwrap()).unwrap();
        assert_eq!(cpim.content_type(), Some(mime::MESSAGE_IMDN_XML));
        Imdn::parse(&cpim.body).unwrap()
    };
    let i = imdn(imdn_send);
    assert_eq!(i.message_id, "bobmsg1");
    assert_eq!(
        i.notification,
        Notification::Delivery(DeliveryStatus::Delivered)
    );
    feed_msrp(&mut c, t0, CONN, &ok_for(imdn_send));
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::NotificationSent { status: 200, .. }]
    ));
    // The same message again: answered, not reported twice.
    feed_msrp(
        &mut c,
        t0,
        CONN,
        &msrp_send(
            &ours,
            &theirs,
            "in3tid",
            "inmsg2",
            ByteRange::whole(n),
            "message/cpim",
            &cpim,
            Flag::Complete,
        ),
    );
    assert_eq!(written(&commands(&mut c)).len(), 1);
    assert!(events(&mut c).is_empty());

    // Displayed: in the session too.
    assert!(c.send_displayed(t0, "bobmsg1"));
    let out = written(&commands(&mut c));
    assert_eq!(
        imdn(&out[0].1).notification,
        Notification::Display(DisplayStatus::Displayed)
    );

    // The peer's BYE: 200, the connection closed, the event.
    let bye = format!(
        "BYE sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye1\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=bobtag\r\nTo: <sip:alice@localhost>;tag={}\r\nCall-ID: call-inv1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        tag(&r[1]).unwrap()
    );
    feed_text(&mut c, t0, &bye);
    let out = drain(&mut c);
    let r = responses(&out);
    assert_eq!(r[0].status, StatusCode::OK);
    assert!(
        commands(&mut c)
            .iter()
            .any(|x| matches!(x, ConnCommand::Close { conn } if *conn == CONN))
    );
    let evs = events(&mut c);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::SessionEnded { session: s, status: 200, by_peer: true, .. } if *s == session
        )),
        "{evs:?}"
    );
    // The display IMDN was not answered: the session cannot carry it any more, so it goes
    // by pager MESSAGE (its result comes with that MESSAGE's answer).
    assert!(!evs.iter().any(|e| matches!(
        e,
        Event::NotificationSent {
            notification: Notification::Display(_),
            ..
        }
    )));
    assert!(
        requests(&out)
            .iter()
            .any(|q| q.method == Method::Message && q.body.windows(9).any(|w| w == b"displayed")),
        "the display IMDN goes by pager"
    );
}

#[test]
fn large_message_mode_above_1300_bytes() {
    let t0 = origin();
    let mut c = registered(t0);
    // 1,300 bytes: still a pager MESSAGE.
    c.send_message(t0, &["bob@localhost".into()], &"a".repeat(1300))
        .unwrap();
    assert_eq!(only_request(&mut c).method, Method::Message);

    // 1,301 bytes: Large Message Mode.
    let text = "b".repeat(1301);
    let id = c
        .send_message(t0, &["bob@localhost".into()], &text)
        .unwrap();
    let invite = only_request(&mut c);
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(
        header(&invite, HeaderName::PPreferredService).as_deref(),
        Some(ICSI_LARGEMSG)
    );
    assert!(
        header(&invite, HeaderName::Contact)
            .unwrap()
            .contains("oma.cpm.largemsg")
    );
    let offer = msrp_of(&invite.body);
    assert_eq!(offer.direction, Direction::SendOnly);
    let message_id = c.message_id(id).unwrap().to_owned();
    let theirs = pf_path("pflmm1");
    let mut media = pf_media(&theirs, Setup::Passive);
    media.direction = Direction::RecvOnly;
    feed(&mut c, t0, &answer_ok(&invite, &media));
    assert_eq!(only_request(&mut c).method, Method::Ack);
    let token = match commands(&mut c).as_slice() {
        [ConnCommand::Connect { token, .. }] => *token,
        other => panic!("{other:?}"),
    };
    c.handle_conn_event(t0, ConnEvent::Connected { token, conn: CONN });
    let sent = written(&commands(&mut c));
    assert_eq!(sent.len(), 1);
    let cpim = Cpim::parse(sent[0].1.body.clone().unwrap()).unwrap();
    assert_eq!(cpim.body.len(), 1301);
    assert_eq!(cpim.message_id(), Some(message_id.as_str()));
    let _ = events(&mut c);
    // Its 200: the result, as for a pager message, then BYE.
    feed_msrp(&mut c, t0, CONN, &ok_for(&sent[0].1));
    let evs = events(&mut c);
    assert!(
        matches!(
            evs.first(),
            Some(Event::SendResult { id: i, status: 200, message_id: m, .. }) if *i == id && *m == message_id
        ),
        "{evs:?}"
    );
    assert_eq!(only_request(&mut c).method, Method::Bye);
    assert!(
        commands(&mut c)
            .iter()
            .any(|x| matches!(x, ConnCommand::Close { .. }))
    );
}

#[test]
fn large_message_over_64k_is_chunked() {
    let t0 = origin();
    let mut c = registered(t0);
    let text = "c".repeat(100_000);
    let id = c
        .send_message(t0, &["bob@localhost".into()], &text)
        .unwrap();
    let invite = only_request(&mut c);
    let theirs = pf_path("pflmm2");
    feed(
        &mut c,
        t0,
        &answer_ok(&invite, &pf_media(&theirs, Setup::Passive)),
    );
    let _ack = only_request(&mut c);
    let token = match commands(&mut c).as_slice() {
        [ConnCommand::Connect { token, .. }] => *token,
        other => panic!("{other:?}"),
    };
    c.handle_conn_event(t0, ConnEvent::Connected { token, conn: CONN });
    let sent = written(&commands(&mut c));
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].1.flag, Flag::Continued);
    assert_eq!(sent[1].1.flag, Flag::Complete);
    let r0 = request_of(&sent[0].1).headers.byte_range().unwrap();
    let r1 = request_of(&sent[1].1).headers.byte_range().unwrap();
    assert_eq!((r0.start, r0.end), (1, Some(65_536)));
    assert_eq!(r1.start, 65_537);
    assert_eq!(r0.total, r1.total);
    assert_eq!(
        request_of(&sent[0].1).headers.message_id(),
        request_of(&sent[1].1).headers.message_id()
    );
    let _ = events(&mut c);
    feed_msrp(&mut c, t0, CONN, &ok_for(&sent[0].1));
    assert!(events(&mut c).is_empty());
    feed_msrp(&mut c, t0, CONN, &ok_for(&sent[1].1));
    assert!(matches!(
        events(&mut c).first(),
        Some(Event::SendResult { id: i, status: 200, .. }) if *i == id
    ));
}

#[test]
fn cancel_before_the_answer_ends_quietly() {
    let t0 = origin();
    let mut c = client_with(t0, |cfg| cfg.auto_accept = false);
    let offer = sdp_of(&pf_media(&pf_path("pfin2"), Setup::ActPass));
    feed_text(&mut c, t0, &incoming_invite("inv2", ICSI_SESSION, &offer));
    let r = responses(&drain(&mut c));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, StatusCode::RINGING);
    let session = match events(&mut c).as_slice() {
        [Event::SessionIncoming { session, .. }] => *session,
        other => panic!("{other:?}"),
    };
    assert!(commands(&mut c).is_empty());
    let cancel = "CANCEL sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKinv2\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=bobtag\r\nTo: <sip:alice@localhost>\r\nCall-ID: call-inv2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    feed_text(&mut c, t0, cancel);
    let r = responses(&drain(&mut c));
    let codes: Vec<(u16, Method)> = r
        .iter()
        .map(|r| (r.status.as_u16(), r.headers.cseq().unwrap().unwrap().method))
        .collect();
    assert_eq!(
        codes,
        vec![(200, Method::Cancel), (487, Method::Invite)],
        "{r:?}"
    );
    assert_eq!(
        events(&mut c),
        vec![Event::SessionEnded {
            session,
            status: 487,
            reason: "Request Terminated".into(),
            by_peer: true,
        }]
    );
    assert!(commands(&mut c).is_empty());
    assert!(!c.accept_session(t0, session));
}

#[test]
fn accept_later_then_connect() {
    let t0 = origin();
    let mut c = client_with(t0, |cfg| cfg.auto_accept = false);
    let offer = sdp_of(&pf_media(&pf_path("pfin3"), Setup::ActPass));
    feed_text(&mut c, t0, &incoming_invite("inv3", ICSI_SESSION, &offer));
    let _ = drain(&mut c);
    let session = match events(&mut c).as_slice() {
        [Event::SessionIncoming { session, .. }] => *session,
        other => panic!("{other:?}"),
    };
    assert!(c.accept_session(t0, session));
    let r = responses(&drain(&mut c));
    assert_eq!(r[0].status, StatusCode::OK);
    assert!(matches!(
        commands(&mut c).as_slice(),
        [ConnCommand::Connect { .. }]
    ));
    // No ACK: the 200 is retransmitted over UDP (RFC 3261 13.3.1.4), then BYE.
    let mut oks = 0;
    let mut t = t0;
    while let Some(next) = c.poll_timeout() {
        if next > t0 + std::time::Duration::from_secs(40) {
            break;
        }
        t = next;
        c.handle_timeout(t);
        for m in messages(&drain(&mut c)) {
            match m {
                Message::Response(r) if r.status == StatusCode::OK => oks += 1,
                Message::Request(r) => assert_eq!(r.method, Method::Bye),
                Message::Response(_) => {}
            }
        }
        if !c.sessions().contains(&session) {
            break;
        }
    }
    assert!(oks >= 5, "{oks}");
    assert!(!c.sessions().contains(&session));
    assert!(t >= t0 + std::time::Duration::from_secs(32));
}

#[test]
fn lost_connection_sends_bye() {
    let (mut o, early, _first) = outgoing_up();
    let (c, t0) = (&mut o.c, o.t0);
    let _ = events(c);
    c.handle_conn_event(t0, ConnEvent::Closed { conn: CONN });
    assert_eq!(only_request(c).method, Method::Bye);
    let evs = events(c);
    assert!(
        matches!(
            evs.as_slice(),
            [
                Event::SendResult { id, status: 503, .. },
                Event::SessionEnded { status: 503, by_peer: true, .. },
            ] if *id == early
        ),
        "{evs:?}"
    );
}

#[test]
fn failed_connect_sends_bye() {
    let t0 = origin();
    let mut c = registered(t0);
    let session = c.start_session(t0, "bob@localhost").unwrap();
    let invite = only_request(&mut c);
    feed(
        &mut c,
        t0,
        &answer_ok(&invite, &pf_media(&pf_path("pfx"), Setup::Passive)),
    );
    let _ack = only_request(&mut c);
    let token = match commands(&mut c).as_slice() {
        [ConnCommand::Connect { token, .. }] => *token,
        other => panic!("{other:?}"),
    };
    c.handle_conn_event(t0, ConnEvent::ConnectFailed { token });
    assert_eq!(only_request(&mut c).method, Method::Bye);
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::SessionEnded { session: s, status: 503, .. }] if *s == session
    ));
}

#[test]
fn send_timeout_fails_the_message() {
    let (mut o, early, _first) = outgoing_up();
    let (c, t0) = (&mut o.c, o.t0);
    let _ = events(c);
    let deadline = c.poll_timeout().unwrap();
    assert!(deadline <= t0 + std::time::Duration::from_secs(30));
    c.handle_timeout(t0 + std::time::Duration::from_secs(31));
    let evs = events(c);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::SendResult { id, status: 408, .. } if *id == early
        )),
        "{evs:?}"
    );
}

#[test]
fn offer_without_path_is_488() {
    let t0 = origin();
    let mut c = registered(t0);
    let sdp = "v=0\r\no=pf 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 2855 TCP/MSRP *\r\na=accept-types:message/cpim\r\na=setup:actpass\r\n";
    feed_text(
        &mut c,
        t0,
        &incoming_invite("inv4", ICSI_SESSION, sdp.as_bytes()),
    );
    let r = responses(&drain(&mut c));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status.as_u16(), 488);
    assert!(events(&mut c).is_empty());
    assert!(commands(&mut c).is_empty());

    // An offer that wants us to listen (setup:active from the peer) is 488 too.
    let offer = sdp_of(&pf_media(&pf_path("pfin5"), Setup::Active));
    feed_text(&mut c, t0, &incoming_invite("inv5", ICSI_SESSION, &offer));
    let r = responses(&drain(&mut c));
    assert_eq!(r[0].status.as_u16(), 488);

    // No SDP at all: 415.
    let plain = "INVITE sip:alice@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKinv6\r\nMax-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=b6\r\nTo: <sip:alice@localhost>\r\nCall-ID: call-inv6\r\nCSeq: 1 INVITE\r\nContact: <sip:pf@127.0.0.1:5062>\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
    feed_text(&mut c, t0, plain);
    let r = responses(&drain(&mut c));
    assert_eq!(r[0].status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[test]
fn send_for_unknown_session_is_481() {
    let (mut o, _, _) = outgoing_up();
    let (c, t0) = (&mut o.c, o.t0);
    let stranger = MsrpUri::new(false, "127.0.0.1", 9, "notoursatall").unwrap();
    let body = b"x";
    feed_msrp(
        c,
        t0,
        CONN,
        &msrp_send(
            &stranger,
            &o.theirs,
            "strange1",
            "strangemsg",
            ByteRange::whole(1),
            "message/cpim",
            body,
            Flag::Complete,
        ),
    );
    let out = written(&commands(c));
    assert!(
        matches!(&out[..], [(_, m)] if matches!(&m.head, Head::Response(r) if r.status == 481))
    );
    // A type outside our accept-types: 415.
    feed_msrp(
        c,
        t0,
        CONN,
        &msrp_send(
            &o.ours,
            &o.theirs,
            "strange2",
            "strangemsg2",
            ByteRange::whole(1),
            "image/png",
            body,
            Flag::Complete,
        ),
    );
    let out = written(&commands(c));
    assert!(
        matches!(&out[..], [(_, m)] if matches!(&m.head, Head::Response(r) if r.status == 415))
    );
    // A SEND on a connection nobody asked for (the session exists, another connection).
    feed_msrp(
        c,
        t0,
        ConnId(99),
        &msrp_send(
            &o.ours,
            &o.theirs,
            "strange3",
            "strangemsg3",
            ByteRange::whole(1),
            "message/cpim",
            body,
            Flag::Complete,
        ),
    );
    let out = written(&commands(c));
    assert!(
        matches!(&out[..], [(ConnId(99), m)] if matches!(&m.head, Head::Response(r) if r.status == 481))
    );
    assert!(events(c).is_empty());
}

/// The delivered notification of a session message is on its way in the session when the
/// session's connection goes: the sender still learns the state, by pager MESSAGE.
#[test]
fn a_notification_the_session_could_not_carry_goes_by_pager() {
    let t0 = origin();
    let mut c = registered(t0);
    let theirs = pf_path("pfin9");
    let offer = sdp_of(&pf_media(&theirs, Setup::ActPass));
    feed_text(&mut c, t0, &incoming_invite("inv9", ICSI_SESSION, &offer));
    let ok = responses(&drain(&mut c)).pop().expect("the 200");
    let ours = msrp_of(&ok.body).path[0].clone();
    let _ = events(&mut c);
    let cmds = commands(&mut c);
    let [ConnCommand::Connect { token, .. }] = cmds.as_slice() else {
        panic!("{cmds:?}");
    };
    c.handle_conn_event(
        t0,
        ConnEvent::Connected {
            token: *token,
            conn: CONN,
        },
    );
    let bind = written(&commands(&mut c)).remove(0).1;
    feed_msrp(&mut c, t0, CONN, &ok_for(&bind));
    let cpim = CpimBuilder::new()
        .from(&CpimAddress::new("sip:bob@localhost".to_owned()))
        .to(&CpimAddress::new("sip:alice@localhost".to_owned()))
        .date_time("2026-11-25T16:00:00.000Z".to_owned())
        .message_id("late1".to_owned())
        .disposition_notification(&[Disposition::PositiveDelivery])
        .content_type("text/plain")
        .body(Bytes::from_static(b"see you"))
        .build()
        .unwrap()
        .to_bytes();
    let n = cpim.len() as u64;
    let send = msrp_send(
        &ours,
        &theirs,
        "late1tid",
        "latemsg1",
        ByteRange {
            start: 1,
            end: Some(n),
            total: Some(n),
        },
        "message/cpim",
        &cpim,
        Flag::Complete,
    );
    feed_msrp(&mut c, t0, CONN, &send);
    // Our 200 and the delivered IMDN in the session; its answer never comes.
    assert_eq!(written(&commands(&mut c)).len(), 2);
    let _ = events(&mut c);
    drain(&mut c);
    c.handle_conn_event(t0, ConnEvent::Closed { conn: CONN });
    let pager: Vec<Request> = requests(&drain(&mut c))
        .into_iter()
        .filter(|r| r.method == Method::Message)
        .collect();
    assert_eq!(pager.len(), 1, "the notification goes by pager");
    let body = Cpim::parse(pager[0].body.clone()).unwrap();
    assert_eq!(body.content_type(), Some(mime::MESSAGE_IMDN_XML));
    assert_eq!(Imdn::parse(&body.body).unwrap().message_id, "late1");
}
