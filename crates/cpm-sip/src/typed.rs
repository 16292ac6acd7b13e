//! Typed header values: the headers a proxy and the CPM functions read.
//!
//! Each type parses an unfolded header value with the grammar of RFC 3261 section 25.1 (and the
//! RFC that defines the header), and prints back a value that parses to the same thing. The
//! accessors on [`Headers`] return `Result<Option<T>, HeaderError>` (absent is not an error; a
//! single-valued header that appears twice is).

use std::fmt;

use crate::error::HeaderError;
use crate::header::{Header, HeaderName, Headers, static_name};
use crate::method::Method;
use crate::scan::{ByteClass, Cursor, is_word, is_wsp, split_once_byte, trim_wsp, unquote};
use crate::uri::{Host, HostRef, Param, Uri, UriRef, find_param, parse_host, write_params};

/// `gen-value = token / host / quoted-string` (the `host` alternative brings `:` `[` `]`, for
/// IPv6 `received` values with or without brackets, RFC 5118 section 4.5).
fn is_gen_value(b: u8) -> bool {
    GEN_VALUE.contains(b)
}

/// The table behind [`is_gen_value`] (parameter values are read in every Via, From, To...).
static GEN_VALUE: ByteClass = ByteClass::new(true, b"-.!%*_+`'~:[]");

/// The parameter callback of a check that builds nothing (ingress validation).
fn skip_param(_: &str, _: Option<&str>) {}

/// `*( SEMI generic-param )`, `generic-param = token [ EQUAL gen-value ]`: checks each
/// parameter and hands it to `each` as written (a quoted value with its quotes); `None` at the
/// first malformed one. Callers that only validate pass [`skip_param`] and allocate nothing.
fn scan_params<'a>(
    c: &mut Cursor<'a>,
    mut each: impl FnMut(&'a str, Option<&'a str>),
) -> Option<()> {
    while c.sep(b';') {
        let name = c.token()?;
        let value = if c.sep(b'=') {
            if c.peek() == Some(b'"') {
                Some(c.quoted_string()?)
            } else {
                let v = c.take_while(is_gen_value);
                if v.is_empty() {
                    return None;
                }
                Some(v)
            }
        } else {
            None
        };
        each(name, value);
    }
    Some(())
}

/// `*( SEMI generic-param )` as owned parameters.
fn parse_params(c: &mut Cursor<'_>) -> Option<Vec<Param>> {
    let mut params = Vec::new();
    scan_params(c, |name, value| params.push(Param::new(name, value)))?;
    Some(params)
}

/// Checks `item *(COMMA item)` over the whole value, calling `item` at the start of each
/// element; what `item` returns is dropped (callers that keep it push it from `item`).
fn scan_list<'a, T>(
    value: &'a str,
    mut item: impl FnMut(&mut Cursor<'a>) -> Option<T>,
) -> Option<()> {
    let mut c = Cursor::new(value);
    loop {
        c.sws();
        item(&mut c)?;
        c.sws();
        if c.is_empty() {
            return Some(());
        }
        if !c.eat(b',') {
            return None;
        }
    }
}

/// Parses `item *(COMMA item)` over the whole value.
fn parse_list<'a, T>(
    value: &'a str,
    mut item: impl FnMut(&mut Cursor<'a>) -> Option<T>,
) -> Option<Vec<T>> {
    let mut out = Vec::new();
    scan_list(value, |c| item(c).map(|v| out.push(v)))?;
    Some(out)
}

/// Parses exactly one item filling the whole value.
fn parse_one<'a, T>(value: &'a str, item: impl FnOnce(&mut Cursor<'a>) -> Option<T>) -> Option<T> {
    let mut c = Cursor::new(value);
    c.sws();
    let v = item(&mut c)?;
    c.sws();
    c.is_empty().then_some(v)
}

