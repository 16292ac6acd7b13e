//! `message/cpim` (RFC 3862): the envelope every CPM chat message and IMDN travels in.
//!
//! ```text
//! From: Alice <sip:alice@example.com>
//! To: Bob <sip:bob@example.com>
//! DateTime: 2026-11-25T10:00:00.000Z
//! NS: imdn <urn:ietf:params:imdn>
//! imdn.Message-ID: Mq3Yx1
//! imdn.Disposition-Notification: positive-delivery, display
//!
//! Content-Type: text/plain;charset=UTF-8
//!
//! Hello
//! ```
//!
//! Header names carry a namespace prefix that the `NS` header binds per message
//! (RFC 3862 §3.3.1), so lookups go by `(namespace URN, name)`: [`Cpim::get`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::ContentError;
use crate::text::{is_header_value, is_name, parse_header_block};

const WHAT: &str = "message/cpim";

/// Namespace of the core CPIM headers (`From`, `To`, `cc`, `DateTime`, `Subject`, `NS`,
/// `Require`) that need no prefix (RFC 3862 §3.3).
pub const CPIM_HEADERS_NS: &str = "urn:ietf:params:cpim-headers:";
/// The IMDN CPIM header namespace (RFC 5438 §6.3), usually bound to prefix `imdn`.
pub const IMDN_NS: &str = "urn:ietf:params:imdn";
/// The OMA CPM CPIM header namespace, usually bound to prefix `cpm`.
pub const CPM_NS: &str = "http://www.openmobilealliance.org/cpm/";

/// Largest `message/cpim` body [`Cpim::parse`] accepts.
pub const MAX_CPIM_SIZE: usize = 1024 * 1024;
/// Most header lines per header block (CPIM headers, then content headers).
pub const MAX_CPIM_HEADERS: usize = 64;

/// One CPIM header line, `[prefix "."] name ": " value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpimHeader {
    /// The prefix as written (`imdn` in `imdn.Message-ID`), `None` if unprefixed.
    pub prefix: Option<String>,
    /// The header name without prefix.
    pub name: String,
    /// The value, trimmed, not further decoded.
    pub value: String,
    /// The namespace URN the prefix resolved to; `None` if the prefix is not bound by an `NS`
    /// header. Unprefixed headers are in [`CPIM_HEADERS_NS`] (or the default `NS`).
    pub namespace: Option<String>,
}

/// A `From`/`To`/`cc` value: RFC 3862 §3.2 `[ Formal-name ] "<" URI ">"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpimAddress {
    /// The display name, unquoted; `None` if absent.
    pub display_name: Option<String>,
    /// The URI between the angle brackets.
    pub uri: String,
}

impl CpimAddress {
    /// An address without display name.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            display_name: None,
            uri: uri.into(),
        }
    }

    /// An address with a display name.
    pub fn with_name(name: impl Into<String>, uri: impl Into<String>) -> Self {
        Self {
            display_name: Some(name.into()),
            uri: uri.into(),
        }
    }

    /// Parses `[ Formal-name ] "<" URI ">"`; a bare URI is accepted too.
    pub fn parse(value: &str) -> Result<Self, ContentError> {
        let value = value.trim();
        let bad = || ContentError::malformed(WHAT, "invalid address");
        let Some(lt) = value.rfind('<') else {
            if value.is_empty() || value.contains(['>', ' ']) {
                return Err(bad());
            }
            return Ok(Self::new(value));
        };
        let uri = value[lt + 1..].strip_suffix('>').ok_or_else(bad)?.trim();
        if uri.is_empty() || uri.contains(['<', '>']) {
            return Err(bad());
        }
        let name = value[..lt].trim();
        let display_name = if name.is_empty() {
            None
        } else if let Some(q) = name.strip_prefix('"') {
            let inner = q.strip_suffix('"').ok_or_else(bad)?;
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().ok_or_else(bad)?
                } else {
                    c
                });
            }
            Some(out)
        } else {
            Some(name.to_owned())
        };
        Ok(Self {
            display_name,
            uri: uri.to_owned(),
        })
    }
}

