//! MSRP header fields (RFC 4975 section 9, RFC 4976 section 5): typed values, their grammar and
//! their canonical text.

use std::fmt::{self, Write as _};

use crate::message::is_ident;
use crate::status::{Error, ErrorKind};
use crate::uri::{MsrpUri, is_token_char};

/// `Failure-Report` (RFC 4975 section 7.1.2): which failures the sender wants to hear of.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub enum FailureReport {
    /// Responses to every chunk and failure REPORTs: the default when the header is absent.
    #[default]
    Yes,
    /// No responses and no failure REPORTs.
    No,
    /// Negative responses and failure REPORTs only: no `200` responses.
    Partial,
}

impl FailureReport {
    fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Partial => "partial",
        }
    }
}

/// `Byte-Range: range-start "-" range-end "/" total` (RFC 4975 section 9), positions counted
/// from 1, `*` (None) for an end or total not known yet.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct ByteRange {
    /// Position of the chunk's first byte in the message, from 1.
    pub start: u64,
    /// Position of the chunk's last byte, `None` for `*` (still being sent).
    pub end: Option<u64>,
    /// Size of the whole message, `None` for `*` (not known to the sender).
    pub total: Option<u64>,
}

impl ByteRange {
    /// `1-n/n`: a whole message of `n` bytes in one chunk (`1-0/0` for an empty SEND).
    pub fn whole(n: u64) -> Self {
        Self {
            start: 1,
            end: Some(n),
            total: Some(n),
        }
    }

    fn parse(v: &str) -> Option<Self> {
        let (start, rest) = v.split_once('-')?;
        let (end, total) = rest.split_once('/')?;
        let num = |s: &str| -> Option<u64> {
            // 1*DIGIT; 19 digits always fit in a u64.
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let star = |s: &str| {
            if s == "*" {
                Some(None)
            } else {
                num(s).map(Some)
            }
        };
        let r = Self {
            start: num(start)?,
            end: star(end)?,
            total: star(total)?,
        };
        // Positions start at 1; an end before start-1 or past the total is not a range.
        let ok = r.start >= 1
            && r.end.is_none_or(|e| e >= r.start - 1)
            && match (r.end, r.total) {
                (Some(e), Some(t)) => e <= t,
                _ => true,
            };
        ok.then_some(r)
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.start)?;
        match self.end {
            Some(e) => write!(f, "{e}/")?,
            None => f.write_str("*/")?,
        }
        match self.total {
            Some(t) => write!(f, "{t}"),
            None => f.write_str("*"),
        }
    }
}

/// `Status: namespace SP status-code [SP text-reason]` in a REPORT (RFC 4975 section 9).
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Status {
    /// The namespace, `000` for the codes of RFC 4975.
    pub namespace: u16,
    /// The three-digit code.
    pub code: u16,
    /// The reason text, if any.
    pub reason: Option<String>,
}

impl Status {
    /// `000 <code> <reason>`.
    pub fn new(code: u16, reason: Option<&str>) -> Self {
        Self {
            namespace: 0,
            code,
            reason: reason.map(str::to_owned),
        }
    }

    fn parse(v: &str) -> Option<Self> {
        let b = v.as_bytes();
        let three = |s: &[u8]| s.len() == 3 && s.iter().all(u8::is_ascii_digit);
        if b.len() < 7 || !three(&b[..3]) || b[3] != b' ' || !three(&b[4..7]) {
            return None;
        }
        let reason = match &v[7..] {
            "" => None,
            r => Some(r.strip_prefix(' ')?.to_owned()),
        };
        Some(Self {
            namespace: v[..3].parse().ok()?,
            code: v[4..7].parse().ok()?,
            reason,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03} {:03}", self.namespace, self.code)?;
        if let Some(r) = &self.reason {
            write!(f, " {r}")?;
        }
        Ok(())
    }
}

/// One header field after To-Path and From-Path.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum Header {
    /// `Message-ID: ident`.
    MessageId(String),
    /// `Success-Report: yes / no` (absent means no).
    SuccessReport(bool),
    /// `Failure-Report: yes / no / partial` (absent means yes).
    FailureReport(FailureReport),
    /// `Byte-Range`.
    ByteRange(ByteRange),
    /// `Status` (REPORT only).
    Status(Status),
    /// `Content-Type: media-type`, as written.
    ContentType(String),
    /// `Use-Path: MSRP-URI *(SP MSRP-URI)` (RFC 4976 section 5, in a 200 to AUTH).
    UsePath(Vec<MsrpUri>),
    /// `WWW-Authenticate: Digest ...` (RFC 4976), kept as text.
    WwwAuthenticate(String),
    /// `Authorization: Digest ...` (RFC 4976), kept as text.
    Authorization(String),
    /// `Authentication-Info: ...` (RFC 4976), kept as text.
    AuthenticationInfo(String),
    /// `Expires: 1*DIGIT` (RFC 4976), seconds.
    Expires(u32),
    /// `Min-Expires: 1*DIGIT` (RFC 4976), seconds.
    MinExpires(u32),
    /// `Max-Expires: 1*DIGIT` (RFC 4976), seconds.
    MaxExpires(u32),
    /// Any other header, name as written and value as text (`ext-header`).
    Extension {
        /// The name as written.
        name: String,
        /// The value, `utf8text`.
        value: String,
    },
}