/// A `Via` value (RFC 3261 section 20.42):
/// `sent-protocol LWS sent-by *( SEMI via-params )`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Via {
    /// `protocol-name`, normally `SIP`.
    pub protocol: String,
    /// `protocol-version`, normally `2.0`.
    pub version: String,
    /// `transport`: `UDP`, `TCP`, `TLS`, `SCTP`, `WS`... or any token.
    pub transport: String,
    /// `sent-by` host.
    pub host: Host,
    /// `sent-by` port.
    pub port: Option<u16>,
    /// `via-params`, in order.
    pub params: Vec<Param>,
}

/// A `via-parm` checked against the grammar, its components still slices of the value.
struct ViaRef<'a> {
    protocol: &'a str,
    version: &'a str,
    transport: &'a str,
    host: HostRef<'a>,
    port: Option<u16>,
}

impl<'a> ViaRef<'a> {
    /// `sent-protocol LWS sent-by *( SEMI via-params )` at the cursor; each parameter goes to
    /// `each_param`.
    fn parse(c: &mut Cursor<'a>, each_param: impl FnMut(&'a str, Option<&'a str>)) -> Option<Self> {
        let protocol = c.token()?;
        if !c.sep(b'/') {
            return None;
        }
        let version = c.token()?;
        if !c.sep(b'/') {
            return None;
        }
        let transport = c.token()?;
        if !c.lws() {
            return None;
        }
        let (host, rest) = parse_host(c.rest()).ok()?;
        c.set_pos(c.pos() + (c.rest().len() - rest.len()));
        let port = if c.sep(b':') {
            let digits = c.take_while(|b| b.is_ascii_digit());
            if digits.is_empty() || digits.len() > 5 {
                return None;
            }
            Some(digits.parse().ok()?)
        } else {
            None
        };
        scan_params(c, each_param)?;
        Some(Self {
            protocol,
            version,
            transport,
            host,
            port,
        })
    }
}

impl Via {
    fn parse_item(c: &mut Cursor<'_>) -> Option<Self> {
        let mut params = Vec::new();
        let v = ViaRef::parse(c, |name, value| params.push(Param::new(name, value)))?;
        Some(Self {
            protocol: v.protocol.to_owned(),
            version: v.version.to_owned(),
            transport: v.transport.to_owned(),
            host: v.host.to_host(),
            port: v.port,
            params,
        })
    }

    /// Parses a `Via` header value (one or more comma-separated via-parms).
    pub fn parse_list(value: &str) -> Option<Vec<Self>> {
        parse_list(value, Self::parse_item)
    }

    /// A named via parameter.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `branch` parameter (RFC 3261 section 8.1.1.7).
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&str> {
        self.param("received").and_then(|p| p.value.as_deref())
    }

    /// The `rport` parameter (RFC 3581): `Some(None)` when present without a value.
    pub fn rport(&self) -> Option<Option<&str>> {
        self.param("rport").map(|p| p.value.as_deref())
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol, self.version, self.transport, self.host
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)
    }
}

/// `name-addr / addr-spec` with header parameters: the value of From, To, Contact, Route,
/// Record-Route, P-Asserted-Identity, Path, Service-Route (RFC 3261 section 20, RFC 3325).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct NameAddr {
    /// The display name as written: a `quoted-string` with its quotes, or `*(token LWS)`.
    pub display_name: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Whether the URI was in `<>` (name-addr form). Always printed with brackets.
    pub bracketed: bool,
    /// Header parameters after the address (`tag`, `expires`, `q`, feature tags...).
    pub params: Vec<Param>,
}

/// A `name-addr / addr-spec` checked against the grammar, its components still slices of the
/// value.
struct NameAddrRef<'a> {
    display_name: Option<&'a str>,
    uri: UriRef<'a>,
    bracketed: bool,
}

