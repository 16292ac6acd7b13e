//! Stream framing: MSRP messages off a TCP or TLS byte stream, in bounded memory.
//!
//! RFC 4975 section 6: a message has no length field; its body ends at the end-line,
//! `CRLF "-------" transact-id continuation-flag CRLF`, with the transact-id of its own start
//! line. The [`Decoder`] therefore never waits for a whole body: it yields the head, then the
//! body in pieces of at most [`Limits::max_data_len`] octets as they arrive, then the end-line's
//! flag. Octets that could still be the start of the end-line are held back until the next read
//! decides; everything else leaves the buffer at once. Framing is separate from parsing
//! (STYLE.md 3.8): the decoder finds the boundaries and hands the head to
//! [`crate::message`]'s parser.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

use crate::message::{Flag, Head, StartLine, parse_head, parse_start_line};
use crate::status::{Error, ErrorKind};

/// Size limits for one connection's decoder.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Limits {
    /// Largest header section (start line, headers, the empty line or end-line), in octets.
    /// Over it: 413 and the connection closes (framing cannot be recovered).
    pub max_head_len: usize,
    /// Largest [`Frame::Data`] piece, in octets. Bounds what a body costs in memory.
    pub max_data_len: usize,
    /// Most header fields in one message.
    pub max_headers: usize,
}

impl Default for Limits {
    /// 16 KiB of headers, 64 KiB data pieces, 64 header fields: MSRP heads are a few hundred
    /// octets (paths, Message-ID, Byte-Range, Content-Type), and 64 KiB pieces keep a file
    /// transfer streaming without copying it whole.
    fn default() -> Self {
        Self {
            max_head_len: 16 * 1024,
            max_data_len: 64 * 1024,
            max_headers: 64,
        }
    }
}

/// What the decoder found at the front of the buffer.
#[derive(Clone, Debug, Eq, PartialEq)]
#[allow(clippy::large_enum_variant)] // One head per message; boxing it costs more.
pub enum Frame {
    /// A message's start line and headers, parsed and checked. A body follows exactly when
    /// the head has a Content-Type.
    Head(Head),
    /// The next piece of the body (never empty, at most [`Limits::max_data_len`] octets).
    Data(Bytes),
    /// The end-line: the message (or chunk) is over.
    End {
        /// The continuation flag.
        flag: Flag,
    },
}

enum State {
    /// Reading the header section.
    Head {
        /// Where the current line starts.
        line_start: usize,
        /// Where the header lines start (after the start line), once it is read.
        headers_start: usize,
        /// How far the search for the next LF has got.
        scanned: usize,
        /// The parsed start line, once complete.
        start: Option<StartLine>,
        /// Header lines seen.
        headers: usize,
    },
    /// Reading a body up to `CRLF "-------" transact-id flag CRLF`.
    Body {
        /// `CRLF "-------" transact-id`, the fixed part of the end-line.
        delimiter: Vec<u8>,
        /// The head was refused: drop the body, then read the next message.
        discard: bool,
    },
    /// A head without body was returned; its end-line is consumed, the flag not yet told.
    EndPending(Flag),
}

impl State {
    fn head() -> Self {
        Self::Head {
            line_start: 0,
            headers_start: 0,
            scanned: 0,
            start: None,
            headers: 0,
        }
    }
}

