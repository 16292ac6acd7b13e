//! File transfer (RFC 5547 push) against a scripted network on virtual time: the sender's
//! INVITE offer, the chunking (Byte-Range, flags, one Message-ID, the window), the final 200
//! and BYE, an MSRP error; the receiver's answer, the data handed on in order, the size and
//! hash check (ok, wrong hash), an abort (`#`), a lost connection, a BYE before the end, a
//! hostile file name, and the refusal when the device takes no files.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cpm_client::{
    Client, ClientConfig, ConnCommand, ConnEvent, ConnId, Event, FILE_CHUNK, FILE_WINDOW,
    FileDescription, FileHasher, ICSI_FILETRANSFER, SessionId, SessionKind, Transmit,
    TransportKind,
};
use cpm_msrp::{
    ByteRange, Decoder, Flag, Head, Header as MsrpHeader, Headers as MsrpHeaders, Message as Msrp,
    Method as MsrpMethod, MsrpUri, Request as MsrpRequest, StatusCode as MsrpStatus, TransactId,
    report,
};
use cpm_sdp::{Direction, FileHash, FileSelector, FileTransfer, MsrpMedia, Sdp, Setup};
use cpm_sip::{Header, HeaderName, Message, Method, Request, Response, StatusCode};
use cpm_sip_core::transaction::response_to;

const CONN: ConnId = ConnId(3);

fn server() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

