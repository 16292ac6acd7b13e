//! URIs: `sip`/`sips` (RFC 3261 section 19.1, 25.1), `tel` (RFC 3966), and any other scheme
//! (`im`, `pres`, `urn`, `http`, unknown ones) kept as an opaque `absoluteURI`.
//!
//! Components are stored as they were written, escapes included, so a parsed URI serializes
//! back to the same text. Comparison ([`SipUri::equivalent`]) follows RFC 3261 section 19.1.4:
//! escapes are decoded once, host names compare case-insensitively.

use core::net::Ipv4Addr;
use std::borrow::Cow;
use std::fmt;

use crate::scan::{
    ByteClass, find_byte, is_escaped_run, is_reserved, is_unreserved, split_byte, split_once_byte,
};

/// The URI did not follow the grammar of its scheme.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[error("malformed URI")]
pub struct UriError;

/// A URI as found in a Request-URI or a name-addr/addr-spec.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:` (RFC 3966).
    Tel(TelUri),
    /// Any other scheme, opaque: `im:` (RFC 3860), `urn:`, `http:`, unknown ones.
    Absolute(AbsoluteUri),
}

/// A `sip:` or `sips:` URI: `sip:user:password@host:port;uri-parameters?headers`.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, escapes kept (`sip:%75se%72@...` keeps `%75se%72`).
    pub user: Option<String>,
    /// The password, escapes kept.
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The port, if written.
    pub port: Option<u16>,
    /// `uri-parameters`, in order, escapes kept.
    pub params: Vec<Param>,
    /// `headers` (`?name=value&...`), escapes kept.
    pub headers: Vec<(String, String)>,
}

/// The host of a SIP URI or a Via `sent-by`.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum Host {
    /// A host name, as written.
    Domain(String),
    /// A dotted IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 reference, without the brackets. Kept as text: RFC 5118 section 4.10 asks
    /// receivers to tolerate the three-colon form that RFC 3261's ABNF allows.
    Ipv6(String),
}

/// A `tel:` URI: the number and its parameters (RFC 3966).
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct TelUri {
    /// The telephone-subscriber digits with their visual separators (`+1-201-555-0123`).
    pub number: String,
    /// `;name=value` parameters, as written.
    pub params: Vec<Param>,
}

/// A URI of any other scheme: `scheme ":" (hier-part / opaque-part)`, kept opaque.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct AbsoluteUri {
    /// The scheme, as written.
    pub scheme: String,
    /// Everything after the first `:`.
    pub rest: String,
}

/// A `name[=value]` parameter of a URI or a header.
///
/// In header parameters a quoted value keeps its quotes; see [`Param::unquoted_value`].
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Param {
    /// The name, as written.
    pub name: String,
    /// The value, if any, as written.
    pub value: Option<String>,
}

impl Param {
    /// A parameter with a value.
    pub fn new(name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        Self {
            name: name.into(),
            value: value.map(Into::into),
        }
    }

    /// The value with quotes and `quoted-pair`s removed.
    pub fn unquoted_value(&self) -> Option<Cow<'_, str>> {
        self.value.as_deref().map(crate::scan::unquote)
    }
}