impl<'a> NameAddrRef<'a> {
    /// One address at the cursor, its header parameters going to `each_param`.
    /// `allow_addr_spec`: whether the bare URI form is allowed (see [`NameAddr::parse_item`]).
    fn parse(
        c: &mut Cursor<'a>,
        allow_addr_spec: bool,
        each_param: impl FnMut(&'a str, Option<&'a str>),
    ) -> Option<Self> {
        let start = c.pos();
        let mut display_name = None;
        if c.peek() == Some(b'"') {
            display_name = Some(c.quoted_string()?);
            c.sws();
        } else if c.peek() != Some(b'<') {
            // Either `*(token LWS) "<"` (a display name) or an addr-spec. Display names of
            // tokens may touch the '<' (RFC 4475 section 3.1.1.6 accepts `caller<sip:...>`).
            while c.token().is_some() {
                let end = c.pos();
                c.sws();
                if c.peek() == Some(b'<') {
                    display_name = Some(c.slice(start, end));
                    break;
                }
            }
            if display_name.is_none() {
                return Self::parse_addr_spec(c, start, allow_addr_spec, each_param);
            }
        }
        // LAQUOT addr-spec RAQUOT: no whitespace inside the brackets (RFC 4475 section 3.1.2.14).
        if !c.eat(b'<') {
            return None;
        }
        let uri_text = c.take_while(|b| b != b'>');
        if !c.eat(b'>') {
            return None;
        }
        let uri = UriRef::parse(uri_text).ok()?;
        scan_params(c, each_param)?;
        Some(Self {
            display_name,
            uri,
            bracketed: true,
        })
    }

    fn parse_addr_spec(
        c: &mut Cursor<'a>,
        start: usize,
        allowed: bool,
        each_param: impl FnMut(&'a str, Option<&'a str>),
    ) -> Option<Self> {
        if !allowed {
            return None;
        }
        // Rewind to the start of the address: the URI runs to the first ';', ',' or
        // whitespace. A URI holding ',', ';' or '?' must be in <> (RFC 3261 section 20.10).
        c.set_pos(start);
        let text = c.take_while(|b| !matches!(b, b';' | b',' | b' ' | b'\t'));
        if text.is_empty() || text.bytes().any(|b| matches!(b, b'?' | b'<' | b'>' | b'"')) {
            return None;
        }
        let uri = UriRef::parse(text).ok()?;
        scan_params(c, each_param)?;
        Some(Self {
            display_name: None,
            uri,
            bracketed: false,
        })
    }
}

impl NameAddr {
    /// `<uri>` with no display name and no parameters.
    pub fn new(uri: Uri) -> Self {
        Self {
            display_name: None,
            uri,
            bracketed: true,
            params: Vec::new(),
        }
    }

    /// Parses one address at the cursor. `allow_addr_spec`: whether the bare URI form is
    /// allowed (From/To/Contact/P-Asserted-Identity), not in Route/Record-Route.
    pub(crate) fn parse_item(c: &mut Cursor<'_>, allow_addr_spec: bool) -> Option<Self> {
        let mut params = Vec::new();
        let a = NameAddrRef::parse(c, allow_addr_spec, |name, value| {
            params.push(Param::new(name, value));
        })?;
        Some(Self {
            display_name: a.display_name.map(str::to_owned),
            uri: a.uri.to_uri(),
            bracketed: a.bracketed,
            params,
        })
    }

    /// Parses a single address (From, To).
    pub fn parse(value: &str) -> Option<Self> {
        parse_one(value, |c| Self::parse_item(c, true))
    }

    /// Parses a comma-separated list (Contact, P-Asserted-Identity with `allow_addr_spec`;
    /// Route, Record-Route, Path, Service-Route without).
    pub fn parse_list(value: &str, allow_addr_spec: bool) -> Option<Vec<Self>> {
        parse_list(value, |c| Self::parse_item(c, allow_addr_spec))
    }

