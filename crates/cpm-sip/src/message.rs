//! Requests, responses, the start line and the header section (RFC 3261 section 7, 25.1).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::{memchr, memchr2};

use crate::error::{ParseError, ParseErrorKind, Scope, StartKind};
use crate::framing::ContentLength;
use crate::header::{Header, HeaderName, Headers, field_value};
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
        let rest = &s[4..];
        let dot = rest.iter().position(|&b| b == b'.')?;
        // 1*DIGIT, read here rather than through `str::parse` (every message has a version).
        let num = |d: &[u8]| -> Option<u16> {
            if d.is_empty() {
                return None;
            }
            d.iter().try_fold(0u16, |n, &b| {
                b.is_ascii_digit()
                    .then(|| n.checked_mul(10)?.checked_add(u16::from(b - b'0')))
                    .flatten()
            })
        };
        Some(Self {
            major: num(&rest[..dot])?,
            minor: num(&rest[dot + 1..])?,
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
    /// Whether the field has continuation lines (RFC 3261 section 7.3.1 line folding).
    pub(crate) folded: bool,
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
        let mut folded = false;
        let end = loop {
            let lf = line_end(head, line_start)?;
            if lf - line_start > limits.max_line_len {
                return Err(ParseErrorKind::TooLarge("header line"));
            }
            line_start = lf + 1;
            if line_start < head.len() && is_wsp(head[line_start]) {
                folded = true;
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
            folded,
        })?;
        pos = line_start;
    }
    Ok(count)
}

/// The position of the LF that ends the line starting at `from`. A line ends in CRLF and holds
/// no other CR or LF: a bare one is [`ParseErrorKind::BareLineBreak`], and a line with no LF
/// after it is [`ParseErrorKind::Truncated`].
fn line_end(head: &[u8], from: usize) -> Result<usize, ParseErrorKind> {
    // One search for either byte (rather than one for the LF and another for a stray CR): the
    // first CR or LF of a good line is the CR of its CRLF.
    let i = from + memchr2(b'\r', b'\n', &head[from..]).ok_or(ParseErrorKind::Truncated)?;
    if head[i] == b'\n' {
        return Err(ParseErrorKind::BareLineBreak);
    }
    if head.get(i + 1) == Some(&b'\n') {
        return Ok(i + 1);
    }
    // A CR on its own: a bare line break if a line end follows, else the line never ended.
    if memchr(b'\n', &head[i + 1..]).is_some() {
        Err(ParseErrorKind::BareLineBreak)
    } else {
        Err(ParseErrorKind::Truncated)
    }
}

/// The header fields of a section, split, named and checked in one pass.
pub(crate) struct Fields {
    /// Every field, in order.
    headers: Headers,
    /// What the Content-Length fields say, for framing.
    pub(crate) content_length: ContentLength,
    /// The first field whose value breaks its grammar. It is reported only once the start
    /// line has been checked ([`Fields::into_head`]): a fault in the start line comes first.
    bad_value: Option<&'static str>,
}

impl Fields {
    /// The parsed head, or the first bad header value.
    pub(crate) fn into_head(self, start: StartLine) -> Result<Head, ParseErrorKind> {
        if let Some(name) = self.bad_value {
            return Err(ParseErrorKind::BadHeaderValue(name));
        }
        Ok(Head {
            start,
            headers: self.headers,
        })
    }
}