/// Incremental MSRP stream decoder for one connection.
///
/// Driver contract: append what the socket read to one `BytesMut`, then call
/// [`Decoder::decode`] until it returns `Ok(None)`; only then read again. Between reads the
/// buffer holds at most [`Limits::max_head_len`] octets (in a head) or fewer than 48 (in a
/// body), whatever the size of the message. An error with
/// [`Scope::Message`](crate::Scope::Message) refused one message (answer it if it was a
/// request; the decoder skips its body by itself); with
/// [`Scope::Connection`](crate::Scope::Connection) close the connection.
pub struct Decoder {
    limits: Limits,
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// What the octets after a delimiter match say.
enum Tail {
    /// A complete end-line with this flag.
    End(Flag),
    /// Consistent so far, but too short to tell.
    Maybe,
    /// Not an end-line: the match is body data.
    No,
}

fn tail(t: &[u8]) -> Tail {
    let Some(&f) = t.first() else {
        return Tail::Maybe;
    };
    let Some(flag) = Flag::from_byte(f) else {
        return Tail::No;
    };
    match (t.get(1), t.get(2)) {
        (None, _) | (Some(b'\r'), None) => Tail::Maybe,
        (Some(b'\r'), Some(b'\n')) => Tail::End(flag),
        _ => Tail::No,
    }
}

impl Decoder {
    /// A decoder with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::head(),
        }
    }

    /// Whether a message is partly read (for the driver's idle-timeout decisions).
    pub fn is_mid_message(&self, buf: &BytesMut) -> bool {
        !matches!(self.state, State::Head { .. }) || !buf.is_empty()
    }

    /// Takes the next frame off the front of `buf`; `Ok(None)` when more octets are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        loop {
            match &mut self.state {
                State::EndPending(flag) => {
                    let flag = *flag;
                    self.state = State::head();
                    return Ok(Some(Frame::End { flag }));
                }
                State::Head { .. } => return self.decode_head(buf),
                State::Body { delimiter, discard } => {
                    let discard = *discard;
                    let Some(frame) = body_step(buf, delimiter, self.limits.max_data_len) else {
                        return Ok(None);
                    };
                    if let Frame::End { .. } = frame {
                        self.state = State::head();
                    }
                    if !discard {
                        return Ok(Some(frame));
                    }
                }
            }
        }
    }

    fn decode_head(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let State::Head {
            line_start,
            headers_start,
            scanned,
            start,
            headers,
        } = &mut self.state
        else {
            return Ok(None);
        };
        let conn = |e: Error| e.connection();
        loop {
            if start.is_none() {
                // Refuse garbage at once rather than after max_head_len octets of it.
                let n = buf.len().min(5);
                if buf[..n] != b"MSRP "[..n] {
                    return Err(conn(Error::syntax("start line")));
                }
            }
            let Some(nl) = memchr::memchr(b'\n', &buf[*scanned..]) else {
                *scanned = buf.len();
                if buf.len() > self.limits.max_head_len {
                    return Err(conn(ErrorKind::TooLarge("header section").into()));
                }
                return Ok(None);
            };
            let lf = *scanned + nl;
            let next = lf + 1;
            if next > self.limits.max_head_len {
                return Err(conn(ErrorKind::TooLarge("header section").into()));
            }
            // Lines end in CRLF; a bare LF leaves us unsure where anything ends.
            if lf == *line_start || buf[lf - 1] != b'\r' {
                return Err(conn(Error::syntax("line ending")));
            }
            let line = &buf[*line_start..lf - 1];
            let Some(start_line) = start.as_ref() else {
                *start = Some(parse_start_line(line).map_err(conn)?);
                *line_start = next;
                *headers_start = next;
                *scanned = next;
                continue;
            };
            let tid = start_line.transact_id().as_str().as_bytes();
            let has_body = if line.is_empty() {
                true
            } else if let Some(rest) = line.strip_prefix(b"-------") {
                // An end-line, ours or (framing lost) someone else's.
                match rest.split_last() {
                    Some((&f, id)) if id == tid && Flag::from_byte(f).is_some() => false,
                    _ => return Err(conn(Error::syntax("end-line"))),
                }
            } else {
                *headers += 1;
                if *headers > self.limits.max_headers {
                    return Err(conn(ErrorKind::TooLarge("header fields").into()));
                }
                *line_start = next;
                *scanned = next;
                continue;
            };
            let flag = match line.last() {
                Some(&f) if !has_body => Flag::from_byte(f),
                _ => None,
            };
            let lines_end = *line_start;
            let delimiter = [b"\r\n-------", tid].concat();
            let id = start_line.transact_id().clone();
            let Some(start_line) = start.take() else {
                return Ok(None);
            };
            let header_lines = buf[*headers_start..lines_end]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
            let parsed = parse_head(start_line, header_lines, has_body);
            buf.advance(next);
            self.state = match (flag, &parsed) {
                (Some(flag), Ok(_)) => State::EndPending(flag),
                (Some(_), Err(_)) => State::head(),
                (None, _) => State::Body {
                    delimiter,
                    discard: parsed.is_err(),
                },
            };
            return parsed
                .map(|h| Some(Frame::Head(h)))
                .map_err(|e| e.with_transact_id(&id));
        }
    }
}

/// One step in a body: a data piece, the end-line, or `None` for more octets.
fn body_step(buf: &mut BytesMut, delimiter: &[u8], max_data: usize) -> Option<Frame> {
    // A zero limit would never make progress.
    let max_data = max_data.max(1);
    let line_len = delimiter.len() + 3;
    // Never look further than one piece plus one end-line: each call costs O(max_data).
    let window = buf.len().min(max_data.saturating_add(line_len));
    let finder = memmem::Finder::new(delimiter);
    let mut from = 0;
    let safe = loop {
        match finder.find(&buf[from..window]) {
            Some(k) => {
                let i = from + k;
                match tail(&buf[i + delimiter.len()..]) {
                    Tail::End(flag) if i == 0 => {
                        buf.advance(line_len);
                        return Some(Frame::End { flag });
                    }
                    Tail::End(_) | Tail::Maybe => break i,
                    // A false match (RFC 4975 section 6: only the exact end-line ends a body).
                    Tail::No => from = i + 1,
                }
            }
            None if window < buf.len() => break window - (delimiter.len() - 1),
            None => break window - partial_suffix(&buf[..window], delimiter),
        }
    };
    let n = safe.min(max_data);
    (n > 0).then(|| Frame::Data(buf.split_to(n).freeze()))
}