    /// A named header parameter.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `tag` parameter (From/To, RFC 3261 section 19.3).
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(|p| p.value.as_deref())
    }

    /// The display name without quotes and escapes.
    pub fn display_name_text(&self) -> Option<String> {
        self.display_name
            .as_deref()
            .map(|d| unquote(d).into_owned())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// A Contact header value: `*` or a list of addresses (RFC 3261 section 20.10).
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Contact {
    /// `Contact: *` (remove all bindings, REGISTER only).
    Wildcard,
    /// One or more addresses with their parameters (`expires`, `q`, `+sip.instance`...).
    Addresses(Vec<NameAddr>),
}

impl Contact {
    /// Parses a Contact value.
    pub fn parse(value: &str) -> Option<Self> {
        if is_contact_wildcard(value) {
            return Some(Self::Wildcard);
        }
        NameAddr::parse_list(value, true).map(Self::Addresses)
    }

    /// Whether `value` parses as a Contact value, without building it.
    fn is_valid(value: &str) -> bool {
        is_contact_wildcard(value)
            || scan_list(value, |c| NameAddrRef::parse(c, true, skip_param)).is_some()
    }
}

/// `Contact: *` (surrounding whitespace allowed).
fn is_contact_wildcard(value: &str) -> bool {
    trim_wsp(value) == "*"
}

/// A CSeq value: `1*DIGIT LWS Method` (RFC 3261 section 20.16); the number is at most 2^32-1.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value.
    pub fn parse(value: &str) -> Option<Self> {
        parse_one(value, |c| {
            let (seq, method) = cseq_parts(c)?;
            let method = Method::parse(method)?;
            Some(Self { seq, method })
        })
    }
}

/// `1*DIGIT LWS Method` at the cursor: the number and the method token. Every `token` is a
/// `Method` (`extension-method = token`), so this accepts exactly what [`CSeq::parse`] does.
fn cseq_parts<'a>(c: &mut Cursor<'a>) -> Option<(u32, &'a str)> {
    let seq = parse_u32(c.take_while(|b| b.is_ascii_digit()))?;
    if !c.lws() {
        return None;
    }
    Some((seq, c.token()?))
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// `1*DIGIT` as a u32 without overflow: leading zeros are fine, values above 2^32-1 are not.
fn parse_u32(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A `Call-ID`: `word [ "@" word ]` (RFC 3261 section 20.8).
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct CallId(pub String);

impl CallId {
    /// Parses a Call-ID value.
    pub fn parse(value: &str) -> Option<Self> {
        call_id_text(value).map(|v| Self(v.to_owned()))
    }
}

/// The Call-ID without surrounding whitespace, if it is `word [ "@" word ]`.
fn call_id_text(value: &str) -> Option<&str> {
    let v = trim_wsp(value);
    let (a, b) = match split_once_byte(v, b'@') {
        Some((a, b)) => (a, Some(b)),
        None => (v, None),
    };
    let word = |w: &str| !w.is_empty() && w.bytes().all(is_word);
    (word(a) && b.is_none_or(word)).then_some(v)
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A media type: `m-type SLASH m-subtype *(SEMI m-parameter)` (Content-Type, RFC 3261
/// section 20.15).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct MediaType {
    /// The type (`application`).
    pub ty: String,
    /// The subtype (`sdp`).
    pub subtype: String,
    /// Parameters (`charset=utf-8`, `boundary="..."`).
    pub params: Vec<Param>,
}

impl MediaType {
    /// Parses a media type.
    pub fn parse(value: &str) -> Option<Self> {
        parse_one(value, |c| {
            let mut params = Vec::new();
            let (ty, subtype) =
                media_type_parts(c, |name, value| params.push(Param::new(name, value)))?;
            Some(Self {
                ty: ty.to_owned(),
                subtype: subtype.to_owned(),
                params,
            })
        })
    }

    /// Whether this is `ty/subtype` (case-insensitive).
    pub fn is(&self, ty: &str, subtype: &str) -> bool {
        self.ty.eq_ignore_ascii_case(ty) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// A named parameter, unquoted.
    pub fn param(&self, name: &str) -> Option<String> {
        find_param(&self.params, name).and_then(|p| p.unquoted_value().map(|v| v.into_owned()))
    }
}

/// `m-type SLASH m-subtype *(SEMI m-parameter)` at the cursor: the type and subtype, each
/// parameter going to `each_param`.
fn media_type_parts<'a>(
    c: &mut Cursor<'a>,
    each_param: impl FnMut(&'a str, Option<&'a str>),
) -> Option<(&'a str, &'a str)> {
    let ty = c.token()?;
    if !c.sep(b'/') {
        return None;
    }
    let subtype = c.token()?;
    scan_params(c, each_param)?;
    Some((ty, subtype))
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ty, self.subtype)?;
        write_params(f, &self.params)
    }
}

/// An `Accept-Contact` / `Reject-Contact` value (RFC 3841): `*` and feature parameters.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ContactPreference {
    /// The parameters (`+g.3gpp.icsi-ref="..."`, `require`, `explicit`...).
    pub params: Vec<Param>,
}