/// Splits the header fields of a header section (`head` holds the start line and every header
/// field, each ending in CRLF, without the empty line), indexing each one as a [`Header`],
/// validating its value and reading Content-Length, all in one pass over the bytes.
///
/// An error is a fault in the section's structure (a line that is not a field, a bare line
/// break, a limit). A value that breaks its header's grammar is not an error yet: it is kept
/// in [`Fields`] so the caller can check the start line first.
pub(crate) fn scan_fields(head: &Bytes, limits: &Limits) -> Result<Fields, ParseErrorKind> {
    let first_field = memchr(b'\n', head).ok_or(ParseErrorKind::Truncated)? + 1;
    // A header section is nearly always text. Checking it once lets each field be read as a
    // slice of it (field boundaries are ASCII, hence char boundaries), where checking UTF-8
    // per field costs a fixed overhead dozens of times per message.
    let head_text = std::str::from_utf8(head).ok();
    // Header fields average 40 octets or more: room for that many avoids growing the list
    // (and copying it) for nearly every message, at a small cost in unused capacity.
    let expected_fields = (head.len() / 40).max(16);
    let mut headers = Headers::with_capacity(expected_fields.min(limits.max_headers));
    let mut content_length = ContentLength::default();
    let mut bad_value = None;
    for_each_field(head, first_field, limits, |span| {
        let field = &head[span.start..span.end];
        let name_len = span.name_end - span.start;
        let text = match head_text {
            Some(t) => Some(&t[span.start..span.end]),
            // Some byte of the section is not UTF-8: find out whether it is in this field.
            None => std::str::from_utf8(field).ok(),
        };
        let name = match text {
            Some(t) => HeaderName::from_token(&t[..name_len]),
            // Invariant: the splitter found a non-empty token there, so this is `Some`.
            None => HeaderName::parse(&field[..name_len]).ok_or(ParseErrorKind::BadHeaderLine)?,
        };
        if matches!(name, HeaderName::ContentLength) {
            content_length.add(&head[span.colon + 1..span.end]);
        }
        // The value starts after HCOLON's SWS, folding included.
        let mut v = span.colon + 1;
        while v < span.end && matches!(head[v], b' ' | b'\t' | b'\r' | b'\n') {
            v += 1;
        }
        let value_start = v - span.start;
        let valid = match (text, typed::ingress_check(&name)) {
            // Header values are UTF-8 text (RFC 3261 section 7.3.1); the name and separators
            // are ASCII, so a field that is not text has a value that is not.
            (None, _) => false,
            (Some(_), None) => true,
            (Some(t), Some(check)) => check(&field_value(t, value_start, span.folded)),
        };
        let header = Header::from_raw(name, head.slice(span.start..span.end), value_start);
        if !valid && bad_value.is_none() {
            bad_value = Some(header.static_name());
        }
        headers.push(header);
        Ok(())
    })?;
    Ok(Fields {
        headers,
        content_length,
        bad_value,
    })
}

/// Parses the start line of a header section.
pub(crate) fn parse_start_line(head: &[u8], limits: &Limits) -> Result<StartLine, ParseErrorKind> {
    let line_end = memchr(b'\n', head).ok_or(ParseErrorKind::Truncated)?;
    if line_end == 0 || head[line_end - 1] != b'\r' {
        return Err(ParseErrorKind::BareLineBreak);
    }
    let line = &head[..line_end - 1];
    if memchr(b'\r', line).is_some() {
        return Err(ParseErrorKind::BareLineBreak);
    }
    if line.len() > limits.max_line_len {
        return Err(ParseErrorKind::TooLarge("start line"));
    }
    match start_kind(head) {
        StartKind::Request => parse_request_line(line),
        StartKind::Response => parse_status_line(line),
    }
}

/// Parses a header section: `head` holds the start line and every header field, each ending
/// in CRLF, without the empty line that ends the section.
///
/// Faults are reported in this order: the start line, then the first faulty field. (The
/// stream framer calls this after it has split the same fields to read Content-Length, so a
/// structural fault cannot reach this point there.)
pub(crate) fn parse_head(head: Bytes, limits: &Limits) -> Result<Head, ParseError> {
    let err = |k| ParseError::new(k, start_kind(&head), Scope::Message);
    let start = parse_start_line(&head, limits).map_err(err)?;
    let fields = scan_fields(&head, limits).map_err(err)?;
    fields.into_head(start).map_err(err)
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
    fn versions() {
        let v = |s: &str| Version::parse(s.as_bytes()).map(|v| (v.major, v.minor));
        assert_eq!(v("SIP/2.0"), Some((2, 0)));
        assert_eq!(v("sip/02.00"), Some((2, 0)));
        assert_eq!(v("SIP/65535.7"), Some((65535, 7)));
        for bad in [
            "SIP/65536.0",
            "SIP/2.",
            "SIP/.0",
            "SIP/2.0.1",
            "SIP/2,0",
            "SIP/+2.0",
            "HTTP/1.1",
        ] {
            assert_eq!(v(bad), None, "{bad}");
        }
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
