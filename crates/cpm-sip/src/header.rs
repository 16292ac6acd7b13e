//! Header fields: names (with compact forms), byte-exact raw lines, and the header list.
//!
//! A [`Header`] keeps the exact bytes it arrived with (name as written, separator, folding), so a
//! proxy forwards every header it did not touch unchanged. Typed views are parsed on demand
//! (see [`crate::typed`]).

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::HeaderError;
use crate::scan::{is_token, is_wsp};

macro_rules! header_names {
    ($($variant:ident => $canonical:literal $(, $compact:literal)?;)*) => {
        /// A header field name. Known names are recognised in long and compact form,
        /// case-insensitively (RFC 3261 section 7.3.1, 7.3.3); any other name is kept as written.
        #[derive(Clone, Debug, Eq, Hash, PartialEq)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = concat!("`", $canonical, "`", $(" (compact `", $compact, "`)")?)]
                $variant,
            )*
            /// Any other header; the name as written.
            Other(String),
        }

        /// Each known name's spellings as byte strings, for the `match` in
        /// [`HeaderName::from_token`]: `LONG` is the canonical name, `SHORT` the compact form
        /// (or the canonical name again when there is none). One module per name, named
        /// after its variant, because a macro cannot make up new constant names.
        mod spelling {
            $(
                #[allow(non_snake_case)]
                pub(super) mod $variant {
                    pub(crate) const LONG: &[u8] = $canonical.as_bytes();
                    pub(crate) const SHORT: &[u8] =
                        super::super::compact_or_long(&[$($compact)?], $canonical).as_bytes();
                }
            )*
        }

        impl HeaderName {
            /// Recognises a name (long or compact form, any case); `None` if it is not a `token`.
            pub fn parse(name: &[u8]) -> Option<Self> {
                if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
                    return None;
                }
                // Invariant: token characters are ASCII, hence valid UTF-8.
                std::str::from_utf8(name).ok().map(Self::from_token)
            }

            /// Recognises a name that is known to be a non-empty `token`.
            pub(crate) fn from_token(name: &str) -> Self {
                // Nearly every name arrives in its canonical or compact spelling: one `match`
                // finds those. Its patterns are byte strings, so the compiler branches on the
                // length and then on the bytes themselves, where `str` patterns would compare
                // the name with every candidate of the same length in turn. Any other
                // capitalisation takes the case-insensitive comparisons RFC 3261 section
                // 7.3.1 asks for (no two known names differ only in case, so both steps give
                // the same answer).
                #[allow(unreachable_patterns)] // `SHORT` is `LONG` for names with no compact form.
                match name.as_bytes() {
                    $(spelling::$variant::LONG | spelling::$variant::SHORT => return Self::$variant,)*
                    _ => {}
                }
                $(
                    if name.eq_ignore_ascii_case($canonical)
                        $(|| name.eq_ignore_ascii_case($compact))?
                    {
                        return Self::$variant;
                    }
                )*
                Self::Other(name.to_owned())
            }

            /// The canonical (long) name.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $canonical,)*
                    Self::Other(name) => name,
                }
            }

            /// The compact form, if the name has one.
            pub fn compact(&self) -> Option<&'static str> {
                match self {
                    $($(Self::$variant => Some($compact),)?)*
                    _ => None,
                }
            }
        }
    };
}

header_names! {
    Accept => "Accept";
    AcceptContact => "Accept-Contact", "a";
    Allow => "Allow";
    AllowEvents => "Allow-Events", "u";
    Authorization => "Authorization";
    CallId => "Call-ID", "i";
    Contact => "Contact", "m";
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", "e";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    ContributionId => "Contribution-ID";
    ConversationId => "Conversation-ID";
    CSeq => "CSeq";
    Date => "Date";
    Event => "Event", "o";
    Expires => "Expires";
    From => "From", "f";
    InReplyToContributionId => "InReplyTo-Contribution-ID";
    MaxForwards => "Max-Forwards";
    MinExpires => "Min-Expires";
    PAssertedIdentity => "P-Asserted-Identity";
    PAssertedService => "P-Asserted-Service";
    Path => "Path";
    PPreferredIdentity => "P-Preferred-Identity";
    PPreferredService => "P-Preferred-Service";
    Privacy => "Privacy";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require";
    RecordRoute => "Record-Route";
    ReferredBy => "Referred-By", "b";
    ReferTo => "Refer-To", "r";
    RejectContact => "Reject-Contact", "j";
    RequestDisposition => "Request-Disposition", "d";
    Require => "Require";
    RetryAfter => "Retry-After";
    Route => "Route";
    Server => "Server";
    ServiceRoute => "Service-Route";
    SessionExpires => "Session-Expires", "x";
    Subject => "Subject", "s";
    Supported => "Supported", "k";
    Timestamp => "Timestamp";
    To => "To", "t";
    Unsupported => "Unsupported";
    UserAgent => "User-Agent";
    Via => "Via", "v";
    Warning => "Warning";
    WwwAuthenticate => "WWW-Authenticate";
}

