//! MSRP requests and responses (RFC 4975 section 9): start lines, the header section, the
//! end-line, parse and serialize.
//!
//! ```text
//! msrp-request  = req-start headers [content-stuff] end-line
//! msrp-response = resp-start headers end-line
//! req-start     = "MSRP" SP transact-id SP method CRLF
//! resp-start    = "MSRP" SP transact-id SP status-code [SP comment] CRLF
//! content-stuff = *(Other-Mime-header CRLF) Content-Type 2CRLF data CRLF
//! end-line      = "-------" transact-id continuation-flag CRLF
//! ```

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::framing::{Decoder, Frame, Limits};
use crate::header::{Header, Headers, is_utf8text, parse_path};
use crate::status::{Error, ErrorKind};

/// `ident = ALPHANUM 3*31ident-char`, `ident-char = ALPHANUM / "." / "-" / "+" / "%" / "="`
/// (RFC 4975 section 9): the grammar of transact-id and Message-ID, 4 to 32 characters.
pub(crate) fn is_ident(s: &str) -> bool {
    let b = s.as_bytes();
    (4..=32).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b".-+%=".contains(&c))
}

/// A transaction identifier (`transact-id = ident`), compared case-sensitively.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct TransactId(String);

impl TransactId {
    /// Checks the `ident` grammar (4 to 32 characters, RFC 4975 section 9).
    pub fn new(s: &str) -> Result<Self, Error> {
        if is_ident(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::syntax("transact-id"))
        }
    }

    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request method (`method = mSEND / mREPORT / other-method`, `other-method = 1*UPALPHA`).
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum Method {
    /// `SEND`: carries a message or a chunk of one (RFC 4975 section 7.1).
    Send,
    /// `REPORT`: delivery status of a message; never answered (RFC 4975 section 7.1.2).
    Report,
    /// `AUTH`: authentication to a relay (RFC 4976 section 5).
    Auth,
    /// Any other method, kept as its token; answered 501 by endpoints (RFC 4975 section 12).
    Extension(String),
}

impl Method {
    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Send => "SEND",
            Self::Report => "REPORT",
            Self::Auth => "AUTH",
            Self::Extension(s) => s,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        // Methods are case-sensitive: the ABNF gives them as %x sequences of capitals.
        Some(match s {
            "SEND" => Self::Send,
            "REPORT" => Self::Report,
            "AUTH" => Self::Auth,
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase()) => {
                Self::Extension(s.to_owned())
            }
            _ => return None,
        })
    }
}

/// The end-line's `continuation-flag` (RFC 4975 section 9).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Flag {
    /// `$`: the last chunk of the message.
    Complete,
    /// `+`: more chunks follow.
    Continued,
    /// `#`: the sender aborted the message (RFC 4975 section 7.1.1).
    Aborted,
}

impl Flag {
    /// The flag's octet.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Complete => b'$',
            Self::Continued => b'+',
            Self::Aborted => b'#',
        }
    }

    /// The flag for an octet, if it is one.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'$' => Some(Self::Complete),
            b'+' => Some(Self::Continued),
            b'#' => Some(Self::Aborted),
            _ => None,
        }
    }
}

/// An MSRP request's start line and headers.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Request {
    /// The transaction identifier.
    pub transact_id: TransactId,
    /// The method.
    pub method: Method,
    /// The header section.
    pub headers: Headers,
}

/// An MSRP response's start line and headers (responses never have a body).
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Response {
    /// The transaction identifier of the request answered.
    pub transact_id: TransactId,
    /// The three-digit status code.
    pub status: u16,
    /// The comment after the code, if any.
    pub comment: Option<String>,
    /// The header section.
    pub headers: Headers,
}

/// The start line and header section of a message: what the stream decoder yields first.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum Head {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Head {
    /// The transaction identifier.
    pub fn transact_id(&self) -> &TransactId {
        match self {
            Self::Request(r) => &r.transact_id,
            Self::Response(r) => &r.transact_id,
        }
    }

    /// The header section.
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }

    /// The start line and header lines, each ending in CRLF; no empty line, no end-line.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(256);
        match self {
            Self::Request(r) => {
                out.push_str("MSRP ");
                out.push_str(r.transact_id.as_str());
                out.push(' ');
                out.push_str(r.method.as_str());
            }
            Self::Response(r) => {
                out.push_str("MSRP ");
                out.push_str(r.transact_id.as_str());
                out.push_str(&format!(" {:03}", r.status));
                if let Some(c) = &r.comment {
                    out.push(' ');
                    out.push_str(c);
                }
            }
        }
        out.push_str("\r\n");
        self.headers().write(&mut out);
        out
    }
}

