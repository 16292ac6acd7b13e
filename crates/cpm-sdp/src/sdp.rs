//! The session description itself (RFC 8866 section 5): lines parsed into values and written
//! back in the order of RFC 8866 section 9.
//!
//! ```text
//! session-description = version-field origin-field session-name-field
//!                       [information-field] [uri-field] *email-field *phone-field
//!                       [connection-field] *bandwidth-field 1*time-description
//!                       [key-field] *attribute-field *media-description
//! time-description    = time-field [*(CRLF repeat-field) [CRLF zone-adjustments]]
//! media-description   = media-field [information-field] *connection-field
//!                       *bandwidth-field [key-field] *attribute-field
//! ```
//!
//! The parser is tolerant where RFC 8866 section 5 asks receivers to be (LF alone ends a line)
//! and where deployed stacks are sloppy without harm (lines of one section in another order,
//! blank lines, an empty `s=`, an m-line without formats). It is strict about what decides
//! meaning: a type letter it does not know is refused (RFC 8866 section 5: "MUST completely
//! ignore or reject"), as is a repeated single-valued line.

use std::fmt::Write as _;

use crate::error::SdpError;

/// Largest description [`Sdp::parse`] accepts, in bytes.
pub const MAX_BYTES: usize = 64 * 1024;
/// Most lines [`Sdp::parse`] accepts.
pub const MAX_LINES: usize = 1024;
/// Most media descriptions (m-lines) [`Sdp::parse`] accepts.
pub const MAX_MEDIA: usize = 64;

