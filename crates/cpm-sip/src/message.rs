//! Requests, responses, the start line and the header section (RFC 3261 section 7, 25.1).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

use crate::error::{ParseError, ParseErrorKind, Scope, StartKind};
use crate::header::{Header, HeaderName, Headers};
use crate::limits::Limits;
use crate::method::Method;
use crate::scan::{is_token, is_wsp};
use crate::status::StatusCode;
use crate::typed;
use crate::uri::Uri;

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Version {
    /// Major number.
    pub major: u16,
    /// Minor number.
    pub minor: u16,
}

impl Version {
    /// `SIP/2.0`, the only version RFC 3261 elements speak.
    pub const SIP_2_0: Self = Self { major: 2, minor: 0 };

    fn parse(s: &[u8]) -> Option<Self> {
        // "SIP" is a case-insensitive ABNF literal.
        if s.len() < 7 || !s[..4].eq_ignore_ascii_case(b"SIP/") {
            return None;
        }
        let rest = std::str::from_utf8(&s[4..]).ok()?;
        let (major, minor) = rest.split_once('.')?;
        let num = |d: &str| -> Option<u16> {
            if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            d.parse().ok()
        };
        Some(Self {
            major: num(major)?,
            minor: num(minor)?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/{}.{}", self.major, self.minor)
    }
}

/// A SIP request.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// The SIP-Version of the request line (505 is the core's answer to anything but 2.0).
    pub version: Version,
    /// The header fields, in order.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// A SIP response.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Response {
    /// The SIP-Version of the status line.
    pub version: Version,
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase as written (may be empty, may hold UTF-8).
    pub reason: String,
    /// The header fields, in order.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// A request or a response.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Self {
        Self {
            method,
            uri,
            version: Version::SIP_2_0,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Serializes the request.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256 + self.body.len());
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.uri.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.version.to_string().as_bytes());
        out.put_slice(b"\r\n");
        finish(&mut out, &self.headers, &self.body);
        out.freeze()
    }
}

impl Response {
    /// A response with the canonical reason phrase, no headers and no body.
    pub fn new(status: StatusCode) -> Self {
        Self {
            version: Version::SIP_2_0,
            status,
            reason: status.canonical_reason().to_owned(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Serializes the response.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256 + self.body.len());
        out.put_slice(self.version.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.status.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.reason.as_bytes());
        out.put_slice(b"\r\n");
        finish(&mut out, &self.headers, &self.body);
        out.freeze()
    }
}

fn finish(out: &mut BytesMut, headers: &Headers, body: &Bytes) {
    headers.write_to(out);
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

impl Message {
    /// Parses one message that is a whole UDP datagram (RFC 3261 section 18.3): a missing
    /// Content-Length means the body is the rest of the datagram; octets past Content-Length
    /// are discarded; a Content-Length larger than the datagram is an error.
    ///
    /// Leading CRLFs are skipped (RFC 3261 section 7.5). Use [`is_keepalive`] first to tell a
    /// keep-alive datagram from a message.
    pub fn parse_datagram(data: Bytes, limits: &Limits) -> Result<Self, ParseError> {
        crate::framing::parse_datagram(data, limits)
    }

    /// Parses a complete message with datagram rules and the default limits.
    pub fn parse(data: impl Into<Bytes>) -> Result<Self, ParseError> {
        Self::parse_datagram(data.into(), &Limits::default())
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Self::Request(r) => r.to_bytes(),
            Self::Response(r) => r.to_bytes(),
        }
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }

    /// The header fields, mutable.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Self::Request(r) => &mut r.headers,
            Self::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        match self {
            Self::Request(r) => &r.body,
            Self::Response(r) => &r.body,
        }
    }
}