/// Canonical names of the typed headers, matched case-insensitively (RFC 5234 section 2.3:
/// ABNF literal strings are case-insensitive).
const NAMES: [&str; 13] = [
    "Message-ID",
    "Success-Report",
    "Failure-Report",
    "Byte-Range",
    "Status",
    "Content-Type",
    "Use-Path",
    "WWW-Authenticate",
    "Authorization",
    "Authentication-Info",
    "Expires",
    "Min-Expires",
    "Max-Expires",
];

impl Header {
    /// The header's name: canonical for typed headers, as written for extensions.
    pub fn name(&self) -> &str {
        match self {
            Self::MessageId(_) => NAMES[0],
            Self::SuccessReport(_) => NAMES[1],
            Self::FailureReport(_) => NAMES[2],
            Self::ByteRange(_) => NAMES[3],
            Self::Status(_) => NAMES[4],
            Self::ContentType(_) => NAMES[5],
            Self::UsePath(_) => NAMES[6],
            Self::WwwAuthenticate(_) => NAMES[7],
            Self::Authorization(_) => NAMES[8],
            Self::AuthenticationInfo(_) => NAMES[9],
            Self::Expires(_) => NAMES[10],
            Self::MinExpires(_) => NAMES[11],
            Self::MaxExpires(_) => NAMES[12],
            Self::Extension { name, .. } => name,
        }
    }