/// A whole session description.
///
/// `v=` is not kept: version 0 is the only one (RFC 8866 section 5.1) and is always written.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Sdp {
    /// `o=`.
    pub origin: Origin,
    /// `s=`, as written (RFC 8866 recommends `-` or a single space when there is none; an
    /// empty one is accepted).
    pub session_name: String,
    /// `i=` at session level.
    pub information: Option<String>,
    /// `u=`.
    pub uri: Option<String>,
    /// `e=` lines, in order.
    pub emails: Vec<String>,
    /// `p=` lines, in order.
    pub phones: Vec<String>,
    /// `c=` at session level.
    pub connection: Option<Connection>,
    /// `b=` at session level, in order.
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` lines with their `r=` lines, in order; [`Sdp::parse`] requires at least one.
    /// [`Sdp::to_bytes`] writes `t=0 0` when this is empty, so keep one in descriptions you build
    /// if they must survive a round trip unchanged.
    pub timing: Vec<Timing>,
    /// `z=`, as written.
    pub time_zones: Option<String>,
    /// `k=` at session level, as written (obsolete, RFC 8866 section 5.12).
    pub key: Option<String>,
    /// `a=` at session level, in order.
    pub attributes: Vec<Attribute>,
    /// The media descriptions, in order (their index is what RFC 3264 matches on).
    pub media: Vec<Media>,
}

/// `o=<username> <sess-id> <sess-version> IN <addrtype> <unicast-address>` (RFC 8866 section
/// 5.2). The network type is always `IN`, the only one defined.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Origin {
    /// `-` when the host has no notion of user ids.
    pub username: String,
    /// Kept as text: RFC 8866 asks for digits, but the pair (username, sess-id, address) is only
    /// ever compared, and some stacks write other tokens.
    pub session_id: String,
    /// Must increase with every change of the description (RFC 3264 section 8).
    pub session_version: u64,
    /// `IP4` or `IP6`.
    pub address_type: String,
    /// An address or a domain name.
    pub address: String,
}

/// `c=IN <addrtype> <connection-address>` (RFC 8866 section 5.7).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Connection {
    /// `IP4` or `IP6` (other tokens are kept as written).
    pub address_type: String,
    /// As written: an address, a domain name, or a multicast address with `/ttl`.
    pub address: String,
}

impl Connection {
    /// The `c=` line for an IP address.
    pub fn from_ip(addr: core::net::IpAddr) -> Self {
        Self {
            address_type: address_type(addr).to_owned(),
            address: addr.to_string(),
        }
    }

    /// The address as an IP address, when it is a literal of the declared type (a domain name,
    /// a multicast `/ttl` suffix removed). `Err` when the literal contradicts the type
    /// (`IP4` with an IPv6 address).
    pub fn ip(&self) -> Result<Option<core::net::IpAddr>, SdpError> {
        let text = self.address.split('/').next().unwrap_or_default();
        let Ok(ip) = text.parse::<core::net::IpAddr>() else {
            return Ok(None);
        };
        let fits = if self.address_type.eq_ignore_ascii_case("IP4") {
            ip.is_ipv4()
        } else if self.address_type.eq_ignore_ascii_case("IP6") {
            ip.is_ipv6()
        } else {
            true
        };
        if fits {
            Ok(Some(ip))
        } else {
            Err(SdpError::syntax(
                "c= address does not match its address type",
            ))
        }
    }
}

/// `IP4` or `IP6` for an address.
pub(crate) fn address_type(addr: core::net::IpAddr) -> &'static str {
    if addr.is_ipv4() { "IP4" } else { "IP6" }
}

/// `b=<bwtype>:<bandwidth>` (RFC 8866 section 5.8).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Bandwidth {
    /// `CT`, `AS`, or an extension token.
    pub kind: String,
    /// Kilobits per second for `CT`/`AS`.
    pub value: u64,
}

/// `t=<start-time> <stop-time>` and the `r=` lines after it (RFC 8866 sections 5.9, 5.10).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Timing {
    /// NTP seconds; 0 for a session that is not bounded (the SIP case).
    pub start: u64,
    /// NTP seconds; 0 for unbounded.
    pub stop: u64,
    /// `r=` values, as written.
    pub repeats: Vec<String>,
}

impl Timing {
    /// `t=0 0`: a permanent session, what SIP offers use (RFC 3264 section 5).
    pub fn unbounded() -> Self {
        Self {
            start: 0,
            stop: 0,
            repeats: Vec::new(),
        }
    }
}

/// `a=<name>` or `a=<name>:<value>` (RFC 8866 section 5.13).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Attribute {
    /// The attribute name (a token).
    pub name: String,
    /// Everything after the first `:`, as written; `None` for a property attribute.
    pub value: Option<String>,
}

impl Attribute {
    /// A value attribute, `a=name:value`.
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            value: Some(value.into()),
        }
    }

    /// A property attribute, `a=name`.
    pub fn flag(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            value: None,
        }
    }

    /// Whether the name is `name` (ASCII case ignored).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// One media description: `m=<media> <port>[/<number of ports>] <proto> <fmt> ...` and the
/// lines after it (RFC 8866 section 5.14).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Media {
    /// `message` for MSRP, `audio`, ...
    pub kind: String,
    /// 0 marks a rejected or disabled stream (RFC 3264 section 6).
    pub port: u16,
    /// The `/<number of ports>` suffix, when written.
    pub port_count: Option<u16>,
    /// `TCP/MSRP`, `TCP/TLS/MSRP`, `RTP/AVP`, ...
    pub proto: String,
    /// The format list (`*` for MSRP, RFC 4975 section 8.1); may be empty.
    pub formats: Vec<String>,
    /// `i=` of this media.
    pub information: Option<String>,
    /// `c=` of this media (RFC 8866 allows several for layered multicast; this parser refuses
    /// more than one).
    pub connection: Option<Connection>,
    /// `b=` of this media, in order.
    pub bandwidths: Vec<Bandwidth>,
    /// `k=` of this media, as written.
    pub key: Option<String>,
    /// `a=` of this media, in order.
    pub attributes: Vec<Attribute>,
}

impl Media {
    /// A media description with only its m-line.
    pub fn new(kind: &str, port: u16, proto: &str, formats: &[&str]) -> Self {
        Self {
            kind: kind.to_owned(),
            port,
            port_count: None,
            proto: proto.to_owned(),
            formats: formats.iter().map(|f| (*f).to_owned()).collect(),
            information: None,
            connection: None,
            bandwidths: Vec::new(),
            key: None,
            attributes: Vec::new(),
        }
    }

    /// The first attribute called `name` (ASCII case ignored).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.is(name))
    }
}

impl Sdp {
    /// The first session-level attribute called `name` (ASCII case ignored).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.is(name))
    }

    /// Parses a session description. CRLF or LF line ends; bounded by [`MAX_BYTES`],
    /// [`MAX_LINES`] and [`MAX_MEDIA`]. Every failure is a 400 ([`SdpError::status`]).
    pub fn parse(text: &[u8]) -> Result<Self, SdpError> {
        if text.len() > MAX_BYTES {
            return Err(SdpError::too_large("SDP larger than 64 KiB"));
        }
        let text = std::str::from_utf8(text).map_err(|_| SdpError::syntax("SDP is not UTF-8"))?;
        if text.contains('\0') {
            return Err(SdpError::syntax("NUL in SDP"));
        }
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.split('\n').count() > MAX_LINES {
            return Err(SdpError::too_large("SDP has more than 1024 lines"));
        }
        let mut p = Parser::default();
        for (i, raw) in body.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            p.line(line).map_err(|e| e.at(i + 1))?;
        }
        p.finish()
    }

    /// Writes the description with CRLF line ends in RFC 8866 order. `Sdp::parse` of the result
    /// gives back an equal value (for any value with at least one [`Timing`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256);
        s.push_str("v=0\r\n");
        let o = &self.origin;
        line(
            &mut s,
            'o',
            format_args!(
                "{} {} {} IN {} {}",
                o.username, o.session_id, o.session_version, o.address_type, o.address
            ),
        );
        line(&mut s, 's', format_args!("{}", self.session_name));
        opt(&mut s, 'i', self.information.as_deref());
        opt(&mut s, 'u', self.uri.as_deref());
        for e in &self.emails {
            line(&mut s, 'e', format_args!("{e}"));
        }
        for p in &self.phones {
            line(&mut s, 'p', format_args!("{p}"));
        }
        connection(&mut s, self.connection.as_ref());
        bandwidths(&mut s, &self.bandwidths);
        if self.timing.is_empty() {
            s.push_str("t=0 0\r\n");
        }
        for t in &self.timing {
            line(&mut s, 't', format_args!("{} {}", t.start, t.stop));
            for r in &t.repeats {
                line(&mut s, 'r', format_args!("{r}"));
            }
        }
        opt(&mut s, 'z', self.time_zones.as_deref());
        opt(&mut s, 'k', self.key.as_deref());
        attributes(&mut s, &self.attributes);
        for m in &self.media {
            let _ = write!(s, "m={} {}", m.kind, m.port);
            if let Some(n) = m.port_count {
                let _ = write!(s, "/{n}");
            }
            let _ = write!(s, " {}", m.proto);
            for f in &m.formats {
                let _ = write!(s, " {f}");
            }
            s.push_str("\r\n");
            opt(&mut s, 'i', m.information.as_deref());
            connection(&mut s, m.connection.as_ref());
            bandwidths(&mut s, &m.bandwidths);
            opt(&mut s, 'k', m.key.as_deref());
            attributes(&mut s, &m.attributes);
        }
        s.into_bytes()
    }
}

fn line(s: &mut String, letter: char, value: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = write!(s, "{letter}={value}\r\n");
}

fn opt(s: &mut String, letter: char, value: Option<&str>) {
    if let Some(v) = value {
        line(s, letter, format_args!("{v}"));
    }
}

fn connection(s: &mut String, c: Option<&Connection>) {
    if let Some(c) = c {
        line(s, 'c', format_args!("IN {} {}", c.address_type, c.address));
    }
}

fn bandwidths(s: &mut String, bs: &[Bandwidth]) {
    for b in bs {
        line(s, 'b', format_args!("{}:{}", b.kind, b.value));
    }
}

fn attributes(s: &mut String, attrs: &[Attribute]) {
    for a in attrs {
        match &a.value {
            Some(v) => line(s, 'a', format_args!("{}:{v}", a.name)),
            None => line(s, 'a', format_args!("{}", a.name)),
        }
    }
}

/// RFC 8866 section 9 `token-char`.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`{|}~".contains(c)
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// The line-by-line state of [`Sdp::parse`].
#[derive(Default)]
struct Parser {
    seen_version: bool,
    origin: Option<Origin>,
    session_name: Option<String>,
    information: Option<String>,
    uri: Option<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    connection: Option<Connection>,
    bandwidths: Vec<Bandwidth>,
    timing: Vec<Timing>,
    time_zones: Option<String>,
    key: Option<String>,
    attributes: Vec<Attribute>,
    media: Vec<Media>,
}

