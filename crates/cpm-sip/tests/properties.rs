//! Property tests: round trip, framing invariance under any split, no panic on any input.

use bytes::{Bytes, BytesMut};
use cpm_sip::{Frame, Limits, Message, StreamFramer, Verdict, check_request};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,8}".prop_filter("no stray %", |s| !s.contains('%'))
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9]{0,6}){0,2}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("[2001:db8::{a:x}:{b:x}]")),
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-zA-Z0-9_.!~*'()&=+$,-]{1,10}(%[0-9A-F]{2})?"),
        host(),
        prop::option::of(1u16..),
        // uri-parameter names are paramchar, narrower than token (no '`' or '%' alone).
        prop::collection::vec(
            (
                "[a-zA-Z0-9_.!~*'()-]{1,8}",
                prop::option::of("[a-z0-9]{1,6}"),
            ),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(user, host, port, params, secure)| {
            let mut s = String::from(if secure { "sips:" } else { "sip:" });
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for (n, v) in params {
                s.push(';');
                s.push_str(&n);
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(&v);
                }
            }
            s
        })
}

fn quoted_display() -> impl Strategy<Value = String> {
    "[ -~&&[^\"\\\\]]{0,12}".prop_map(|s| format!("\"{s}\""))
}

fn name_addr() -> impl Strategy<Value = String> {
    (
        prop::option::of(quoted_display()),
        sip_uri(),
        prop::option::of("[a-z0-9]{1,10}"),
    )
        .prop_map(|(d, uri, tag)| {
            let mut s = String::new();
            if let Some(d) = d {
                s.push_str(&d);
                s.push(' ');
            }
            s.push_str(&format!("<{uri}>"));
            if let Some(t) = tag {
                s.push_str(&format!(";tag={t}"));
            }
            s
        })
}

fn via() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["UDP", "TCP", "TLS", "SCTP", "WS"]),
        host(),
        prop::option::of(1u16..),
        "[a-zA-Z0-9]{1,12}",
    )
        .prop_map(|(t, h, p, b)| {
            let port = p.map(|p| format!(":{p}")).unwrap_or_default();
            format!("SIP/2.0/{t} {h}{port};branch=z9hG4bK{b}")
        })
}

/// An extension header: a token name and a value of printable text, possibly folded.
fn extension_header() -> impl Strategy<Value = String> {
    (
        token().prop_map(|t| format!("X-{t}")),
        "[!-~][ -~]{0,30}",
        prop::option::of("[!-~]{1,10}"),
    )
        .prop_map(|(n, v, fold)| match fold {
            Some(f) => format!("{n}: {v}\r\n {f}"),
            None => format!("{n}: {v}"),
        })
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["INVITE", "MESSAGE", "OPTIONS", "REGISTER", "BYE"])
            .prop_map(str::to_owned),
        "[A-Z]{3,10}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

/// A well-formed message as wire bytes.
fn wire_message() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        method(),
        sip_uri(),
        (100u16..700, "[ -~]{0,20}"),
        prop::collection::vec(via(), 1..4),
        (
            name_addr(),
            name_addr(),
            "[a-zA-Z0-9.-]{1,16}(@[a-z0-9.]{1,10})?",
        ),
        (any::<u32>(), 0u8..=255),
        prop::collection::vec(extension_header(), 0..4),
        prop::option::of(name_addr()),
        body(),
    )
        .prop_map(
            |(
                is_req,
                method,
                uri,
                (code, reason),
                vias,
                (from, to, call_id),
                (seq, mf),
                ext,
                contact,
                body,
            )| {
                let mut s = if is_req {
                    format!("{method} {uri} SIP/2.0\r\n")
                } else {
                    format!("SIP/2.0 {code} {reason}\r\n")
                };
                for v in &vias {
                    s.push_str(&format!("Via: {v}\r\n"));
                }
                s.push_str(&format!(
                    "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
                ));
                s.push_str(&format!("CSeq: {seq} {method}\r\nMax-Forwards: {mf}\r\n"));
                if let Some(c) = contact {
                    s.push_str(&format!("Contact: {c}\r\n"));
                }
                for e in &ext {
                    s.push_str(e);
                    s.push_str("\r\n");
                }
                s.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let mut v = s.into_bytes();
                v.extend_from_slice(&body);
                v
            },
        )
}

