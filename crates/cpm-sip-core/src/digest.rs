//! HTTP Digest access authentication for SIP: RFC 7616 as RFC 8760 applies it to SIP (and RFC
//! 3261 section 22.4 for the legacy forms). Sans-IO: no clock, no randomness; the caller passes
//! the time, the nonce secret and the client nonce.
//!
//! What is supported: algorithms `MD5` and `SHA-256`, `qop=auth`, and the RFC 2069 form (no
//! `qop`) that old clients still send. Not supported: `qop=auth-int`, the `-sess` algorithm
//! variants, `SHA-512-256` and `userhash`; credentials that use them are refused with an error
//! whose [`DigestError::rechallenge`] is true, so the server answers with a fresh challenge.
//!
//! Server side (registrar, UAS or proxy):
//!
//! 1. A request without credentials for our realm, or with another scheme
//!    ([`DigestError::NotDigest`]), gets a 401 (407 from a proxy) with one
//!    `WWW-Authenticate` (`Proxy-Authenticate`) header per algorithm, each built by
//!    [`challenge`]: SHA-256 first, then MD5, in order of preference (RFC 8760 section 2.4).
//!    Both carry the same nonce from [`NonceKey::make_nonce`].
//! 2. [`Credentials::parse`] reads the `Authorization` (`Proxy-Authorization`) value. The caller
//!    checks that `realm` is its own and that `uri` names the Request-URI, then asks
//!    [`NonceKey::check_nonce`]: [`NonceCheck::Stale`] is answered with a fresh challenge with
//!    `stale=true` (the client retries without asking its user), [`NonceCheck::Invalid`] with a
//!    fresh challenge.
//! 3. The caller looks up the stored HA1 for `username`, `realm` and `algorithm` (see [`ha1`])
//!    and calls [`verify`].
//!
//! Client side: [`Challenge::parse`] reads a `WWW-Authenticate` value (the caller picks the
//! strongest algorithm among the headers) and [`respond`] builds the `Authorization` value.
//!
//! The nonces are stateless to issue (a timestamp and a MAC); replays are refused by
//! [`crate::guard::NonceTracker`], which the server consults after [`verify`] succeeded: it
//! remembers the highest `nc` accepted per nonce (RFC 7616 section 3.4), so captured
//! credentials cannot be used again.

use core::fmt;
use core::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};

/// A digest hash algorithm (RFC 7616 section 6.1 registry) that we run.
///
/// Deliberately exhaustive: adding an algorithm means storing one more HA1 per user, and the
/// matches on this enum in the store should then fail to compile.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Algorithm {
    /// `MD5`: the RFC 3261 default, still needed by most SIP clients.
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760): preferred.
    Sha256,
}