/// Sets a single-valued field, refusing a second line of the same type.
fn once<T>(slot: &mut Option<T>, value: T, what: &'static str) -> Result<(), SdpError> {
    if slot.is_some() {
        return Err(SdpError::syntax(what));
    }
    *slot = Some(value);
    Ok(())
}

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), SdpError> {
        if line.is_empty() {
            // Blank lines are not SDP, but harmless; some stacks add one at the start or end.
            return Ok(());
        }
        if line.contains('\r') {
            return Err(SdpError::syntax("CR inside an SDP line"));
        }
        let mut chars = line.chars();
        let (Some(letter), Some('=')) = (chars.next(), chars.next()) else {
            return Err(SdpError::syntax("SDP line is not <type>=<value>"));
        };
        let value = chars.as_str();
        if !self.seen_version {
            // RFC 8866 section 5: the description starts with v=.
            if letter != 'v' {
                return Err(SdpError::syntax("SDP does not start with v="));
            }
            if value.trim() != "0" {
                return Err(SdpError::syntax("SDP version is not 0"));
            }
            self.seen_version = true;
            return Ok(());
        }
        if letter == 'm' {
            if self.media.len() == MAX_MEDIA {
                return Err(SdpError::too_large(
                    "SDP has more than 64 media descriptions",
                ));
            }
            self.media.push(parse_media(value)?);
            return Ok(());
        }
        if let Some(m) = self.media.last_mut() {
            return media_line(m, letter, value);
        }
        match letter {
            'o' => once(&mut self.origin, parse_origin(value)?, "repeated o= line"),
            's' => once(&mut self.session_name, value.to_owned(), "repeated s= line"),
            'i' => once(&mut self.information, value.to_owned(), "repeated i= line"),
            'u' => once(&mut self.uri, value.to_owned(), "repeated u= line"),
            'e' => {
                self.emails.push(value.to_owned());
                Ok(())
            }
            'p' => {
                self.phones.push(value.to_owned());
                Ok(())
            }
            'c' => once(
                &mut self.connection,
                parse_connection(value)?,
                "repeated session c= line",
            ),
            'b' => {
                self.bandwidths.push(parse_bandwidth(value)?);
                Ok(())
            }
            't' => {
                self.timing.push(parse_timing(value)?);
                Ok(())
            }
            'r' => {
                let Some(t) = self.timing.last_mut() else {
                    return Err(SdpError::syntax("r= line before any t= line"));
                };
                t.repeats.push(value.to_owned());
                Ok(())
            }
            'z' => once(&mut self.time_zones, value.to_owned(), "repeated z= line"),
            'k' => once(&mut self.key, value.to_owned(), "repeated k= line"),
            'a' => {
                self.attributes.push(parse_attribute(value)?);
                Ok(())
            }
            'v' => Err(SdpError::syntax("repeated v= line")),
            _ => Err(SdpError::syntax("unknown SDP line type")),
        }
    }

    fn finish(self) -> Result<Sdp, SdpError> {
        if !self.seen_version {
            return Err(SdpError::syntax("empty SDP"));
        }
        let Some(origin) = self.origin else {
            return Err(SdpError::syntax("SDP without o= line"));
        };
        let Some(session_name) = self.session_name else {
            return Err(SdpError::syntax("SDP without s= line"));
        };
        if self.timing.is_empty() {
            return Err(SdpError::syntax("SDP without t= line"));
        }
        Ok(Sdp {
            origin,
            session_name,
            information: self.information,
            uri: self.uri,
            emails: self.emails,
            phones: self.phones,
            connection: self.connection,
            bandwidths: self.bandwidths,
            timing: self.timing,
            time_zones: self.time_zones,
            key: self.key,
            attributes: self.attributes,
            media: self.media,
        })
    }
}

