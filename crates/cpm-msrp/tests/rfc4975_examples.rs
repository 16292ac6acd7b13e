//! The message examples of RFC 4975 (and the relay examples of RFC 4976) as conformance
//! vectors: each parses, its fields are what the RFC says, it serializes back to the same
//! octets, and the stream decoder reads it the same way whatever the split.
//!
//! The vectors are in `vectors/mod.rs`, which says where each was copied from (the RFC
//! text, section and figure) and the few changes a figure needed to be a complete message.
//!
//! Quirks of the RFC's own examples kept on purpose:
//! * their Byte-Range ends are not always the body's length (`Hi, I'm Alice!` is 14 octets,
//!   the header says `1-16/16`; the section 11.4 second chunk is 10 octets for `138-148`):
//!   the parser does not hold the range-end against the body (RFC 4975 section 7.3.1: the
//!   receiver "SHOULD determine the actual length of each chunk by inspecting the payload");
//! * the section 5.1 chunks leave out To-Path and From-Path: as printed they are refused
//!   (400), and with paths added they parse;
//! * RFC 4976's 200 responses carry a Message-ID, which is kept like any header.

mod vectors;

use bytes::BytesMut;
use cpm_msrp::{
    ByteRange, Decoder, FailureReport, Flag, Frame, Head, Header, Message, Method, MsrpUri,
    Progress, Reassembler, Request, Response, Status, StatusCode,
};
use vectors::wire;

/// Parses, checks the round trip and every split of the stream, returns the message.
fn vector(example: &str) -> Message {
    let bytes = wire(example);
    let m = Message::parse(&bytes).unwrap_or_else(|e| panic!("{e}: {example}"));
    assert_eq!(
        String::from_utf8_lossy(&m.to_bytes().unwrap()),
        String::from_utf8_lossy(&bytes),
        "round trip"
    );
    for split in 0..=bytes.len() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&bytes[..split]);
        let mut frames = Vec::new();
        while let Some(f) = d.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        buf.extend_from_slice(&bytes[split..]);
        while let Some(f) = d.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        let body: Vec<u8> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data(d) => Some(d.to_vec()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(
            frames.first(),
            Some(&Frame::Head(m.head.clone())),
            "split {split}"
        );
        assert_eq!(
            frames.last(),
            Some(&Frame::End { flag: m.flag }),
            "split {split}"
        );
        assert_eq!(
            Some(&body[..]),
            m.body.as_deref().or(Some(&[][..])),
            "split {split}"
        );
        assert!(buf.is_empty());
    }
    m
}

fn request(m: &Message) -> &Request {
    match &m.head {
        Head::Request(r) => r,
        Head::Response(_) => panic!("expected a request"),
    }
}

fn response(m: &Message) -> &Response {
    match &m.head {
        Head::Response(r) => r,
        Head::Request(_) => panic!("expected a response"),
    }
}

