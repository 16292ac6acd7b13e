//! The typed view of an MSRP media description (RFC 4975 section 8, RFC 6135, RFC 5547).
//!
//! ```text
//! m=message <port> TCP/MSRP *            ; or TCP/TLS/MSRP (RFC 4975 section 8.1)
//! a=path:<MSRP-URI> *(SP <MSRP-URI>)     ; required (RFC 4975 section 8.2)
//! a=accept-types:<format-list>           ; required (RFC 4975 section 8.6), may be "*"
//! a=accept-wrapped-types:<format-list>
//! a=max-size:<1*DIGIT>
//! a=setup:active|passive|actpass|holdconn  ; RFC 4145 section 4, RFC 6135
//! a=sendrecv|sendonly|recvonly|inactive    ; RFC 4975 section 8.9
//! a=file-selector ... (RFC 5547)
//! ```

use core::net::IpAddr;

use cpm_msrp::MsrpUri;

use crate::error::SdpError;
use crate::file::{self, FileTransfer, single};
use crate::sdp::{Attribute, Connection, Media, Origin, Sdp, Timing, address_type};

/// `a=setup` (RFC 4145 section 4): which end opens the TCP connection.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Setup {
    /// This end connects.
    Active,
    /// This end accepts.
    Passive,
    /// Either; only in an offer, the answer picks (RFC 4145 section 4.1).
    ActPass,
    /// Neither for now (RFC 4145). RFC 6135 section 4.2.1: an MSRP UA never sends it and treats
    /// a received one as an absent `a=setup`; [`crate::offer_answer`] does so.
    HoldConn,
}

impl Setup {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::ActPass => "actpass",
            Self::HoldConn => "holdconn",
        }
    }

    /// Parses an attribute value (ASCII case ignored).
    pub fn parse(v: &str) -> Result<Self, SdpError> {
        [Self::Active, Self::Passive, Self::ActPass, Self::HoldConn]
            .into_iter()
            .find(|s| v.trim().eq_ignore_ascii_case(s.as_str()))
            .ok_or_else(|| SdpError::syntax("bad a=setup"))
    }
}

/// The direction attributes (RFC 8866 section 6.7; RFC 4975 section 8.9 for what they mean
/// to MSRP: who may SEND).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub enum Direction {
    /// `a=sendrecv`, the default when none is given (RFC 8866 section 6.7.3).
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction an answer gives to an offer of this one (RFC 3264 section 6.1):
    /// sendonly becomes recvonly and the other way round.
    pub fn reverse(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            d => d,
        }
    }

    fn from_attribute(a: &Attribute) -> Option<Self> {
        [
            Self::SendRecv,
            Self::SendOnly,
            Self::RecvOnly,
            Self::Inactive,
        ]
        .into_iter()
        .find(|d| a.is(d.as_str()))
    }
}

/// An MSRP media description, typed.
///
/// [`MsrpMedia::from_media`] reads one, [`MsrpMedia::to_media`] writes one back; the pair
/// round-trips the fields here. A media line's `i=`, `b=` and `k=` lines are not kept.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct MsrpMedia {
    /// The m-line port. RFC 4975 section 8.1 makes `a=path` the address that counts; the port
    /// is what RFC 6714 (CEMA) middleboxes look at, and 9 (discard) for an active-only end
    /// (RFC 4145 section 4).
    pub port: u16,
    /// `TCP/TLS/MSRP` rather than `TCP/MSRP`.
    pub secure: bool,
    /// `a=path`: the URIs to reach this end, first hop first, its own URI last (RFC 4975
    /// section 8.2, RFC 4976 section 5).
    pub path: Vec<MsrpUri>,
    /// `a=accept-types`, in order (`*` accepts anything).
    pub accept_types: Vec<String>,
    /// `a=accept-wrapped-types`, in order.
    pub accept_wrapped_types: Vec<String>,
    /// `a=setup`, media level else session level; `None` when absent (see
    /// [`crate::offer_answer::connects`] for what absence means).
    pub setup: Option<Setup>,
    /// `a=max-size`: the largest message this end accepts, in octets.
    pub max_size: Option<u64>,
    /// Media level else session level; [`Direction::SendRecv`] when absent.
    pub direction: Direction,
    /// The RFC 5547 file this media transfers, when it has an `a=file-selector`.
    pub file: Option<FileTransfer>,
    /// The effective `c=` address (media level, else session level) when it is an IP literal;
    /// `None` for a domain name (RFC 5547's examples use one) or no `c=` at all.
    pub connection: Option<IpAddr>,
    /// Every other media attribute (`a=msrp-cema`, `a=connection`, `a=fingerprint`, ...), in
    /// order.
    pub other: Vec<Attribute>,
}

