//! `multipart/mixed` (RFC 2046 §5.1): split and build by boundary, as the 1-N pager body
//! (RFC 5365 §4) needs: an `application/resource-lists+xml` part plus a `message/cpim` part.

use bytes::{BufMut, Bytes, BytesMut};

use crate::ContentError;
use crate::text::{is_header_value, is_name, next_line, parse_header_block};

const WHAT: &str = "multipart/mixed";

/// Most parts [`Multipart::parse`] accepts.
pub const MAX_PARTS: usize = 64;
/// Most header lines per part.
pub const MAX_PART_HEADERS: usize = 32;
/// Largest multipart body [`Multipart::parse`] accepts.
pub const MAX_MULTIPART_SIZE: usize = 1024 * 1024;

/// One body part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's MIME headers, in order.
    pub headers: Vec<(String, String)>,
    /// The part's content.
    pub body: Bytes,
}

impl Part {
    /// A part with a `Content-Type`.
    pub fn new(content_type: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            headers: vec![("Content-Type".to_owned(), content_type.into())],
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The part's `Content-Type`; RFC 2046 §5.1 default is `text/plain`, which this does not
    /// fill in.
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }
}

/// A multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// The boundary (the `boundary` parameter of the Content-Type).
    pub boundary: String,
    /// The parts, in order.
    pub parts: Vec<Part>,
}