/// Finds a parameter by name, case-insensitively (parameter names are case-insensitive,
/// RFC 3261 section 7.3.1).
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Decodes `%HH` escapes once (RFC 3261 section 19.1.4: `%25%34%31` is `%41`, not `A`).
/// Bytes are returned, not text: `%00` is a legal octet in a user part (RFC 4475 section 3.1.1.4).
pub fn unescape(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (after the first character).
fn is_scheme_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

// The classes below are tables (see `ByteClass`): URIs are checked at ingress in every
// Request-URI, From, To, Contact, Route and Record-Route, one byte at a time.

/// RFC 3261 `unreserved / user-unreserved`, `user-unreserved = "&" / "=" / "+" / "$" / "," /
/// ";" / "?" / "/"`.
static USER: ByteClass = ByteClass::new(true, b"-_.!~*'()&=+$,;?/");

/// RFC 3261 `password` characters besides `escaped`: `unreserved / "&" / "=" / "+" / "$" /
/// ","`.
static PASSWORD: ByteClass = ByteClass::new(true, b"-_.!~*'()&=+$,");

/// RFC 3261 `paramchar = param-unreserved / unreserved / escaped`, `param-unreserved = "[" /
/// "]" / "/" / ":" / "&" / "+" / "$"`.
static PARAM: ByteClass = ByteClass::new(true, b"-_.!~*'()[]/:&+$");

/// RFC 3261 `hnv-unreserved / unreserved`, `hnv-unreserved = "[" / "]" / "/" / "?" / ":" /
/// "+" / "$"`.
static HEADER: ByteClass = ByteClass::new(true, b"-_.!~*'()[]/?:+$");

/// RFC 3261 `hostname` characters (`alphanum`, `-`, `.`), and `_` which real host names carry.
static HOST: ByteClass = ByteClass::new(true, b"-._");

fn is_user_char(b: u8) -> bool {
    USER.contains(b)
}

fn is_password_char(b: u8) -> bool {
    PASSWORD.contains(b)
}

fn is_param_char(b: u8) -> bool {
    PARAM.contains(b)
}

fn is_header_char(b: u8) -> bool {
    HEADER.contains(b)
}

fn is_host_char(b: u8) -> bool {
    HOST.contains(b)
}

/// A URI checked against the grammar of its scheme, its components still slices of the text.
///
/// Checking a URI inside a header at ingress needs no owned value: this view is what
/// [`Uri::parse`] builds one from, so both answer alike on any input.
pub(crate) enum UriRef<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUriRef<'a>),
    /// `tel:`.
    Tel(TelUriRef<'a>),
    /// Any other scheme: the scheme and everything after the first `:`.
    Absolute(&'a str, &'a str),
}

impl<'a> UriRef<'a> {
    /// Checks a complete URI.
    pub(crate) fn parse(s: &'a str) -> Result<Self, UriError> {
        let colon = find_byte(s, b':').ok_or(UriError)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        if scheme.is_empty()
            || !scheme.as_bytes()[0].is_ascii_alphabetic()
            || !scheme.bytes().all(is_scheme_char)
        {
            return Err(UriError);
        }
        if scheme.eq_ignore_ascii_case("sip") {
            SipUriRef::parse_after_scheme(false, rest).map(Self::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUriRef::parse_after_scheme(true, rest).map(Self::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUriRef::parse_after_scheme(rest).map(Self::Tel)
        } else {
            // absoluteURI: uric = reserved / unreserved / escaped; never empty.
            if rest.is_empty() || !is_escaped_run(rest, |b| is_reserved(b) || is_unreserved(b)) {
                return Err(UriError);
            }
            Ok(Self::Absolute(scheme, rest))
        }
    }

    /// The owned URI.
    pub(crate) fn to_uri(&self) -> Uri {
        match self {
            Self::Sip(u) => Uri::Sip(u.to_sip_uri()),
            Self::Tel(t) => Uri::Tel(t.to_tel_uri()),
            Self::Absolute(scheme, rest) => Uri::Absolute(AbsoluteUri {
                scheme: (*scheme).to_owned(),
                rest: (*rest).to_owned(),
            }),
        }
    }
}

impl Uri {
    /// Parses a complete URI.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        UriRef::parse(s).map(|u| u.to_uri())
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Self::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The scheme in lower case for the known ones, as written otherwise.
    pub fn scheme(&self) -> &str {
        match self {
            Self::Sip(u) if u.secure => "sips",
            Self::Sip(_) => "sip",
            Self::Tel(_) => "tel",
            Self::Absolute(a) => &a.scheme,
        }
    }
}

/// A `sip:`/`sips:` URI checked against the grammar, its components still slices of the text.
pub(crate) struct SipUriRef<'a> {
    secure: bool,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: HostRef<'a>,
    port: Option<u16>,
    /// The `uri-parameters` after the first `;`, each one checked; split again on `;` when the
    /// owned URI is built.
    params: Option<&'a str>,
    /// The `headers` after `?`, each one checked; split again on `&` when the owned URI is
    /// built.
    headers: Option<&'a str>,
}

impl<'a> SipUriRef<'a> {
    fn parse_after_scheme(secure: bool, s: &'a str) -> Result<Self, UriError> {
        // The userinfo ends at the first '@': neither the host, the parameters nor the headers
        // may hold an unescaped '@' (RFC 3261 section 25.1), while the user part may hold ';'
        // and '?' (RFC 4475 section 3.1.1.9).
        let (user, password, rest) = match find_byte(s, b'@') {
            Some(at) => {
                let userinfo = &s[..at];
                let (user, password) = match find_byte(userinfo, b':') {
                    Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                    None => (userinfo, None),
                };
                if user.is_empty() || !is_escaped_run(user, is_user_char) {
                    return Err(UriError);
                }
                if password.is_some_and(|p| !is_escaped_run(p, is_password_char)) {
                    return Err(UriError);
                }
                (Some(user), password, &s[at + 1..])
            }
            None => (None, None, s),
        };
        let (host, after_host) = parse_host(rest)?;
        let mut rest = after_host;
        let mut port = None;
        if let Some(r) = rest.strip_prefix(':') {
            let end = r
                .bytes()
                .position(|b| b == b';' || b == b'?')
                .unwrap_or(r.len());
            port = Some(parse_port(&r[..end])?);
            rest = &r[end..];
        }
        // uri-parameters = *( ";" uri-parameter ): they run to the '?' of the headers (no
        // parameter character is '?').
        let mut params = None;
        if let Some(r) = rest.strip_prefix(';') {
            let end = find_byte(r, b'?').unwrap_or(r.len());
            let section = &r[..end];
            for p in split_byte(section, b';') {
                let (name, value) = split_param(p);
                if name.is_empty() || !is_escaped_run(name, is_param_char) {
                    return Err(UriError);
                }
                if value.is_some_and(|v| v.is_empty() || !is_escaped_run(v, is_param_char)) {
                    return Err(UriError);
                }
            }
            params = Some(section);
            rest = &r[end..];
        }
        let mut headers = None;
        if let Some(r) = rest.strip_prefix('?') {
            for h in split_byte(r, b'&') {
                let eq = find_byte(h, b'=').ok_or(UriError)?;
                let (name, value) = (&h[..eq], &h[eq + 1..]);
                if name.is_empty()
                    || !is_escaped_run(name, is_header_char)
                    || !is_escaped_run(value, is_header_char)
                {
                    return Err(UriError);
                }
            }
            headers = Some(r);
            rest = "";
        }
        if !rest.is_empty() {
            return Err(UriError);
        }
        Ok(Self {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The owned URI.
    fn to_sip_uri(&self) -> SipUri {
        SipUri {
            secure: self.secure,
            user: self.user.map(str::to_owned),
            password: self.password.map(str::to_owned),
            host: self.host.to_host(),
            port: self.port,
            params: self.params.map_or_else(Vec::new, |section| {
                split_byte(section, b';')
                    .map(|p| {
                        let (name, value) = split_param(p);
                        Param::new(name, value)
                    })
                    .collect()
            }),
            headers: self.headers.map_or_else(Vec::new, |section| {
                // Invariant: every header was checked to hold a '='.
                split_byte(section, b'&')
                    .filter_map(|h| split_once_byte(h, b'='))
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect()
            }),
        }
    }
}

/// Splits `name[=value]` at the first `=`.
fn split_param(p: &str) -> (&str, Option<&str>) {
    match split_once_byte(p, b'=') {
        Some((name, value)) => (name, Some(value)),
        None => (p, None),
    }
}

impl SipUri {
    /// A `sip:user@host` URI.
    pub fn new(user: Option<&str>, host: Host) -> Self {
        Self {
            secure: false,
            user: user.map(str::to_owned),
            password: None,
            host,
            port: None,
            params: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The named URI parameter (names compare case-insensitively).
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// Whether the URI has the `lr` parameter (a loose router, RFC 3261 section 16.12).
    pub fn is_loose_router(&self) -> bool {
        self.param("lr").is_some()
    }

    /// URI equivalence, RFC 3261 section 19.1.4: escapes decoded once; user and password
    /// case-sensitive; host case-insensitive; a port, `user`, `ttl`, `method`, `maddr` or
    /// `transport` parameter present in one must match in the other; other parameters are
    /// compared only when both have them; headers must match.
    pub fn equivalent(&self, other: &Self) -> bool {
        fn opt_unescape(s: &Option<String>) -> Option<Cow<'_, [u8]>> {
            s.as_deref().map(unescape)
        }
        if self.secure != other.secure
            || opt_unescape(&self.user) != opt_unescape(&other.user)
            || opt_unescape(&self.password) != opt_unescape(&other.password)
            || !self.host.eq_ignore_case(&other.host)
            || self.port != other.port
        {
            return false;
        }
        let value_eq = |a: &Param, b: &Param| match (&a.value, &b.value) {
            (Some(x), Some(y)) => unescape(x).eq_ignore_ascii_case(&unescape(y)),
            (None, None) => true,
            _ => false,
        };
        for p in &self.params {
            let name = unescape(&p.name);
            let other_p = other
                .params
                .iter()
                .find(|q| unescape(&q.name).eq_ignore_ascii_case(&name));
            match other_p {
                Some(q) if !value_eq(p, q) => return false,
                None if [&b"user"[..], b"ttl", b"method", b"maddr", b"transport"]
                    .iter()
                    .any(|n| name.eq_ignore_ascii_case(n)) =>
                {
                    return false;
                }
                _ => {}
            }
        }
        for q in &other.params {
            let name = unescape(&q.name);
            let mandatory = [&b"user"[..], b"ttl", b"method", b"maddr", b"transport"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n));
            if mandatory
                && !self
                    .params
                    .iter()
                    .any(|p| unescape(&p.name).eq_ignore_ascii_case(&name))
            {
                return false;
            }
        }
        if self.headers.len() != other.headers.len() {
            return false;
        }
        self.headers.iter().all(|(n, v)| {
            other.headers.iter().any(|(m, w)| {
                unescape(n).eq_ignore_ascii_case(&unescape(m)) && unescape(v) == unescape(w)
            })
        })
    }
}

fn parse_port(s: &str) -> Result<u16, UriError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError);
    }
    s.parse().map_err(|_| UriError)
}

/// A `host` as written: a name or a dotted IPv4 address (told apart when the owned [`Host`] is
/// built; both are accepted alike), or an IPv6 reference without its brackets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum HostRef<'a> {
    /// `hostname / IPv4address`.
    Name(&'a str),
    /// `IPv6reference` without the brackets.
    Ipv6(&'a str),
}

impl HostRef<'_> {
    /// The owned host.
    pub(crate) fn to_host(self) -> Host {
        match self {
            Self::Name(name) => match name.parse::<Ipv4Addr>() {
                Ok(a) => Host::Ipv4(a),
                Err(_) => Host::Domain(name.to_owned()),
            },
            Self::Ipv6(a) => Host::Ipv6(a.to_owned()),
        }
    }
}

/// Parses `host` at the start of `s`, returning it and the rest.
pub(crate) fn parse_host(s: &str) -> Result<(HostRef<'_>, &str), UriError> {
    if let Some(r) = s.strip_prefix('[') {
        let end = find_byte(r, b']').ok_or(UriError)?;
        let v6 = &r[..end];
        if !is_ipv6_text(v6) {
            return Err(UriError);
        }
        return Ok((HostRef::Ipv6(v6), &r[end + 1..]));
    }
    let end = s.bytes().position(|b| !is_host_char(b)).unwrap_or(s.len());
    let name = &s[..end];
    if name.is_empty() {
        return Err(UriError);
    }
    Ok((HostRef::Name(name), &s[end..]))
}

/// An IPv6 address as text: hex digits, colons and (for an embedded IPv4 tail) dots, at least
/// two colons. Deliberately wider than RFC 4291 (RFC 5118 section 4.10 asks for tolerance).
pub(crate) fn is_ipv6_text(s: &str) -> bool {
    s.bytes().filter(|&b| b == b':').count() >= 2
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        && s.len() <= 45
}

impl Host {
    /// Host comparison: names case-insensitively, addresses by value.
    pub fn eq_ignore_case(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Domain(a), Self::Domain(b)) => a.eq_ignore_ascii_case(b),
            (Self::Ipv6(a), Self::Ipv6(b)) => match (
                a.parse::<core::net::Ipv6Addr>(),
                b.parse::<core::net::Ipv6Addr>(),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => a.eq_ignore_ascii_case(b),
            },
            _ => self == other,
        }
    }
}

