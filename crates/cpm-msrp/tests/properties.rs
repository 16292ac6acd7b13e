//! Property tests: the decoder gives the same frames for every split of a stream, bodies full of
//! near end-lines come through intact, arbitrary input never panics, and chunks in any order
//! reassemble.

use bytes::BytesMut;
use cpm_msrp::{
    ByteRange, Chunker, Decoder, Flag, Frame, Head, Header, Headers, Limits, Message, Method,
    MsrpUri, Progress, Reassembler, Request, TransactId, encode,
};
use proptest::prelude::*;

/// Decodes `input` fed in the given pieces; data merged so splits compare equal. Stops at the
/// first connection-scoped error.
fn frames(input: &[u8], cuts: &[usize], limits: Limits) -> Vec<Result<Frame, u16>> {
    let mut d = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut out: Vec<Result<Frame, u16>> = Vec::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    ends.sort_unstable();
    ends.push(input.len());
    for end in ends {
        if end < at {
            continue;
        }
        buf.extend_from_slice(&input[at..end]);
        at = end;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(Frame::Data(b))) => {
                    assert!(!b.is_empty() && b.len() <= limits.max_data_len);
                    match out.last_mut() {
                        Some(Ok(Frame::Data(prev))) => {
                            let mut joined = BytesMut::from(&prev[..]);
                            joined.extend_from_slice(&b);
                            *prev = joined.freeze();
                        }
                        _ => out.push(Ok(Frame::Data(b))),
                    }
                }
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.status()));
                    if e.scope() == cpm_msrp::Scope::Connection {
                        return out;
                    }
                }
            }
        }
    }
    out
}

fn tid() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.+=-]{3,12}"
}

fn uri() -> impl Strategy<Value = MsrpUri> {
    (
        any::<bool>(),
        "[a-z][a-z0-9]{0,6}(\\.[a-z]{1,5}){0,2}",
        1u16..,
        "[A-Za-z0-9._~+=-]{1,10}",
    )
        .prop_map(|(secure, host, port, id)| MsrpUri::new(secure, &host, port, &id).unwrap())
}

/// Body octets drawn mostly from what end-lines are made of, to provoke false matches.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b'-'),
            Just(b'$'),
            Just(b'+'),
            Just(b'#'),
            b'a'..=b'e',
            any::<u8>(),
        ],
        0..200,
    )
}

fn message() -> impl Strategy<Value = (Request, Option<Vec<u8>>, Flag)> {
    (
        tid(),
        prop::collection::vec(uri(), 1..3),
        prop::collection::vec(uri(), 1..3),
        prop::option::of(body()),
        prop_oneof![
            Just(Flag::Complete),
            Just(Flag::Continued),
            Just(Flag::Aborted)
        ],
        any::<bool>(),
    )
        .prop_map(|(t, to, from, body, flag, report)| {
            let mut headers = Headers::new(to, from).unwrap();
            headers.set(Header::MessageId("m1234".into()));
            if report {
                headers.set(Header::SuccessReport(true));
            }
            if let Some(b) = &body {
                headers.set(Header::ByteRange(ByteRange::whole(b.len() as u64)));
                headers.set(Header::ContentType("application/octet-stream".into()));
            }
            let request = Request {
                transact_id: TransactId::new(&t).unwrap(),
                method: Method::Send,
                headers,
            };
            (request, body, flag)
        })
}

proptest! {
    #[test]
    fn every_split_gives_the_same_frames(
        msgs in prop::collection::vec(message(), 1..4),
        cuts in prop::collection::vec(0usize..2000, 0..8),
        piece in 1usize..64,
    ) {
        let mut stream = BytesMut::new();
        let mut expected = Vec::new();
        for (request, body, flag) in &msgs {
            let head = Head::Request(request.clone());
            if encode(&head, body.as_deref(), *flag, &mut stream).is_err() {
                // The body holds the end-line: the encoder refuses, nothing is written.
                continue;
            }
            expected.push(Ok(Frame::Head(head)));
            if let Some(b) = body.as_ref().filter(|b| !b.is_empty()) {
                expected.push(Ok(Frame::Data(bytes::Bytes::copy_from_slice(b))));
            }
            expected.push(Ok(Frame::End { flag: *flag }));
        }
        let limits = Limits { max_data_len: piece, ..Limits::default() };
        prop_assert_eq!(&frames(&stream, &[], limits), &expected);
        prop_assert_eq!(&frames(&stream, &cuts, limits), &expected);
    }

    #[test]
    fn messages_round_trip((request, body, flag) in message()) {
        let m = Message { head: Head::Request(request), body: body.map(Into::into), flag };
        if let Ok(bytes) = m.to_bytes() {
            prop_assert_eq!(Message::parse(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn arbitrary_input_never_panics(
        data in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(0usize..512, 0..6),
    ) {
        let _ = Message::parse(&data);
        let limits = Limits { max_data_len: 7, max_head_len: 256, max_headers: 8 };
        let _ = frames(&data, &cuts, limits);
    }

    #[test]
    fn mutated_messages_never_panic(
        (request, body, flag) in message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut out = BytesMut::new();
        if encode(&Head::Request(request), body.as_deref(), flag, &mut out).is_ok() {
            let mut bytes = out.to_vec();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            let _ = Message::parse(&bytes);
            let _ = frames(&bytes, &[bytes.len() / 2], Limits::default());
        }
    }

    #[test]
    fn chunks_in_any_order_reassemble(
        len in 0u64..3000,
        max in 1u64..500,
        order in any::<prop::sample::Index>(),
        dup in any::<bool>(),
    ) {
        let mut chunks: Vec<_> = Chunker::new(len, max).collect();
        // Rotate the order and maybe repeat one chunk: completion still comes exactly once,
        // after the last missing range.
        let k = order.index(chunks.len());
        chunks.rotate_left(k);
        if dup {
            chunks.insert(0, chunks[chunks.len() - 1].clone());
        }
        let mut r = Reassembler::default();
        let mut completes = 0;
        let mut seen = 0;
        for (i, c) in chunks.iter().enumerate() {
            let mut cur = r.begin("msg1", Some(c.range)).unwrap();
            r.data(&mut cur, (c.offsets.end - c.offsets.start) as usize).unwrap();
            match r.end(cur, c.flag) {
                Progress::Complete { total } => {
                    prop_assert_eq!(total, len);
                    completes += 1;
                    seen = i;
                }
                Progress::Incomplete { .. } => {}
                Progress::Interrupted { .. } => prop_assert!(false, "no chunk aborts"),
            }
        }
        // A duplicate after completion starts a new (incomplete) reassembly of the same id;
        // the message itself completed at the last distinct chunk.
        prop_assert!(completes >= 1);
        prop_assert!(seen >= chunks.len() - 1 - usize::from(dup));
    }
}