impl ContactPreference {
    /// Parses a comma-separated list of `ac-value`s.
    pub fn parse_list(value: &str) -> Option<Vec<Self>> {
        parse_list(value, |c| {
            if !c.eat(b'*') {
                return None;
            }
            Some(Self {
                params: parse_params(c)?,
            })
        })
    }

    /// The values of a feature tag (e.g. `+g.3gpp.icsi-ref`), split on `,` inside the quotes
    /// and percent-decoded (RFC 3840 section 9: a URN value is escaped in the tag).
    pub fn feature_values(&self, tag: &str) -> Vec<String> {
        find_param(&self.params, tag)
            .and_then(Param::unquoted_value)
            .map(|v| feature_list(&v))
            .unwrap_or_default()
    }
}

/// Splits a feature-tag value list and decodes `%HH` escapes.
pub fn feature_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| {
            let s = s.trim().trim_start_matches('<').trim_end_matches('>');
            String::from_utf8_lossy(&crate::uri::unescape(s)).into_owned()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Validates an RFC 1123 `SIP-date` (RFC 3261 section 20.17): `wkday "," SP date1 SP time SP
/// "GMT"`, e.g. `Sat, 13 Nov 2010 23:29:00 GMT`. Only `GMT` is a legal zone (RFC 4475 section
/// 3.1.2.12).
pub fn is_sip_date(value: &str) -> bool {
    let b = trim_wsp(value).as_bytes();
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    b.len() == 29
        && DAYS.contains(&&b[0..3])
        && &b[3..5] == b", "
        && digits(&b[5..7])
        && b[7] == b' '
        && MONTHS.contains(&&b[8..11])
        && b[11] == b' '
        && digits(&b[12..16])
        && b[16] == b' '
        && digits(&b[17..19])
        && b[19] == b':'
        && digits(&b[20..22])
        && b[22] == b':'
        && digits(&b[23..25])
        && &b[25..] == b" GMT"
}

/// Typed accessors. Each reads the header(s) of that name; a parse failure is a
/// [`HeaderError`], absence is `Ok(None)` (or an empty list).
impl Headers {
    fn single(&self, name: &HeaderName) -> Result<Option<&Header>, HeaderError> {
        let mut it = self.iter().filter(|h| h.name() == name);
        let first = it.next();
        if it.next().is_some() {
            return Err(HeaderError::Multiple(static_name(name)));
        }
        Ok(first)
    }

    fn single_typed<T>(
        &self,
        name: HeaderName,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, HeaderError> {
        let Some(h) = self.single(&name)? else {
            return Ok(None);
        };
        let v = h.value()?;
        parse(&v)
            .map(Some)
            .ok_or_else(|| HeaderError::Malformed(static_name(&name)))
    }

    /// Every element of every field with this name, in order; `item` parses one element of
    /// the field's `item *(COMMA item)` list.
    fn list_items<T>(
        &self,
        name: HeaderName,
        mut item: impl FnMut(&mut Cursor<'_>) -> Option<T>,
    ) -> Result<Vec<T>, HeaderError> {
        let mut out = Vec::new();
        for h in self.get_all(&name) {
            let v = h.value()?;
            // Elements go straight into `out`: no list per field to copy over.
            scan_list(&v, |c| item(c).map(|x| out.push(x)))
                .ok_or_else(|| HeaderError::Malformed(static_name(&name)))?;
        }
        Ok(out)
    }

    fn list_typed<T>(
        &self,
        name: HeaderName,
        parse: impl Fn(&str) -> Option<Vec<T>>,
    ) -> Result<Vec<T>, HeaderError> {
        let mut out = Vec::new();
        for h in self.get_all(&name) {
            let v = h.value()?;
            out.extend(parse(&v).ok_or_else(|| HeaderError::Malformed(static_name(&name)))?);
        }
        Ok(out)
    }

    /// All Via values, top first.
    pub fn via(&self) -> Result<Vec<Via>, HeaderError> {
        self.list_items(HeaderName::Via, Via::parse_item)
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Result<Option<Via>, HeaderError> {
        let Some(h) = self.get(&HeaderName::Via) else {
            return Ok(None);
        };
        let v = h.value()?;
        let mut c = Cursor::new(&v);
        c.sws();
        Via::parse_item(&mut c)
            .map(Some)
            .ok_or(HeaderError::Malformed("Via"))
    }

    /// From.
    pub fn from(&self) -> Result<Option<NameAddr>, HeaderError> {
        self.single_typed(HeaderName::From, NameAddr::parse)
    }

    /// To.
    pub fn to(&self) -> Result<Option<NameAddr>, HeaderError> {
        self.single_typed(HeaderName::To, NameAddr::parse)
    }

    /// Call-ID.
    pub fn call_id(&self) -> Result<Option<CallId>, HeaderError> {
        self.single_typed(HeaderName::CallId, CallId::parse)
    }

    /// CSeq.
    pub fn cseq(&self) -> Result<Option<CSeq>, HeaderError> {
        self.single_typed(HeaderName::CSeq, CSeq::parse)
    }

    /// Max-Forwards (`1*DIGIT`, at most 255).
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        self.single_typed(HeaderName::MaxForwards, |v| {
            parse_u32(trim_wsp(v)).and_then(|n| u8::try_from(n).ok())
        })
    }

    /// Content-Length.
    pub fn content_length(&self) -> Result<Option<u32>, HeaderError> {
        self.single_typed(HeaderName::ContentLength, |v| parse_u32(trim_wsp(v)))
    }

    /// Expires (delta-seconds). A value above 2^32-1 is an error here; RFC 3261 section
    /// 10.2.1.1 lets a registrar treat a malformed value as 3600.
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        self.single_typed(HeaderName::Expires, |v| parse_u32(trim_wsp(v)))
    }

    /// Contact: `Ok(None)` when absent.
    pub fn contact(&self) -> Result<Option<Contact>, HeaderError> {
        let mut out: Option<Contact> = None;
        for h in self.get_all(&HeaderName::Contact) {
            let v = h.value()?;
            let c = Contact::parse(&v).ok_or(HeaderError::Malformed("Contact"))?;
            out = Some(match (out, c) {
                (None, c) => c,
                (Some(Contact::Addresses(mut a)), Contact::Addresses(b)) => {
                    a.extend(b);
                    Contact::Addresses(a)
                }
                // `*` must be the only Contact value (RFC 3261 section 10.2.2).
                _ => return Err(HeaderError::Malformed("Contact")),
            });
        }
        Ok(out)
    }

    /// Route, in order.
    pub fn route(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.list_items(HeaderName::Route, |c| NameAddr::parse_item(c, false))
    }

    /// Record-Route, in order.
    pub fn record_route(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.list_items(HeaderName::RecordRoute, |c| NameAddr::parse_item(c, false))
    }

    /// Path (RFC 3327), in order.
    pub fn path(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.list_items(HeaderName::Path, |c| NameAddr::parse_item(c, false))
    }

    /// Service-Route (RFC 3608), in order.
    pub fn service_route(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.list_items(HeaderName::ServiceRoute, |c| NameAddr::parse_item(c, false))
    }

    /// P-Asserted-Identity (RFC 3325), one or two identities.
    pub fn p_asserted_identity(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.list_items(HeaderName::PAssertedIdentity, |c| {
            NameAddr::parse_item(c, true)
        })
    }

    /// P-Preferred-Identity (RFC 3325).
    pub fn p_preferred_identity(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.list_items(HeaderName::PPreferredIdentity, |c| {
            NameAddr::parse_item(c, true)
        })
    }

    /// Content-Type.
    pub fn content_type(&self) -> Result<Option<MediaType>, HeaderError> {
        self.single_typed(HeaderName::ContentType, MediaType::parse)
    }

    fn option_tags(&self, name: HeaderName, allow_empty: bool) -> Result<Vec<String>, HeaderError> {
        self.list_typed(name, |v| {
            if allow_empty && trim_wsp(v).is_empty() {
                return Some(Vec::new());
            }
            parse_list(v, |c| c.token().map(str::to_owned))
        })
    }

    /// Require option tags.
    pub fn require(&self) -> Result<Vec<String>, HeaderError> {
        self.option_tags(HeaderName::Require, false)
    }

    /// Proxy-Require option tags.
    pub fn proxy_require(&self) -> Result<Vec<String>, HeaderError> {
        self.option_tags(HeaderName::ProxyRequire, false)
    }

    /// Supported option tags (the header may be empty).
    pub fn supported(&self) -> Result<Vec<String>, HeaderError> {
        self.option_tags(HeaderName::Supported, true)
    }

    /// Accept-Contact values (RFC 3841).
    pub fn accept_contact(&self) -> Result<Vec<ContactPreference>, HeaderError> {
        self.list_typed(HeaderName::AcceptContact, ContactPreference::parse_list)
    }

    fn service_ids(&self, name: HeaderName) -> Result<Vec<String>, HeaderError> {
        // RFC 6050: Service-ID = "urn:urn-7:" urn-service-id, comma separated.
        self.list_typed(name, |v| {
            v.split(',')
                .map(|s| {
                    let s = trim_wsp(s);
                    let ok = s.len() > 10
                        && s[..10].eq_ignore_ascii_case("urn:urn-7:")
                        && !s.bytes().any(|b| is_wsp(b) || b.is_ascii_control());
                    ok.then(|| s.to_owned())
                })
                .collect()
        })
    }

    /// P-Preferred-Service (RFC 6050) service identifiers, e.g.
    /// `urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg`.
    pub fn p_preferred_service(&self) -> Result<Vec<String>, HeaderError> {
        self.service_ids(HeaderName::PPreferredService)
    }

    /// P-Asserted-Service (RFC 6050) service identifiers.
    pub fn p_asserted_service(&self) -> Result<Vec<String>, HeaderError> {
        self.service_ids(HeaderName::PAssertedService)
    }

    fn cpm_id(&self, name: HeaderName) -> Result<Option<String>, HeaderError> {
        // OMA CPM identifiers are UUIDs (PROTOCOL.md row 7); accept any `word` so a peer's
        // other identifier syntax is carried rather than refused.
        self.single_typed(name, |v| {
            let v = trim_wsp(v);
            (!v.is_empty() && v.bytes().all(is_word)).then(|| v.to_owned())
        })
    }

    /// Conversation-ID (OMA CPM).
    pub fn conversation_id(&self) -> Result<Option<String>, HeaderError> {
        self.cpm_id(HeaderName::ConversationId)
    }

    /// Contribution-ID (OMA CPM).
    pub fn contribution_id(&self) -> Result<Option<String>, HeaderError> {
        self.cpm_id(HeaderName::ContributionId)
    }

    /// InReplyTo-Contribution-ID (OMA CPM).
    pub fn in_reply_to_contribution_id(&self) -> Result<Option<String>, HeaderError> {
        self.cpm_id(HeaderName::InReplyToContributionId)
    }
}

/// The grammar check for a header validated at ingress, or `None` for the headers read only
/// on demand. A check takes the unfolded value ([`Header::value`]) and accepts exactly what
/// the typed accessor accepts. Multiplicity is not checked here (that is a semantic check,
/// RFC 4475 section 3.3.8).
///
/// This runs on every field of every message, so the checks build nothing: each grammar is
/// checked through the borrowed form the typed parser builds its value from (`ViaRef`,
/// `NameAddrRef`, `UriRef`...), with parameters skipped rather than collected.
pub(crate) fn ingress_check(name: &HeaderName) -> Option<fn(&str) -> bool> {
    Some(match name {
        HeaderName::Via => |v| scan_list(v, |c| ViaRef::parse(c, skip_param)).is_some(),
        HeaderName::From | HeaderName::To => {
            |v| parse_one(v, |c| NameAddrRef::parse(c, true, skip_param)).is_some()
        }
        HeaderName::CallId => |v| call_id_text(v).is_some(),
        HeaderName::CSeq => |v| parse_one(v, cseq_parts).is_some(),
        HeaderName::MaxForwards => |v| parse_u32(trim_wsp(v)).is_some_and(|n| n <= 255),
        HeaderName::Contact => Contact::is_valid,
        HeaderName::Route | HeaderName::RecordRoute => {
            |v| scan_list(v, |c| NameAddrRef::parse(c, false, skip_param)).is_some()
        }
        HeaderName::ContentType => |v| parse_one(v, |c| media_type_parts(c, skip_param)).is_some(),
        HeaderName::Date => is_sip_date,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gen_value_class() {
        use crate::scan::is_token;
        for b in 0..=255u8 {
            let expected = is_token(b) || matches!(b, b':' | b'[' | b']');
            assert_eq!(is_gen_value(b), expected, "{b}");
        }
    }

    #[test]
    fn via_with_lws_everywhere() {
        let v = Via::parse_list(
            "SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , \
             SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].transport, "TCP");
        assert_eq!(v[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(v[1].host, Host::Ipv4("192.168.255.111".parse().unwrap()));
        assert_eq!(v[1].branch(), Some("z9hG4bK30239"));
        assert_eq!(
            v[0].to_string(),
            "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"
        );
    }

    #[test]
    fn via_ipv6_received() {
        let v = Via::parse_list(
            "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3",
        )
        .unwrap();
        assert_eq!(v[0].received(), Some("2001:db8::9:255"));
        let v =
            Via::parse_list("SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255]").unwrap();
        assert_eq!(v[0].port, Some(6050));
    }

    #[test]
    fn via_rejects_empty_params() {
        assert!(Via::parse_list("SIP/2.0/UDP 192.0.2.15;;,;,,").is_none());
        assert!(Via::parse_list("SIP/2.0/UDP").is_none());
    }

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(a.tag(), Some("98asjd8"));
        assert_eq!(a.display_name_text().as_deref(), Some(r#"J Rosenberg \""#));
        let a = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name.as_deref(), Some("caller"));
        let a =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert!(!a.bracketed);
        assert_eq!(a.tag(), Some("1918181833n"));
        assert!(NameAddr::parse(r#""Mr. J. User <sip:j.user@example.com>"#).is_none());
        assert!(NameAddr::parse(r#""Watson, Thomas" < sip:t.watson@example.org >"#).is_none());
        assert!(NameAddr::parse("Watson, Thomas <sip:t.watson@example.org>").is_none());
        assert!(NameAddr::parse("isbn:2983792873").is_some());
    }

    #[test]
    fn contact_forms() {
        assert_eq!(Contact::parse(" * "), Some(Contact::Wildcard));
        assert!(Contact::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_none());
        assert!(Contact::parse(r#""Joe" <sip:joe@example.org>;;;;"#).is_none());
        let Some(Contact::Addresses(a)) = Contact::parse(
            r#"<sip:a@b>;expires=10, "x" <sip:c@d>;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg""#,
        ) else {
            panic!("contact list");
        };
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].param("expires").unwrap().value.as_deref(), Some("10"));
    }

    #[test]
    fn cseq_and_numbers() {
        assert_eq!(
            CSeq::parse("0009\tINVITE"),
            Some(CSeq {
                seq: 9,
                method: Method::Invite
            })
        );
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_none());
        assert!(CSeq::parse("1INVITE").is_none());
    }

    #[test]
    fn dates() {
        assert!(is_sip_date("Sat, 13 Nov 2010 23:29:00 GMT"));
        assert!(!is_sip_date("Fri, 01 Jan 2010 16:00:00 EST"));
    }

    #[test]
    fn accept_contact_icsi() {
        let ac = ContactPreference::parse_list(
            r#"*;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg";require;explicit"#,
        )
        .unwrap();
        assert_eq!(
            ac[0].feature_values("+g.3gpp.icsi-ref"),
            ["urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg"]
        );
    }
}