    /// Parses one header field from its name and value (the text after `": "`).
    pub fn parse(name: &str, value: &str) -> Result<Self, Error> {
        if name.is_empty()
            || !name.as_bytes()[0].is_ascii_alphabetic()
            || !name.bytes().all(is_token_char)
        {
            return Err(Error::syntax("header name"));
        }
        if !is_utf8text(value) {
            return Err(Error::syntax("header value"));
        }
        let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) else {
            return Ok(Self::Extension {
                name: name.to_owned(),
                value: value.to_owned(),
            });
        };
        let bad = || Error::syntax(NAMES[i]);
        let seconds = || -> Result<u32, Error> {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            // An interval longer than u32 seconds is capped: no relay grants that much anyway.
            Ok(value.parse().unwrap_or(u32::MAX))
        };
        Ok(match i {
            0 if is_ident(value) => Self::MessageId(value.to_owned()),
            1 if value.eq_ignore_ascii_case("yes") => Self::SuccessReport(true),
            1 if value.eq_ignore_ascii_case("no") => Self::SuccessReport(false),
            2 => Self::FailureReport(match value.to_ascii_lowercase().as_str() {
                "yes" => FailureReport::Yes,
                "no" => FailureReport::No,
                "partial" => FailureReport::Partial,
                _ => return Err(bad()),
            }),
            3 => Self::ByteRange(ByteRange::parse(value).ok_or_else(bad)?),
            4 => Self::Status(Status::parse(value).ok_or_else(bad)?),
            5 if is_media_type(value) => Self::ContentType(value.to_owned()),
            6 => Self::UsePath(parse_path(value).ok_or_else(bad)?),
            7 | 8 if is_digest(value) => {
                if i == 7 {
                    Self::WwwAuthenticate(value.to_owned())
                } else {
                    Self::Authorization(value.to_owned())
                }
            }
            9 => Self::AuthenticationInfo(value.to_owned()),
            10 => Self::Expires(seconds()?),
            11 => Self::MinExpires(seconds()?),
            12 => Self::MaxExpires(seconds()?),
            _ => return Err(bad()),
        })
    }

    /// Writes the value's canonical text.
    pub(crate) fn write_value(&self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = match self {
            Self::MessageId(s)
            | Self::ContentType(s)
            | Self::WwwAuthenticate(s)
            | Self::Authorization(s)
            | Self::AuthenticationInfo(s)
            | Self::Extension { value: s, .. } => {
                out.push_str(s);
                Ok(())
            }
            Self::SuccessReport(yes) => {
                out.push_str(if *yes { "yes" } else { "no" });
                Ok(())
            }
            Self::FailureReport(f) => {
                out.push_str(f.as_str());
                Ok(())
            }
            Self::ByteRange(r) => write!(out, "{r}"),
            Self::Status(s) => write!(out, "{s}"),
            Self::UsePath(p) => {
                write_path(out, p);
                Ok(())
            }
            Self::Expires(n) | Self::MinExpires(n) | Self::MaxExpires(n) => write!(out, "{n}"),
        };
    }

    /// Whether two fields are the same typed header (two of them in one message are a 400).
    fn same_kind(&self, other: &Self) -> bool {
        !matches!(self, Self::Extension { .. })
            && std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// `utf8text = *(HTAB / %x20-7E / UTF8-NONASCII)` (RFC 4975 section 9).
pub(crate) fn is_utf8text(s: &str) -> bool {
    s.chars()
        .all(|c| c == '\t' || (' '..='~').contains(&c) || !c.is_ascii())
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// `media-type = type "/" subtype *( ";" gen-param )`, `gen-param = pname [ "=" pval ]`,
/// `pval = token / quoted-string` (RFC 4975 section 9).
fn is_media_type(v: &str) -> bool {
    let (mt, mut params) = match v.find(';') {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let Some((t, st)) = mt.split_once('/') else {
        return false;
    };
    if !is_token(t) || !is_token(st) {
        return false;
    }
    while let Some(rest) = params.strip_prefix(';') {
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        if !is_token(&rest[..name_end]) {
            return false;
        }
        params = &rest[name_end..];
        if let Some(val) = params.strip_prefix('=') {
            let len = if val.starts_with('"') {
                match quoted_len(val) {
                    Some(n) => n,
                    None => return false,
                }
            } else {
                let n = val.find(';').unwrap_or(val.len());
                if !is_token(&val[..n]) {
                    return false;
                }
                n
            };
            params = &val[len..];
        }
    }
    params.is_empty()
}

/// Length of the quoted-string at the front of `s` (with `\\` and `\"` escapes).
fn quoted_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some(i + 1),
            b'\\' if matches!(b.get(i + 1), Some(b'\\' | b'"')) => i += 2,
            b'\\' => return None,
            _ => i += 1,
        }
    }
    None
}

/// `"Digest" SP ...` (RFC 4976 section 5: only the Digest scheme is defined).
fn is_digest(v: &str) -> bool {
    v.len() > 7 && v[..7].eq_ignore_ascii_case("Digest ")
}

/// `MSRP-URI *( SP MSRP-URI )`.
pub(crate) fn parse_path(v: &str) -> Option<Vec<MsrpUri>> {
    let uris: Option<Vec<MsrpUri>> = v.split(' ').map(|u| u.parse().ok()).collect();
    uris.filter(|u| !u.is_empty())
}

pub(crate) fn write_path(out: &mut String, path: &[MsrpUri]) {
    for (i, u) in path.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{u}");
    }
}

/// The header section of a request or response: To-Path and From-Path (which RFC 4975
/// section 9 puts first and second) and the other fields in order.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Headers {
    to_path: Vec<MsrpUri>,
    from_path: Vec<MsrpUri>,
    fields: Vec<Header>,
}

impl Headers {
    /// Headers with these paths and no other field. Each path must hold at least one URI.
    pub fn new(to_path: Vec<MsrpUri>, from_path: Vec<MsrpUri>) -> Result<Self, Error> {
        if to_path.is_empty() {
            return Err(ErrorKind::Header("To-Path").into());
        }
        if from_path.is_empty() {
            return Err(ErrorKind::Header("From-Path").into());
        }
        Ok(Self {
            to_path,
            from_path,
            fields: Vec::new(),
        })
    }