/// RFC 2046 §5.1.1 `bchars`, 1 to 70 of them, not ending in a space.
fn valid_boundary(b: &str) -> bool {
    (1..=70).contains(&b.len())
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

impl Multipart {
    /// Splits `body` at `boundary` (the preamble and epilogue are dropped). Accepts CRLF and
    /// bare LF line ends.
    pub fn parse(boundary: &str, body: Bytes) -> Result<Self, ContentError> {
        if body.len() > MAX_MULTIPART_SIZE {
            return Err(ContentError::TooLarge {
                what: WHAT,
                size: body.len(),
                limit: MAX_MULTIPART_SIZE,
            });
        }
        if !valid_boundary(boundary) {
            return Err(ContentError::malformed(WHAT, "invalid boundary"));
        }
        let delim = format!("--{boundary}");
        let delim = delim.as_bytes();
        let finder = memchr::memmem::Finder::new(delim);
        // A delimiter line starts the body or follows a line break (RFC 2046 §5.1.1).
        let next_delim = |from: usize| -> Option<usize> {
            let mut at = from;
            loop {
                let p = at + finder.find(body.get(at..)?)?;
                let line_start = p == 0 || body.get(p - 1) == Some(&b'\n');
                // `--b-x` is not the delimiter for `b`: padding, a line end or `--` must follow.
                let after = p + delim.len();
                let ends = match body.get(after) {
                    None | Some(b' ' | b'\t' | b'\r' | b'\n') => true,
                    Some(b'-') => body.get(after + 1) == Some(&b'-'),
                    Some(_) => false,
                };
                if line_start && ends {
                    return Some(p);
                }
                at = p + 1;
            }
        };
        let missing = || ContentError::malformed(WHAT, "missing boundary delimiter");
        let mut d = next_delim(0).ok_or_else(missing)?;
        let mut parts = Vec::new();
        loop {
            let after = d + delim.len();
            if body.get(after..after + 2) == Some(b"--") {
                break;
            }
            // Rest of the delimiter line must be transport padding.
            let (end, start) = next_line(&body, after).ok_or_else(missing)?;
            if body
                .get(after..end)
                .is_some_and(|pad| !pad.iter().all(|c| matches!(c, b' ' | b'\t')))
            {
                return Err(ContentError::malformed(
                    WHAT,
                    "text after boundary delimiter",
                ));
            }
            let next = next_delim(start)
                .ok_or_else(|| ContentError::malformed(WHAT, "missing close delimiter"))?;
            // The line break before the next delimiter belongs to the delimiter.
            let mut part_end = next.saturating_sub(1).max(start);
            if part_end > start && body.get(part_end - 1) == Some(&b'\r') {
                part_end -= 1;
            }
            if parts.len() >= MAX_PARTS {
                return Err(ContentError::malformed(WHAT, "too many parts"));
            }
            let part = body.slice(start..part_end);
            let (headers, hend) = parse_header_block(&part, 0, MAX_PART_HEADERS, true, WHAT)?;
            parts.push(Part {
                headers,
                body: part.slice(hend..),
            });
            d = next;
        }
        if parts.is_empty() {
            return Err(ContentError::malformed(WHAT, "no body parts"));
        }
        Ok(Self {
            boundary: boundary.to_owned(),
            parts,
        })
    }

    /// Parses with the boundary taken from the `Content-Type` header value.
    pub fn parse_with_content_type(content_type: &str, body: Bytes) -> Result<Self, ContentError> {
        let boundary = crate::mime::param(content_type, "boundary").ok_or(
            ContentError::malformed(WHAT, "Content-Type without boundary"),
        )?;
        Self::parse(&boundary, body)
    }

    /// The `Content-Type` header value for this body.
    pub fn content_type(&self) -> String {
        format!("multipart/mixed;boundary=\"{}\"", self.boundary)
    }

    /// Serializes with CRLF line ends. Fails if the boundary is invalid, occurs in a part,
    /// or a header would break the syntax (caller misuse).
    pub fn to_bytes(&self) -> Result<Bytes, ContentError> {
        let misuse = |reason| ContentError::ApiMisuse { what: WHAT, reason };
        if !valid_boundary(&self.boundary) {
            return Err(misuse("invalid boundary"));
        }
        let delim = format!("--{}", self.boundary);
        let finder = memchr::memmem::Finder::new(delim.as_bytes());
        let mut out = BytesMut::new();
        for p in &self.parts {
            if finder.find(&p.body).is_some() {
                return Err(misuse("boundary occurs in a part"));
            }
            out.put_slice(delim.as_bytes());
            out.put_slice(b"\r\n");
            for (n, v) in &p.headers {
                if !is_name(n) || !is_header_value(v) || v.contains(&*delim) {
                    return Err(misuse("invalid part header"));
                }
                out.put_slice(n.as_bytes());
                out.put_slice(b": ");
                out.put_slice(v.as_bytes());
                out.put_slice(b"\r\n");
            }
            out.put_slice(b"\r\n");
            out.put_slice(&p.body);
            out.put_slice(b"\r\n");
        }
        out.put_slice(delim.as_bytes());
        out.put_slice(b"--\r\n");
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Content, Cpim, CpimAddress, CpimBuilder, ResourceList};
    use proptest::prelude::*;

    /// RFC 5365 §4 style 1-N pager body.
    const PAGER: &str = "--boundary1\r\n\
Content-Type: message/cpim\r\n\
\r\n\
From: <sip:alice@example.com>\r\n\
To: <sip:conf@example.com>\r\n\
\r\n\
Content-Type: text/plain\r\n\
\r\n\
Hello\r\n\
--boundary1\r\n\
Content-Type: application/resource-lists+xml\r\n\
Content-Disposition: recipient-list\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>\r\n\
<entry uri=\"sip:bill@example.com\"/><entry uri=\"sip:joe@example.org\"/>\r\n\
</list></resource-lists>\r\n\
--boundary1--\r\n";

    #[test]
    fn parse_pager_body() {
        let m = Multipart::parse_with_content_type(
            "multipart/mixed;boundary=\"boundary1\"",
            Bytes::from_static(PAGER.as_bytes()),
        )
        .unwrap();
        assert_eq!(m.parts.len(), 2);
        let cpim = Cpim::parse(m.parts[0].body.clone()).unwrap();
        assert_eq!(&cpim.body[..], b"Hello");
        assert_eq!(
            m.parts[1].header("content-disposition"),
            Some("recipient-list")
        );
        let l = ResourceList::parse(&m.parts[1].body).unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(m.to_bytes().unwrap(), PAGER.as_bytes());
        let Content::Multipart(m2) =
            Content::parse(&m.content_type(), m.to_bytes().unwrap()).unwrap()
        else {
            panic!("not multipart")
        };
        assert_eq!(m2, m);
    }

    #[test]
    fn preamble_padding_lf_and_epilogue() {
        let s = "preamble --b not a delimiter\n--b  \nContent-Type: text/plain\n\none\n--b-x\n--b\n\ntwo\n--b--\nepilogue";
        let m = Multipart::parse("b", Bytes::from(s)).unwrap();
        assert_eq!(m.parts.len(), 2);
        assert_eq!(&m.parts[0].body[..], b"one\n--b-x");
        assert_eq!(m.parts[0].content_type(), Some("text/plain"));
        assert!(m.parts[1].headers.is_empty());
        assert_eq!(&m.parts[1].body[..], b"two");
    }

    #[test]
    fn build_round_trip() {
        let cpim = CpimBuilder::new()
            .from(&CpimAddress::new("sip:alice@example.com"))
            .content_type("text/plain")
            .body("hi")
            .build()
            .unwrap();
        let m = Multipart {
            boundary: "simple boundary".into(),
            parts: vec![
                Part::new("message/cpim", cpim.to_bytes()),
                Part::new("application/resource-lists+xml", "<x/>")
                    .with_header("Content-Disposition", "recipient-list"),
                Part::new("text/plain", ""),
            ],
        };
        let wire = m.to_bytes().unwrap();
        assert_eq!(Multipart::parse("simple boundary", wire).unwrap(), m);
    }

    #[test]
    fn errors() {
        let cases = [
            ("b", "no delimiter"),
            ("b", "--b--\r\n"),
            ("b", "--b\r\n\r\nbody without close"),
            ("b", "--bx\r\n\r\nx\r\n--b--"),
            ("b", "--b junk\r\n\r\nx\r\n--b--"),
            ("b", "--b\r\nno colon\r\n\r\nx\r\n--b--"),
            ("", "----\r\n"),
            ("b\r", "--b\r\r\n\r\n--b\r--"),
        ];
        for (b, c) in cases {
            let e = Multipart::parse(b, Bytes::from(c)).unwrap_err();
            assert_eq!(e.status(), 400, "{c}: {e}");
        }
        assert!(Multipart::parse_with_content_type("multipart/mixed", Bytes::new()).is_err());
        let bad = Multipart {
            boundary: "b".into(),
            parts: vec![Part::new("text/plain", "x\r\n--b--")],
        };
        assert_eq!(bad.to_bytes().unwrap_err().status(), 500);
        let bad = Multipart {
            boundary: "b ".into(),
            parts: vec![],
        };
        assert!(bad.to_bytes().is_err());
        let bad = Multipart {
            boundary: "b".into(),
            parts: vec![Part::new("a\r\nb", "")],
        };
        assert!(bad.to_bytes().is_err());
    }

    proptest! {
        #[test]
        fn no_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Multipart::parse("b", Bytes::from(data));
        }

        #[test]
        fn no_panic_on_delimiter_soup(parts in proptest::collection::vec("(--b|--b--|\r\n|\n|x|: | )", 0..40)) {
            let s: String = parts.concat();
            if let Ok(m) = Multipart::parse("b", Bytes::from(s)) {
                prop_assert!(!m.parts.is_empty());
            }
        }
    }
}
