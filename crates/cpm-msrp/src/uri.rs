//! MSRP URIs (RFC 4975 section 9, `MSRP-URI`), their text and the comparison rule of RFC 4975
//! section 6.1.
//!
//! ```text
//! MSRP-URI    = msrp-scheme "://" authority ["/" session-id] ";" transport *( ";" URI-parameter)
//! msrp-scheme = "msrp" / "msrps"
//! session-id  = 1*( unreserved / "+" / "=" / "/" )
//! transport   = "tcp" / 1*ALPHANUM
//! ```
//!
//! Components are kept as written (scheme and host case included) so that a URI serializes
//! back to exactly the text it was parsed from; [`MsrpUri::equivalent`] is where case stops
//! mattering.

use core::net::Ipv6Addr;
use std::fmt;
use std::str::FromStr;

use crate::status::Error;

/// The host of an MSRP URI, as written.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum Host {
    /// A domain name (RFC 3986 `reg-name`).
    Name(String),
    /// A dotted IPv4 address.
    Ipv4(String),
    /// An IPv6 address, written without its brackets.
    Ipv6(String),
}

impl Host {
    /// The host text without brackets.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Name(s) | Self::Ipv4(s) | Self::Ipv6(s) => s,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv6(s) => write!(f, "[{s}]"),
            Self::Name(s) | Self::Ipv4(s) => f.write_str(s),
        }
    }
}

/// An MSRP or MSRPS URI.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct MsrpUri {
    scheme: String,
    userinfo: Option<String>,
    host: Host,
    port: Option<u16>,
    session_id: Option<String>,
    transport: String,
    params: Vec<(String, Option<String>)>,
}

impl MsrpUri {
    /// A URI for one of our own endpoints: `msrp[s]://host:port/session-id;tcp`.
    ///
    /// `host` is a domain name, an IPv4 address or an IPv6 address (with or without
    /// brackets); `session_id` must follow the `session-id` rule.
    pub fn new(secure: bool, host: &str, port: u16, session_id: &str) -> Result<Self, Error> {
        let scheme = if secure { "msrps" } else { "msrp" };
        format!("{scheme}://{}:{port}/{session_id};tcp", bracket(host)).parse()
    }

    /// The scheme as written (`msrp` or `msrps`, any case).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether the scheme is `msrps` (TLS, RFC 4975 section 6).
    pub fn is_secure(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("msrps")
    }

