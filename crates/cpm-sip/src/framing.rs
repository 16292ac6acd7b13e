//! Framing: where one message ends, on a stream (TCP, TLS) or in a datagram (UDP).
//!
//! Framing is separate from parsing (STYLE.md 3.8): the stream framer answers "complete / need
//! more / malformed" and only then hands the complete message to the parser.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

use crate::error::{ParseError, ParseErrorKind, Scope};
use crate::limits::Limits;
use crate::message::{
    Message, for_each_field, parse_head, parse_start_line, scan_fields, start_kind,
};

/// What the stream framer found at the front of the buffer.
#[derive(Clone, Debug, Eq, PartialEq)]
#[allow(clippy::large_enum_variant)] // Messages are the common case; boxing them costs more.
pub enum Frame {
    /// A complete message.
    Message(Message),
    /// One CRLF between messages. Two in a row are a keep-alive ping to be answered with one
    /// CRLF (RFC 5626 section 3.5.1); RFC 3261 section 7.5 says to ignore them otherwise.
    KeepAlive,
}

/// Content-Length of a header section, as framing sees it.
enum BodyLength {
    Absent,
    Exact(usize),
    Conflicting,
}

/// What the Content-Length fields of a header section say (RFC 3261 section 20.14), gathered
/// one field at a time.
#[derive(Debug, Default)]
pub(crate) struct ContentLength {
    /// The first well-formed value.
    first: Option<usize>,
    /// A later well-formed value differs from the first.
    conflicting: bool,
    /// A value is not `1*DIGIT` (RFC 4475 section 3.1.2.3: a negative one is malformed).
    malformed: bool,
}

impl ContentLength {
    /// Adds one Content-Length field; `raw` is everything after its colon, folding included.
    pub(crate) fn add(&mut self, raw: &[u8]) {
        // 1*DIGIT, whitespace and line folding ignored; more than ten digits is refused
        // outright (no body is that large, and ten digits fit in a 64-bit usize).
        let mut digits = 0;
        let mut n = 0usize;
        for &b in raw {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'0'..=b'9' if digits < 10 => {
                    digits += 1;
                    n = n.saturating_mul(10).saturating_add(usize::from(b - b'0'));
                }
                _ => {
                    self.malformed = true;
                    return;
                }
            }
        }
        if digits == 0 {
            self.malformed = true;
            return;
        }
        match self.first {
            Some(m) if m != n => self.conflicting = true,
            _ => self.first = Some(n),
        }
    }

    /// The body length the fields give, or why they give none.
    fn body_length(&self) -> Result<BodyLength, ParseErrorKind> {
        if self.malformed {
            return Err(ParseErrorKind::BadContentLength);
        }
        Ok(match self.first {
            _ if self.conflicting => BodyLength::Conflicting,
            Some(n) => BodyLength::Exact(n),
            None => BodyLength::Absent,
        })
    }
}

/// Reads the Content-Length fields of a header section (RFC 3261 section 20.14) without
/// indexing the other fields: the stream framer needs this before the body has arrived.
fn body_length(head: &[u8], limits: &Limits) -> Result<BodyLength, ParseErrorKind> {
    let first_line = memchr::memchr(b'\n', head).ok_or(ParseErrorKind::Truncated)? + 1;
    let mut content_length = ContentLength::default();
    for_each_field(head, first_line, limits, |span| {
        let name = &head[span.start..span.name_end];
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            content_length.add(&head[span.colon + 1..span.end]);
        }
        Ok(())
    })?;
    content_length.body_length()
}

pub(crate) fn parse_datagram(mut data: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    // RFC 3261 section 7.5: ignore CRLFs before the start line.
    while data.starts_with(b"\r\n") {
        data.advance(2);
    }
    let kind = start_kind(&data);
    let err = |k| ParseError::new(k, kind, Scope::Message);
    let Some(blank) = memmem::find(&data, b"\r\n\r\n") else {
        return Err(err(if data.len() > limits.max_head_len {
            ParseErrorKind::TooLarge("header section")
        } else {
            ParseErrorKind::Truncated
        }));
    };
    if blank + 2 > limits.max_head_len {
        return Err(err(ParseErrorKind::TooLarge("header section")));
    }
    let head = data.slice(..blank + 2);
    // One pass over the header fields indexes them and reads Content-Length. Faults come out
    // in this order: the section's structure, Content-Length, the start line, header values.
    let fields = scan_fields(&head, limits).map_err(err)?;
    let available = data.len() - (blank + 4);
    let body_len = match fields.content_length.body_length().map_err(err)? {
        // RFC 3261 section 18.3: no Content-Length on UDP means the rest of the datagram.
        BodyLength::Absent => available,
        BodyLength::Exact(n) if n > available => {
            return Err(err(ParseErrorKind::ContentLengthTooLarge));
        }
        BodyLength::Exact(n) => n,
        // The message still parses; the conflict is the core's to answer (400, RFC 4475
        // section 3.3.9), and the datagram's end bounds the body.
        BodyLength::Conflicting => available,
    };
    if body_len > limits.max_body_len {
        return Err(err(ParseErrorKind::TooLarge("body")));
    }
    let start = parse_start_line(&head, limits).map_err(err)?;
    let head = fields.into_head(start).map_err(err)?;
    // Octets past Content-Length are discarded (RFC 3261 section 18.3, RFC 4475 3.1.1.8).
    let body = data.slice(blank + 4..blank + 4 + body_len);
    Ok(head.into_message(body))
}