/// The compact form if there is one (`compact` holds at most one), else the long name.
const fn compact_or_long(compact: &[&'static str], long: &'static str) -> &'static str {
    match compact {
        [short] => short,
        _ => long,
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field, kept as the exact bytes it arrived with.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Header {
    name: HeaderName,
    /// The whole field, from the name to the end of the value, folding included, without the
    /// final CRLF.
    raw: Bytes,
    /// Where the value starts in `raw` (after `HCOLON`).
    value_start: usize,
}

impl Header {
    /// Builds a header as `Name: value`, with the canonical name.
    ///
    /// The caller gives a value that follows the header's grammar and holds no CR or LF; that
    /// is checked in debug builds only (values come from our own typed builders).
    pub fn new(name: HeaderName, value: &str) -> Self {
        debug_assert!(
            !value.contains(['\r', '\n']),
            "header value with a line break"
        );
        let name_str = name.as_str();
        let mut raw = BytesMut::with_capacity(name_str.len() + 2 + value.len());
        raw.put_slice(name_str.as_bytes());
        raw.put_slice(b": ");
        raw.put_slice(value.as_bytes());
        Self {
            value_start: name_str.len() + 2,
            name,
            raw: raw.freeze(),
        }
    }

    /// A header from a raw field (used by the parser; `raw` has been checked to be
    /// `name HCOLON value`).
    pub(crate) fn from_raw(name: HeaderName, raw: Bytes, value_start: usize) -> Self {
        Self {
            name,
            raw,
            value_start,
        }
    }

    /// The name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The whole field as it arrived (or was built), without the final CRLF.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The value bytes as they arrived, folding included, trailing whitespace removed.
    pub fn value_bytes(&self) -> &[u8] {
        let v = &self.raw[self.value_start..];
        &v[..value_len(v)]
    }

    /// The value as text with line folding replaced by whitespace (RFC 3261 section 7.3.1).
    pub fn value(&self) -> Result<Cow<'_, str>, HeaderError> {
        let v = self.value_bytes();
        let text =
            std::str::from_utf8(v).map_err(|_| HeaderError::Malformed(self.static_name()))?;
        Ok(unfold(text))
    }

    /// The name for error messages.
    pub(crate) fn static_name(&self) -> &'static str {
        static_name(&self.name)
    }

    /// Appends the field and its CRLF to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.put_slice(&self.raw);
        out.put_slice(b"\r\n");
    }
}

/// The value of a field whose text is `field` and whose value starts at `value_start`, as
/// [`Header::value`] gives it: trailing whitespace removed, line folding replaced by whitespace.
/// `folded`: whether the field has continuation lines (only then can it hold a CR).
pub(crate) fn field_value(field: &str, value_start: usize, folded: bool) -> Cow<'_, str> {
    let value = &field[value_start..];
    // Trailing spaces and tabs are ASCII: the cut is a char boundary.
    let value = &value[..value_len(value.as_bytes())];
    if folded {
        unfold(value)
    } else {
        Cow::Borrowed(value)
    }
}

/// The length of `value` without its trailing spaces and tabs.
fn value_len(value: &[u8]) -> usize {
    value.iter().rposition(|&b| !is_wsp(b)).map_or(0, |p| p + 1)
}

/// Replaces line folding by whitespace (RFC 3261 section 7.3.1).
fn unfold(text: &str) -> Cow<'_, str> {
    // Only a folded value holds a CR (the parser refuses any other); `memchr` finds out faster
    // than `str::contains`, and this runs on every value that is read.
    if memchr::memchr(b'\r', text.as_bytes()).is_none() {
        return Cow::Borrowed(text);
    }
    // A fold is CRLF followed by whitespace; dropping the CRLF leaves that whitespace.
    Cow::Owned(text.replace("\r\n", ""))
}