    /// `To-Path`: the URIs from the next hop to the destination.
    pub fn to_path(&self) -> &[MsrpUri] {
        &self.to_path
    }

    /// `From-Path`: the URIs from the previous hop back to the sender.
    pub fn from_path(&self) -> &[MsrpUri] {
        &self.from_path
    }

    /// The fields after From-Path, in order.
    pub fn fields(&self) -> &[Header] {
        &self.fields
    }

    /// Adds a field. A typed header replaces one of its kind; new fields go before a
    /// Content-Type, which RFC 4975 section 9 (`content-stuff`) puts last.
    pub fn set(&mut self, header: Header) {
        if let Some(old) = self.fields.iter_mut().find(|h| h.same_kind(&header)) {
            *old = header;
            return;
        }
        let at = match self.fields.last() {
            Some(Header::ContentType(_)) if !matches!(header, Header::ContentType(_)) => {
                self.fields.len() - 1
            }
            _ => self.fields.len(),
        };
        self.fields.insert(at, header);
    }

    /// Adds a parsed field at the end, refusing a second typed header of one kind (400).
    pub(crate) fn push_parsed(&mut self, header: Header) -> Result<(), Error> {
        if self.fields.iter().any(|h| h.same_kind(&header)) {
            let name = NAMES
                .iter()
                .find(|n| n.eq_ignore_ascii_case(header.name()))
                .copied()
                .unwrap_or("header");
            return Err(ErrorKind::Header(name).into());
        }
        self.fields.push(header);
        Ok(())
    }