fn client(t0: Instant, files: bool) -> Client {
    let mut cfg = ClientConfig::new(
        "alice@localhost",
        "alicepw",
        server(),
        "127.0.0.1:40000".parse().unwrap(),
    );
    cfg.seed = 5;
    cfg.transport = TransportKind::Udp;
    cfg.file_transfer = files;
    let mut c = Client::new(cfg, t0, 1_795_622_400_000).unwrap();
    c.register(t0);
    let reg = requests(&drain(&mut c)).remove(0);
    let contact = header(&reg, HeaderName::Contact).unwrap();
    assert_eq!(contact.contains("oma.cpm.filetransfer"), files, "{contact}");
    let mut ok = response_to(&reg, StatusCode::OK, Some("srv"));
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

fn header(r: &Request, name: HeaderName) -> Option<String> {
    r.headers
        .get(&name)
        .map(|h| h.value().unwrap().into_owned())
}

/// The MSRP messages written, with their raw bytes.
fn written(cmds: &[ConnCommand]) -> Vec<(Msrp, Bytes)> {
    cmds.iter()
        .filter_map(|c| match c {
            ConnCommand::Send { bytes, .. } => Some((Msrp::parse(bytes).unwrap(), bytes.clone())),
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

fn status_of(m: &Msrp) -> u16 {
    match &m.head {
        Head::Response(r) => r.status,
        Head::Request(r) => panic!("a request: {r:?}"),
    }
}

fn feed_msrp(c: &mut Client, now: Instant, bytes: &[u8]) {
    let mut d = Decoder::default();
    let mut buf = BytesMut::from(bytes);
    while let Some(frame) = d.decode(&mut buf).unwrap() {
        c.handle_conn_event(now, ConnEvent::Frame { conn: CONN, frame });
    }
}

fn respond(m: &Msrp, status: MsrpStatus) -> Bytes {
    let resp = report::response(request_of(m), status).unwrap();
    let mut out = BytesMut::new();
    cpm_msrp::encode(&Head::Response(resp), None, Flag::Complete, &mut out).unwrap();
    out.freeze()
}

fn pf_path() -> MsrpUri {
    MsrpUri::new(false, "127.0.0.1", 2855, "pffile1").unwrap()
}

fn sdp_of(media: &MsrpMedia) -> Vec<u8> {
    Sdp::for_msrp("pf", 1, 1, "127.0.0.1".parse().unwrap(), media).to_bytes()
}

fn msrp_of(body: &[u8]) -> MsrpMedia {
    Sdp::parse(body).unwrap().msrp().unwrap().unwrap().1
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h = FileHasher::new();
    h.update(data);
    h.finish()
}

/// Deterministic file content.
fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

// ------------------------------------------------------------------------ sending

/// A sender up to the connected session: returns the client, the session, the INVITE.
fn sender_up(t0: Instant, file: &FileDescription) -> (Client, SessionId, Request) {
    let mut c = client(t0, false);
    let session = c.send_file(t0, "bob@localhost", file.clone()).unwrap();
    let invite = requests(&drain(&mut c)).remove(0);
    let offer = msrp_of(&invite.body);
    let mut answer = MsrpMedia {
        port: 2855,
        secure: false,
        path: vec![pf_path()],
        accept_types: offer.accept_types.clone(),
        accept_wrapped_types: Vec::new(),
        setup: Some(Setup::Passive),
        max_size: None,
        direction: Direction::RecvOnly,
        file: offer.file,
        connection: None,
        other: Vec::new(),
    };
    answer.file.as_mut().unwrap().disposition = None;
    let mut ok = response_to(&invite, StatusCode::OK, Some("pftag"));
    ok.headers
        .push(Header::new(HeaderName::Contact, "<sip:pf@127.0.0.1:5062>"));
    let body = sdp_of(&answer);
    ok.headers.set(HeaderName::ContentType, "application/sdp");
    ok.headers
        .set(HeaderName::ContentLength, &body.len().to_string());
    ok.body = Bytes::from(body);
    c.handle_datagram(t0, server(), ok.to_bytes());
    let ack = requests(&drain(&mut c)).remove(0);
    assert_eq!(ack.method, Method::Ack);
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
    (c, session, invite)
}

fn needed(evs: &[Event]) -> Vec<(u64, u64)> {
    evs.iter()
        .filter_map(|e| match e {
            Event::FileNeeded { offset, len, .. } => Some((*offset, *len)),
            _ => None,
        })
        .collect()
}

#[test]
fn send_file_in_chunks_with_a_window() {
    let t0 = Instant::now();
    let size = 10 * FILE_CHUNK as usize + 100;
    let data = content(size);
    let file = FileDescription {
        name: "photo.jpg".into(),
        media_type: "image/jpeg".into(),
        size: size as u64,
        sha1: Some(sha1(&data)),
    };
    let (mut c, session, invite) = sender_up(t0, &file);

    // The INVITE: the file transfer ICSI and the RFC 5547 offer.
    assert_eq!(
        header(&invite, HeaderName::PPreferredService).as_deref(),
        Some(ICSI_FILETRANSFER)
    );
    assert!(
        header(&invite, HeaderName::AcceptContact)
            .unwrap()
            .contains("icsi.oma.cpm.filetransfer")
    );
    assert!(
        header(&invite, HeaderName::Contact)
            .unwrap()
            .contains("urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.filetransfer")
    );
    let sdp = String::from_utf8_lossy(&invite.body).into_owned();
    let hex: Vec<String> = sha1(&data).iter().map(|b| format!("{b:02X}")).collect();
    for line in [
        "m=message 9 TCP/MSRP *".to_owned(),
        "a=setup:active".to_owned(),
        "a=sendonly".to_owned(),
        "a=accept-types:image/jpeg".to_owned(),
        format!(
            "a=file-selector:name:\"photo.jpg\" type:image/jpeg size:{size} hash:sha-1:{}",
            hex.join(":")
        ),
        "a=file-disposition:attachment".to_owned(),
    ] {
        assert!(sdp.contains(&format!("{line}\r\n")), "{line} in {sdp}");
    }
    let offer = msrp_of(&invite.body);
    assert!(offer.path[0].to_string().ends_with(";tcp"));
    assert_eq!(offer.path[0].port(), Some(9));
    let ftid = offer.file.unwrap().transfer_id.unwrap();
    assert!(ftid.len() >= 16);

    // Up: no binding SEND of its own; the window of chunks is asked for.
    let evs = events(&mut c);
    assert_eq!(
        evs[0],
        Event::SessionStarted {
            session,
            peer: "bob@localhost".into(),
            kind: SessionKind::FileTransfer,
            incoming: false,
        }
    );
    let asked = needed(&evs);
    assert_eq!(asked.len(), FILE_WINDOW);
    assert_eq!(asked[1], (FILE_CHUNK, FILE_CHUNK));
    assert!(commands(&mut c).is_empty());

    // Out of order or unasked data is not taken.
    assert!(!c.provide_file_data(t0, session, FILE_CHUNK, Bytes::new()));
    let give = |c: &mut Client, (o, l): (u64, u64)| {
        let piece = Bytes::copy_from_slice(&data[o as usize..(o + l) as usize]);
        assert!(c.provide_file_data(t0, session, o, piece));
    };
    for a in &asked {
        give(&mut c, *a);
    }
    let mut chunks = written(&commands(&mut c));
    assert_eq!(chunks.len(), FILE_WINDOW);
    // Nothing more is asked for until a chunk is answered.
    assert!(events(&mut c).is_empty());
    let message_id = request_of(&chunks[0].0)
        .headers
        .message_id()
        .unwrap()
        .to_owned();
    for (i, (m, raw)) in chunks.iter().enumerate() {
        let r = request_of(m);
        assert_eq!(r.method, MsrpMethod::Send);
        assert_eq!(r.headers.message_id(), Some(message_id.as_str()));
        assert_eq!(r.headers.content_type(), Some("image/jpeg"));
        assert_eq!(r.headers.to_path(), std::slice::from_ref(&pf_path()));
        let start = i as u64 * FILE_CHUNK;
        assert_eq!(
            r.headers.byte_range(),
            Some(ByteRange {
                start: start + 1,
                end: Some(start + FILE_CHUNK),
                total: Some(size as u64)
            })
        );
        assert_eq!(m.flag, Flag::Continued);
        assert_eq!(
            m.body.as_deref(),
            Some(&data[start as usize..(start + FILE_CHUNK) as usize])
        );
        assert!(
            String::from_utf8_lossy(raw).contains("\r\nFailure-Report: yes\r\n"),
            "{}",
            String::from_utf8_lossy(&raw[..200])
        );
    }

    // Each 200: progress, and the next chunk asked for, until the last (100 octets, `$`).
    let mut acked = 0;
    let mut i = 0;
    while i < chunks.len() {
        feed_msrp(&mut c, t0, &respond(&chunks[i].0, MsrpStatus::Ok));
        let evs = events(&mut c);
        let len = chunks[i].0.body.as_ref().unwrap().len() as u64;
        acked += len;
        assert_eq!(
            evs[0],
            Event::FileProgress {
                session,
                done: acked,
                total: size as u64
            }
        );
        if acked == size as u64 {
            assert_eq!(
                evs[1..3],
                [
                    Event::FileSent { session, file },
                    Event::SessionEnded {
                        session,
                        status: 200,
                        reason: "File Sent".into(),
                        by_peer: false
                    }
                ]
            );
            let bye = requests(&drain(&mut c)).remove(0);
            assert_eq!(bye.method, Method::Bye);
            assert!(
                commands(&mut c)
                    .iter()
                    .any(|c| matches!(c, ConnCommand::Close { conn } if *conn == CONN))
            );
            break;
        }
        for a in needed(&evs) {
            give(&mut c, a);
        }
        chunks.extend(written(&commands(&mut c)));
        i += 1;
    }
    assert_eq!(chunks.len(), 11);
    let last = &chunks[10].0;
    assert_eq!(last.flag, Flag::Complete);
    assert_eq!(
        request_of(last).headers.byte_range(),
        Some(ByteRange {
            start: 10 * FILE_CHUNK + 1,
            end: Some(size as u64),
            total: Some(size as u64)
        })
    );
}

#[test]
fn send_file_fails_on_an_msrp_error_and_on_a_refusal() {
    let t0 = Instant::now();
    let data = content(1000);
    let file = FileDescription {
        name: "notes.txt".into(),
        media_type: "text/plain".into(),
        size: 1000,
        sha1: Some(sha1(&data)),
    };
    let (mut c, session, _) = sender_up(t0, &file);
    assert_eq!(needed(&events(&mut c)), vec![(0, 1000)]);
    assert!(c.provide_file_data(t0, session, 0, Bytes::from(data)));
    let chunk = written(&commands(&mut c)).remove(0).0;
    assert_eq!(chunk.flag, Flag::Complete);
    feed_msrp(&mut c, t0, &respond(&chunk, MsrpStatus::MessageTooLarge));
    let evs = events(&mut c);
    assert!(
        matches!(&evs[0], Event::FileFailed { incoming: false, status: 413, name, .. } if name == "notes.txt"),
        "{evs:?}"
    );
    assert!(matches!(evs[1], Event::SessionEnded { .. }));
    assert_eq!(requests(&drain(&mut c))[0].method, Method::Bye);

    // An INVITE refused: the file fails with the SIP status.
    let mut c = client(t0, false);
    let session = c.send_file(t0, "bob", file.clone()).unwrap();
    let invite = requests(&drain(&mut c)).remove(0);
    let busy = response_to(&invite, StatusCode::new(486).unwrap(), Some("x"));
    c.handle_datagram(t0, server(), busy.to_bytes());
    let evs = events(&mut c);
    assert!(
        matches!(&evs[0], Event::FileFailed { session: s, status: 486, .. } if *s == session),
        "{evs:?}"
    );

    // Bad descriptions are refused before anything is sent.
    let mut bad = file;
    bad.media_type = "text".into();
    assert!(c.send_file(t0, "bob", bad).is_err());
}

// ------------------------------------------------------------------------ receiving

/// The network's file offer: `name`, `size`, `hash`.
fn file_invite(branch: &str, name: &str, size: u64, hash: [u8; 20]) -> String {
    let media = MsrpMedia {
        port: 2855,
        secure: false,
        path: vec![pf_path()],
        accept_types: vec!["image/png".into()],
        accept_wrapped_types: Vec::new(),
        setup: Some(Setup::ActPass),
        max_size: None,
        direction: Direction::SendOnly,
        file: Some(FileTransfer {
            transfer_id: Some("ftid42".into()),
            disposition: Some("attachment".into()),
            ..FileTransfer::new(FileSelector {
                name: Some(name.into()),
                media_type: Some("image/png".into()),
                size: Some(size),
                hash: Some(FileHash {
                    algorithm: "sha-1".into(),
                    value: hash.to_vec(),
                }),
            })
        }),
        connection: None,
        other: Vec::new(),
    };
    let sdp = sdp_of(&media);
    format!(
        "INVITE sip:alice@127.0.0.1:40000 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 69\r\n\
         From: <sip:bob@localhost>;tag=bobtag\r\n\
         To: <sip:alice@localhost>\r\n\
         Call-ID: call-{branch}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:pf@127.0.0.1:5062>\r\n\
         P-Asserted-Service: {ICSI_FILETRANSFER}\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{}",
        sdp.len(),
        String::from_utf8_lossy(&sdp)
    )
}

/// A SEND chunk of the file from the network.
fn chunk(ours: &MsrpUri, tid: &str, start: u64, body: &[u8], total: u64, flag: Flag) -> Bytes {
    let mut h = MsrpHeaders::new(vec![ours.clone()], vec![pf_path()]).unwrap();
    h.set(MsrpHeader::MessageId("filemsg1".into()));
    h.set(MsrpHeader::ByteRange(ByteRange {
        start: start + 1,
        end: Some(start + body.len() as u64),
        total: Some(total),
    }));
    h.set(MsrpHeader::ContentType("image/png".into()));
    let head = Head::Request(MsrpRequest {
        transact_id: TransactId::new(tid).unwrap(),
        method: MsrpMethod::Send,
        headers: h,
    });
    let mut out = BytesMut::new();
    cpm_msrp::encode(&head, Some(body), flag, &mut out).unwrap();
    out.freeze()
}

/// A receiver with the offer answered and the connection bound: client, session, our URI.
fn receiver_up(
    t0: Instant,
    name: &str,
    size: u64,
    hash: [u8; 20],
) -> (Client, SessionId, MsrpUri, String) {
    let mut c = client(t0, true);
    c.handle_datagram(
        t0,
        server(),
        Bytes::from(file_invite("f1", name, size, hash)),
    );
    let resps = responses(&drain(&mut c));
    assert_eq!(
        resps.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
        vec![180, 200]
    );
    let answer = msrp_of(&resps[1].body);
    assert_eq!(answer.direction, Direction::RecvOnly);
    assert_eq!(answer.setup, Some(Setup::Active));
    let ft = answer.file.clone().unwrap();
    assert_eq!(ft.transfer_id.as_deref(), Some("ftid42"));
    assert_eq!(ft.selector.size, Some(size));
    assert_eq!(ft.selector.name.as_deref(), Some(name));
    assert_eq!(answer.accept_types, vec!["image/png"]);
    let evs = events(&mut c);
    let Event::FileIncoming {
        session,
        from,
        file,
    } = &evs[0]
    else {
        panic!("{evs:?}");
    };
    assert_eq!(from, "bob@localhost");
    assert_eq!(file.size, size);
    assert_eq!(file.sha1, Some(hash));
    let session = *session;
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
    assert!(matches!(
        events(&mut c)[0],
        Event::SessionStarted {
            kind: SessionKind::FileTransfer,
            incoming: true,
            ..
        }
    ));
    // The binding SEND, as for a chat.
    let bind = written(&commands(&mut c)).remove(0).0;
    assert_eq!(request_of(&bind).headers.content_type(), None);
    let tag = resps[1]
        .headers
        .to()
        .unwrap()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    (c, session, answer.path[0].clone(), tag)
}

fn data_events(evs: &[Event]) -> Vec<(u64, Bytes)> {
    evs.iter()
        .filter_map(|e| match e {
            Event::FileData { offset, data, .. } => Some((*offset, data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn receive_file_checks_size_and_hash() {
    let t0 = Instant::now();
    let data = content(250);
    let (mut c, session, ours, to_tag) = receiver_up(t0, "pic.png", 250, sha1(&data));
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-1-x", 0, &data[..100], 250, Flag::Continued),
    );
    // A repeated chunk (after a reconnect, say) is answered and not handed on twice.
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-1b-x", 0, &data[..100], 250, Flag::Continued),
    );
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-2-x", 100, &data[100..200], 250, Flag::Continued),
    );
    let evs = events(&mut c);
    assert_eq!(
        data_events(&evs),
        vec![
            (0, Bytes::copy_from_slice(&data[..100])),
            (100, Bytes::copy_from_slice(&data[100..200]))
        ]
    );
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-3-x", 200, &data[200..], 250, Flag::Complete),
    );
    let evs = events(&mut c);
    assert_eq!(
        data_events(&evs),
        vec![(200, Bytes::copy_from_slice(&data[200..]))]
    );
    assert_eq!(
        evs.last().unwrap(),
        &Event::FileReceived {
            session,
            from: "bob@localhost".into(),
            file: FileDescription {
                name: "pic.png".into(),
                media_type: "image/png".into(),
                size: 250,
                sha1: Some(sha1(&data)),
            }
        }
    );
    let answers = written(&commands(&mut c));
    assert_eq!(
        answers
            .iter()
            .map(|(m, _)| status_of(m))
            .collect::<Vec<_>>(),
        vec![200, 200, 200, 200]
    );
    // The sender's BYE afterwards ends the session, and nothing fails.
    let bye = "BYE sip:alice@127.0.0.1:40000 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye1\r\n\
         Max-Forwards: 69\r\nFrom: <sip:bob@localhost>;tag=bobtag\r\n";
    let bye = format!(
        "{bye}To: <sip:alice@localhost>;tag={to_tag}\r\nCall-ID: call-f1\r\nCSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    c.handle_datagram(t0, server(), Bytes::from(bye));
    let evs = events(&mut c);
    assert!(
        matches!(evs.as_slice(), [Event::SessionEnded { .. }]),
        "{evs:?}"
    );
}

#[test]
fn receive_file_with_a_wrong_hash_fails() {
    let t0 = Instant::now();
    let data = content(300);
    let (mut c, session, ours, _) = receiver_up(t0, "pic.png", 300, [7; 20]);
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-1-x", 0, &data, 300, Flag::Complete),
    );
    let evs = events(&mut c);
    assert_eq!(data_events(&evs).len(), 1);
    assert!(
        evs.iter().any(
            |e| matches!(e, Event::FileFailed { session: s, incoming: true, reason, .. }
            if *s == session && reason == "File Hash Mismatch")
        ),
        "{evs:?}"
    );
    assert!(!evs.iter().any(|e| matches!(e, Event::FileReceived { .. })));
    let answers = written(&commands(&mut c));
    assert_eq!(status_of(&answers[0].0), 400);
    assert_eq!(requests(&drain(&mut c))[0].method, Method::Bye);
}

#[test]
fn receive_file_aborted_or_cut_off_fails() {
    let t0 = Instant::now();
    let data = content(300);
    // `#`: the sender gave up.
    let (mut c, _, ours, _) = receiver_up(t0, "pic.png", 300, sha1(&data));
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-1-x", 0, &data[..100], 300, Flag::Continued),
    );
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-2-x", 100, &data[100..150], 300, Flag::Aborted),
    );
    let evs = events(&mut c);
    assert!(
        evs.iter().any(
            |e| matches!(e, Event::FileFailed { reason, .. } if reason == "Aborted By Sender")
        ),
        "{evs:?}"
    );

    // The connection is lost halfway.
    let (mut c, _, ours, _) = receiver_up(t0, "pic.png", 300, sha1(&data));
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-1-x", 0, &data[..100], 300, Flag::Continued),
    );
    c.handle_conn_event(t0, ConnEvent::Closed { conn: CONN });
    let evs = events(&mut c);
    assert!(
        evs.iter().any(
            |e| matches!(e, Event::FileFailed { status: 503, reason, .. }
            if reason == "MSRP Connection Closed")
        ),
        "{evs:?}"
    );

    // A gap: nothing is held back, so the transfer stops (413).
    let (mut c, _, ours, _) = receiver_up(t0, "pic.png", 300, sha1(&data));
    feed_msrp(
        &mut c,
        t0,
        &chunk(&ours, "tid-1-x", 100, &data[100..200], 300, Flag::Continued),
    );
    let evs = events(&mut c);
    assert!(data_events(&evs).is_empty());
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::FileFailed { status: 413, .. })),
        "{evs:?}"
    );
}

#[test]
fn hostile_names_are_made_safe_and_files_can_be_refused() {
    let t0 = Instant::now();
    let mut c = client(t0, true);
    c.handle_datagram(
        t0,
        server(),
        Bytes::from(file_invite("h1", "../../.ssh/authorized_keys", 10, [0; 20])),
    );
    let evs = events(&mut c);
    assert!(
        matches!(&evs[0], Event::FileIncoming { file, .. } if file.name == "authorized_keys"),
        "{evs:?}"
    );

    // A device that takes no files refuses the offer.
    let mut c = client(t0, false);
    c.handle_datagram(
        t0,
        server(),
        Bytes::from(file_invite("h2", "a.png", 10, [0; 20])),
    );
    let resps = responses(&drain(&mut c));
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0].status.as_u16(), 488);
    assert!(events(&mut c).is_empty());
}