fn media_line(m: &mut Media, letter: char, value: &str) -> Result<(), SdpError> {
    match letter {
        'i' => once(
            &mut m.information,
            value.to_owned(),
            "repeated media i= line",
        ),
        'c' => once(
            &mut m.connection,
            parse_connection(value)?,
            "repeated media c= line",
        ),
        'b' => {
            m.bandwidths.push(parse_bandwidth(value)?);
            Ok(())
        }
        'k' => once(&mut m.key, value.to_owned(), "repeated media k= line"),
        'a' => {
            m.attributes.push(parse_attribute(value)?);
            Ok(())
        }
        _ => Err(SdpError::syntax(
            "line type not allowed in a media description",
        )),
    }
}

/// Splits on runs of spaces (RFC 8866 uses one SP; tabs and doubled spaces are tolerated).
fn fields(value: &str) -> Vec<&str> {
    value.split_ascii_whitespace().collect()
}

fn is_address(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic())
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
fn parse_origin(value: &str) -> Result<Origin, SdpError> {
    let bad = || SdpError::syntax("bad o= line");
    let [
        username,
        session_id,
        version,
        nettype,
        address_type,
        address,
    ] = fields(value)[..]
    else {
        return Err(bad());
    };
    if nettype != "IN" || !is_token(address_type) || !is_address(address) {
        return Err(bad());
    }
    let session_version = version.parse::<u64>().map_err(|_| bad())?;
    if !session_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Origin {
        username: username.to_owned(),
        session_id: session_id.to_owned(),
        session_version,
        address_type: address_type.to_owned(),
        address: address.to_owned(),
    })
}