fn uris(list: &[MsrpUri]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn paths(headers: &cpm_msrp::Headers) -> (Vec<String>, Vec<String>) {
    (uris(headers.to_path()), uris(headers.from_path()))
}

/// Every vector, one by one: parse, round trip, every split.
#[test]
fn every_vector() {
    for v in vectors::ALL {
        let m = vector(v.text);
        assert_eq!(
            m.head.transact_id().as_str(),
            v.text.split_whitespace().nth(1).unwrap(),
            "{} ({})",
            v.name,
            v.source
        );
    }
}

/// RFC 4975 section 4 (protocol overview), Figure 2: Alice's SEND and Bob's 200.
#[test]
fn section_4_send_and_200() {
    let m = vector(vectors::S4_SEND);
    let r = request(&m);
    assert_eq!(r.transact_id.as_str(), "a786hjs2");
    assert_eq!(r.method, Method::Send);
    assert_eq!(
        paths(&r.headers),
        (
            vec!["msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp".to_owned()],
            vec!["msrp://atlanta.example.com:7654/jshA7weztas;tcp".to_owned()]
        )
    );
    assert_eq!(r.headers.to_path()[0].session_id(), Some("kjhd37s2s20w2a"));
    assert_eq!(r.headers.to_path()[0].port(), Some(12763));
    assert_eq!(r.headers.message_id(), Some("87652491"));
    assert_eq!(r.headers.byte_range(), Some(ByteRange::whole(25)));
    assert_eq!(r.headers.content_type(), Some("text/plain"));
    // 23 octets under a range of 25: the RFC counts the CRLF before the end-line.
    assert_eq!(m.body.as_deref(), Some(&b"Hey Bob, are you there?"[..]));
    assert_eq!(m.flag, Flag::Complete);

    let ok = vector(vectors::S4_200);
    let resp = response(&ok);
    assert_eq!((resp.status, resp.comment.as_deref()), (200, Some("OK")));
    assert!(ok.body.is_none());
    // The 200 is what the report module builds for that SEND.
    let built = cpm_msrp::report::response(r, StatusCode::Ok).unwrap();
    assert_eq!(&built, resp);
}

/// RFC 4975 section 5.1, Figure 3: one message in two chunks, "abcd" then "EFGH".
#[test]
fn section_5_1_chunks() {
    // As printed (no paths): refused.
    for printed in [
        vectors::S5_1_CHUNK1_AS_PRINTED,
        vectors::S5_1_CHUNK2_AS_PRINTED,
    ] {
        assert_eq!(Message::parse(&wire(printed)).unwrap_err().status(), 400);
    }

    let first = vector(vectors::S5_1_CHUNK1);
    let second = vector(vectors::S5_1_CHUNK2);
    assert_eq!(first.flag, Flag::Continued);
    assert_eq!(
        request(&first).headers.byte_range(),
        Some(ByteRange {
            start: 1,
            end: None,
            total: Some(8)
        })
    );
    assert_eq!(second.flag, Flag::Complete);
    assert_eq!(
        request(&second).headers.byte_range(),
        Some(ByteRange {
            start: 5,
            end: Some(8),
            total: Some(8)
        })
    );
    // Reassembled, the two make the whole message.
    let mut r = Reassembler::default();
    let mut progress = None;
    for m in [&first, &second] {
        let h = &request(m).headers;
        let mut c = r.begin(h.message_id().unwrap(), h.byte_range()).unwrap();
        r.data(&mut c, m.body.as_ref().unwrap().len()).unwrap();
        progress = Some(r.end(c, m.flag));
    }
    assert_eq!(progress, Some(Progress::Complete { total: 8 }));
}

const ALICE: &str = "msrp://alicepc.example.com:7777/iau39soe2843z;tcp";
const BOB: &str = "msrp://bob.example.com:8888/9di4eae923wzd;tcp";

/// RFC 4975 section 11.1 (basic IM session), steps 4 to 7: Alice's SEND, Bob's 200, Bob's
/// SEND, Alice's 200.
#[test]
fn section_11_1_basic_im_session() {
    let send = vector(vectors::S11_1_SEND_ALICE);
    let r = request(&send);
    assert_eq!(
        paths(&r.headers),
        (vec![BOB.to_owned()], vec![ALICE.to_owned()])
    );
    assert_eq!(r.headers.message_id(), Some("12339sdqwer"));
    // The RFC's range counts the CRLF before the end-line; the body is 14 octets.
    assert_eq!(r.headers.byte_range(), Some(ByteRange::whole(16)));
    assert_eq!(send.body.as_deref(), Some(&b"Hi, I'm Alice!"[..]));

    let ok = vector(vectors::S11_1_200_BOB);
    assert_eq!(response(&ok).transact_id.as_str(), "d93kswow");
    assert_eq!(
        &cpm_msrp::report::response(r, StatusCode::Ok).unwrap(),
        response(&ok)
    );

    let reply = vector(vectors::S11_1_SEND_BOB);
    let r = request(&reply);
    assert_eq!(
        paths(&r.headers),
        (vec![ALICE.to_owned()], vec![BOB.to_owned()])
    );
    assert_eq!(r.headers.message_id(), Some("456s9wlk3"));
    assert_eq!(r.headers.byte_range(), Some(ByteRange::whole(21)));
    // No Failure-Report: "yes" by default (RFC 4975 section 7.1.1), so Alice answers.
    assert_eq!(r.headers.failure_report(), FailureReport::Yes);
    assert!(!r.headers.success_report());
    assert_eq!(reply.body.as_deref(), Some(&b"Hi, Alice!  I'm Bob!"[..]));

    let ok = vector(vectors::S11_1_200_ALICE);
    assert_eq!(
        &cpm_msrp::report::response(r, StatusCode::Ok).unwrap(),
        response(&ok)
    );
}

/// RFC 4975 section 11.2, Figure 13: a message with XHTML content.
#[test]
fn section_11_2_xhtml() {
    let m = vector(vectors::S11_2_XHTML);
    let r = request(&m);
    assert_eq!(r.transact_id.as_str(), "dsdfoe38sd");
    assert_eq!(
        uris(r.headers.to_path()),
        ["msrp://alice.example.com:7777/iau39soe2843z;tcp"]
    );
    assert_eq!(r.headers.message_id(), Some("456so39s"));
    assert_eq!(r.headers.byte_range(), Some(ByteRange::whole(374)));
    assert_eq!(r.headers.content_type(), Some("application/xhtml+xml"));
    let body = m.body.as_deref().unwrap();
    assert!(body.starts_with(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"));
    assert!(body.ends_with(b"</html>"));
    assert_eq!(m.flag, Flag::Complete);
}

/// RFC 4975 section 11.4, Figures 14 and 15: a message/cpim message in two chunks; the
/// CPIM headers are in the first chunk only.
#[test]
fn section_11_4_cpim_chunks() {
    let first = vector(vectors::S11_4_CHUNK1);
    let second = vector(vectors::S11_4_CHUNK2);
    let (h1, h2) = (&request(&first).headers, &request(&second).headers);
    assert_eq!(h1.message_id(), h2.message_id());
    assert_eq!(h1.content_type(), Some("message/cpim"));
    assert_eq!(h2.content_type(), Some("message/cpim"));
    assert_eq!(
        h1.byte_range(),
        Some(ByteRange {
            start: 1,
            end: Some(137),
            total: Some(148)
        })
    );
    assert_eq!(
        h2.byte_range(),
        Some(ByteRange {
            start: 138,
            end: Some(148),
            total: Some(148)
        })
    );
    assert_eq!((first.flag, second.flag), (Flag::Continued, Flag::Complete));
    // The first chunk's body is exactly its 137 octets, CPIM headers and all.
    let body = first.body.as_deref().unwrap();
    assert_eq!(body.len(), 137);
    assert!(body.starts_with(b"To: Bob <sip:bob@example.com>\r\n"));
    assert!(body.ends_with(b"Content-Type: text/plain\r\n\r\nABCD"));
    assert_eq!(second.body.as_deref(), Some(&b"1234567890"[..]));
    // 10 octets for a range of 11: the message ends one octet short of its stated total,
    // and the reassembler does not call it whole.
    let mut r = Reassembler::default();
    let mut progress = None;
    for m in [&first, &second] {
        let h = &request(m).headers;
        let mut c = r.begin(h.message_id().unwrap(), h.byte_range()).unwrap();
        r.data(&mut c, m.body.as_ref().unwrap().len()).unwrap();
        progress = Some(r.end(c, m.flag));
    }
    assert!(
        !matches!(progress, Some(Progress::Complete { .. })),
        "{progress:?}"
    );
}

/// RFC 4975 section 11.5: a system message, with neither success nor failure reports.
#[test]
fn section_11_5_system_message() {
    let m = vector(vectors::S11_5_SYSTEM);
    let r = request(&m);
    assert_eq!(
        uris(r.headers.from_path()),
        ["msrp://example.com:7777/iau39soe2843z;tcp"]
    );
    assert_eq!(r.headers.failure_report(), FailureReport::No);
    assert!(!r.headers.success_report());
    assert_eq!(r.headers.byte_range(), Some(ByteRange::whole(38)));
    assert_eq!(
        m.body.as_deref(),
        Some(&b"This conference will end in 5 minutes"[..])
    );
    // Failure-Report: no: no response at all (RFC 4975 section 7.1.4).
    assert!(cpm_msrp::report::response(r, StatusCode::Ok).is_none());
}

/// RFC 4975 section 11.6, Figures 16 and 17: a SEND asking for a success report and no
/// failure reports, and the REPORT that answers it.
#[test]
fn section_11_6_positive_report() {
    let send = vector(vectors::S11_6_SEND);
    let r = request(&send);
    assert!(r.headers.success_report());
    assert_eq!(r.headers.failure_report(), FailureReport::No);
    assert_eq!(r.headers.content_type(), Some("text/html"));

    let report = vector(vectors::S11_6_REPORT);
    let rep = request(&report);
    assert_eq!(rep.method, Method::Report);
    assert_eq!(rep.headers.status(), Some(&Status::new(200, Some("OK"))));
    // The REPORT is exactly what the report module builds once 106 octets arrived.
    let built = cpm_msrp::report::success_report(r, 106, rep.transact_id.clone()).unwrap();
    assert_eq!(&built, rep);
    // Failure-Report: no: no 200 goes back for the SEND, and the REPORT is never answered.
    assert!(cpm_msrp::report::response(r, StatusCode::Ok).is_none());
    assert!(cpm_msrp::report::response(rep, StatusCode::Ok).is_none());
}

/// RFC 4976 section 3: a SEND through two relays, the hop-by-hop 200s, and the success
/// REPORT coming back; each relay moves its own URI from To-Path to From-Path.
#[test]
fn rfc4976_section_3_relayed_send() {
    let sends = [
        vector(vectors::R3_SEND_ALICE),
        vector(vectors::R3_SEND_A),
        vector(vectors::R3_SEND_B),
    ];
    for pair in sends.windows(2) {
        let (before, after) = (&request(&pair[0]).headers, &request(&pair[1]).headers);
        assert_eq!(after.to_path(), &before.to_path()[1..]);
        assert_eq!(after.from_path()[0], before.to_path()[0]);
        assert_eq!(&after.from_path()[1..], before.from_path());
        assert_eq!(pair[0].body, pair[1].body);
    }
    for m in &sends {
        let h = &request(m).headers;
        assert!(h.success_report());
        assert_eq!(h.message_id(), Some("87652"));
        assert_eq!(
            h.byte_range(),
            Some(ByteRange {
                start: 1,
                end: None,
                total: None
            })
        );
        assert!(h.to_path().iter().all(MsrpUri::is_secure));
    }
    assert_eq!(request(&sends[0]).headers.to_path().len(), 3);
    assert_eq!(request(&sends[2]).headers.from_path().len(), 3);

    // Each 200 goes back one hop only, and carries the Message-ID.
    for (send, ok) in sends
        .iter()
        .zip([vectors::R3_200_A, vectors::R3_200_B, vectors::R3_200_BOB])
    {
        let (send, ok) = (request(send), vector(ok));
        let ok = response(&ok);
        assert_eq!(ok.transact_id, send.transact_id);
        assert_eq!(ok.headers.to_path(), &send.headers.from_path()[..1]);
        assert_eq!(ok.headers.from_path(), &send.headers.to_path()[..1]);
        assert_eq!(ok.headers.message_id(), Some("87652"));
    }

    let reports = [
        vector(vectors::R3_REPORT_BOB),
        vector(vectors::R3_REPORT_B),
        vector(vectors::R3_REPORT_A),
    ];
    for rep in &reports {
        let h = &request(rep).headers;
        assert_eq!(request(rep).method, Method::Report);
        assert_eq!(h.status(), Some(&Status::new(200, Some("OK"))));
        assert_eq!(h.byte_range(), Some(ByteRange::whole(39)));
    }
    // Bob's REPORT goes back along the SEND's From-Path.
    assert_eq!(
        request(&reports[0]).headers.to_path(),
        request(&sends[2]).headers.from_path()
    );
    assert_eq!(
        uris(request(&reports[2]).headers.to_path()),
        ["msrps://alice.example.org:7965/bar;tcp"]
    );
}

/// RFC 4976 section 5.1: AUTH to intra.example.com (challenged, then granted with a
/// Use-Path and Expires), then AUTH through it to extra.example.com.
#[test]
fn rfc4976_section_5_1_auth() {
    let auth = vector(vectors::R5_1_AUTH_1);
    let a = request(&auth);
    assert_eq!(a.method, Method::Auth);
    let relay = &a.headers.to_path()[0];
    assert_eq!(relay.userinfo(), Some("alice"));
    assert_eq!((relay.port(), relay.session_id()), (None, None));
    assert!(relay.is_secure());

    let challenge = vector(vectors::R5_1_401_1);
    let c = response(&challenge);
    assert_eq!(
        (c.status, c.comment.as_deref()),
        (401, Some("Unauthorized"))
    );
    assert!(c.headers.fields().contains(&Header::WwwAuthenticate(
        r#"Digest realm="intra.example.com", qop="auth", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093""#
            .to_owned()
    )));

    let retry = vector(vectors::R5_1_AUTH_2);
    assert!(
        request(&retry)
            .headers
            .fields()
            .contains(&Header::Authorization(
                concat!(
                    r#"Digest username="Alice", realm="intra.example.com", "#,
                    r#"nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", qop=auth, nc=00000001, "#,
                    r#"cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1""#
                )
                .to_owned()
            ))
    );

    let granted = vector(vectors::R5_1_200_1);
    let g = response(&granted);
    assert_eq!(g.transact_id.as_str(), "49fi");
    assert_eq!(g.headers.expires(), Some(900));
    assert_eq!(
        uris(g.headers.use_path().unwrap()),
        ["msrps://intra.example.com:9000/jui787s2f;tcp"]
    );
    assert!(
        g.headers.fields().contains(&Header::AuthenticationInfo(
            concat!(
                r#"nextnonce="40f2e879449675f288476d772627370a","#,
                r#"rspauth="7327570c586207eca2afae94fc20903d", "#,
                r#"cnonce="0a4f113b", nc=00000001, qop=auth"#
            )
            .to_owned()
        ))
    );

    // The second AUTH, as Alice sends it and as intra.example.com forwards it.
    let outer = vector(vectors::R5_1_AUTH_3);
    let forwarded = vector(vectors::R5_1_AUTH_3_FORWARDED);
    let (o, f) = (&request(&outer).headers, &request(&forwarded).headers);
    assert_eq!(f.to_path(), &o.to_path()[1..]);
    assert_eq!(f.from_path()[0], o.to_path()[0]);
    assert_eq!(&f.from_path()[1..], o.from_path());

    for (text, tid) in [
        (vectors::R5_1_401_2, "m2nbvw"),
        (vectors::R5_1_401_2_FORWARDED, "mnbvw"),
    ] {
        let m = vector(text);
        let r = response(&m);
        assert_eq!((r.transact_id.as_str(), r.status), (tid, 401));
    }
    for text in [vectors::R5_1_AUTH_4, vectors::R5_1_AUTH_4_FORWARDED] {
        let m = vector(text);
        assert!(
            request(&m).headers.fields().iter().any(
                |h| matches!(h, Header::Authorization(a) if a.contains("cnonce=\"85a0dca8\""))
            )
        );
    }

    let last = vector(vectors::R5_1_200_2);
    let l = response(&last);
    assert_eq!(l.headers.expires(), Some(1800));
    assert_eq!(
        uris(l.headers.use_path().unwrap()),
        [
            "msrps://intra.example.com:9000/jui787s2f;tcp",
            "msrps://extra.example.com:9000/mywdEe1233;tcp"
        ]
    );
    let back = vector(vectors::R5_1_200_2_FORWARDED);
    let b = response(&back);
    assert_eq!(
        uris(b.headers.to_path()),
        ["msrps://alice.example.com:9892/98cjs;tcp"]
    );
    assert_eq!(b.headers.use_path().unwrap().len(), 2);
    assert_eq!(b.headers.expires(), Some(1800));
}