/// Length of the longest suffix of `data` that is a proper prefix of `delimiter`: octets that
/// may be the start of the end-line and must wait for the next read.
fn partial_suffix(data: &[u8], delimiter: &[u8]) -> usize {
    (1..delimiter.len().min(data.len() + 1))
        .rev()
        .find(|&k| data[data.len() - k..] == delimiter[..k])
        .unwrap_or(0)
}

/// Writes the head: start line, headers, and the empty line when a body follows.
pub fn encode_head(head: &Head, out: &mut BytesMut) {
    out.extend_from_slice(head.to_text().as_bytes());
    if head.headers().content_type().is_some() {
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes what follows the body: its closing CRLF (when the head has a body) and the
/// end-line. With [`encode_head`] this streams a body of any size; the caller must make sure
/// no piece holds `CRLF "-------" transact-id` (RFC 4975 section 6).
pub fn encode_end(head: &Head, flag: Flag, out: &mut BytesMut) {
    if head.headers().content_type().is_some() {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"-------");
    out.extend_from_slice(head.transact_id().as_str().as_bytes());
    out.extend_from_slice(&[flag.as_byte(), b'\r', b'\n']);
}

/// Writes a whole message or chunk: head, body, end-line.
///
/// The body must come with a Content-Type and not without (RFC 4975 section 9), responses
/// have none, and the body must not hold `CRLF "-------" transact-id`, which would end it
/// early at the receiver (RFC 4975 section 6: pick another transact-id).
pub fn encode(
    head: &Head,
    body: Option<&[u8]>,
    flag: Flag,
    out: &mut BytesMut,
) -> Result<(), Error> {
    if body.is_some() != head.headers().content_type().is_some() {
        return Err(ErrorKind::BodyWithoutContentType.into());
    }
    if let Some(body) = body {
        if matches!(head, Head::Response(_)) {
            return Err(Error::syntax("response (a response has no body)"));
        }
        let delimiter = [b"\r\n-------", head.transact_id().as_str().as_bytes()].concat();
        if memmem::find(body, &delimiter).is_some() {
            return Err(Error::syntax("body (holds the end-line)"));
        }
    }
    encode_head(head, out);
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    encode_end(head, flag, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scope;

    const TWO: &[u8] = b"MSRP dkei38sd SEND\r\n\
        To-Path: msrp://alice.example.com:7777/foo;tcp\r\n\
        From-Path: msrp://bob.example.com:7777/bar;tcp\r\n\
        Message-ID: 4564dpWd\r\n\
        Byte-Range: 1-*/8\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        abcd\r\n\
        -------dkei38sd+\r\n\
        MSRP dkei38sd 200 OK\r\n\
        To-Path: msrp://bob.example.com:7777/bar;tcp\r\n\
        From-Path: msrp://alice.example.com:7777/foo;tcp\r\n\
        -------dkei38sd$\r\n";

    /// Feeds `input` in pieces of `step` octets and collects frames, data merged.
    fn run(input: &[u8], step: usize, limits: Limits) -> Vec<Result<Frame, Error>> {
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::new();
        let mut out: Vec<Result<Frame, Error>> = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(Frame::Data(b))) => {
                        assert!(!b.is_empty() && b.len() <= limits.max_data_len);
                        if let Some(Ok(Frame::Data(prev))) = out.last_mut() {
                            let mut joined = BytesMut::from(&prev[..]);
                            joined.extend_from_slice(&b);
                            *prev = joined.freeze();
                        } else {
                            out.push(Ok(Frame::Data(b)));
                        }
                    }
                    Ok(Some(f)) => out.push(Ok(f)),
                    Ok(None) => break,
                    Err(e) => {
                        let fatal = e.scope() == Scope::Connection;
                        out.push(Err(e));
                        if fatal {
                            return out;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn frames_are_the_same_for_every_split() {
        let whole = run(TWO, TWO.len(), Limits::default());
        assert_eq!(whole.len(), 5, "{whole:?}");
        assert!(matches!(whole[1], Ok(Frame::Data(ref d)) if &d[..] == b"abcd"));
        assert!(matches!(
            whole[2],
            Ok(Frame::End {
                flag: Flag::Continued
            })
        ));
        assert!(matches!(
            whole[4],
            Ok(Frame::End {
                flag: Flag::Complete
            })
        ));
        for step in 1..TWO.len() {
            assert_eq!(run(TWO, step, Limits::default()), whole, "step {step}");
        }
    }

    fn send_with(body: &[u8]) -> Vec<u8> {
        let mut m = b"MSRP abcd SEND\r\nTo-Path: msrp://b:1/x;tcp\r\nFrom-Path: msrp://a:1/y;tcp\r\nMessage-ID: m123\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        m.extend_from_slice(body);
        m.extend_from_slice(b"\r\n-------abcd$\r\n");
        m
    }

    #[test]
    fn false_end_lines_stay_in_the_body() {
        let body: &[u8] = b"x\r\n-------abcd\r\n-------abcd!\r\n-------abcd$x\r\n-------abcd$\rz\r\n-------abcX$\r\n\r\n";
        let input = send_with(body);
        for step in 1..input.len() {
            let frames = run(&input, step, Limits::default());
            assert_eq!(frames.len(), 3, "step {step}: {frames:?}");
            assert_eq!(
                frames[1],
                Ok(Frame::Data(Bytes::copy_from_slice(body))),
                "step {step}"
            );
        }
    }

    #[test]
    fn empty_body_and_body_ending_in_crlf() {
        for body in [&b""[..], b"\r\n", b"\r\n-------", b"-------abcd$"] {
            let frames = run(&send_with(body), 1, Limits::default());
            let data: Vec<u8> = frames
                .iter()
                .filter_map(|f| match f {
                    Ok(Frame::Data(d)) => Some(d.to_vec()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .concat();
            assert_eq!(data, body);
            assert!(matches!(
                frames.last(),
                Some(Ok(Frame::End {
                    flag: Flag::Complete
                }))
            ));
        }
    }

    #[test]
    fn a_large_body_streams_in_bounded_memory() {
        let limits = Limits {
            max_data_len: 1000,
            ..Limits::default()
        };
        let body = vec![b'z'; 1_000_000];
        let input = send_with(&body);
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::new();
        let (mut got, mut ended) = (0, false);
        for piece in input.chunks(4096) {
            buf.extend_from_slice(piece);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                match f {
                    Frame::Data(b) => got += b.len(),
                    Frame::End { .. } => ended = true,
                    Frame::Head(_) => {}
                }
            }
            // Between reads only a possible end-line prefix stays behind.
            assert!(buf.len() < 48 || !d.is_mid_message(&buf), "{}", buf.len());
        }
        assert_eq!(got, body.len());
        assert!(ended);
    }

    #[test]
    fn refused_head_skips_its_body() {
        let mut input = b"MSRP abcd SEND\r\nTo-Path: msrp://b:1/x;tcp\r\nFrom-Path: msrp://a:1/y;tcp\r\nMessage-ID: m123\r\nByte-Range: bad\r\nContent-Type: text/plain\r\n\r\nbody\r\n-------abcd$\r\n".to_vec();
        input.extend_from_slice(TWO);
        let frames = run(&input, 3, Limits::default());
        let e = frames[0].clone().unwrap_err();
        assert_eq!((e.status(), e.scope()), (400, Scope::Message));
        assert_eq!(e.transact_id().map(|t| t.as_str()), Some("abcd"));
        assert_eq!(frames.len(), 6);
        assert!(matches!(frames[1], Ok(Frame::Head(_))));
    }

    #[test]
    fn framing_errors_close_the_connection() {
        let limits = Limits {
            max_head_len: 64,
            ..Limits::default()
        };
        for (input, code) in [
            (&b"GET / HTTP/1.1\r\n"[..], 400),
            (b"MSRP abcd SEND\n", 400),
            (b"MSRP ab SEND\r\n", 400),
            (b"MSRP abcd SEND\r\nTo-Path: msrp://b:1/x;tcp\r\n-------wxyz$\r\n", 400),
            (b"MSRP abcd SEND\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 413),
        ] {
            let frames = run(input, 1, limits);
            let Some(Err(e)) = frames.last() else {
                panic!("{frames:?}")
            };
            assert_eq!((e.status(), e.scope()), (code, Scope::Connection), "{input:?}");
        }
        let many = format!(
            "MSRP abcd SEND\r\nTo-Path: msrp://b:1/x;tcp\r\nFrom-Path: msrp://a:1/y;tcp\r\n{}",
            "X: y\r\n".repeat(70)
        );
        let frames = run(many.as_bytes(), 7, Limits::default());
        assert!(matches!(frames.last(), Some(Err(e)) if e.status() == 413));
    }

    #[test]
    fn encode_checks_the_body() {
        let m = crate::Message::parse(&send_with(b"hi")).unwrap();
        let mut out = BytesMut::new();
        assert!(encode(&m.head, Some(b"a\r\n-------abcd"), Flag::Complete, &mut out).is_err());
        assert!(encode(&m.head, None, Flag::Complete, &mut out).is_err());
        encode(&m.head, Some(b"hi"), Flag::Complete, &mut out).unwrap();
        assert_eq!(&out[..], &send_with(b"hi")[..]);
    }
}