impl Algorithm {
    /// The `algorithm` parameter token: `MD5` or `SHA-256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm` token, case-insensitively. `None` for algorithms we do not run
    /// (including `MD5-sess`, `SHA-256-sess` and `SHA-512-256`).
    pub fn parse(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else if token.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    /// Lowercase hex of `H(parts[0] ":" parts[1] ":" ...)`.
    fn hash_hex(self, parts: &[&str]) -> String {
        match self {
            Self::Md5 => hex_digest(Md5::new(), parts),
            Self::Sha256 => hex_digest(Sha256::new(), parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex_digest<D: sha2::Digest>(mut hasher: D, parts: &[&str]) -> String {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The quality of protection (RFC 7616 section 3.3 `qop`). Only `auth` is supported.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum Qop {
    /// `auth`: authentication of the method and URI, not of the body.
    Auth,
}

impl Qop {
    /// The `qop` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
        }
    }
}

/// `HA1 = H(username ":" realm ":" password)` as lowercase hex (RFC 7616 section 3.4.2). This
/// is what a server stores instead of the password; it depends on the exact `username` string.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(&[username, realm, password])
}

/// Why an `Authorization` or `WWW-Authenticate` value cannot be used.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum DigestError {
    /// The value uses another authentication scheme, such as `Basic` or RFC 4475 regaut01's
    /// `NoOneKnowsThisScheme`. Not a syntax error: a server answers with its own challenge.
    NotDigest(String),
    /// The value does not follow the `credentials` / `challenge` grammar (RFC 3261 section
    /// 25.1); the text says where.
    Malformed(&'static str),
    /// A parameter the grammar requires is absent.
    MissingParameter(&'static str),
    /// A parameter appears twice.
    DuplicateParameter(&'static str),
    /// An `algorithm` we do not run.
    UnsupportedAlgorithm(String),
    /// A `qop` other than `auth` (or, in a challenge, a list without `auth`).
    UnsupportedQop(String),
}

impl DigestError {
    /// The wire mapping on the server side: `true` when the request is answered with a fresh
    /// challenge (401 from a registrar or UAS, 407 from a proxy) because the client may succeed
    /// with one of ours; `false` when it is answered 400 Bad Request (broken syntax).
    pub fn rechallenge(&self) -> bool {
        match self {
            Self::NotDigest(_) | Self::UnsupportedAlgorithm(_) | Self::UnsupportedQop(_) => true,
            Self::Malformed(_) | Self::MissingParameter(_) | Self::DuplicateParameter(_) => false,
        }
    }
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDigest(scheme) => write!(f, "authentication scheme {scheme} is not Digest"),
            Self::Malformed(what) => write!(f, "malformed digest parameters: {what}"),
            Self::MissingParameter(name) => write!(f, "missing digest parameter {name}"),
            Self::DuplicateParameter(name) => write!(f, "repeated digest parameter {name}"),
            Self::UnsupportedAlgorithm(alg) => write!(f, "unsupported digest algorithm {alg}"),
            Self::UnsupportedQop(qop) => write!(f, "unsupported qop {qop}"),
        }
    }
}

impl core::error::Error for DigestError {}

/// The parameters of an `Authorization` or `Proxy-Authorization` value (RFC 3261 section 25.1
/// `digest-response`, RFC 7616 section 3.4). Values are unquoted; parameters we do not know
/// are ignored.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Credentials {
    /// `username`: the user part (`alice`) or the full identity (`alice@localhost`), as the
    /// client was configured.
    pub username: String,
    /// `realm`, echoed from the challenge.
    pub realm: String,
    /// `nonce`, echoed from the challenge.
    pub nonce: String,
    /// `uri`: the Request-URI the client signed.
    pub uri: String,
    /// `response`: the hex digest to check.
    pub response: String,
    /// `algorithm`; MD5 when absent (RFC 7616 section 3.4).
    pub algorithm: Algorithm,
    /// `cnonce`: present when `qop` is.
    pub cnonce: Option<String>,
    /// `nc` as sent (8 hex digits): present when `qop` is.
    pub nc: Option<String>,
    /// `qop`; `None` is the RFC 2069 form.
    pub qop: Option<Qop>,
    /// `opaque`, echoed from the challenge.
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses an `Authorization` / `Proxy-Authorization` value:
    /// `Digest k=v, k="v", ...`, keys case-insensitive, in any order, unknown keys ignored.
    ///
    /// RFC 3261 section 25.1: `credentials = ("Digest" LWS digest-response) / other-response`,
    /// `digest-response = dig-resp *(COMMA dig-resp)`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let params = digest_params(value)?;
        let mut username = None;
        let mut realm = None;
        let mut nonce = None;
        let mut uri = None;
        let mut response = None;
        let mut algorithm = None;
        let mut cnonce = None;
        let mut nc = None;
        let mut qop = None;
        let mut opaque = None;
        for (name, v) in params {
            let slot = match name.to_ascii_lowercase().as_str() {
                "username" => (&mut username, "username"),
                "realm" => (&mut realm, "realm"),
                "nonce" => (&mut nonce, "nonce"),
                "uri" => (&mut uri, "uri"),
                "response" => (&mut response, "response"),
                "algorithm" => (&mut algorithm, "algorithm"),
                "cnonce" => (&mut cnonce, "cnonce"),
                "nc" => (&mut nc, "nc"),
                "qop" => (&mut qop, "qop"),
                "opaque" => (&mut opaque, "opaque"),
                _ => continue,
            };
            set_once(slot, v)?;
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        let qop = match qop {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some(Qop::Auth),
            Some(q) => return Err(DigestError::UnsupportedQop(q)),
        };
        if qop.is_some() {
            // RFC 7616 section 3.4: cnonce and nc MUST be sent when qop is.
            let Some(n) = &nc else {
                return Err(DigestError::MissingParameter("nc"));
            };
            if n.len() != 8 || !n.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DigestError::Malformed("nc is not 8 hex digits"));
            }
            if cnonce.is_none() {
                return Err(DigestError::MissingParameter("cnonce"));
            }
        }
        Ok(Self {
            username: username.ok_or(DigestError::MissingParameter("username"))?,
            realm: realm.ok_or(DigestError::MissingParameter("realm"))?,
            nonce: nonce.ok_or(DigestError::MissingParameter("nonce"))?,
            uri: uri.ok_or(DigestError::MissingParameter("uri"))?,
            response: response.ok_or(DigestError::MissingParameter("response"))?,
            algorithm,
            cnonce,
            nc,
            qop,
            opaque,
        })
    }
}

impl fmt::Display for Credentials {
    /// The `Authorization` value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            cpm_sip::quote(&self.username),
            cpm_sip::quote(&self.realm),
            cpm_sip::quote(&self.nonce),
            cpm_sip::quote(&self.uri),
            cpm_sip::quote(&self.response),
            self.algorithm,
        )?;
        if let Some(cnonce) = &self.cnonce {
            write!(f, ", cnonce={}", cpm_sip::quote(cnonce))?;
        }
        if let Some(opaque) = &self.opaque {
            write!(f, ", opaque={}", cpm_sip::quote(opaque))?;
        }
        if let Some(qop) = self.qop {
            write!(f, ", qop={}", qop.as_str())?;
        }
        if let Some(nc) = &self.nc {
            write!(f, ", nc={nc}")?;
        }
        Ok(())
    }
}