/// A `tel:` URI checked against the grammar, its components still slices of the text.
pub(crate) struct TelUriRef<'a> {
    number: &'a str,
    /// The parameters after the first `;`, each one checked.
    params: Option<&'a str>,
}

impl<'a> TelUriRef<'a> {
    fn parse_after_scheme(s: &'a str) -> Result<Self, UriError> {
        let (number, params) = match split_once_byte(s, b';') {
            Some((number, params)) => (number, Some(params)),
            None => (s, None),
        };
        let number_ok = !number.is_empty()
            && number.bytes().all(|b| {
                b.is_ascii_hexdigit()
                    || matches!(
                        b,
                        b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#' | b'p' | b'w'
                    )
            });
        if !number_ok {
            return Err(UriError);
        }
        for p in params
            .into_iter()
            .flat_map(|section| split_byte(section, b';'))
        {
            let (name, value) = split_param(p);
            let ok = |t: &str| {
                !t.is_empty()
                    && is_escaped_run(t, |b| {
                        is_param_char(b) || matches!(b, b'=' | b'?' | b'@' | b',' | b'%')
                    })
            };
            if !ok(name) || value.is_some_and(|v| !ok(v)) {
                return Err(UriError);
            }
        }
        Ok(Self { number, params })
    }

    /// The owned URI.
    fn to_tel_uri(&self) -> TelUri {
        TelUri {
            number: self.number.to_owned(),
            params: self.params.map_or_else(Vec::new, |section| {
                split_byte(section, b';')
                    .map(|p| {
                        let (name, value) = split_param(p);
                        Param::new(name, value)
                    })
                    .collect()
            }),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => f.write_str(d),
            Self::Ipv4(a) => write!(f, "{a}"),
            Self::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

pub(crate) fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        f.write_str(";")?;
        f.write_str(&p.name)?;
        if let Some(v) = &p.value {
            write!(f, "={v}")?;
        }
    }
    Ok(())
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sip(u) => write!(f, "{u}"),
            Self::Tel(t) => {
                write!(f, "tel:{}", t.number)?;
                write_params(f, &t.params)
            }
            Self::Absolute(a) => write!(f, "{}:{}", a.scheme, a.rest),
        }
    }
}