    /// The userinfo before `@`, if any (RFC 4976 relays use it; comparison ignores it).
    pub fn userinfo(&self) -> Option<&str> {
        self.userinfo.as_deref()
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port, when written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The session-id, when present (a relay's own URI has none, RFC 4976 section 3).
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The transport as written (`tcp` for TCP and TLS).
    pub fn transport(&self) -> &str {
        &self.transport
    }

    /// The URI parameters after the transport, name and optional value, in order.
    pub fn params(&self) -> &[(String, Option<String>)] {
        &self.params
    }

    /// RFC 4975 section 6.1: two MSRP URIs are equal when scheme, host and transport match
    /// case-insensitively and port and session-id match exactly; userinfo and any other
    /// parameter are ignored. IPv6 hosts are compared as addresses (`::1` equals
    /// `0:0:0:0:0:0:0:1`).
    pub fn equivalent(&self, other: &Self) -> bool {
        self.scheme.eq_ignore_ascii_case(&other.scheme)
            && hosts_equivalent(&self.host, &other.host)
            && self.port == other.port
            && self.session_id == other.session_id
            && self.transport.eq_ignore_ascii_case(&other.transport)
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn hosts_equivalent(a: &Host, b: &Host) -> bool {
    match (a, b) {
        (Host::Ipv6(x), Host::Ipv6(y)) => match (x.parse::<Ipv6Addr>(), y.parse::<Ipv6Addr>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => x.eq_ignore_ascii_case(y),
        },
        (Host::Name(x), Host::Name(y)) | (Host::Ipv4(x), Host::Ipv4(y)) => {
            x.eq_ignore_ascii_case(y)
        }
        _ => false,
    }
}

impl fmt::Display for MsrpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(u) = &self.userinfo {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(s) = &self.session_id {
            write!(f, "/{s}")?;
        }
        write!(f, ";{}", self.transport)?;
        for (name, value) in &self.params {
            write!(f, ";{name}")?;
            if let Some(v) = value {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for MsrpUri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        parse(s).ok_or_else(|| Error::syntax("MSRP URI"))
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// RFC 4975 section 9 `token` (the RFC 3261 token set).
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!%'*+-._`~#$&^|".contains(&b)
}

/// Whether `s` holds only `allowed` characters and well-formed `%HH` escapes.
fn pct_ok(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if allowed(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

fn parse(s: &str) -> Option<MsrpUri> {
    let (scheme, rest) = s.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("msrp") || scheme.eq_ignore_ascii_case("msrps")) {
        return None;
    }
    // No '@' can appear after the authority (session-id and token exclude it), so the first
    // one ends the userinfo.
    let (userinfo, rest) = match rest.split_once('@') {
        Some((u, r)) => {
            if !pct_ok(u, |b| is_unreserved(b) || is_sub_delim(b) || b == b':') {
                return None;
            }
            (Some(u.to_owned()), r)
        }
        None => (None, rest),
    };
    // Host and port run to the first '/' (session-id) or ';' (transport).
    let end = rest.find(['/', ';'])?;
    let (hostport, mut rest) = rest.split_at(end);
    let (host, port) = parse_hostport(hostport)?;
    let mut session_id = None;
    if let Some(r) = rest.strip_prefix('/') {
        let end = r.find(';')?;
        let id = &r[..end];
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| is_unreserved(b) || matches!(b, b'+' | b'=' | b'/'))
        {
            return None;
        }
        session_id = Some(id.to_owned());
        rest = &r[end..];
    }
    let mut items = rest.strip_prefix(';')?.split(';');
    let transport = items.next()?;
    if transport.is_empty() || !transport.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut params = Vec::new();
    for item in items {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        let token = |t: &str| !t.is_empty() && t.bytes().all(is_token_char);
        if !token(name) || !value.is_none_or(token) {
            return None;
        }
        params.push((name.to_owned(), value.map(str::to_owned)));
    }
    Some(MsrpUri {
        scheme: scheme.to_owned(),
        userinfo,
        host,
        port,
        session_id,
        transport: transport.to_owned(),
        params,
    })
}

fn parse_hostport(s: &str) -> Option<(Host, Option<u16>)> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (v6, after) = r.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (Host::Ipv6(v6.to_owned()), port)
    } else {
        let (h, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if h.is_empty() || !pct_ok(h, |b| is_unreserved(b) || (is_sub_delim(b) && b != b';')) {
            return None;
        }
        let host = if is_ipv4(h) {
            Host::Ipv4(h.to_owned())
        } else {
            Host::Name(h.to_owned())
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> MsrpUri {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rfc_uris_round_trip() {
        for s in [
            "msrp://atlanta.example.com:7654/jshA7weztas;tcp",
            "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
            "msrps://alice@intra.example.com;tcp",
            "msrps://relay.example.net:2855/aa8ui9;tcp",
            "msrp://192.0.2.1:2855/s1;tcp;foo=bar;baz",
            "msrp://[2001:db8::1]:7777/a+b=c/d;tcp",
            "MSRP://Host.Example.COM:1/X;TCP",
        ] {
            assert_eq!(uri(s).to_string(), s);
        }
        let u = uri("msrps://bob%20x:pw@[::1]:9/id;tcp;p=1");
        assert_eq!(u.userinfo(), Some("bob%20x:pw"));
        assert_eq!(u.host(), &Host::Ipv6("::1".into()));
        assert_eq!(u.port(), Some(9));
        assert_eq!(u.session_id(), Some("id"));
        assert!(u.is_secure());
        assert_eq!(u.params(), &[("p".to_owned(), Some("1".to_owned()))]);
        assert_eq!(
            uri("msrp://10.0.0.1;tcp").host(),
            &Host::Ipv4("10.0.0.1".into())
        );
        assert_eq!(
            uri("msrp://10.0.0.1.5;tcp").host(),
            &Host::Name("10.0.0.1.5".into())
        );
    }

    #[test]
    fn malformed_uris_are_400() {
        for s in [
            "",
            "sip:alice@example.com",
            "msrp:host:1/x;tcp",
            "msrp://host:1/x",
            "msrp://host:1/x;",
            "msrp://:1/x;tcp",
            "msrp://host:/x;tcp",
            "msrp://host:99999/x;tcp",
            "msrp://host:1/;tcp",
            "msrp://host:1/a b;tcp",
            "msrp://[::g]:1/x;tcp",
            "msrp://[::1:1/x;tcp",
            "msrp://host:1/x;t-p",
            "msrp://host:1/x;tcp;=v",
            "msrp://host:1/x;tcp;a=",
            "msrp://ho%zzst/x;tcp",
            "msrp://host%4/x;tcp",
            "msrp://a@b@c/x;tcp",
        ] {
            let e = s.parse::<MsrpUri>().unwrap_err();
            assert_eq!(e.status(), 400, "{s}");
        }
    }

    #[test]
    fn comparison_follows_section_6_1() {
        let a = uri("msrp://alice@Atlanta.Example.com:7654/jshA7weztas;tcp");
        assert!(a.equivalent(&uri("MSRP://atlanta.example.COM:7654/jshA7weztas;TCP;x=y")));
        assert!(a.equivalent(&uri("msrp://bob@atlanta.example.com:7654/jshA7weztas;tcp")));
        // Session-ids are case-sensitive; ports and schemes must match.
        assert!(!a.equivalent(&uri("msrp://atlanta.example.com:7654/JSHA7WEZTAS;tcp")));
        assert!(!a.equivalent(&uri("msrp://atlanta.example.com:7655/jshA7weztas;tcp")));
        assert!(!a.equivalent(&uri("msrp://atlanta.example.com/jshA7weztas;tcp")));
        assert!(!a.equivalent(&uri("msrps://atlanta.example.com:7654/jshA7weztas;tcp")));
        assert!(!a.equivalent(&uri("msrp://atlanta.example.com:7654/jshA7weztas;sctp")));
        assert!(uri("msrp://[::1]:1/x;tcp").equivalent(&uri("msrp://[0:0::0:1]:1/x;tcp")));
        assert!(!uri("msrp://127.0.0.1:1/x;tcp").equivalent(&uri("msrp://localhost:1/x;tcp")));
    }

    #[test]
    fn new_builds_our_own_uris() {
        let u = MsrpUri::new(false, "::1", 2855, "s1").unwrap();
        assert_eq!(u.to_string(), "msrp://[::1]:2855/s1;tcp");
        let u = MsrpUri::new(true, "relay.example.com", 1, "a/b").unwrap();
        assert_eq!(u.to_string(), "msrps://relay.example.com:1/a/b;tcp");
        assert!(MsrpUri::new(false, "h", 1, "bad id").is_err());
    }
}