/// The parameters of a `WWW-Authenticate` or `Proxy-Authenticate` value (RFC 7616 section
/// 3.3), as a client uses them. SIP sends one challenge per header; a server offering several
/// algorithms sends several headers (RFC 8760 section 2.4).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `algorithm`; MD5 when absent.
    pub algorithm: Algorithm,
    /// `Some(Qop::Auth)` when the server's `qop` list offers `auth`; `None` when it sent no
    /// `qop` (the RFC 2069 form is then used).
    pub qop: Option<Qop>,
    /// `opaque`, to be echoed.
    pub opaque: Option<String>,
    /// `stale=true`: the previous nonce expired, the credentials were right.
    pub stale: bool,
}

impl Challenge {
    /// Parses a `WWW-Authenticate` / `Proxy-Authenticate` value
    /// (RFC 3261 section 25.1 `challenge = ("Digest" LWS digest-cln *(COMMA digest-cln))`).
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let params = digest_params(value)?;
        let mut realm = None;
        let mut nonce = None;
        let mut algorithm = None;
        let mut qop = None;
        let mut opaque = None;
        let mut stale = None;
        for (name, v) in params {
            let slot = match name.to_ascii_lowercase().as_str() {
                "realm" => (&mut realm, "realm"),
                "nonce" => (&mut nonce, "nonce"),
                "algorithm" => (&mut algorithm, "algorithm"),
                "qop" => (&mut qop, "qop"),
                "opaque" => (&mut opaque, "opaque"),
                "stale" => (&mut stale, "stale"),
                _ => continue,
            };
            set_once(slot, v)?;
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        // `qop-options = "qop" EQUAL LDQUOT qop-value *("," qop-value) RDQUOT`.
        let qop = match qop {
            None => None,
            Some(list)
                if list
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth")) =>
            {
                Some(Qop::Auth)
            }
            Some(list) => return Err(DigestError::UnsupportedQop(list)),
        };
        Ok(Self {
            realm: realm.ok_or(DigestError::MissingParameter("realm"))?,
            nonce: nonce.ok_or(DigestError::MissingParameter("nonce"))?,
            algorithm,
            qop,
            opaque,
            stale: stale.is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

impl fmt::Display for Challenge {
    /// The `WWW-Authenticate` value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm={}, nonce={}",
            cpm_sip::quote(&self.realm),
            cpm_sip::quote(&self.nonce)
        )?;
        if let Some(opaque) = &self.opaque {
            write!(f, ", opaque={}", cpm_sip::quote(opaque))?;
        }
        write!(f, ", algorithm={}", self.algorithm)?;
        if let Some(qop) = self.qop {
            write!(f, ", qop=\"{}\"", qop.as_str())?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

/// Builds a `WWW-Authenticate` / `Proxy-Authenticate` value:
/// `Digest realm="..", nonce="..", algorithm=SHA-256, qop="auth"[, stale=true]` (with
/// `opaque=".."` after the nonce when given).
///
/// This is one challenge for one algorithm. A server sends two headers, SHA-256 first, then
/// MD5, with the same nonce (RFC 8760 section 2.4); composing them is the caller's job.
pub fn challenge(
    realm: &str,
    nonce: &str,
    alg: Algorithm,
    stale: bool,
    opaque: Option<&str>,
) -> String {
    Challenge {
        realm: realm.to_owned(),
        nonce: nonce.to_owned(),
        algorithm: alg,
        qop: Some(Qop::Auth),
        opaque: opaque.map(str::to_owned),
        stale,
    }
    .to_string()
}

/// The `response` the credentials must carry (RFC 7616 section 3.4.1), from the stored HA1:
/// `H(HA1:nonce:nc:cnonce:qop:HA2)` with `qop=auth`, `H(HA1:nonce:HA2)` without `qop` (RFC
/// 2069), where `HA2 = H(method:uri)`; `qop` carries `(qop, nc, cnonce)`.
fn expected_response(
    alg: Algorithm,
    ha1_hex: &str,
    nonce: &str,
    qop: Option<(Qop, &str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hash_hex(&[method, uri]);
    match qop {
        Some((qop, nc, cnonce)) => alg.hash_hex(&[ha1_hex, nonce, nc, cnonce, qop.as_str(), &ha2]),
        None => alg.hash_hex(&[ha1_hex, nonce, &ha2]),
    }
}

/// Checks the `response` of `creds` for a request with this `method`, given the stored HA1
/// (lowercase hex, for `creds.username`, `creds.realm` and `creds.algorithm`). The hex strings
/// are compared in constant time (case-insensitively).
///
/// This checks the digest only: the caller checks the realm, the nonce
/// ([`NonceKey::check_nonce`]) and that `creds.uri` is the Request-URI.
pub fn verify(creds: &Credentials, method: &str, ha1_hex: &str) -> bool {
    let qop = match (creds.qop, &creds.nc, &creds.cnonce) {
        (None, _, _) => None,
        (Some(qop), Some(nc), Some(cnonce)) => Some((qop, nc.as_str(), cnonce.as_str())),
        (Some(_), _, _) => return false,
    };
    let expected = expected_response(
        creds.algorithm,
        ha1_hex,
        &creds.nonce,
        qop,
        method,
        &creds.uri,
    );
    ct_eq_ignore_ascii_case(expected.as_bytes(), creds.response.as_bytes())
}

/// Constant-time comparison (for equal lengths; the length of a hex digest is no secret).
fn ct_eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x.to_ascii_lowercase() ^ y.to_ascii_lowercase();
    }
    black_box(diff) == 0
}

/// Builds the `Authorization` / `Proxy-Authorization` value answering `challenge` for a request
/// with this `method` and Request-URI `uri`. `cnonce` (fresh, unpredictable) and `nc` (1 for
/// the first use of a nonce, then counting up) come from the caller; they are used only when
/// the challenge offers `qop=auth`.
pub fn respond(
    challenge: &Challenge,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let alg = challenge.algorithm;
    let ha1_hex = ha1(alg, username, &challenge.realm, password);
    let nc = format!("{nc:08x}");
    let qop = challenge.qop.map(|q| (q, nc.as_str(), cnonce));
    let response = expected_response(alg, &ha1_hex, &challenge.nonce, qop, method, uri);
    Credentials {
        username: username.to_owned(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_owned(),
        response,
        algorithm: alg,
        cnonce: challenge.qop.map(|_| cnonce.to_owned()),
        nc: challenge.qop.map(|_| nc.clone()),
        qop: challenge.qop,
        opaque: challenge.opaque.clone(),
    }
    .to_string()
}

/// The secret that makes nonces stateless: a nonce is `base64url(timestamp || MAC)` with
/// `MAC = HMAC-SHA256(secret, timestamp || realm)` truncated to 16 bytes, so the server can
/// check that it issued a nonce, for which realm and when, without keeping a table.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

/// What [`NonceKey::check_nonce`] found.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum NonceCheck {
    /// Issued by us for this realm and still within its lifetime.
    Valid,
    /// Issued by us for this realm but expired: challenge again with `stale=true`.
    Stale,
    /// Not one of ours (forged, tampered, other realm or other key): challenge again.
    Invalid,
}

const NONCE_MAC_LEN: usize = 16;
/// Timestamp, salt, MAC.
const NONCE_LEN: usize = 8 + 8 + NONCE_MAC_LEN;
/// Base64 (URL-safe, unpadded) of [`NONCE_LEN`] bytes.
const NONCE_TEXT_LEN: usize = 43;

impl NonceKey {
    /// A key from a 32-byte secret chosen by the caller (random, kept across restarts so the
    /// nonces already issued stay valid; shared by all nodes serving the realm).
    pub fn new(secret: [u8; 32]) -> Self {
        Self(secret)
    }

    /// A nonce for `realm` issued at `now_unix_secs`: URL-safe base64 without padding (43
    /// characters) of the 8-byte big-endian timestamp, the 8-byte `salt`, and the first 16
    /// bytes of HMAC-SHA256(secret, timestamp || salt || realm).
    ///
    /// The salt (a counter or a random number from the caller) makes every challenge's nonce
    /// its own: two clients challenged in the same second must not share a nonce, or the
    /// replay table ([`crate::guard::NonceTracker`]) would take the second one's first use
    /// for a replay of the first one's.
    pub fn make_nonce(&self, now_unix_secs: u64, realm: &str, salt: u64) -> String {
        let mut raw = [0u8; NONCE_LEN];
        raw[..8].copy_from_slice(&now_unix_secs.to_be_bytes());
        raw[8..16].copy_from_slice(&salt.to_be_bytes());
        let tag = self.mac(&raw[..16], realm).finalize().into_bytes();
        raw[16..].copy_from_slice(&tag[..NONCE_MAC_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce echoed in credentials for `realm` at `now_unix_secs`. A nonce older than
    /// `ttl_secs` is [`NonceCheck::Stale`]; so is one dated more than `ttl_secs` in the future
    /// (our clock went back). The MAC is compared in constant time.
    pub fn check_nonce(
        &self,
        nonce: &str,
        realm: &str,
        now_unix_secs: u64,
        ttl_secs: u64,
    ) -> NonceCheck {
        // Refuse anything of another length before decoding.
        if nonce.len() != NONCE_TEXT_LEN {
            return NonceCheck::Invalid;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceCheck::Invalid;
        };
        if raw.len() != NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        if self
            .mac(&raw[..16], realm)
            .verify_truncated_left(&raw[16..])
            .is_err()
        {
            return NonceCheck::Invalid;
        }
        let issued = u64::from_be_bytes(ts);
        let age = now_unix_secs.saturating_sub(issued);
        if age > ttl_secs || issued > now_unix_secs.saturating_add(ttl_secs) {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    /// A short MAC (16 hex digits) of `data` under this secret, for `purpose` (each purpose
    /// keys a different MAC): tokens the server hands out and must recognise later without
    /// keeping state, such as the one in its Record-Route that marks dialogs it is on.
    pub fn sign(&self, purpose: &str, data: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The Unix second a nonce of ours was issued at (its first 8 bytes), for the replay
    /// table ([`crate::guard::NonceTracker`]). Only meaningful after [`Self::check_nonce`]
    /// said [`NonceCheck::Valid`]: this does not check the MAC.
    pub fn issued_at(nonce: &str) -> Option<u64> {
        let raw = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        let ts: [u8; 8] = raw.get(..8)?.try_into().ok()?;
        Some(u64::from_be_bytes(ts))
    }

    fn mac(&self, head: &[u8], realm: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(head);
        mac.update(realm.as_bytes());
        mac
    }
}

impl fmt::Debug for NonceKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

fn set_once(
    (slot, name): (&mut Option<String>, &'static str),
    value: String,
) -> Result<(), DigestError> {
    if slot.is_some() {
        return Err(DigestError::DuplicateParameter(name));
    }
    *slot = Some(value);
    Ok(())
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 section 25.1 `token`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Splits `Digest param, param, ...` into unquoted `(name, value)` pairs.
///
/// `auth-param = auth-param-name EQUAL ( token / quoted-string )`, with `COMMA = SWS "," SWS`
/// and `EQUAL = SWS "=" SWS`. Empty list elements (`a=1,,b=2`) are skipped, as RFC 7230
/// section 7 lets a recipient do. Unquoted values are read up to the next comma or whitespace
/// and may hold characters outside `token` (some clients send nonces unquoted).
fn digest_params(value: &str) -> Result<Vec<(&str, String)>, DigestError> {
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() && is_lws(b[i]) {
        i += 1;
    }
    let start = i;
    while i < b.len() && !is_lws(b[i]) {
        i += 1;
    }
    let scheme = &value[start..i];
    if scheme.is_empty() {
        return Err(DigestError::Malformed("no authentication scheme"));
    }
    if !scheme.bytes().all(is_token_byte) {
        return Err(DigestError::Malformed(
            "authentication scheme is not a token",
        ));
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest(scheme.to_owned()));
    }

    let mut params = Vec::new();
    loop {
        while i < b.len() && (is_lws(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i == b.len() {
            return Ok(params);
        }
        let name_start = i;
        while i < b.len() && is_token_byte(b[i]) {
            i += 1;
        }
        let name = &value[name_start..i];
        if name.is_empty() {
            return Err(DigestError::Malformed("parameter name is not a token"));
        }
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return Err(DigestError::Malformed("parameter without '='"));
        }
        i += 1;
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        let v = if b.get(i) == Some(&b'"') {
            let (v, end) = quoted_string(b, i + 1)?;
            i = end;
            v
        } else {
            let v_start = i;
            while i < b.len() && !is_lws(b[i]) && b[i] != b',' && b[i] != b'"' {
                i += 1;
            }
            if i == v_start {
                return Err(DigestError::Malformed("empty parameter value"));
            }
            value[v_start..i].to_owned()
        };
        params.push((name, v));
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        if i < b.len() && b[i] != b',' {
            return Err(DigestError::Malformed("parameters not separated by ','"));
        }
    }
}

/// Reads a `quoted-string` body starting after the opening quote; returns the unescaped text
/// and the index after the closing quote. `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`.
fn quoted_string(b: &[u8], mut i: usize) -> Result<(String, usize), DigestError> {
    let mut out = Vec::new();
    loop {
        match b.get(i) {
            None => return Err(DigestError::Malformed("unterminated quoted-string")),
            Some(b'"') => break,
            Some(b'\\') => match b.get(i + 1) {
                Some(&c) if c.is_ascii() && c != b'\r' && c != b'\n' => {
                    out.push(c);
                    i += 2;
                }
                _ => return Err(DigestError::Malformed("bad escape in quoted-string")),
            },
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII backslashes were removed from valid UTF-8, so this cannot fail; map anyway.
    let text =
        String::from_utf8(out).map_err(|_| DigestError::Malformed("quoted-string not UTF-8"))?;
    Ok((text, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const RFC_REALM: &str = "http-auth@example.org";
    const RFC_MD5: &str = "8ca523f5e9506fed4657c9700eebdbec";
    const RFC_SHA256: &str = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";

    /// RFC 7616 section 3.9.1, the Authorization header as printed (folded over lines).
    fn rfc_authorization(alg: &str, response: &str) -> String {
        format!(
            "Digest username=\"Mufasa\",\r\n       realm=\"{RFC_REALM}\",\r\n       \
             uri=\"/dir/index.html\",\r\n       algorithm={alg},\r\n       \
             nonce=\"{RFC_NONCE}\",\r\n       nc=00000001,\r\n       \
             cnonce=\"{RFC_CNONCE}\",\r\n       qop=auth,\r\n       \
             response=\"{response}\",\r\n       opaque=\"{RFC_OPAQUE}\""
        )
    }

    #[test]
    fn rfc7616_example_verifies() {
        for (alg, token, response) in [
            (Algorithm::Md5, "MD5", RFC_MD5),
            (Algorithm::Sha256, "SHA-256", RFC_SHA256),
        ] {
            let creds = Credentials::parse(&rfc_authorization(token, response)).unwrap();
            assert_eq!(creds.username, "Mufasa");
            assert_eq!(creds.realm, RFC_REALM);
            assert_eq!(creds.uri, "/dir/index.html");
            assert_eq!(creds.algorithm, alg);
            assert_eq!(creds.nc.as_deref(), Some("00000001"));
            assert_eq!(creds.cnonce.as_deref(), Some(RFC_CNONCE));
            assert_eq!(creds.qop, Some(Qop::Auth));
            assert_eq!(creds.opaque.as_deref(), Some(RFC_OPAQUE));
            let h = ha1(alg, "Mufasa", RFC_REALM, "Circle of Life");
            assert!(verify(&creds, "GET", &h), "{token}");
            assert!(!verify(&creds, "POST", &h), "{token}");
            let wrong = ha1(alg, "Mufasa", RFC_REALM, "Circle of life");
            assert!(!verify(&creds, "GET", &wrong), "{token}");
        }
    }

    #[test]
    fn rfc7616_example_responds() {
        // The challenge of RFC 7616 section 3.9.1, offering auth and auth-int.
        for (token, expected) in [("MD5", RFC_MD5), ("SHA-256", RFC_SHA256)] {
            let value = format!(
                "Digest\r\n realm=\"{RFC_REALM}\",\r\n qop=\"auth, auth-int\",\r\n \
                 algorithm={token},\r\n nonce=\"{RFC_NONCE}\",\r\n opaque=\"{RFC_OPAQUE}\""
            );
            let ch = Challenge::parse(&value).unwrap();
            assert_eq!(ch.qop, Some(Qop::Auth));
            assert!(!ch.stale);
            let auth = respond(
                &ch,
                "GET",
                "/dir/index.html",
                "Mufasa",
                "Circle of Life",
                RFC_CNONCE,
                1,
            );
            let creds = Credentials::parse(&auth).unwrap();
            assert_eq!(creds.response, expected, "{auth}");
            assert_eq!(creds.nc.as_deref(), Some("00000001"));
            assert_eq!(creds.opaque.as_deref(), Some(RFC_OPAQUE));
        }
    }

    #[test]
    fn ha1_is_lowercase_hex() {
        // MD5("Mufasa:http-auth@example.org:Circle of Life")
        let h = ha1(Algorithm::Md5, "Mufasa", RFC_REALM, "Circle of Life");
        assert_eq!(h.len(), 32);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert_eq!(ha1(Algorithm::Sha256, "a", "b", "c").len(), 64);
        assert_ne!(
            h,
            ha1(Algorithm::Md5, "mufasa", RFC_REALM, "Circle of Life")
        );
    }

    #[test]
    fn algorithm_tokens() {
        assert_eq!(Algorithm::parse("md5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse("sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse("MD5-sess"), None);
        assert_eq!(Algorithm::parse("SHA-256-sess"), None);
        assert_eq!(Algorithm::parse("SHA-512-256"), None);
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            assert_eq!(Algorithm::parse(alg.as_str()), Some(alg));
        }
    }

    fn key(b: u8) -> NonceKey {
        NonceKey::new([b; 32])
    }

    #[test]
    fn nonce_valid_stale_invalid() {
        let k = key(7);
        let t = 1_700_000_000;
        let n = k.make_nonce(t, "localhost", 9);
        assert_eq!(n.len(), 43);
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(k.check_nonce(&n, "localhost", t, 300), NonceCheck::Valid);
        assert_eq!(
            k.check_nonce(&n, "localhost", t + 300, 300),
            NonceCheck::Valid
        );
        assert_eq!(
            k.check_nonce(&n, "localhost", t + 301, 300),
            NonceCheck::Stale
        );
        // Clock went back a little: still valid; far: stale.
        assert_eq!(
            k.check_nonce(&n, "localhost", t - 10, 300),
            NonceCheck::Valid
        );
        assert_eq!(
            k.check_nonce(&n, "localhost", t - 301, 300),
            NonceCheck::Stale
        );
        // Other realm, other key.
        assert_eq!(
            k.check_nonce(&n, "example.com", t, 300),
            NonceCheck::Invalid
        );
        assert_eq!(
            key(8).check_nonce(&n, "localhost", t, 300),
            NonceCheck::Invalid
        );
        // Deterministic: same inputs, same nonce; another time, another nonce.
        assert_eq!(n, k.make_nonce(t, "localhost", 9));
        assert_ne!(n, k.make_nonce(t + 1, "localhost", 9));
        assert_ne!(n, k.make_nonce(t, "localhost", 10));
    }

    #[test]
    fn nonce_tampered_or_garbage_is_invalid() {
        let k = key(1);
        let t = 1_000;
        let n = k.make_nonce(t, "localhost", 9);
        // Flip each character in turn: the timestamp or the MAC changes.
        for i in 0..n.len() {
            let mut bytes = n.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert_eq!(
                k.check_nonce(&tampered, "localhost", t, 300),
                NonceCheck::Invalid,
                "{tampered}"
            );
        }
        // A later timestamp with the old MAC (extending the lifetime) is refused.
        let mut raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
        raw[..8].copy_from_slice(&(t + 1000).to_be_bytes());
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            k.check_nonce(&forged, "localhost", t + 1000, 300),
            NonceCheck::Invalid
        );
        for bad in [
            "",
            "abc",
            &"A".repeat(32),
            &format!("{n}A"),
            RFC_NONCE,
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert_eq!(
                k.check_nonce(bad, "localhost", t, 300),
                NonceCheck::Invalid,
                "{bad}"
            );
        }
        assert_eq!(format!("{k:?}"), "NonceKey(..)");
    }

    #[test]
    fn challenge_text() {
        assert_eq!(
            challenge("localhost", "abc", Algorithm::Sha256, false, None),
            "Digest realm=\"localhost\", nonce=\"abc\", algorithm=SHA-256, qop=\"auth\""
        );
        assert_eq!(
            challenge("a \"b\"", "n", Algorithm::Md5, true, Some("op")),
            "Digest realm=\"a \\\"b\\\"\", nonce=\"n\", opaque=\"op\", algorithm=MD5, \
             qop=\"auth\", stale=true"
        );
        let ch =
            Challenge::parse(&challenge("a \"b\"", "n", Algorithm::Md5, true, Some("op"))).unwrap();
        assert_eq!(
            ch,
            Challenge {
                realm: "a \"b\"".into(),
                nonce: "n".into(),
                algorithm: Algorithm::Md5,
                qop: Some(Qop::Auth),
                opaque: Some("op".into()),
                stale: true,
            }
        );
    }

    #[test]
    fn full_round_trip_with_aor_username() {
        let k = key(3);
        let now = 5_000;
        let realm = "localhost";
        let nonce = k.make_nonce(now, realm, 1);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let ch = Challenge::parse(&challenge(realm, &nonce, alg, false, None)).unwrap();
            let value = respond(
                &ch,
                "REGISTER",
                "sip:localhost",
                "alice@localhost",
                "secret",
                "c1",
                1,
            );
            let creds = Credentials::parse(&value).unwrap();
            assert_eq!(creds.username, "alice@localhost");
            assert_eq!(creds.algorithm, alg);
            assert_eq!(
                k.check_nonce(&creds.nonce, &creds.realm, now + 10, 60),
                NonceCheck::Valid
            );
            let good = ha1(alg, "alice@localhost", realm, "secret");
            assert!(verify(&creds, "REGISTER", &good));
            // HA1 depends on the username string: the `alice` form does not match.
            let user_part = ha1(alg, "alice", realm, "secret");
            assert!(!verify(&creds, "REGISTER", &user_part));
            // The HA1 of the other algorithm does not match either.
            let other = if alg == Algorithm::Md5 {
                Algorithm::Sha256
            } else {
                Algorithm::Md5
            };
            assert!(!verify(
                &creds,
                "REGISTER",
                &ha1(other, "alice@localhost", realm, "secret")
            ));
        }
    }

    #[test]
    fn rfc2069_form_without_qop() {
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        assert_eq!(ch.qop, None);
        let value = respond(&ch, "REGISTER", "sip:r", "bob", "pw", "ignored", 1);
        assert!(!value.contains("cnonce"), "{value}");
        assert!(!value.contains("nc="), "{value}");
        let creds = Credentials::parse(&value).unwrap();
        assert_eq!(creds.qop, None);
        let h = ha1(Algorithm::Md5, "bob", "r", "pw");
        // H(HA1:nonce:H(method:uri)), computed independently.
        let ha2 = hex::encode(Md5::digest(b"REGISTER:sip:r"));
        let expected = hex::encode(Md5::digest(format!("{h}:n:{ha2}").as_bytes()));
        assert_eq!(creds.response, expected);
        assert!(verify(&creds, "REGISTER", &h));
    }

    #[test]
    fn response_compared_case_insensitively() {
        let mut creds = Credentials::parse(&rfc_authorization("SHA-256", RFC_SHA256)).unwrap();
        creds.response = creds.response.to_ascii_uppercase();
        let h = ha1(Algorithm::Sha256, "Mufasa", RFC_REALM, "Circle of Life");
        assert!(verify(&creds, "GET", &h));
        creds.response.pop();
        assert!(!verify(&creds, "GET", &h));
        creds.response.clear();
        assert!(!verify(&creds, "GET", &h));
        // qop without cnonce (built by hand; parse refuses it) never verifies.
        let mut creds = Credentials::parse(&rfc_authorization("SHA-256", RFC_SHA256)).unwrap();
        creds.cnonce = None;
        assert!(!verify(&creds, "GET", &h));
    }

    #[test]
    fn ct_eq() {
        assert!(ct_eq_ignore_ascii_case(b"abc", b"ABC"));
        assert!(ct_eq_ignore_ascii_case(b"", b""));
        assert!(!ct_eq_ignore_ascii_case(b"abc", b"abd"));
        assert!(!ct_eq_ignore_ascii_case(b"abc", b"abcd"));
    }

    #[test]
    fn parse_is_case_insensitive_any_order_ignores_unknown() {
        let creds = Credentials::parse(
            "dIgEsT  RESPONSE=\"0123\",Nonce=n,foo=\"x, y=\\\"z\\\"\",\tUri=\"sip:a@b\" ,\
             USERNAME=\"alice@localhost\", ALGORITHM=sha-256, realm=localhost, bar=baz,,",
        )
        .unwrap();
        assert_eq!(
            creds,
            Credentials {
                username: "alice@localhost".into(),
                realm: "localhost".into(),
                nonce: "n".into(),
                uri: "sip:a@b".into(),
                response: "0123".into(),
                algorithm: Algorithm::Sha256,
                cnonce: None,
                nc: None,
                qop: None,
                opaque: None,
            }
        );
        // The parsed value prints and parses back the same.
        assert_eq!(Credentials::parse(&creds.to_string()).unwrap(), creds);
    }

    #[test]
    fn parse_quoted_string_escapes() {
        let creds = Credentials::parse(
            r#"Digest username="a\"b\\c", realm="r\,x", nonce="", uri="u", response="r""#,
        )
        .unwrap();
        assert_eq!(creds.username, r#"a"b\c"#);
        assert_eq!(creds.realm, "r,x");
        assert_eq!(creds.nonce, "");
        let again = Credentials::parse(&creds.to_string()).unwrap();
        assert_eq!(again, creds);
        // Non-ASCII text survives.
        let creds =
            Credentials::parse("Digest username=\"jösé\", realm=r, nonce=n, uri=u, response=x")
                .unwrap();
        assert_eq!(creds.username, "jösé");
    }

    #[test]
    fn other_schemes_are_a_distinct_error() {
        // RFC 4475 regaut01: an unknown authorization scheme.
        let err = Credentials::parse("NoOneKnowsThisScheme opaque-data=here").unwrap_err();
        assert_eq!(err, DigestError::NotDigest("NoOneKnowsThisScheme".into()));
        assert!(err.rechallenge());
        assert_eq!(
            Credentials::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap_err(),
            DigestError::NotDigest("Basic".into())
        );
        assert_eq!(
            Challenge::parse("Basic realm=\"x\"").unwrap_err(),
            DigestError::NotDigest("Basic".into())
        );
    }

    #[test]
    fn parse_errors() {
        let ok = "username=u, realm=r, nonce=n, uri=u, response=x";
        assert!(Credentials::parse(&format!("Digest {ok}")).is_ok());
        let cases: &[(&str, DigestError)] = &[
            ("", DigestError::Malformed("no authentication scheme")),
            ("   ", DigestError::Malformed("no authentication scheme")),
            ("Digest", DigestError::MissingParameter("username")),
            (
                "Digest=x",
                DigestError::Malformed("authentication scheme is not a token"),
            ),
            (
                "Digest realm=r, nonce=n, uri=u, response=x",
                DigestError::MissingParameter("username"),
            ),
            (
                "Digest username=u, realm=r, uri=u, response=x",
                DigestError::MissingParameter("nonce"),
            ),
            (
                "Digest username=u, realm=r, nonce=n, response=x",
                DigestError::MissingParameter("uri"),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=u",
                DigestError::MissingParameter("response"),
            ),
            (
                "Digest username=u, USERNAME=v, realm=r, nonce=n, uri=u, response=x",
                DigestError::DuplicateParameter("username"),
            ),
            (
                "Digest username=\"u, realm=r, nonce=n, uri=u, response=x",
                DigestError::Malformed("unterminated quoted-string"),
            ),
            (
                "Digest username=u realm=r",
                DigestError::Malformed("parameters not separated by ','"),
            ),
            (
                "Digest username",
                DigestError::Malformed("parameter without '='"),
            ),
            (
                "Digest username=",
                DigestError::Malformed("empty parameter value"),
            ),
            (
                "Digest =u",
                DigestError::Malformed("parameter name is not a token"),
            ),
            (
                "Digest username=\"a\\\u{e9}\"",
                DigestError::Malformed("bad escape in quoted-string"),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=u, response=x, algorithm=MD5-sess",
                DigestError::UnsupportedAlgorithm("MD5-sess".into()),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=u, response=x, algorithm=SHA-256-sess",
                DigestError::UnsupportedAlgorithm("SHA-256-sess".into()),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=u, response=x, qop=auth-int, nc=00000001, cnonce=c",
                DigestError::UnsupportedQop("auth-int".into()),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=u, response=x, qop=auth, nc=00000001",
                DigestError::MissingParameter("cnonce"),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=u, response=x, qop=auth, cnonce=c",
                DigestError::MissingParameter("nc"),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=u, response=x, qop=auth, cnonce=c, nc=1",
                DigestError::Malformed("nc is not 8 hex digits"),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(&Credentials::parse(value).unwrap_err(), expected, "{value}");
        }
        assert!(!DigestError::Malformed("x").rechallenge());
        assert!(DigestError::UnsupportedAlgorithm("MD5-sess".into()).rechallenge());
    }

    #[test]
    fn challenge_parse_edge_cases() {
        assert_eq!(
            Challenge::parse("Digest nonce=n").unwrap_err(),
            DigestError::MissingParameter("realm")
        );
        assert_eq!(
            Challenge::parse("Digest realm=r").unwrap_err(),
            DigestError::MissingParameter("nonce")
        );
        assert_eq!(
            Challenge::parse("Digest realm=r, nonce=n, qop=\"auth-int\"").unwrap_err(),
            DigestError::UnsupportedQop("auth-int".into())
        );
        let ch = Challenge::parse(
            "Digest realm=r, nonce=n, qop=\"auth-int,AUTH\", stale=TRUE, domain=\"sip:x\", \
             algorithm=sha-256",
        )
        .unwrap();
        assert_eq!(ch.qop, Some(Qop::Auth));
        assert!(ch.stale);
        assert_eq!(ch.algorithm, Algorithm::Sha256);
        assert!(
            !Challenge::parse("Digest realm=r, nonce=n, stale=false")
                .unwrap()
                .stale
        );
    }
}