fn frames(framer: &mut StreamFramer, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    // Each decode call either consumes input or returns None, so this loop is bounded by the
    // buffer length.
    for _ in 0..=buf.len() + 1 {
        match framer.decode(buf) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return,
            Err(e) => panic!("well-formed stream rejected: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// parse(serialize(m)) == m, and a parsed message serializes to the bytes it came from.
    #[test]
    fn round_trip(wire in wire_message()) {
        let m = Message::parse(wire.clone()).expect("generated message parses");
        let bytes = m.to_bytes();
        prop_assert_eq!(&bytes[..], &wire[..]);
        if let Message::Request(r) = &m {
            prop_assert!(check_request(r).is_ok());
        }
        prop_assert_eq!(Message::parse(bytes).expect("re-parse"), m);
    }

    /// Any split of a stream into chunks yields the same frames as the whole stream at once.
    #[test]
    fn stream_split_invariance(
        msgs in prop::collection::vec((wire_message(), 0usize..3), 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for (m, keepalives) in &msgs {
            for _ in 0..*keepalives {
                stream.extend_from_slice(b"\r\n");
            }
            stream.extend_from_slice(m);
        }
        let mut whole = Vec::new();
        let mut buf = BytesMut::from(&stream[..]);
        frames(&mut StreamFramer::default(), &mut buf, &mut whole);
        prop_assert!(buf.is_empty());
        let expected_msgs = msgs.len();
        prop_assert_eq!(whole.iter().filter(|f| matches!(f, Frame::Message(_))).count(), expected_msgs);

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunked = Vec::new();
        let mut framer = StreamFramer::default();
        let mut buf = BytesMut::new();
        let mut last = 0;
        for p in points.into_iter().chain([stream.len()]) {
            buf.extend_from_slice(&stream[last..p]);
            last = p;
            frames(&mut framer, &mut buf, &mut chunked);
        }
        prop_assert_eq!(chunked, whole);
    }

    /// No panic on arbitrary bytes, as a datagram or as a stream.
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::parse(data.clone());
        let mut framer = StreamFramer::default();
        let mut buf = BytesMut::from(&data[..]);
        for _ in 0..=data.len() + 1 {
            match framer.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// No panic on near-valid input: a valid message with bytes overwritten, inserted or cut;
    /// errors on requests carry a response verdict, errors on responses are dropped.
    #[test]
    fn mutated_messages_never_panic(
        wire in wire_message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut data = wire;
        for (i, b, op) in edits {
            let at = i.index(data.len() + 1);
            match op {
                0 if at < data.len() => data[at] = b,
                1 => data.insert(at, b),
                _ => data.truncate(at.max(1)),
            }
        }
        if let Err(e) = Message::parse(Bytes::from(data.clone())) {
            let is_response = data.len() >= 4 && data[..4].eq_ignore_ascii_case(b"SIP/");
            prop_assert_eq!(is_response, e.verdict() == Verdict::Drop);
        }
    }
}

#[test]
fn limits_bound_a_hostile_stream() {
    // A peer that never ends its header section costs at most max_head_len of buffer.
    let limits = Limits {
        max_head_len: 1024,
        ..Limits::default()
    };
    let mut framer = StreamFramer::new(limits);
    let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\n"[..]);
    let mut refused = false;
    for _ in 0..100 {
        buf.extend_from_slice(b"X-Junk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        if framer.decode(&mut buf).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused && buf.len() <= 1024 + 64);
}