/// Whether a media line is MSRP: `m=message` over `TCP/MSRP` or `TCP/TLS/MSRP`.
fn msrp_proto(m: &Media) -> Option<bool> {
    if !m.kind.eq_ignore_ascii_case("message") {
        return None;
    }
    if m.proto.eq_ignore_ascii_case("TCP/MSRP") {
        Some(false)
    } else if m.proto.eq_ignore_ascii_case("TCP/TLS/MSRP") {
        Some(true)
    } else {
        None
    }
}

fn format_list(a: &Attribute, what: &'static str) -> Result<Vec<String>, SdpError> {
    let list: Vec<String> = a
        .value
        .as_deref()
        .unwrap_or("")
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err(SdpError::syntax(what));
    }
    Ok(list)
}

/// Media level, else session level, of a single-valued attribute.
fn layered<'a>(
    media: &'a [Attribute],
    session: &'a [Attribute],
    name: &str,
) -> Result<Option<&'a Attribute>, SdpError> {
    match single(media, name)? {
        Some(a) => Ok(Some(a)),
        None => single(session, name),
    }
}

fn direction_of(attrs: &[Attribute]) -> Result<Option<Direction>, SdpError> {
    let mut found = attrs.iter().filter_map(Direction::from_attribute);
    let first = found.next();
    if found.next().is_some() {
        return Err(SdpError::syntax("more than one direction attribute"));
    }
    Ok(first)
}

impl MsrpMedia {
    /// Reads an MSRP media description. `session_connection` is the session-level `c=`, used
    /// when the media has none.
    ///
    /// 488 ([`SdpError::status`]) when the media is not MSRP or lacks `a=path` or
    /// `a=accept-types`; 400 when an MSRP attribute does not parse (every `a=path` URI must).
    pub fn from_media(
        m: &Media,
        session_connection: Option<&Connection>,
    ) -> Result<Self, SdpError> {
        Self::from_media_in(m, session_connection, &[])
    }