/// A whole message: head, body (`None` when there is no content-stuff) and end-line flag.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Message {
    /// Start line and headers.
    pub head: Head,
    /// The body; `Some` exactly when the head has a Content-Type.
    pub body: Option<Bytes>,
    /// The end-line's continuation flag.
    pub flag: Flag,
}

impl Message {
    /// Parses exactly one complete message (head, body, end-line). For streams use
    /// [`Decoder`], which never holds a whole body.
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let mut decoder = Decoder::new(Limits {
            max_data_len: usize::MAX,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(data);
        let Some(Frame::Head(head)) = decoder.decode(&mut buf)? else {
            return Err(Error::syntax("message (truncated)"));
        };
        let mut body: Option<BytesMut> = head.headers().content_type().map(|_| BytesMut::new());
        loop {
            match decoder.decode(&mut buf)? {
                Some(Frame::Data(d)) => {
                    body.get_or_insert_default().extend_from_slice(&d);
                }
                Some(Frame::End { flag }) if buf.is_empty() => {
                    return Ok(Self {
                        head,
                        body: body.map(BytesMut::freeze),
                        flag,
                    });
                }
                Some(_) => return Err(Error::syntax("message (bytes after the end-line)")),
                None => return Err(Error::syntax("message (truncated)")),
            }
        }
    }

    /// Serializes the message. Fails when the body holds the end-line's closing sequence
    /// (RFC 4975 section 6: the sender must pick a transact-id that does not occur in it).
    pub fn to_bytes(&self) -> Result<Bytes, Error> {
        let mut out = BytesMut::new();
        crate::framing::encode(&self.head, self.body.as_deref(), self.flag, &mut out)?;
        Ok(out.freeze())
    }
}

/// What the first line of a message says.
pub(crate) enum StartLine {
    Request(TransactId, Method),
    Response(TransactId, u16, Option<String>),
}

impl StartLine {
    pub(crate) fn transact_id(&self) -> &TransactId {
        match self {
            Self::Request(t, _) | Self::Response(t, _, _) => t,
        }
    }
}

/// Parses a start line without its CRLF.
pub(crate) fn parse_start_line(line: &[u8]) -> Result<StartLine, Error> {
    let bad = || Error::syntax("start line");
    let line = std::str::from_utf8(line).map_err(|_| bad())?;
    // "MSRP" is case-sensitive (%x4D.53.52.50).
    let rest = line.strip_prefix("MSRP ").ok_or_else(bad)?;
    let (tid, rest) = rest.split_once(' ').ok_or_else(bad)?;
    let tid = TransactId::new(tid)?;
    let b = rest.as_bytes();
    if b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) {
        let code = rest[..3].parse().map_err(|_| bad())?;
        let comment = match &rest[3..] {
            "" => None,
            c => {
                let c = c.strip_prefix(' ').ok_or_else(bad)?;
                if !is_utf8text(c) {
                    return Err(bad());
                }
                Some(c.to_owned())
            }
        };
        return Ok(StartLine::Response(tid, code, comment));
    }
    let method = Method::parse(rest).ok_or_else(bad)?;
    Ok(StartLine::Request(tid, method))
}