impl std::fmt::Display for CpimAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.display_name {
            Some(n) if n.contains(['"', '\\', '<', '>', ',', ':', ';']) => {
                f.write_str("\"")?;
                for c in n.chars() {
                    if matches!(c, '"' | '\\') {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                write!(f, "\" <{}>", self.uri)
            }
            Some(n) if !n.is_empty() => write!(f, "{n} <{}>", self.uri),
            _ => write!(f, "<{}>", self.uri),
        }
    }
}

/// One value of `imdn.Disposition-Notification` (RFC 5438 §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// `positive-delivery`
    PositiveDelivery,
    /// `negative-delivery`
    NegativeDelivery,
    /// `display`
    Display,
    /// `processing`
    Processing,
    /// Any other token, as written.
    Other(String),
}

impl Disposition {
    /// Parses one token (case-insensitive).
    pub fn parse(token: &str) -> Self {
        let t = token.trim();
        match t.to_ascii_lowercase().as_str() {
            "positive-delivery" => Self::PositiveDelivery,
            "negative-delivery" => Self::NegativeDelivery,
            "display" => Self::Display,
            "processing" => Self::Processing,
            _ => Self::Other(t.to_owned()),
        }
    }

    /// The token as it goes on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::PositiveDelivery => "positive-delivery",
            Self::NegativeDelivery => "negative-delivery",
            Self::Display => "display",
            Self::Processing => "processing",
            Self::Other(s) => s,
        }
    }
}

/// A parsed or built `message/cpim` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpim {
    /// The CPIM header lines in order, `NS` lines included.
    pub headers: Vec<CpimHeader>,
    /// The MIME headers of the encapsulated content (`Content-Type`, ...), in order.
    pub content_headers: Vec<(String, String)>,
    /// The encapsulated content.
    pub body: Bytes,
}

impl Cpim {
    /// Parses a `message/cpim` body of at most [`MAX_CPIM_SIZE`] bytes.
    ///
    /// Accepts CRLF and bare LF line ends. If the content headers have a `Content-Length`,
    /// the body is cut to it (and must be at least that long); otherwise the body is the rest.
    pub fn parse(input: Bytes) -> Result<Self, ContentError> {
        Self::parse_with_limit(input, MAX_CPIM_SIZE)
    }

    /// [`Cpim::parse`] with a caller-chosen size limit.
    pub fn parse_with_limit(input: Bytes, limit: usize) -> Result<Self, ContentError> {
        if input.len() > limit {
            return Err(ContentError::TooLarge {
                what: WHAT,
                size: input.len(),
                limit,
            });
        }
        let (raw, pos) = parse_header_block(&input, 0, MAX_CPIM_HEADERS, false, WHAT)?;
        if raw.is_empty() {
            return Err(ContentError::malformed(WHAT, "no CPIM headers"));
        }
        // RFC 3862 §3.3.1: `NS: [prefix] <URN>`; no prefix sets the default namespace.
        let mut bindings: Vec<(Option<String>, String)> = Vec::new();
        for (name, value) in &raw {
            if name == "NS" {
                let v = value.trim();
                let (prefix, urn) = match v.split_once(|c: char| c.is_ascii_whitespace()) {
                    Some((p, rest)) if !p.starts_with('<') => (Some(p.to_owned()), rest.trim()),
                    _ => (None, v),
                };
                let urn = urn
                    .strip_prefix('<')
                    .and_then(|u| u.strip_suffix('>'))
                    .filter(|u| !u.is_empty())
                    .ok_or(ContentError::malformed(WHAT, "invalid NS header"))?;
                bindings.push((prefix, urn.to_owned()));
            }
        }
        let resolve = |prefix: Option<&str>| -> Option<String> {
            match bindings.iter().rev().find(|(p, _)| p.as_deref() == prefix) {
                Some((_, urn)) => Some(urn.clone()),
                None if prefix.is_none() => Some(CPIM_HEADERS_NS.to_owned()),
                None => None,
            }
        };
        let headers = raw
            .into_iter()
            .map(|(full, value)| {
                let (prefix, name) = match full.split_once('.') {
                    Some((p, n)) if !p.is_empty() && !n.is_empty() => {
                        (Some(p.to_owned()), n.to_owned())
                    }
                    _ => (None, full),
                };
                let namespace = resolve(prefix.as_deref());
                CpimHeader {
                    prefix,
                    name,
                    value,
                    namespace,
                }
            })
            .collect();
        let (content_headers, pos) = parse_header_block(&input, pos, MAX_CPIM_HEADERS, true, WHAT)?;
        let rest = input.len().saturating_sub(pos);
        let len = match content_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        {
            Some((_, v)) => {
                let n: usize = v
                    .parse()
                    .map_err(|_| ContentError::malformed(WHAT, "invalid Content-Length"))?;
                if n > rest {
                    return Err(ContentError::malformed(
                        WHAT,
                        "body shorter than Content-Length",
                    ));
                }
                n
            }
            None => rest,
        };
        let body = input.slice(pos..pos + len);
        Ok(Self {
            headers,
            content_headers,
            body,
        })
    }