    /// [`MsrpMedia::from_media`] with the session-level attributes, where `a=setup` and the
    /// direction may also sit (RFC 4145 section 4, RFC 8866 section 6.7).
    pub(crate) fn from_media_in(
        m: &Media,
        session_connection: Option<&Connection>,
        session_attrs: &[Attribute],
    ) -> Result<Self, SdpError> {
        let secure = msrp_proto(m).ok_or_else(|| SdpError::unusable("not an MSRP media line"))?;
        let attrs = &m.attributes;
        let path_attr = single(attrs, "path")?
            .ok_or_else(|| SdpError::unusable("MSRP media without a=path"))?;
        let path = format_list(path_attr, "empty a=path")?
            .iter()
            .map(|u| u.parse::<MsrpUri>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SdpError::syntax("bad MSRP URI in a=path"))?;
        let accept = single(attrs, "accept-types")?
            .ok_or_else(|| SdpError::unusable("MSRP media without a=accept-types"))?;
        let accept_types = format_list(accept, "empty a=accept-types")?;
        let accept_wrapped_types = match single(attrs, "accept-wrapped-types")? {
            Some(a) => format_list(a, "empty a=accept-wrapped-types")?,
            None => Vec::new(),
        };
        let setup = match layered(attrs, session_attrs, "setup")? {
            Some(a) => Some(Setup::parse(a.value.as_deref().unwrap_or(""))?),
            None => None,
        };
        let max_size = match single(attrs, "max-size")? {
            Some(a) => {
                let v = a.value.as_deref().unwrap_or("").trim();
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SdpError::syntax("bad a=max-size"));
                }
                Some(v.parse().map_err(|_| SdpError::syntax("bad a=max-size"))?)
            }
            None => None,
        };
        let direction = match direction_of(attrs)? {
            Some(d) => d,
            None => direction_of(session_attrs)?.unwrap_or_default(),
        };
        let file = file::from_attributes(attrs)?;
        let connection = match m.connection.as_ref().or(session_connection) {
            Some(c) => c.ip()?,
            None => None,
        };
        let known = |a: &Attribute| {
            [
                "path",
                "accept-types",
                "accept-wrapped-types",
                "setup",
                "max-size",
            ]
            .iter()
            .any(|n| a.is(n))
                || Direction::from_attribute(a).is_some()
                || (file.is_some() && file::is_file_attribute(a))
        };
        let other = attrs.iter().filter(|a| !known(a)).cloned().collect();
        Ok(Self {
            port: m.port,
            secure,
            path,
            accept_types,
            accept_wrapped_types,
            setup,
            max_size,
            direction,
            file,
            connection,
            other,
        })
    }

    /// Writes the media description: `m=message <port> TCP[/TLS]/MSRP *`, a media-level `c=`
    /// when [`MsrpMedia::connection`] is set, then `a=accept-types`, `a=accept-wrapped-types`,
    /// `a=path`, `a=setup`, `a=max-size`, the direction, the file attributes and the others.
    pub fn to_media(&self) -> Media {
        let proto = if self.secure {
            "TCP/TLS/MSRP"
        } else {
            "TCP/MSRP"
        };
        let mut m = Media::new("message", self.port, proto, &["*"]);
        m.connection = self.connection.map(Connection::from_ip);
        let a = &mut m.attributes;
        a.push(Attribute::new("accept-types", self.accept_types.join(" ")));
        if !self.accept_wrapped_types.is_empty() {
            a.push(Attribute::new(
                "accept-wrapped-types",
                self.accept_wrapped_types.join(" "),
            ));
        }
        let path: Vec<String> = self.path.iter().map(MsrpUri::to_string).collect();
        a.push(Attribute::new("path", path.join(" ")));
        if let Some(s) = self.setup {
            a.push(Attribute::new("setup", s.as_str()));
        }
        if let Some(n) = self.max_size {
            a.push(Attribute::new("max-size", n.to_string()));
        }
        a.push(Attribute::flag(self.direction.as_str()));
        if let Some(f) = &self.file {
            a.extend(f.to_attributes());
        }
        a.extend(self.other.iter().cloned());
        m
    }
}

impl Sdp {
    /// The first `m=message` line over `TCP/MSRP` or `TCP/TLS/MSRP`, typed, with its index in
    /// [`Sdp::media`] (what RFC 3264 matches the answer's m-lines on). `None` when there is
    /// none: answer that with 488, or treat the description as not an MSRP one.
    ///
    /// Session-level `c=`, `a=setup` and direction apply when the media has none.
    pub fn msrp(&self) -> Option<Result<(usize, MsrpMedia), SdpError>> {
        let i = self.media.iter().position(|m| msrp_proto(m).is_some())?;
        Some(
            MsrpMedia::from_media_in(&self.media[i], self.connection.as_ref(), &self.attributes)
                .map(|m| (i, m)),
        )
    }