/// `c=<nettype> <addrtype> <connection-address>`.
fn parse_connection(value: &str) -> Result<Connection, SdpError> {
    let [nettype, address_type, address] = fields(value)[..] else {
        return Err(SdpError::syntax("bad c= line"));
    };
    if nettype != "IN" || !is_token(address_type) || !is_address(address) {
        return Err(SdpError::syntax("bad c= line"));
    }
    let c = Connection {
        address_type: address_type.to_owned(),
        address: address.to_owned(),
    };
    // An address literal of the wrong family is an error now, not when the media is used.
    c.ip()?;
    Ok(c)
}

/// `b=<bwtype>:<bandwidth>`.
fn parse_bandwidth(value: &str) -> Result<Bandwidth, SdpError> {
    let bad = || SdpError::syntax("bad b= line");
    let (kind, n) = value.split_once(':').ok_or_else(bad)?;
    if !is_token(kind) || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(Bandwidth {
        kind: kind.to_owned(),
        value: n.parse().map_err(|_| bad())?,
    })
}

/// `t=<start-time> <stop-time>`.
fn parse_timing(value: &str) -> Result<Timing, SdpError> {
    let bad = || SdpError::syntax("bad t= line");
    let [start, stop] = fields(value)[..] else {
        return Err(bad());
    };
    Ok(Timing {
        start: start.parse().map_err(|_| bad())?,
        stop: stop.parse().map_err(|_| bad())?,
        repeats: Vec::new(),
    })
}