    /// All values of the header `name` in namespace `namespace` (URN), in order. Names
    /// compare case-insensitively.
    pub fn get_all<'a, 'q>(
        &'a self,
        namespace: &'q str,
        name: &'q str,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'q> {
        self.headers
            .iter()
            .filter(move |h| {
                h.namespace.as_deref() == Some(namespace) && h.name.eq_ignore_ascii_case(name)
            })
            .map(|h| h.value.as_str())
    }

    /// The first value of the header `name` in namespace `namespace`.
    pub fn get<'a>(&'a self, namespace: &str, name: &str) -> Option<&'a str> {
        self.get_all(namespace, name).next()
    }

    /// The `From` header, parsed.
    pub fn from(&self) -> Result<Option<CpimAddress>, ContentError> {
        self.get(CPIM_HEADERS_NS, "From")
            .map(CpimAddress::parse)
            .transpose()
    }

    /// The first `To` header, parsed.
    pub fn to(&self) -> Result<Option<CpimAddress>, ContentError> {
        self.get(CPIM_HEADERS_NS, "To")
            .map(CpimAddress::parse)
            .transpose()
    }

    /// Every `To` header, parsed.
    pub fn to_all(&self) -> Result<Vec<CpimAddress>, ContentError> {
        self.get_all(CPIM_HEADERS_NS, "To")
            .map(CpimAddress::parse)
            .collect()
    }

    /// Every `cc` header, parsed.
    pub fn cc(&self) -> Result<Vec<CpimAddress>, ContentError> {
        self.get_all(CPIM_HEADERS_NS, "cc")
            .map(CpimAddress::parse)
            .collect()
    }

    /// The `DateTime` header (RFC 3339 text, not checked further).
    pub fn date_time(&self) -> Option<&str> {
        self.get(CPIM_HEADERS_NS, "DateTime")
    }

    /// The first `Subject` header, raw (a `;lang=` parameter stays in the value).
    pub fn subject(&self) -> Option<&str> {
        self.get(CPIM_HEADERS_NS, "Subject")
    }

    /// `imdn.Message-ID`, whatever prefix the sender bound [`IMDN_NS`] to.
    pub fn message_id(&self) -> Option<&str> {
        self.get(IMDN_NS, "Message-ID")
    }

    /// `imdn.Disposition-Notification` tokens; empty if absent (no IMDN requested).
    pub fn disposition_notification(&self) -> Vec<Disposition> {
        self.get_all(IMDN_NS, "Disposition-Notification")
            .flat_map(|v| v.split(','))
            .filter(|t| !t.trim().is_empty())
            .map(Disposition::parse)
            .collect()
    }

    /// `cpm.Payload-Type`.
    pub fn payload_type(&self) -> Option<&str> {
        self.get(CPM_NS, "Payload-Type")
    }

    /// The first content header `name` (case-insensitive).
    pub fn content_header(&self, name: &str) -> Option<&str> {
        self.content_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Type` of the encapsulated content.
    pub fn content_type(&self) -> Option<&str> {
        self.content_header("Content-Type")
    }

    /// Sets the `From` header (RFC 3862 section 3.3.4): the first one takes the new value,
    /// any other `From` goes, and a message without one gets it first. Used by a server that
    /// vouches for the sender (the Participating Function writes the asserted identity).
    pub fn set_from(&mut self, addr: &CpimAddress) {
        let is_from = |h: &CpimHeader| {
            h.namespace.as_deref() == Some(CPIM_HEADERS_NS) && h.name.eq_ignore_ascii_case("From")
        };
        let value = addr.to_string();
        match self.headers.iter().position(is_from) {
            Some(i) => {
                self.headers[i].value = value;
                let mut seen = 0;
                self.headers.retain(|h| {
                    if is_from(h) {
                        seen += 1;
                        return seen == 1;
                    }
                    true
                });
            }
            None => self.headers.insert(
                0,
                CpimHeader {
                    prefix: None,
                    name: "From".to_owned(),
                    value,
                    namespace: Some(CPIM_HEADERS_NS.to_owned()),
                },
            ),
        }
    }

    /// Serializes with CRLF line ends.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256 + self.body.len());
        for h in &self.headers {
            if let Some(p) = &h.prefix {
                out.put_slice(p.as_bytes());
                out.put_u8(b'.');
            }
            out.put_slice(h.name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(h.value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        for (n, v) in &self.content_headers {
            out.put_slice(n.as_bytes());
            out.put_slice(b": ");
            out.put_slice(v.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
        out.freeze()
    }
}

/// Builds a [`Cpim`]; namespaced headers declare their `NS` line on first use.
#[derive(Debug, Clone, Default)]
pub struct CpimBuilder {
    headers: Vec<CpimHeader>,
    content_headers: Vec<(String, String)>,
    body: Bytes,
}

impl CpimBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn core(mut self, name: &str, value: String) -> Self {
        self.headers.push(CpimHeader {
            prefix: None,
            name: name.to_owned(),
            value,
            namespace: Some(CPIM_HEADERS_NS.to_owned()),
        });
        self
    }

    /// Adds `From`.
    pub fn from(self, addr: &CpimAddress) -> Self {
        self.core("From", addr.to_string())
    }

    /// Adds a `To` (repeatable).
    pub fn to(self, addr: &CpimAddress) -> Self {
        self.core("To", addr.to_string())
    }

    /// Adds a `cc` (repeatable).
    pub fn cc(self, addr: &CpimAddress) -> Self {
        self.core("cc", addr.to_string())
    }

    /// Adds `DateTime` (RFC 3339, e.g. `2026-11-25T10:00:00.000Z`; the caller owns the clock).
    pub fn date_time(self, value: impl Into<String>) -> Self {
        self.core("DateTime", value.into())
    }

    /// Adds `Subject`.
    pub fn subject(self, value: impl Into<String>) -> Self {
        self.core("Subject", value.into())
    }

    /// Adds `Require` (names of headers the recipient must understand).
    pub fn require(self, value: impl Into<String>) -> Self {
        self.core("Require", value.into())
    }

    /// Adds `imdn.Message-ID`.
    pub fn message_id(self, value: impl Into<String>) -> Self {
        self.header(IMDN_NS, "Message-ID", value)
    }

    /// Adds `imdn.Disposition-Notification` with the given tokens.
    pub fn disposition_notification(self, values: &[Disposition]) -> Self {
        let v: Vec<&str> = values.iter().map(Disposition::as_str).collect();
        self.header(IMDN_NS, "Disposition-Notification", v.join(", "))
    }

    /// Adds `cpm.Payload-Type`.
    pub fn payload_type(self, value: impl Into<String>) -> Self {
        self.header(CPM_NS, "Payload-Type", value)
    }

    /// Adds a header in namespace `namespace`, adding `NS: <prefix> <namespace>` first if the
    /// namespace is not bound yet (prefix `imdn` / `cpm` for the well-known ones, else `nsN`).
    pub fn header(mut self, namespace: &str, name: &str, value: impl Into<String>) -> Self {
        if namespace == CPIM_HEADERS_NS {
            return self.core(name, value.into());
        }
        let bound = self
            .headers
            .iter()
            .find(|h| {
                h.name == "NS" && h.prefix.is_none() && h.value.ends_with(&format!("<{namespace}>"))
            })
            .and_then(|h| h.value.split_once(' ').map(|(p, _)| p.to_owned()));
        let prefix = match bound {
            Some(p) => p,
            None => {
                let p = match namespace {
                    IMDN_NS => "imdn".to_owned(),
                    CPM_NS => "cpm".to_owned(),
                    _ => format!(
                        "ns{}",
                        self.headers.iter().filter(|h| h.name == "NS").count() + 1
                    ),
                };
                self = self.core("NS", format!("{p} <{namespace}>"));
                p
            }
        };
        self.headers.push(CpimHeader {
            prefix: Some(prefix),
            name: name.to_owned(),
            value: value.into(),
            namespace: Some(namespace.to_owned()),
        });
        self
    }

    /// Sets the content type of the encapsulated content.
    pub fn content_type(self, value: impl Into<String>) -> Self {
        self.content_header("Content-Type", value)
    }

    /// Adds a MIME header of the encapsulated content.
    pub fn content_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.content_headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the encapsulated content.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Finishes; fails on header names or values that would break the syntax.
    pub fn build(self) -> Result<Cpim, ContentError> {
        let misuse = |reason| ContentError::ApiMisuse { what: WHAT, reason };
        if self.headers.is_empty() {
            return Err(misuse("no CPIM headers"));
        }
        for h in &self.headers {
            let prefix_ok = h
                .prefix
                .as_deref()
                .is_none_or(|p| is_name(p) && !p.contains('.'));
            if !prefix_ok || !is_name(&h.name) || h.name.contains('.') {
                return Err(misuse("invalid header name"));
            }
            if !is_header_value(&h.value) {
                return Err(misuse("CR, LF or NUL in header value"));
            }
        }
        for (n, v) in &self.content_headers {
            if !is_name(n) || !is_header_value(v) {
                return Err(misuse("invalid content header"));
            }
        }
        Ok(Cpim {
            headers: self.headers,
            content_headers: self.content_headers,
            body: self.body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_from_replaces_or_adds_the_sender() {
        let raw = "From: \"Bob\" <sip:bob@localhost>\r\nTo: <sip:carol@localhost>\r\n\
                   From: <sip:eve@localhost>\r\n\r\nContent-Type: text/plain\r\n\r\nhi";
        let mut c = Cpim::parse(Bytes::from(raw)).unwrap();
        c.set_from(&CpimAddress::new("sip:alice@localhost"));
        let again = Cpim::parse(c.to_bytes()).unwrap();
        assert_eq!(
            again.from().unwrap(),
            Some(CpimAddress::new("sip:alice@localhost"))
        );
        assert_eq!(again.get_all(CPIM_HEADERS_NS, "From").count(), 1);
        assert_eq!(&again.body[..], b"hi");
        let mut bare = Cpim::parse(Bytes::from("To: <sip:c@x>\r\n\r\n\r\nhi")).unwrap();
        bare.set_from(&CpimAddress::new("sip:alice@localhost"));
        assert_eq!(
            Cpim::parse(bare.to_bytes()).unwrap().from().unwrap(),
            Some(CpimAddress::new("sip:alice@localhost"))
        );
    }
    use proptest::prelude::*;

    const RCS: &str = "From: Alice <sip:alice@example.com>\r\n\
To: <sip:bob@example.com>\r\n\
DateTime: 2026-11-25T10:00:00.000Z\r\n\
NS: imdn <urn:ietf:params:imdn>\r\n\
imdn.Message-ID: Mq3Yx1Pz\r\n\
imdn.Disposition-Notification: positive-delivery, display\r\n\
NS: cpm <http://www.openmobilealliance.org/cpm/>\r\n\
cpm.Payload-Type: Application/X-CPM-Session\r\n\
\r\n\
Content-Type: text/plain;charset=UTF-8\r\n\
Content-Length: 5\r\n\
\r\n\
Hello";

    #[test]
    fn parse_rcs_message() {
        let c = Cpim::parse(Bytes::from_static(RCS.as_bytes())).unwrap();
        assert_eq!(
            c.from().unwrap(),
            Some(CpimAddress::with_name("Alice", "sip:alice@example.com"))
        );
        assert_eq!(
            c.to().unwrap(),
            Some(CpimAddress::new("sip:bob@example.com"))
        );
        assert_eq!(c.date_time(), Some("2026-11-25T10:00:00.000Z"));
        assert_eq!(c.message_id(), Some("Mq3Yx1Pz"));
        assert_eq!(
            c.disposition_notification(),
            vec![Disposition::PositiveDelivery, Disposition::Display]
        );
        assert_eq!(c.payload_type(), Some("Application/X-CPM-Session"));
        assert_eq!(c.content_type(), Some("text/plain;charset=UTF-8"));
        assert_eq!(&c.body[..], b"Hello");
        assert_eq!(c.headers.len(), 8);
        // Serializing a parsed CRLF message gives the same bytes back.
        assert_eq!(c.to_bytes(), RCS.as_bytes());
    }

    #[test]
    fn other_prefix_and_bare_lf() {
        let s = "From: <sip:a@x>\nNS: MyFeatures <urn:ietf:params:imdn>\nMyFeatures.Message-ID: 42\n\
MyFeatures.Disposition-Notification: negative-delivery,processing,foo\n\
imdn.Message-ID: unbound\n\nContent-Type: text/plain\n\nline1\nline2\n";
        let c = Cpim::parse(Bytes::from(s)).unwrap();
        assert_eq!(c.message_id(), Some("42"));
        assert_eq!(
            c.disposition_notification(),
            vec![
                Disposition::NegativeDelivery,
                Disposition::Processing,
                Disposition::Other("foo".into())
            ]
        );
        assert_eq!(c.headers[4].namespace, None);
        assert_eq!(&c.body[..], b"line1\nline2\n");
        assert_eq!(c.date_time(), None);
        assert!(
            c.disposition_notification()
                .iter()
                .all(|d| d.as_str() != "")
        );
    }

    #[test]
    fn builder_round_trip() {
        let c = CpimBuilder::new()
            .from(&CpimAddress::with_name(
                "Alice \"A\"",
                "sip:alice@example.com",
            ))
            .to(&CpimAddress::new("sip:bob@example.com"))
            .to(&CpimAddress::new("tel:+15551234"))
            .cc(&CpimAddress::new("sip:carol@example.com"))
            .date_time("2026-11-25T10:00:00.000Z")
            .subject("hi")
            .message_id("abc")
            .disposition_notification(&[Disposition::PositiveDelivery, Disposition::Display])
            .payload_type("Application/X-CPM-Session")
            .header("urn:example:x", "Foo", "bar")
            .header(IMDN_NS, "Extra", "1")
            .require("imdn.Message-ID")
            .content_type("text/plain;charset=UTF-8")
            .body(Bytes::from_static(b"Hi\r\n\r\nthere"))
            .build()
            .unwrap();
        let wire = c.to_bytes();
        assert_eq!(c.headers.iter().filter(|h| h.name == "NS").count(), 3);
        let p = Cpim::parse(wire).unwrap();
        assert_eq!(p, c);
        assert_eq!(
            p.from().unwrap().unwrap().display_name.as_deref(),
            Some("Alice \"A\"")
        );
        assert_eq!(p.to_all().unwrap().len(), 2);
        assert_eq!(p.cc().unwrap().len(), 1);
        assert_eq!(p.get("urn:example:x", "foo"), Some("bar"));
        assert_eq!(p.get(IMDN_NS, "Extra"), Some("1"));
        assert_eq!(p.subject(), Some("hi"));
        assert_eq!(&p.body[..], b"Hi\r\n\r\nthere");
    }

    #[test]
    fn builder_rejects_injection() {
        let e = CpimBuilder::new()
            .subject("a\r\nEvil: 1")
            .build()
            .unwrap_err();
        assert_eq!(e.status(), 500);
        assert!(CpimBuilder::new().build().is_err());
        assert!(
            CpimBuilder::new()
                .subject("x")
                .content_header("Bad Name", "v")
                .build()
                .is_err()
        );
        assert!(
            CpimBuilder::new()
                .header("urn:x", "a.b", "v")
                .build()
                .is_err()
        );
    }

    #[test]
    fn errors_are_400() {
        let cases: &[&[u8]] = &[
            b"",
            b"From: <sip:a@x>\r\n",
            b"From: <sip:a@x>\r\n\r\nContent-Type: text/plain\r\n",
            b"\r\n\r\nbody",
            b"From <sip:a@x>\r\n\r\n\r\n",
            b"From: <sip:a@x>\r\n folded\r\n\r\n\r\n",
            b"NS: imdn urn:ietf:params:imdn\r\n\r\n\r\n",
            b"From: <sip:a@x>\r\n\r\nContent-Length: 10\r\n\r\nshort",
            b"From: <sip:a@x>\r\n\r\nContent-Length: x\r\n\r\n",
            b"From: \xff\r\n\r\n\r\n",
        ];
        for c in cases {
            let e = Cpim::parse(Bytes::copy_from_slice(c)).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
        }
        let e = Cpim::parse_with_limit(Bytes::from_static(RCS.as_bytes()), 10).unwrap_err();
        assert_eq!(e.status(), 413);
    }

    #[test]
    fn addresses() {
        assert!(CpimAddress::parse("Bob <>").is_err());
        assert!(CpimAddress::parse("\"Bob <sip:b@x>").is_err());
        assert!(CpimAddress::parse("<sip:b@x").is_err());
        assert!(CpimAddress::parse("").is_err());
        assert_eq!(
            CpimAddress::parse("sip:b@x").unwrap(),
            CpimAddress::new("sip:b@x")
        );
        assert_eq!(
            CpimAddress::parse("\"B\\\"o\" <sip:b@x>")
                .unwrap()
                .display_name
                .as_deref(),
            Some("B\"o")
        );
        let c = Cpim::parse(Bytes::from_static(b"From: Bob <>\r\n\r\n\r\n")).unwrap();
        assert_eq!(c.from().unwrap_err().status(), 400);
    }

    proptest! {
        #[test]
        fn no_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(c) = Cpim::parse(Bytes::from(data)) {
                let _ = (c.from(), c.to_all(), c.cc(), c.disposition_notification());
                let again = Cpim::parse(c.to_bytes());
                prop_assert!(again.is_ok());
            }
        }

        #[test]
        fn no_panic_on_header_like_input(lines in proptest::collection::vec("[A-Za-z.:<> \\r\\n-]{0,20}", 0..12)) {
            let s = lines.join("\r\n");
            let _ = Cpim::parse(Bytes::from(s));
        }
    }
}