/// Whether a datagram is only whitespace: a keep-alive (RFC 5626 section 3.5.1 CRLF, or the
/// single-CRLF and empty datagrams other UAs send), to be ignored rather than answered.
pub fn is_keepalive(data: &[u8]) -> bool {
    data.iter()
        .all(|&b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
}

/// The start line of a parsed head.
pub(crate) enum StartLine {
    Request(Method, Uri, Version),
    Response(Version, StatusCode, String),
}

/// A parsed header section: the start line and the header index.
pub(crate) struct Head {
    pub(crate) start: StartLine,
    pub(crate) headers: Headers,
}

impl Head {
    pub(crate) fn into_message(self, body: Bytes) -> Message {
        match self.start {
            StartLine::Request(method, uri, version) => Message::Request(Request {
                method,
                uri,
                version,
                headers: self.headers,
                body,
            }),
            StartLine::Response(version, status, reason) => Message::Response(Response {
                version,
                status,
                reason,
                headers: self.headers,
                body,
            }),
        }
    }
}

/// Whether a start line is a status line (starts with `SIP/`, case-insensitive).
pub(crate) fn start_kind(data: &[u8]) -> StartKind {
    if data.len() >= 4 && data[..4].eq_ignore_ascii_case(b"SIP/") {
        StartKind::Response
    } else {
        StartKind::Request
    }
}

/// One header field located in a header section: `[start, end)` spans the field without its
/// final CRLF, continuation lines included; `colon` is the position of the `:`.
pub(crate) struct FieldSpan {
    pub(crate) start: usize,
    pub(crate) name_end: usize,
    pub(crate) colon: usize,
    pub(crate) end: usize,
}

/// Splits the header fields of `head` (the bytes after the start line's CRLF, each field
/// ending in CRLF, the empty line excluded), calling `f` for each.
pub(crate) fn for_each_field(
    head: &[u8],
    from: usize,
    limits: &Limits,
    mut f: impl FnMut(&FieldSpan) -> Result<(), ParseErrorKind>,
) -> Result<usize, ParseErrorKind> {
    let mut pos = from;
    let mut count = 0usize;
    while pos < head.len() {
        if is_wsp(head[pos]) {
            // A continuation line with no field before it.
            return Err(ParseErrorKind::BadHeaderLine);
        }
        let start = pos;
        // Find the end of the field: a CRLF not followed by whitespace.
        let mut line_start = pos;
        let end = loop {
            let lf = memchr(b'\n', &head[line_start..])
                .map(|i| line_start + i)
                .ok_or(ParseErrorKind::Truncated)?;
            if lf == line_start || head[lf - 1] != b'\r' {
                return Err(ParseErrorKind::BareLineBreak);
            }
            if memchr(b'\r', &head[line_start..lf - 1]).is_some() {
                return Err(ParseErrorKind::BareLineBreak);
            }
            if lf - line_start > limits.max_line_len {
                return Err(ParseErrorKind::TooLarge("header line"));
            }
            line_start = lf + 1;
            if line_start < head.len() && is_wsp(head[line_start]) {
                continue;
            }
            break lf - 1;
        };
        let field = &head[start..end];
        let name_end = field
            .iter()
            .position(|&b| !is_token(b))
            .ok_or(ParseErrorKind::BadHeaderLine)?;
        if name_end == 0 {
            return Err(ParseErrorKind::BadHeaderLine);
        }
        // HCOLON = *( SP / HTAB ) ":" SWS
        let colon = name_end
            + field[name_end..]
                .iter()
                .position(|&b| !is_wsp(b))
                .ok_or(ParseErrorKind::BadHeaderLine)?;
        if field[colon] != b':' {
            return Err(ParseErrorKind::BadHeaderLine);
        }
        count += 1;
        if count > limits.max_headers {
            return Err(ParseErrorKind::TooLarge("header count"));
        }
        f(&FieldSpan {
            start,
            name_end: start + name_end,
            colon: start + colon,
            end,
        })?;
        pos = line_start;
    }
    Ok(count)
}

/// Parses a header section: `head` holds the start line and every header field, each ending
/// in CRLF, without the empty line that ends the section.
pub(crate) fn parse_head(head: Bytes, limits: &Limits) -> Result<Head, ParseError> {
    let kind = start_kind(&head);
    let err = |k| ParseError::new(k, kind, Scope::Message);
    let line_end = memchr(b'\n', &head).ok_or_else(|| err(ParseErrorKind::Truncated))?;
    if line_end == 0 || head[line_end - 1] != b'\r' {
        return Err(err(ParseErrorKind::BareLineBreak));
    }
    let line = &head[..line_end - 1];
    if memchr(b'\r', line).is_some() {
        return Err(err(ParseErrorKind::BareLineBreak));
    }
    if line.len() > limits.max_line_len {
        return Err(err(ParseErrorKind::TooLarge("start line")));
    }
    let start = match kind {
        StartKind::Request => parse_request_line(line),
        StartKind::Response => parse_status_line(line),
    }
    .map_err(err)?;

    let mut headers = Headers::with_capacity(16);
    for_each_field(&head, line_end + 1, limits, |span| {
        let name = HeaderName::parse(&head[span.start..span.name_end])
            .ok_or(ParseErrorKind::BadHeaderLine)?;
        // The value starts after HCOLON's SWS, folding included.
        let mut v = span.colon + 1;
        while v < span.end && matches!(head[v], b' ' | b'\t' | b'\r' | b'\n') {
            v += 1;
        }
        let header = Header::from_raw(name, head.slice(span.start..span.end), v - span.start);
        if !typed::validate(&header) {
            return Err(ParseErrorKind::BadHeaderValue(header.static_name()));
        }
        headers.push(header);
        Ok(())
    })
    .map_err(err)?;
    Ok(Head { start, headers })
}

/// `Request-Line = Method SP Request-URI SP SIP-Version CRLF`: exactly one SP between
/// elements and none at the end (RFC 4475 sections 3.1.2.8-3.1.2.10).
fn parse_request_line(line: &[u8]) -> Result<StartLine, ParseErrorKind> {
    let sp1 = memchr(b' ', line).ok_or(ParseErrorKind::BadStartLine)?;
    let rest = &line[sp1 + 1..];
    let sp2 = memchr(b' ', rest).ok_or(ParseErrorKind::BadStartLine)?;
    let (method, uri, version) = (&line[..sp1], &rest[..sp2], &rest[sp2 + 1..]);
    if memchr(b' ', version).is_some() || uri.is_empty() || method.is_empty() {
        return Err(ParseErrorKind::BadStartLine);
    }
    let method = std::str::from_utf8(method)
        .ok()
        .and_then(Method::parse)
        .ok_or(ParseErrorKind::BadStartLine)?;
    let uri = std::str::from_utf8(uri)
        .ok()
        .and_then(|u| Uri::parse(u).ok())
        .ok_or(ParseErrorKind::BadRequestUri)?;
    // Headers are not allowed in a Request-URI (RFC 3261 section 19.1.5; RFC 4475 3.1.2.11).
    if uri.as_sip().is_some_and(|u| !u.headers.is_empty()) {
        return Err(ParseErrorKind::BadRequestUri);
    }
    let version = Version::parse(version).ok_or(ParseErrorKind::BadVersion)?;
    Ok(StartLine::Request(method, uri, version))
}

/// `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF`.
fn parse_status_line(line: &[u8]) -> Result<StartLine, ParseErrorKind> {
    let sp1 = memchr(b' ', line).ok_or(ParseErrorKind::BadStartLine)?;
    let version = Version::parse(&line[..sp1]).ok_or(ParseErrorKind::BadVersion)?;
    let rest = &line[sp1 + 1..];
    let (code, reason) = match memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        // No SP before an empty Reason-Phrase: tolerated (RFC 4475 section 3.1.1.13 note).
        None => (rest, &b""[..]),
    };
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(ParseErrorKind::BadStatusCode);
    }
    let code = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    let status = StatusCode::new(code).ok_or(ParseErrorKind::BadStatusCode)?;
    // Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
    if reason
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(ParseErrorKind::BadStartLine);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ParseErrorKind::BadStartLine)?;
    Ok(StartLine::Response(version, status, reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let raw = "MESSAGE sip:bob@localhost SIP/2.0\r\n\
                   Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
                   X-Folded: a\r\n b\r\n\
                   Content-Length: 2\r\n\r\nhi";
        let m = Message::parse(raw.as_bytes().to_vec()).unwrap();
        assert_eq!(m.to_bytes(), raw.as_bytes());
        let Message::Request(r) = &m else {
            panic!("request")
        };
        assert_eq!(r.method, Method::Message);
        let x = r
            .headers
            .get(&HeaderName::Other("X-Folded".into()))
            .unwrap();
        assert_eq!(x.value().unwrap(), "a b");
        assert_eq!(&r.body[..], b"hi");
    }

    #[test]
    fn response_line() {
        let m = Message::parse(&b"SIP/2.0 100 \r\nl: 0\r\n\r\n"[..]).unwrap();
        let Message::Response(r) = m else {
            panic!("response")
        };
        assert_eq!(r.status, StatusCode::TRYING);
        assert_eq!(r.reason, "");
    }

    #[test]
    fn start_line_spacing() {
        for bad in [
            "OPTIONS  sip:a@b SIP/2.0\r\n\r\n",
            "OPTIONS sip:a@b SIP/2.0 \r\n\r\n",
            "OPTIONS sip:a@b; lr SIP/2.0\r\n\r\n",
            "OPTIONS <sip:a@b> SIP/2.0\r\n\r\n",
            "OPTIONS sip:a@b?Route=x SIP/2.0\r\n\r\n",
        ] {
            let e = Message::parse(bad.as_bytes().to_vec()).unwrap_err();
            assert_eq!(e.start_kind(), StartKind::Request, "{bad}");
        }
    }
}