/// Parses the header lines (each without its CRLF) after a start line into a [`Head`],
/// checking the rules that do not depend on the receiver's role: To-Path and From-Path
/// first, no typed header twice, a body exactly with Content-Type, no body in a response,
/// Message-ID in SEND and REPORT, Status in REPORT.
pub(crate) fn parse_head<'a>(
    start: StartLine,
    mut lines: impl Iterator<Item = &'a [u8]>,
    has_body: bool,
) -> Result<Head, Error> {
    let mut field = |expect: Option<&'static str>| -> Result<Option<Header>, Error> {
        let Some(line) = lines.next() else {
            return match expect {
                Some(name) => Err(ErrorKind::Header(name).into()),
                None => Ok(None),
            };
        };
        let line = std::str::from_utf8(line).map_err(|_| Error::syntax("header line"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| Error::syntax("header line"))?;
        // `hname ":" SP hval`; a missing SP is tolerated (some clients omit it).
        let value = value.strip_prefix(' ').unwrap_or(value);
        if let Some(want) = expect {
            if !name.eq_ignore_ascii_case(want) {
                return Err(ErrorKind::Header(want).into());
            }
            let path = parse_path(value).ok_or_else(|| Error::syntax(want))?;
            return Ok(Some(Header::UsePath(path)));
        }
        if name.eq_ignore_ascii_case("To-Path") || name.eq_ignore_ascii_case("From-Path") {
            return Err(ErrorKind::Header(if name.len() == 7 {
                "To-Path"
            } else {
                "From-Path"
            })
            .into());
        }
        Header::parse(name, value).map(Some)
    };
    // The two paths travel as Use-Path values here only to reuse the URI-list parser.
    let Some(Header::UsePath(to_path)) = field(Some("To-Path"))? else {
        return Err(ErrorKind::Header("To-Path").into());
    };
    let Some(Header::UsePath(from_path)) = field(Some("From-Path"))? else {
        return Err(ErrorKind::Header("From-Path").into());
    };
    let mut headers = Headers::new(to_path, from_path)?;
    while let Some(h) = field(None)? {
        headers.push_parsed(h)?;
    }
    if has_body != headers.content_type().is_some() {
        return Err(ErrorKind::BodyWithoutContentType.into());
    }
    Ok(match start {
        StartLine::Request(transact_id, method) => {
            let need = |ok: bool, name| {
                if ok {
                    Ok(())
                } else {
                    Err(ErrorKind::Header(name))
                }
            };
            if matches!(method, Method::Send | Method::Report) {
                need(headers.message_id().is_some(), "Message-ID")?;
            }
            if method == Method::Report {
                need(headers.status().is_some(), "Status")?;
            }
            Head::Request(Request {
                transact_id,
                method,
                headers,
            })
        }
        StartLine::Response(transact_id, status, comment) => {
            if has_body {
                return Err(Error::syntax("response (a response has no body)"));
            }
            Head::Response(Response {
                transact_id,
                status,
                comment,
                headers,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{ByteRange, FailureReport};

    fn parse(s: &str) -> Result<Message, Error> {
        Message::parse(s.as_bytes())
    }

    const SEND: &str = "MSRP a786hjs2 SEND\r\n\
        To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n\
        From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n\
        Message-ID: 87652491\r\n\
        Byte-Range: 1-25/25\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        Hey Bob, are you there?\r\n\
        -------a786hjs2$\r\n";

    #[test]
    fn send_round_trips() {
        let m = parse(SEND).unwrap();
        let Head::Request(r) = &m.head else {
            panic!("not a request")
        };
        assert_eq!(r.transact_id.as_str(), "a786hjs2");
        assert_eq!(r.method, Method::Send);
        assert_eq!(r.headers.message_id(), Some("87652491"));
        assert_eq!(r.headers.byte_range(), Some(ByteRange::whole(25)));
        assert_eq!(r.headers.failure_report(), FailureReport::Yes);
        assert_eq!(m.body.as_deref(), Some(&b"Hey Bob, are you there?"[..]));
        assert_eq!(m.flag, Flag::Complete);
        assert_eq!(&m.to_bytes().unwrap()[..], SEND.as_bytes());
    }

    #[test]
    fn start_lines() {
        assert!(matches!(
            parse_start_line(b"MSRP abcd NICKNAME"),
            Ok(StartLine::Request(_, Method::Extension(m))) if m == "NICKNAME"
        ));
        assert!(matches!(
            parse_start_line(b"MSRP abcd 200"),
            Ok(StartLine::Response(_, 200, None))
        ));
        assert!(matches!(
            parse_start_line(b"MSRP abcd 413 too big"),
            Ok(StartLine::Response(_, 413, Some(c))) if c == "too big"
        ));
        for bad in [
            &b"msrp abcd SEND"[..],
            b"MSRP abc SEND",
            b"MSRP abcd send",
            b"MSRP abcd SEND ",
            b"MSRP abcd 20",
            b"MSRP abcd 2000",
            b"MSRP abcd",
            b"MSRP  abcd SEND",
            b"MSRP .bcd SEND",
            b"MSRP 0123456789012345678901234567890123 SEND",
            b"MSRP abcd 200 \x01",
        ] {
            assert!(
                parse_start_line(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn header_section_rules() {
        let paths = "To-Path: msrp://b:1/x;tcp\r\nFrom-Path: msrp://a:1/y;tcp\r\n";
        let ok = format!("MSRP abcd SEND\r\n{paths}Message-ID: m123\r\n-------abcd$\r\n");
        assert!(parse(&ok).unwrap().body.is_none());
        let cases = [
            // From-Path before To-Path, missing paths, a repeated path.
            (
                "MSRP abcd SEND\r\nFrom-Path: msrp://a:1/y;tcp\r\nTo-Path: msrp://b:1/x;tcp\r\nMessage-ID: m123\r\n-------abcd$\r\n".to_owned(),
                400,
            ),
            ("MSRP abcd SEND\r\n-------abcd$\r\n".to_owned(), 400),
            (
                format!("MSRP abcd SEND\r\n{paths}To-Path: msrp://c:1/z;tcp\r\nMessage-ID: m123\r\n-------abcd$\r\n"),
                400,
            ),
            // SEND without Message-ID; REPORT without Status; two Byte-Ranges.
            (format!("MSRP abcd SEND\r\n{paths}-------abcd$\r\n"), 400),
            (
                format!("MSRP abcd REPORT\r\n{paths}Message-ID: m123\r\n-------abcd$\r\n"),
                400,
            ),
            (
                format!("MSRP abcd SEND\r\n{paths}Message-ID: m123\r\nByte-Range: 1-1/1\r\nByte-Range: 1-1/1\r\n-------abcd$\r\n"),
                400,
            ),
            // A body without Content-Type; Content-Type without a body; a response body.
            (
                format!("MSRP abcd SEND\r\n{paths}Message-ID: m123\r\n\r\nhi\r\n-------abcd$\r\n"),
                400,
            ),
            (
                format!("MSRP abcd SEND\r\n{paths}Message-ID: m123\r\nContent-Type: text/plain\r\n-------abcd$\r\n"),
                400,
            ),
            (
                format!("MSRP abcd 200 OK\r\n{paths}Content-Type: text/plain\r\n\r\nhi\r\n-------abcd$\r\n"),
                400,
            ),
            // A header line without a colon; a bad URI.
            (format!("MSRP abcd SEND\r\n{paths}Message-ID m123\r\n-------abcd$\r\n"), 400),
            (
                "MSRP abcd SEND\r\nTo-Path: msrp://b:1/x\r\nFrom-Path: msrp://a:1/y;tcp\r\nMessage-ID: m123\r\n-------abcd$\r\n".to_owned(),
                400,
            ),
        ];
        for (text, code) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.status(), code, "{text:?}: {e}");
        }
    }

    #[test]
    fn builds_and_serializes_responses() {
        let to = "msrp://a.example.com:7654/y;tcp".parse().unwrap();
        let from = "msrp://b.example.com:1/x;tcp".parse().unwrap();
        let head = Head::Response(Response {
            transact_id: TransactId::new("abcd").unwrap(),
            status: 200,
            comment: Some("OK".into()),
            headers: Headers::new(vec![to], vec![from]).unwrap(),
        });
        let m = Message {
            head,
            body: None,
            flag: Flag::Complete,
        };
        let bytes = m.to_bytes().unwrap();
        assert_eq!(
            &bytes[..],
            b"MSRP abcd 200 OK\r\nTo-Path: msrp://a.example.com:7654/y;tcp\r\nFrom-Path: msrp://b.example.com:1/x;tcp\r\n-------abcd$\r\n"
        );
        assert_eq!(Message::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn lenient_where_harmless() {
        // Header names in any case, a missing SP after the colon.
        let text = "MSRP abcd SEND\r\nto-path:msrp://b:1/x;tcp\r\nFROM-PATH: msrp://a:1/y;tcp\r\nmessage-id: m123\r\n-------abcd+\r\n";
        let m = parse(text).unwrap();
        assert_eq!(m.flag, Flag::Continued);
        assert_eq!(m.head.headers().message_id(), Some("m123"));
    }

    #[test]
    fn whole_message_parse_needs_exactly_one() {
        assert!(parse(&SEND[..SEND.len() - 1]).is_err());
        assert!(parse(&format!("{SEND}MSRP")).is_err());
        assert!(parse("").is_err());
    }
}