/// Stream framing (TCP, TLS): takes whole messages off the front of a connection's buffer.
///
/// Feed it the connection's receive buffer after every read; it returns `Ok(None)` when more
/// bytes are needed. A [`Scope::Connection`] error means framing is lost: answer if the verdict
/// says so, then close the connection. A [`Scope::Message`] error consumed exactly the bad
/// message; the next one can be read.
#[derive(Debug, Default)]
pub struct StreamFramer {
    limits: Limits,
    /// How far the search for the end of the header section has got (avoids rescanning).
    scanned: usize,
    /// Header section length (with the empty line) and body length of the message in progress.
    pending: Option<(usize, usize)>,
}

impl StreamFramer {
    /// A framer with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            scanned: 0,
            pending: None,
        }
    }

    /// Takes the next frame off the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ParseError> {
        if self.pending.is_none() {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Some(Frame::KeepAlive));
            }
            if buf.is_empty() || buf[..] == b"\r"[..] {
                return Ok(None);
            }
            let kind = start_kind(buf);
            let conn_err = |k| ParseError::new(k, kind, Scope::Connection);
            // Resume the search 3 octets back in case the CRLFCRLF straddles two reads.
            let from = self.scanned.saturating_sub(3);
            let Some(i) = memmem::find(&buf[from..], b"\r\n\r\n") else {
                self.scanned = buf.len();
                if buf.len() > self.limits.max_head_len {
                    return Err(conn_err(ParseErrorKind::TooLarge("header section")));
                }
                return Ok(None);
            };
            let blank = from + i;
            self.scanned = 0;
            if blank + 2 > self.limits.max_head_len {
                return Err(conn_err(ParseErrorKind::TooLarge("header section")));
            }
            let body_len = match body_length(&buf[..blank + 2], &self.limits) {
                // A stream message without Content-Length has no body (RFC 3261 section 18.3
                // requires the header on streams; treating it as 0 reads RFC 2543 peers).
                Ok(BodyLength::Absent) => 0,
                Ok(BodyLength::Exact(n)) => n,
                Ok(BodyLength::Conflicting) => {
                    return Err(conn_err(ParseErrorKind::ConflictingContentLength));
                }
                // The header section itself could not be split: framing is lost.
                Err(k) => return Err(conn_err(k)),
            };
            if body_len > self.limits.max_body_len {
                return Err(conn_err(ParseErrorKind::TooLarge("body")));
            }
            self.pending = Some((blank + 4, body_len));
        }
        let Some((head_len, body_len)) = self.pending else {
            return Ok(None);
        };
        if buf.len() < head_len + body_len {
            return Ok(None);
        }
        self.pending = None;
        let mut frame = buf.split_to(head_len + body_len).freeze();
        let body = frame.split_off(head_len);
        let head = parse_head(frame.slice(..head_len - 2), &self.limits)?;
        Ok(Some(Frame::Message(head.into_message(body))))
    }

    /// Whether a partial message is buffered (for idle-timeout decisions in the driver).
    pub fn is_mid_message(&self, buf: &BytesMut) -> bool {
        self.pending.is_some() || !buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MESSAGE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn stream_need_more_then_message() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::new();
        for (i, b) in MSG.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = f.decode(&mut buf).unwrap();
            if i + 1 < MSG.len() {
                assert!(r.is_none(), "early frame at {i}");
            } else {
                assert!(matches!(r, Some(Frame::Message(_))));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn stream_keepalives_between_messages() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::from(&b"\r\n\r\n"[..]);
        buf.extend_from_slice(MSG);
        assert_eq!(f.decode(&mut buf).unwrap(), Some(Frame::KeepAlive));
        assert_eq!(f.decode(&mut buf).unwrap(), Some(Frame::KeepAlive));
        assert!(matches!(
            f.decode(&mut buf).unwrap(),
            Some(Frame::Message(_))
        ));
        assert_eq!(f.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn stream_bad_length_loses_connection() {
        let mut f = StreamFramer::default();
        let mut buf =
            BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n"[..]);
        let e = f.decode(&mut buf).unwrap_err();
        assert_eq!(e.scope(), Scope::Connection);
    }

    #[test]
    fn stream_unbounded_head_is_refused() {
        let mut f = StreamFramer::new(Limits {
            max_head_len: 64,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\n"[..]);
        buf.extend_from_slice(&[b'X'; 100]);
        assert_eq!(
            f.decode(&mut buf).unwrap_err().kind(),
            &ParseErrorKind::TooLarge("header section")
        );
    }

    #[test]
    fn datagram_body_rules() {
        let l = Limits::default();
        let m = parse_datagram(
            Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\n\r\nrest"),
            &l,
        )
        .unwrap();
        assert_eq!(&m.body()[..], b"rest");
        let m = parse_datagram(
            Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nrest"),
            &l,
        )
        .unwrap();
        assert_eq!(&m.body()[..], b"re");
        let e = parse_datagram(
            Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nl: 9\r\n\r\nrest"),
            &l,
        )
        .unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::ContentLengthTooLarge);
    }
}