    /// `Message-ID`.
    pub fn message_id(&self) -> Option<&str> {
        self.fields.iter().find_map(|h| match h {
            Header::MessageId(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// `Success-Report`, `false` when absent (RFC 4975 section 7.1.2).
    pub fn success_report(&self) -> bool {
        self.fields
            .iter()
            .any(|h| matches!(h, Header::SuccessReport(true)))
    }

    /// `Failure-Report`, [`FailureReport::Yes`] when absent (RFC 4975 section 7.1.2).
    pub fn failure_report(&self) -> FailureReport {
        self.fields
            .iter()
            .find_map(|h| match h {
                Header::FailureReport(f) => Some(*f),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// `Byte-Range`, when present.
    pub fn byte_range(&self) -> Option<ByteRange> {
        self.fields.iter().find_map(|h| match h {
            Header::ByteRange(r) => Some(*r),
            _ => None,
        })
    }

    /// `Status` (REPORT).
    pub fn status(&self) -> Option<&Status> {
        self.fields.iter().find_map(|h| match h {
            Header::Status(s) => Some(s),
            _ => None,
        })
    }

    /// `Content-Type` as written.
    pub fn content_type(&self) -> Option<&str> {
        self.fields.iter().find_map(|h| match h {
            Header::ContentType(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// `Use-Path` (RFC 4976).
    pub fn use_path(&self) -> Option<&[MsrpUri]> {
        self.fields.iter().find_map(|h| match h {
            Header::UsePath(p) => Some(p.as_slice()),
            _ => None,
        })
    }

    /// `Expires` (RFC 4976), seconds.
    pub fn expires(&self) -> Option<u32> {
        self.fields.iter().find_map(|h| match h {
            Header::Expires(n) => Some(*n),
            _ => None,
        })
    }

    /// The first extension header of this name (case-insensitive), if any.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.fields.iter().find_map(|h| match h {
            Header::Extension { name: n, value } if n.eq_ignore_ascii_case(name) => {
                Some(value.as_str())
            }
            _ => None,
        })
    }

    /// Writes every field, one `Name: value CRLF` line each, To-Path and From-Path first.
    pub(crate) fn write(&self, out: &mut String) {
        out.push_str("To-Path: ");
        write_path(out, &self.to_path);
        out.push_str("\r\nFrom-Path: ");
        write_path(out, &self.from_path);
        out.push_str("\r\n");
        for h in &self.fields {
            out.push_str(h.name());
            out.push_str(": ");
            h.write_value(out);
            out.push_str("\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> Result<Header, Error> {
        Header::parse(name, value)
    }

    fn text(header: &Header) -> String {
        let mut s = String::new();
        header.write_value(&mut s);
        s
    }

    #[test]
    fn byte_ranges() {
        for (v, r) in [
            ("1-25/25", ByteRange::whole(25)),
            ("1-0/0", ByteRange::whole(0)),
            (
                "1-*/8",
                ByteRange {
                    start: 1,
                    end: None,
                    total: Some(8),
                },
            ),
            (
                "5-8/*",
                ByteRange {
                    start: 5,
                    end: Some(8),
                    total: None,
                },
            ),
            (
                "1-*/*",
                ByteRange {
                    start: 1,
                    end: None,
                    total: None,
                },
            ),
        ] {
            let parsed = h("Byte-Range", v).unwrap();
            assert_eq!(parsed, Header::ByteRange(r));
            assert_eq!(text(&parsed), v);
        }
        for v in [
            "",
            "0-1/1",
            "1-2/1",
            "3-1/5",
            "1-2",
            "a-2/2",
            "1--2/2",
            "1-2/2 ",
            "1-*/x",
            "1-99999999999999999999/*",
        ] {
            assert_eq!(h("Byte-Range", v).unwrap_err().status(), 400, "{v}");
        }
    }

    #[test]
    fn reports_and_status() {
        assert_eq!(
            h("success-report", "YES").unwrap(),
            Header::SuccessReport(true)
        );
        assert_eq!(
            h("Failure-Report", "partial").unwrap(),
            Header::FailureReport(FailureReport::Partial)
        );
        assert!(h("Failure-Report", "maybe").is_err());
        assert!(h("Success-Report", "partial").is_err());
        let s = h("Status", "000 200 OK").unwrap();
        assert_eq!(s, Header::Status(Status::new(200, Some("OK"))));
        assert_eq!(text(&s), "000 200 OK");
        assert_eq!(
            h("Status", "000 413").unwrap(),
            Header::Status(Status::new(413, None))
        );
        for v in ["200 OK", "000 20 OK", "000 200OK", "0000 200", "000  200"] {
            assert!(h("Status", v).is_err(), "{v}");
        }
    }

    #[test]
    fn other_values() {
        assert!(h("Message-ID", "87652491").is_ok());
        assert!(h("Message-ID", "a").is_err());
        assert!(h("Message-ID", "-abcd").is_err());
        for v in [
            "text/plain",
            "message/cpim",
            "text/plain;charset=utf-8",
            "text/plain;a;b=\"x;\\\"y\"",
        ] {
            assert!(h("Content-Type", v).is_ok(), "{v}");
        }
        for v in [
            "text",
            "text/",
            "/plain",
            "text/plain;",
            "text/plain;a=\"x",
            "a b/c",
        ] {
            assert!(h("Content-Type", v).is_err(), "{v}");
        }
        assert_eq!(h("Expires", "600").unwrap(), Header::Expires(600));
        assert!(h("Expires", "-1").is_err());
        assert!(h("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\"").is_ok());
        assert!(h("Authorization", "Basic abc").is_err());
        assert!(
            h(
                "Use-Path",
                "msrps://r.example.com:2855/a;tcp msrp://b/c;tcp"
            )
            .is_ok()
        );
        assert!(h("Use-Path", "msrps://r.example.com:2855/a;tcp  x").is_err());
        assert_eq!(
            h("X-Thing", "any\ttext é").unwrap(),
            Header::Extension {
                name: "X-Thing".into(),
                value: "any\ttext é".into()
            }
        );
        assert!(h("X-Thing", "bad\u{1}").is_err());
        assert!(h("1bad", "x").is_err());
    }

    #[test]
    fn set_keeps_content_type_last() {
        let u: MsrpUri = "msrp://a:1/b;tcp".parse().unwrap();
        let mut hs = Headers::new(vec![u.clone()], vec![u]).unwrap();
        hs.set(Header::MessageId("abcd".into()));
        hs.set(Header::ContentType("text/plain".into()));
        hs.set(Header::ByteRange(ByteRange::whole(3)));
        hs.set(Header::MessageId("efgh".into()));
        let names: Vec<&str> = hs.fields().iter().map(Header::name).collect();
        assert_eq!(names, ["Message-ID", "Byte-Range", "Content-Type"]);
        assert_eq!(hs.message_id(), Some("efgh"));
        assert_eq!(hs.failure_report(), FailureReport::Yes);
        assert!(!hs.success_report());
        assert!(
            hs.push_parsed(Header::ByteRange(ByteRange::whole(1)))
                .is_err()
        );
        assert!(Headers::new(vec![], vec![]).is_err());
    }
}