/// `a=<attribute-name>[:<attribute-value>]`.
fn parse_attribute(value: &str) -> Result<Attribute, SdpError> {
    let (name, value) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (value, None),
    };
    if !is_token(name) {
        return Err(SdpError::syntax("bad a= attribute name"));
    }
    Ok(Attribute {
        name: name.to_owned(),
        value,
    })
}

/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...`.
fn parse_media(value: &str) -> Result<Media, SdpError> {
    let bad = || SdpError::syntax("bad m= line");
    let f = fields(value);
    let [kind, port, proto, formats @ ..] = &f[..] else {
        return Err(bad());
    };
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (p, Some(n.parse::<u16>().map_err(|_| bad())?)),
        None => (*port, None),
    };
    if !is_token(kind)
        || !proto.split('/').all(is_token)
        || !formats
            .iter()
            .all(|f| f.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(bad());
    }
    Ok(Media {
        kind: (*kind).to_owned(),
        port: port.parse().map_err(|_| bad())?,
        port_count,
        proto: (*proto).to_owned(),
        formats: formats.iter().map(|f| (*f).to_owned()).collect(),
        information: None,
        connection: None,
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=alice 2890844526 2890844527 IN IP4 alice.example.com\r\n\
        s= -\r\n\
        c=IN IP4 192.0.2.1\r\n\
        t=0 0\r\n\
        m=message 7394 TCP/MSRP *\r\n\
        a=accept-types:message/cpim text/plain\r\n\
        a=path:msrp://192.0.2.1:7394/2s93i9ek2a;tcp\r\n";

    #[test]
    fn parses_the_lines_into_fields() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.origin.username, "alice");
        assert_eq!(sdp.origin.session_id, "2890844526");
        assert_eq!(sdp.origin.session_version, 2890844527);
        assert_eq!(sdp.origin.address, "alice.example.com");
        assert_eq!(sdp.session_name, " -");
        assert_eq!(sdp.connection.as_ref().unwrap().address, "192.0.2.1");
        assert_eq!(sdp.timing, vec![Timing::unbounded()]);
        let m = &sdp.media[0];
        assert_eq!(
            (m.kind.as_str(), m.port, m.proto.as_str()),
            ("message", 7394, "TCP/MSRP")
        );
        assert_eq!(m.formats, vec!["*"]);
        assert_eq!(
            m.attribute("accept-types").unwrap().value.as_deref(),
            Some("message/cpim text/plain")
        );
    }

    #[test]
    fn writes_back_the_same_bytes() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(sdp.to_bytes()).unwrap(), OFFER);
    }

    #[test]
    fn lf_only_and_missing_final_newline_are_accepted() {
        let lf = OFFER.replace("\r\n", "\n");
        let crlf = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(Sdp::parse(lf.as_bytes()).unwrap(), crlf);
        assert_eq!(Sdp::parse(lf.trim_end().as_bytes()).unwrap(), crlf);
        assert_eq!(Sdp::parse(OFFER.trim_end().as_bytes()).unwrap(), crlf);
    }

    #[test]
    fn every_line_type_survives_a_round_trip_in_rfc_order() {
        // Session lines given out of order; written back in RFC 8866 section 9 order.
        let text = "v=0\n\
            o=- 1 2 IN IP6 2001:db8::1\n\
            s=x\n\
            t=10 20\n\
            r=7d 1h 0 25h\n\
            c=IN IP6 2001:db8::1\n\
            i=info\n\
            u=http://example.com/\n\
            e=a@example.com\n\
            p=+1 555\n\
            b=AS:64\n\
            z=2882844526 -1h\n\
            k=prompt\n\
            a=tool:x\n\
            a=recvonly\n\
            m=audio 49170/2 RTP/AVP 0 8\n\
            a=rtpmap:0 PCMU/8000\n\
            c=IN IP4 192.0.2.7\n\
            b=CT:128\n\
            i=voice\n\
            k=clear:x\n\
            m=message 0 TCP/MSRP\n";
        let sdp = Sdp::parse(text.as_bytes()).unwrap();
        let out = String::from_utf8(sdp.to_bytes()).unwrap();
        assert!(out.starts_with(
            "v=0\r\no=- 1 2 IN IP6 2001:db8::1\r\ns=x\r\ni=info\r\nu=http://example.com/\r\n\
             e=a@example.com\r\np=+1 555\r\nc=IN IP6 2001:db8::1\r\nb=AS:64\r\nt=10 20\r\n\
             r=7d 1h 0 25h\r\nz=2882844526 -1h\r\nk=prompt\r\na=tool:x\r\na=recvonly\r\n\
             m=audio 49170/2 RTP/AVP 0 8\r\ni=voice\r\nc=IN IP4 192.0.2.7\r\nb=CT:128\r\n\
             k=clear:x\r\na=rtpmap:0 PCMU/8000\r\nm=message 0 TCP/MSRP\r\n"
        ));
        assert_eq!(Sdp::parse(&sdp.to_bytes()).unwrap(), sdp);
        assert_eq!(sdp.media[0].port_count, Some(2));
        assert!(sdp.media[1].formats.is_empty());
    }

    #[test]
    fn ipv6_connection_lines() {
        let text = OFFER.replace("c=IN IP4 192.0.2.1", "c=IN IP6 2001:db8::10");
        let sdp = Sdp::parse(text.as_bytes()).unwrap();
        let c = sdp.connection.unwrap();
        assert_eq!(c.address_type, "IP6");
        assert_eq!(c.ip().unwrap(), Some("2001:db8::10".parse().unwrap()));
        let wrong = OFFER.replace("c=IN IP4 192.0.2.1", "c=IN IP4 2001:db8::10");
        assert_eq!(Sdp::parse(wrong.as_bytes()).unwrap_err().status(), 400);
        let also_wrong = OFFER.replace("c=IN IP4 192.0.2.1", "c=IN IP6 192.0.2.1");
        assert_eq!(Sdp::parse(also_wrong.as_bytes()).unwrap_err().status(), 400);
    }

    #[test]
    fn connection_names_and_multicast_have_no_plain_ip() {
        let name = Connection {
            address_type: "IP4".into(),
            address: "host.example.com".into(),
        };
        assert_eq!(name.ip().unwrap(), None);
        let mc = Connection {
            address_type: "IP4".into(),
            address: "233.252.0.1/127".into(),
        };
        assert_eq!(mc.ip().unwrap(), Some("233.252.0.1".parse().unwrap()));
    }

    fn err(text: &str) -> SdpError {
        Sdp::parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn malformed_descriptions_are_400_with_the_line() {
        let base = "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\n";
        for (text, line) in [
            ("", None),
            ("o=- 1 1 IN IP4 a\r\n", Some(1)),
            ("v=1\r\n", Some(1)),
            ("v=0\r\ns=-\r\nt=0 0\r\n", None),
            ("v=0\r\no=- 1 1 IN IP4 a\r\nt=0 0\r\n", None),
            ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\n", None),
            (&format!("{base}x=1\r\n"), Some(5)),
            (&format!("{base}v=0\r\n"), Some(5)),
            (&format!("{base}o=- 1 1 IN IP4 a\r\n"), Some(5)),
            ("v=0\r\no=- 1 x IN IP4 a\r\ns=-\r\nt=0 0\r\n", Some(2)),
            ("v=0\r\no=- 1 1 ATM IP4 a\r\ns=-\r\nt=0 0\r\n", Some(2)),
            ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\nt=0 0\r\n", Some(2)),
            (&format!("{base}c=IN IP4\r\n"), Some(5)),
            (&format!("{base}b=AS\r\n"), Some(5)),
            (&format!("{base}b=AS:x\r\n"), Some(5)),
            (
                "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nr=1\r\nt=0 0\r\n",
                Some(4),
            ),
            ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0\r\n", Some(4)),
            (&format!("{base}a=\r\n"), Some(5)),
            (&format!("{base}a=bad name:x\r\n"), Some(5)),
            (&format!("{base}m=message\r\n"), Some(5)),
            (&format!("{base}m=message 70000 TCP/MSRP *\r\n"), Some(5)),
            (&format!("{base}m=message 1 TCP/MSRP *\r\ne=x\r\n"), Some(6)),
            (
                &format!("{base}m=message 1 TCP/MSRP *\r\nt=0 0\r\n"),
                Some(6),
            ),
            (
                &format!("{base}m=message 1 TCP/MSRP *\r\nc=IN IP4 a\r\nc=IN IP4 b\r\n"),
                Some(7),
            ),
            (&format!("{base}a=x:y\rz\r\n"), Some(5)),
            (&format!("{base}a=x\0\r\n"), None),
            ("v = 0\r\n", Some(1)),
        ] {
            let e = err(text);
            assert_eq!(e.status(), 400, "{text:?}: {e}");
            assert_eq!(e.line(), line, "{text:?}: {e}");
        }
        assert_eq!(Sdp::parse(&[0xff, 0xfe]).unwrap_err().status(), 400);
    }

    #[test]
    fn limits() {
        let base = "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\n";
        let big = format!("{base}a=x:{}\r\n", "y".repeat(MAX_BYTES));
        assert_eq!(err(&big).kind(), crate::SdpErrorKind::TooLarge);

        let lines = |n: usize| format!("{base}{}", "a=x\r\n".repeat(n));
        assert!(Sdp::parse(lines(MAX_LINES - 4).as_bytes()).is_ok());
        assert_eq!(
            err(&lines(MAX_LINES - 3)).kind(),
            crate::SdpErrorKind::TooLarge
        );

        let media = |n: usize| format!("{base}{}", "m=message 9 TCP/MSRP *\r\n".repeat(n));
        assert_eq!(
            Sdp::parse(media(MAX_MEDIA).as_bytes()).unwrap().media.len(),
            MAX_MEDIA
        );
        let e = err(&media(MAX_MEDIA + 1));
        assert_eq!((e.kind(), e.status()), (crate::SdpErrorKind::TooLarge, 400));
    }

    #[test]
    fn blank_lines_and_doubled_spaces_are_tolerated() {
        let text =
            "\r\nv=0\r\no=-  1 1 IN IP4 a\r\n\r\ns=-\r\nt=0  0\r\nm=message 9  TCP/MSRP *\r\n\r\n";
        let sdp = Sdp::parse(text.as_bytes()).unwrap();
        assert_eq!(sdp.origin.session_id, "1");
        assert_eq!(sdp.media[0].proto, "TCP/MSRP");
    }

    #[test]
    fn empty_session_name_is_kept() {
        let sdp = Sdp::parse(b"v=0\no=- 1 1 IN IP4 a\ns=\nt=0 0\n").unwrap();
        assert_eq!(sdp.session_name, "");
        assert_eq!(Sdp::parse(&sdp.to_bytes()).unwrap(), sdp);
    }

    #[test]
    fn attribute_values_keep_colons_and_spaces() {
        let sdp = Sdp::parse(b"v=0\no=- 1 1 IN IP4 a\ns=-\nt=0 0\na=x:a:b c \na=flag\n").unwrap();
        assert_eq!(sdp.attributes[0], Attribute::new("x", "a:b c "));
        assert_eq!(sdp.attributes[1], Attribute::flag("flag"));
        assert!(sdp.attribute("FLAG").is_some());
    }

    #[test]
    fn empty_timing_is_written_as_unbounded() {
        let mut sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        sdp.timing.clear();
        let again = Sdp::parse(&sdp.to_bytes()).unwrap();
        assert_eq!(again.timing, vec![Timing::unbounded()]);
    }
}