/// A `'static` name for a header, for error values.
pub(crate) fn static_name(name: &HeaderName) -> &'static str {
    match name {
        HeaderName::Via => "Via",
        HeaderName::From => "From",
        HeaderName::To => "To",
        HeaderName::CallId => "Call-ID",
        HeaderName::CSeq => "CSeq",
        HeaderName::MaxForwards => "Max-Forwards",
        HeaderName::Contact => "Contact",
        HeaderName::Route => "Route",
        HeaderName::RecordRoute => "Record-Route",
        HeaderName::ContentType => "Content-Type",
        HeaderName::ContentLength => "Content-Length",
        HeaderName::Date => "Date",
        HeaderName::Expires => "Expires",
        HeaderName::Require => "Require",
        HeaderName::ProxyRequire => "Proxy-Require",
        HeaderName::Supported => "Supported",
        HeaderName::AcceptContact => "Accept-Contact",
        HeaderName::PAssertedIdentity => "P-Asserted-Identity",
        HeaderName::PPreferredIdentity => "P-Preferred-Identity",
        HeaderName::PPreferredService => "P-Preferred-Service",
        HeaderName::PAssertedService => "P-Asserted-Service",
        HeaderName::ConversationId => "Conversation-ID",
        HeaderName::ContributionId => "Contribution-ID",
        HeaderName::InReplyToContributionId => "InReplyTo-Contribution-ID",
        HeaderName::Path => "Path",
        HeaderName::ServiceRoute => "Service-Route",
        _ => "header",
    }
}

/// The header fields of a message, in order.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// All fields in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first field with this name.
    pub fn get(&self, name: &HeaderName) -> Option<&Header> {
        self.0.iter().find(|h| h.name == *name)
    }

    /// Every field with this name, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a Header> + 'a {
        self.0.iter().filter(move |h| h.name == *name)
    }

    /// Whether a field with this name is present.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// Appends a field.
    pub fn push(&mut self, header: Header) {
        self.0.push(header);
    }

    /// Inserts a field before all others (a proxy's own Via goes on top, RFC 3261 section
    /// 16.6 step 8).
    pub fn push_front(&mut self, header: Header) {
        self.0.insert(0, header);
    }

    /// Inserts a field before the first field with the same name, or appends it.
    pub fn insert_first_of_kind(&mut self, header: Header) {
        match self.0.iter().position(|h| h.name == header.name) {
            Some(i) => self.0.insert(i, header),
            None => self.0.push(header),
        }
    }

    /// Removes and returns the first field with this name.
    pub fn remove_first(&mut self, name: &HeaderName) -> Option<Header> {
        let i = self.0.iter().position(|h| h.name == *name)?;
        Some(self.0.remove(i))
    }

    /// Removes every field with this name; returns how many were removed.
    pub fn remove_all(&mut self, name: &HeaderName) -> usize {
        let before = self.0.len();
        self.0.retain(|h| h.name != *name);
        before - self.0.len()
    }

    /// Replaces every field with this name by one field `name: value`, placed where the first
    /// one was (or at the end).
    pub fn set(&mut self, name: HeaderName, value: &str) {
        let header = Header::new(name, value);
        match self.0.iter().position(|h| h.name == header.name) {
            Some(i) => {
                self.0[i] = header;
                let name = self.0[i].name.clone();
                let mut seen = false;
                self.0.retain(|h| {
                    if h.name != name {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.0.push(header),
        }
    }

    /// Appends every field, each with its CRLF, to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        for h in &self.0 {
            h.write_to(out);
        }
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compact_and_case() {
        assert_eq!(HeaderName::parse(b"v"), Some(HeaderName::Via));
        assert_eq!(HeaderName::parse(b"ViA"), Some(HeaderName::Via));
        assert_eq!(
            HeaderName::parse(b"MaX-fOrWaRdS"),
            Some(HeaderName::MaxForwards)
        );
        assert_eq!(HeaderName::parse(b"i"), Some(HeaderName::CallId));
        assert_eq!(
            HeaderName::parse(b"C%6Fntact"),
            Some(HeaderName::Other("C%6Fntact".into()))
        );
        assert_eq!(HeaderName::parse(b"bad name"), None);
        assert_eq!(HeaderName::parse(b"V"), Some(HeaderName::Via));
        assert_eq!(HeaderName::parse(b"call-id"), Some(HeaderName::CallId));
        assert_eq!(
            HeaderName::parse(b"X-Custom"),
            Some(HeaderName::Other("X-Custom".into()))
        );
        assert_eq!(HeaderName::Contact.compact(), Some("m"));
    }

    #[test]
    fn set_replaces_all() {
        let mut h = Headers::new();
        h.push(Header::new(HeaderName::Via, "a"));
        h.push(Header::new(HeaderName::To, "b"));
        h.push(Header::new(HeaderName::Via, "c"));
        h.set(HeaderName::Via, "d");
        let vals: Vec<_> = h.iter().map(|x| x.value().unwrap().into_owned()).collect();
        assert_eq!(vals, ["d", "b"]);
    }
}