impl std::str::FromStr for Uri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn byte_classes_follow_the_grammar() {
        // RFC 3261 section 25.1, written out as comparisons.
        for b in 0..=255u8 {
            let unreserved = is_unreserved(b);
            let user = unreserved || b"&=+$,;?/".contains(&b);
            let password = unreserved || b"&=+$,".contains(&b);
            let param = unreserved || b"[]/:&+$".contains(&b);
            let header = unreserved || b"[]/?:+$".contains(&b);
            let host = b.is_ascii_alphanumeric() || b"-._".contains(&b);
            assert_eq!(is_user_char(b), user, "user {b}");
            assert_eq!(is_password_char(b), password, "password {b}");
            assert_eq!(is_param_char(b), param, "param {b}");
            assert_eq!(is_header_char(b), header, "header {b}");
            assert_eq!(is_host_char(b), host, "host {b}");
        }
    }

    #[test]
    fn sip_uri_components() {
        let u = sip("sip:alice:pw@Example.COM:5070;transport=tcp;lr?subject=hi&x=y");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.host, Host::Domain("Example.COM".into()));
        assert_eq!(u.port, Some(5070));
        assert!(u.is_loose_router());
        assert_eq!(u.headers.len(), 2);
        assert_eq!(
            u.to_string(),
            "sip:alice:pw@Example.COM:5070;transport=tcp;lr?subject=hi&x=y"
        );
    }

    #[test]
    fn user_part_may_hold_semicolons() {
        // RFC 4475 section 3.1.1.9.
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(
            &*unescape(u.user.as_deref().unwrap()),
            b"user;par=u@example.net"
        );
        assert_eq!(u.host, Host::Domain("example.com".into()));
    }

    #[test]
    fn unescape_once() {
        // RFC 4475 section 3.1.1.3: n%61me=v%61lue%25%34%31 is name=value%41.
        assert_eq!(&*unescape("v%61lue%25%34%31"), b"value%41");
        assert_eq!(&*unescape("%00%00"), b"\0\0");
    }

    #[test]
    fn ipv6_hosts() {
        assert_eq!(
            sip("sip:[2001:db8::10]:5070").host,
            Host::Ipv6("2001:db8::10".into())
        );
        assert_eq!(sip("sip:[2001:db8::10]:5070").port, Some(5070));
        assert_eq!(sip("sip:[2001:db8::10:5070]").port, None);
        assert!(Uri::parse("sip:2001:db8::10").is_err());
        assert!(Uri::parse("sip:[2001:db8:::192.0.2.1]").is_ok());
    }

    #[test]
    fn other_schemes() {
        assert!(matches!(
            Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent"),
            Ok(Uri::Absolute(_))
        ));
        assert!(Uri::parse("soap.beep://192.0.2.103:3002").is_ok());
        assert!(matches!(Uri::parse("tel:+1-201-555-0123"), Ok(Uri::Tel(_))));
        assert_eq!(Uri::parse("im:alice@example.com").unwrap().scheme(), "im");
        assert!(Uri::parse("<sip:user@example.com>").is_err());
        assert!(Uri::parse("sip:user@example.com; lr").is_err());
        assert!(Uri::parse("sip:@example.com").is_err());
        assert!(Uri::parse("sip:a@b:99999").is_err());
    }

    #[test]
    fn equivalence() {
        // RFC 3261 section 19.1.4 examples.
        assert!(
            sip("sip:%61lice@atlanta.com;transport=TCP")
                .equivalent(&sip("sip:alice@AtLanTa.CoM;Transport=tcp"))
        );
        assert!(!sip("sip:alice@atlanta.com").equivalent(&sip("sip:ALICE@atlanta.com")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com:5060")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com;transport=udp")));
        assert!(
            sip("sip:carol@chicago.com;security=on")
                .equivalent(&sip("sip:carol@chicago.com;newparam=5"))
        );
    }
}