    /// A whole description with one MSRP m-line: `o=<origin_user> <session_id>
    /// <session_version> IN IP4|IP6 <addr>`, `s=-`, `c=` at session level with `addr`, `t=0 0`.
    ///
    /// `media.connection` is not written (the session-level `c=` carries `addr`). An
    /// `origin_user` that is empty or holds whitespace becomes `-`.
    pub fn for_msrp(
        origin_user: &str,
        session_id: u64,
        session_version: u64,
        addr: IpAddr,
        media: &MsrpMedia,
    ) -> Self {
        let username =
            if origin_user.is_empty() || !origin_user.chars().all(|c| c.is_ascii_graphic()) {
                "-".to_owned()
            } else {
                origin_user.to_owned()
            };
        let mut m = media.to_media();
        m.connection = None;
        Self {
            origin: Origin {
                username,
                session_id: session_id.to_string(),
                session_version,
                address_type: address_type(addr).to_owned(),
                address: addr.to_string(),
            },
            session_name: "-".to_owned(),
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: Some(Connection::from_ip(addr)),
            bandwidths: Vec::new(),
            timing: vec![Timing::unbounded()],
            time_zones: None,
            key: None,
            attributes: Vec::new(),
            media: vec![m],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> MsrpUri {
        s.parse().unwrap()
    }

    fn sample() -> MsrpMedia {
        MsrpMedia {
            port: 2855,
            secure: false,
            path: vec![uri("msrp://192.0.2.1:2855/abc;tcp")],
            accept_types: vec![
                "message/cpim".into(),
                "application/im-iscomposing+xml".into(),
            ],
            accept_wrapped_types: vec!["text/plain".into(), "message/imdn+xml".into()],
            setup: Some(Setup::ActPass),
            max_size: Some(15728640),
            direction: Direction::SendRecv,
            file: None,
            connection: None,
            other: vec![Attribute::flag("msrp-cema")],
        }
    }

    fn media(attrs: &str) -> Media {
        let text = format!(
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=message 2855 TCP/MSRP *\r\n{attrs}"
        );
        Sdp::parse(text.as_bytes()).unwrap().media.remove(0)
    }

    #[test]
    fn to_media_from_media_round_trip() {
        let m = sample();
        assert_eq!(MsrpMedia::from_media(&m.to_media(), None).unwrap(), m);
        let mut secure = m;
        secure.secure = true;
        secure.path = vec![uri("msrps://[2001:db8::1]:2855/abc;tcp")];
        secure.connection = Some("2001:db8::1".parse().unwrap());
        secure.setup = None;
        secure.direction = Direction::Inactive;
        let media = secure.to_media();
        assert_eq!(media.proto, "TCP/TLS/MSRP");
        assert_eq!(media.connection.as_ref().unwrap().address_type, "IP6");
        assert_eq!(MsrpMedia::from_media(&media, None).unwrap(), secure);
    }

    #[test]
    fn writes_the_attributes_in_a_fixed_order() {
        let names: Vec<String> = sample()
            .to_media()
            .attributes
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(
            names,
            [
                "accept-types",
                "accept-wrapped-types",
                "path",
                "setup",
                "max-size",
                "sendrecv",
                "msrp-cema"
            ]
        );
    }

    #[test]
    fn path_with_a_relay_keeps_its_order() {
        let m = media(
            "a=accept-types:*\r\na=path:msrps://relay.example.com:2855/r1;tcp \
             msrps://alice.example.com:7777/iau39;tcp\r\n",
        );
        let mm = MsrpMedia::from_media(&m, None).unwrap();
        assert_eq!(mm.path.len(), 2);
        assert_eq!(mm.path[1].session_id(), Some("iau39"));
        assert_eq!(mm.accept_types, vec!["*"]);
        assert_eq!(mm.setup, None);
        assert_eq!(mm.direction, Direction::SendRecv);
    }

    #[test]
    fn missing_required_attributes_are_488() {
        let no_path = media("a=accept-types:text/plain\r\n");
        assert_eq!(
            MsrpMedia::from_media(&no_path, None).unwrap_err().status(),
            488
        );
        let no_types = media("a=path:msrp://a.example.com:1/x;tcp\r\n");
        assert_eq!(
            MsrpMedia::from_media(&no_types, None).unwrap_err().status(),
            488
        );
        let mut audio = media("a=accept-types:*\r\na=path:msrp://a.example.com:1/x;tcp\r\n");
        audio.kind = "audio".into();
        assert_eq!(
            MsrpMedia::from_media(&audio, None).unwrap_err().status(),
            488
        );
    }

    #[test]
    fn malformed_msrp_attributes_are_400() {
        let ok = "a=accept-types:*\r\na=path:msrp://a.example.com:1/x;tcp\r\n";
        for extra in [
            "a=path:msrp://b.example.com:1/y;tcp\r\n",
            "a=setup:sometimes\r\n",
            "a=max-size:lots\r\n",
            "a=max-size:\r\n",
            "a=sendonly\r\na=recvonly\r\n",
            "a=accept-wrapped-types:\r\n",
            "a=file-selector:size:x\r\n",
        ] {
            let m = media(&format!("{ok}{extra}"));
            assert_eq!(
                MsrpMedia::from_media(&m, None).unwrap_err().status(),
                400,
                "{extra}"
            );
        }
        for bad in [
            "a=accept-types:*\r\na=path:http://a.example.com/x\r\n",
            "a=accept-types:*\r\na=path:\r\n",
            "a=accept-types:\r\na=path:msrp://a.example.com:1/x;tcp\r\n",
        ] {
            assert_eq!(
                MsrpMedia::from_media(&media(bad), None)
                    .unwrap_err()
                    .status(),
                400
            );
        }
    }

    #[test]
    fn connection_comes_from_media_else_session() {
        let m = media("a=accept-types:*\r\na=path:msrp://a.example.com:1/x;tcp\r\n");
        let session = Connection::from_ip("192.0.2.9".parse().unwrap());
        let mm = MsrpMedia::from_media(&m, Some(&session)).unwrap();
        assert_eq!(mm.connection, Some("192.0.2.9".parse().unwrap()));
        let mut with_own = m.clone();
        with_own.connection = Some(Connection::from_ip("2001:db8::2".parse().unwrap()));
        let mm = MsrpMedia::from_media(&with_own, Some(&session)).unwrap();
        assert_eq!(mm.connection, Some("2001:db8::2".parse().unwrap()));
        let name = Connection {
            address_type: "IP4".into(),
            address: "host.example.com".into(),
        };
        assert_eq!(
            MsrpMedia::from_media(&m, Some(&name)).unwrap().connection,
            None
        );
    }

    #[test]
    fn msrp_finds_the_first_msrp_line_and_session_attributes() {
        let text = "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.3\r\nt=0 0\r\n\
            a=setup:passive\r\na=recvonly\r\n\
            m=audio 4000 RTP/AVP 0\r\n\
            m=message 9 TCP/TLS/MSRP *\r\na=accept-types:text/plain\r\n\
            a=path:msrps://192.0.2.3:2855/s;tcp\r\n\
            m=message 10 TCP/MSRP *\r\n";
        let sdp = Sdp::parse(text.as_bytes()).unwrap();
        let (i, m) = sdp.msrp().unwrap().unwrap();
        assert_eq!(i, 1);
        assert!(m.secure);
        assert_eq!(m.setup, Some(Setup::Passive));
        assert_eq!(m.direction, Direction::RecvOnly);
        assert_eq!(m.connection, Some("192.0.2.3".parse().unwrap()));

        let none = Sdp::parse(b"v=0\no=- 1 1 IN IP4 a\ns=-\nt=0 0\nm=audio 1 RTP/AVP 0\n").unwrap();
        assert!(none.msrp().is_none());
        let broken =
            Sdp::parse(b"v=0\no=- 1 1 IN IP4 a\ns=-\nt=0 0\nm=message 1 TCP/MSRP *\n").unwrap();
        assert_eq!(broken.msrp().unwrap().unwrap_err().status(), 488);
    }

    #[test]
    fn for_msrp_builds_a_whole_description() {
        let mut m = sample();
        m.connection = Some("198.51.100.1".parse().unwrap());
        let sdp = Sdp::for_msrp("alice", 42, 7, "2001:db8::5".parse().unwrap(), &m);
        let text = String::from_utf8(sdp.to_bytes()).unwrap();
        assert!(text.starts_with(
            "v=0\r\no=alice 42 7 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
             m=message 2855 TCP/MSRP *\r\na=accept-types:"
        ));
        let again = Sdp::parse(text.as_bytes()).unwrap();
        assert_eq!(again, sdp);
        let (_, back) = again.msrp().unwrap().unwrap();
        m.connection = Some("2001:db8::5".parse().unwrap());
        assert_eq!(back, m);
        let anon = Sdp::for_msrp("a b", 1, 1, "192.0.2.1".parse().unwrap(), &m);
        assert_eq!(anon.origin.username, "-");
    }

    #[test]
    fn setup_and_direction_words() {
        for s in [
            Setup::Active,
            Setup::Passive,
            Setup::ActPass,
            Setup::HoldConn,
        ] {
            assert_eq!(Setup::parse(s.as_str()).unwrap(), s);
        }
        assert_eq!(Setup::parse("ACTPASS").unwrap(), Setup::ActPass);
        assert_eq!(Direction::SendOnly.reverse(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reverse(), Direction::SendOnly);
        assert_eq!(Direction::SendRecv.reverse(), Direction::SendRecv);
        assert_eq!(Direction::Inactive.reverse(), Direction::Inactive);
    }
}
