//! The registrar's location service (RFC 3261 section 10.3): bindings per address-of-record,
//! one per device (RFC 5626 `+sip.instance` and `reg-id`), with expiry.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cpm_sip::{Contact, HeaderName, NameAddr, Request, SipUri, StatusCode, Uri, unescape};
use cpm_sip_core::{ConnId, Peer};

use crate::config::RegistrarConfig;

/// One registered contact of an address-of-record.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Binding {
    /// The Contact as registered: URI and parameters (feature tags such as
    /// `+g.3gpp.icsi-ref` are kept), without `expires`.
    pub contact: NameAddr,
    /// `+sip.instance` (RFC 5626), unquoted: the device.
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626).
    pub reg_id: Option<u32>,
    /// When the binding lapses.
    pub expires_at: Instant,
    /// Call-ID of the REGISTER that last refreshed it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// The flow the REGISTER came over: requests for the device go back over it
    /// (the same connection for TCP; the source address for UDP, which crosses NATs).
    pub flow: Peer,
    /// Path header values of the REGISTER (RFC 3327), in order.
    pub path: Vec<String>,
}

impl Binding {
    /// Seconds left, rounded up.
    pub fn remaining(&self, now: Instant) -> u64 {
        let left = self.expires_at.saturating_duration_since(now);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }

    fn same_device(&self, other: &Self) -> bool {
        match (&self.instance, &other.instance) {
            (Some(a), Some(b)) => a == b && self.reg_id == other.reg_id,
            (None, None) => match (&self.contact.uri, &other.contact.uri) {
                (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
                (a, b) => a == b,
            },
            _ => false,
        }
    }
}

/// Why a REGISTER was refused, with the response code.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct RegisterError {
    /// Status code.
    pub status: StatusCode,
    /// Reason phrase.
    pub reason: &'static str,
    /// For 423: the Min-Expires to send.
    pub min_expires: Option<u32>,
}

impl RegisterError {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            min_expires: None,
        }
    }
}

/// The canonical address-of-record of a SIP URI: `user@host`, the user unescaped, the host in
/// lower case (RFC 3261 section 10.3 step 5).
pub fn aor_of(uri: &SipUri) -> Option<String> {
    let user = uri.user.as_deref()?;
    let user = String::from_utf8_lossy(&unescape(user)).into_owned();
    Some(format!(
        "{user}@{}",
        uri.host.to_string().to_ascii_lowercase()
    ))
}

/// The bindings of every address-of-record.
#[derive(Debug, Default)]
pub struct Registrar {
    by_aor: HashMap<String, Vec<Binding>>,
    expiries: BTreeSet<(Instant, String)>,
    count: usize,
}

impl Registrar {
    /// The live bindings of an address-of-record.
    pub fn lookup<'a>(&'a self, aor: &str, now: Instant) -> impl Iterator<Item = &'a Binding> + 'a {
        self.by_aor
            .get(aor)
            .into_iter()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// Number of live bindings (all users).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no binding exists.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether a live binding of `aor` came over this flow (same transport and address, and
    /// for streams the same connection): the flow is then as good as authenticated for `aor`.
    pub fn is_registered_flow(&self, aor: &str, flow: &Peer, now: Instant) -> bool {
        self.lookup(aor, now).any(|b| {
            b.flow.transport == flow.transport
                && b.flow.addr == flow.addr
                && (b.flow.conn.is_none() || b.flow.conn == flow.conn)
        })
    }

    /// Applies the Contact and Expires of an authorised REGISTER for `aor` (RFC 3261 section
    /// 10.3 steps 6-8); returns the bindings now current.
    pub fn apply(
        &mut self,
        now: Instant,
        aor: &str,
        req: &Request,
        flow: Peer,
        cfg: &RegistrarConfig,
    ) -> Result<Vec<Binding>, RegisterError> {
        let bad = |reason| RegisterError::new(StatusCode::BAD_REQUEST, reason);
        let h = &req.headers;
        let call_id = h
            .call_id()
            .ok()
            .flatten()
            .ok_or_else(|| bad("Bad Call-ID"))?
            .0;
        let cseq = h.cseq().ok().flatten().ok_or_else(|| bad("Bad CSeq"))?.seq;
        // A malformed Expires is treated as absent (RFC 3261 section 10.2.1.1 allows 3600).
        let header_expires = h.expires().ok().flatten();
        let contact = h.contact().map_err(|_| bad("Bad Contact"))?;
        let path: Vec<String> = h
            .get_all(&HeaderName::Path)
            .filter_map(|p| p.value().ok().map(|v| v.into_owned()))
            .collect();
        match contact {
            None => {}
            Some(Contact::Wildcard) => {
                // `*` only with Expires: 0 and as the only Contact (RFC 3261 10.3 step 6).
                if header_expires != Some(0) || h.get_all(&HeaderName::Contact).count() != 1 {
                    return Err(bad("Wildcard Contact Needs Expires 0"));
                }
                let list = self.by_aor.entry(aor.to_owned()).or_default();
                if list.iter().any(|b| b.call_id == call_id && b.cseq > cseq) {
                    return Err(bad("Out Of Order REGISTER"));
                }
                self.remove_all(aor);
            }
            Some(Contact::Addresses(addrs)) => {
                // Validate everything before changing anything: a REGISTER applies whole.
                let mut updates = Vec::with_capacity(addrs.len());
                for mut a in addrs {
                    if !matches!(a.uri, Uri::Sip(_) | Uri::Tel(_) | Uri::Absolute(_)) {
                        return Err(bad("Bad Contact URI"));
                    }
                    let expires = match a.param("expires").and_then(|p| p.value.as_deref()) {
                        Some(v) => v
                            .parse::<u64>()
                            .ok()
                            .map(|v| v.min(u64::from(u32::MAX)) as u32),
                        None => header_expires,
                    }
                    .unwrap_or(cfg.default_expires);
                    if expires != 0 && expires < cfg.min_expires {
                        return Err(RegisterError {
                            status: StatusCode::INTERVAL_TOO_BRIEF,
                            reason: "Interval Too Brief",
                            min_expires: Some(cfg.min_expires),
                        });
                    }
                    let expires = expires.min(cfg.max_expires);
                    a.params.retain(|p| !p.name.eq_ignore_ascii_case("expires"));
                    let instance = a
                        .param("+sip.instance")
                        .and_then(|p| p.unquoted_value())
                        .map(|v| v.into_owned());
                    let reg_id = a
                        .param("reg-id")
                        .and_then(|p| p.value.as_deref())
                        .and_then(|v| v.parse().ok());
                    updates.push((
                        expires,
                        Binding {
                            contact: a,
                            instance,
                            reg_id,
                            expires_at: now + Duration::from_secs(u64::from(expires)),
                            call_id: call_id.clone(),
                            cseq,
                            flow,
                            path: path.clone(),
                        },
                    ));
                }
                let list = self.by_aor.entry(aor.to_owned()).or_default();
                for (expires, b) in &updates {
                    if let Some(old) = list.iter().find(|o| o.same_device(b)) {
                        // An older REGISTER of the same Call-ID must not undo a newer one.
                        if old.call_id == b.call_id && old.cseq > b.cseq {
                            return Err(bad("Out Of Order REGISTER"));
                        }
                    } else if *expires != 0 && list.len() >= cfg.max_bindings_per_aor {
                        return Err(RegisterError::new(
                            StatusCode::FORBIDDEN,
                            "Too Many Devices",
                        ));
                    }
                }
                for (expires, b) in updates {
                    let list = self.by_aor.entry(aor.to_owned()).or_default();
                    let before = list.len();
                    list.retain(|o| !o.same_device(&b));
                    self.count -= before - list.len();
                    if expires > 0 {
                        self.expiries.insert((b.expires_at, aor.to_owned()));
                        list.push(b);
                        self.count += 1;
                    }
                }
            }
        }
        self.purge_aor(aor, now);
        Ok(self.lookup(aor, now).cloned().collect())
    }

    fn remove_all(&mut self, aor: &str) {
        if let Some(list) = self.by_aor.remove(aor) {
            self.count -= list.len();
        }
    }

    fn purge_aor(&mut self, aor: &str, now: Instant) {
        if let Some(list) = self.by_aor.get_mut(aor) {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            self.count -= before - list.len();
            if list.is_empty() {
                self.by_aor.remove(aor);
            }
        }
    }

    /// A connection closed. Bindings registered over it as RFC 5626 outbound flows (`reg-id`)
    /// are gone with it (section 5.2: the flow failed); plain RFC 3261 bindings stay, and
    /// requests for them go to their Contact (a new connection) from now on. Returns the
    /// addresses-of-record that lost a binding.
    pub fn flow_closed(&mut self, conn: ConnId) -> Vec<String> {
        let mut affected = Vec::new();
        for (aor, list) in &mut self.by_aor {
            let before = list.len();
            list.retain(|b| !(b.flow.conn == Some(conn) && b.reg_id.is_some()));
            if list.len() != before {
                self.count -= before - list.len();
                affected.push(aor.clone());
            }
            for b in list.iter_mut().filter(|b| b.flow.conn == Some(conn)) {
                b.flow.conn = None;
            }
        }
        self.by_aor.retain(|_, l| !l.is_empty());
        affected
    }

    /// Removes lapsed bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, aor)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            self.purge_aor(&aor, now);
        }
    }

    /// When the next binding may lapse.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_sip::Message;

    fn register(contacts: &str, extra: &str, cseq: u32) -> Request {
        let raw = format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}\r\n\
             From: <sip:alice@localhost>;tag=1\r\nTo: <sip:alice@localhost>\r\nCall-ID: reg1\r\n\
             CSeq: {cseq} REGISTER\r\n{contacts}{extra}Content-Length: 0\r\n\r\n"
        );
        match Message::parse(raw.into_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// The origin of virtual time; the only clock read, and only in tests.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn flow() -> Peer {
        Peer::udp("127.0.0.1:5070".parse().unwrap())
    }

    #[test]
    fn devices_refresh_and_unregister() {
        let t0 = origin();
        let cfg = RegistrarConfig::default();
        let mut r = Registrar::default();
        let phone = "Contact: <sip:alice@127.0.0.1:5070>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\"\r\n";
        let laptop =
            "Contact: <sip:alice@127.0.0.1:5080>;+sip.instance=\"<urn:uuid:2>\";reg-id=1\r\n";
        let b = r
            .apply(t0, "alice@localhost", &register(phone, "", 1), flow(), &cfg)
            .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].instance.as_deref(), Some("<urn:uuid:1>"));
        assert!(b[0].contact.param("+g.3gpp.icsi-ref").is_some());
        let b = r
            .apply(
                t0,
                "alice@localhost",
                &register(laptop, "Expires: 60\r\n", 2),
                flow(),
                &cfg,
            )
            .unwrap();
        assert_eq!(b.len(), 2);
        // Same device with a new contact address replaces its binding.
        let moved = phone.replace("5070>", "5071>");
        let b = r
            .apply(
                t0,
                "alice@localhost",
                &register(&moved, "", 3),
                flow(),
                &cfg,
            )
            .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(r.len(), 2);
        // The laptop lapses after 60 s.
        r.handle_timeout(t0 + Duration::from_secs(61));
        assert_eq!(
            r.lookup("alice@localhost", t0 + Duration::from_secs(61))
                .count(),
            1
        );
        // `*` removes everything.
        let b = r
            .apply(
                t0,
                "alice@localhost",
                &register("Contact: *\r\n", "Expires: 0\r\n", 4),
                flow(),
                &cfg,
            )
            .unwrap();
        assert!(b.is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn refusals() {
        let t0 = origin();
        let cfg = RegistrarConfig::default();
        let mut r = Registrar::default();
        let e = r
            .apply(
                t0,
                "a@localhost",
                &register("Contact: <sip:a@h>;expires=5\r\n", "", 1),
                flow(),
                &cfg,
            )
            .unwrap_err();
        assert_eq!(e.status, StatusCode::INTERVAL_TOO_BRIEF);
        assert_eq!(e.min_expires, Some(10));
        let e = r
            .apply(
                t0,
                "a@localhost",
                &register("Contact: *\r\n", "", 1),
                flow(),
                &cfg,
            )
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        // A query (no Contact) lists the bindings without change.
        assert!(
            r.apply(t0, "a@localhost", &register("", "", 1), flow(), &cfg)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn closed_connection_drops_outbound_bindings_only() {
        let t0 = origin();
        let cfg = RegistrarConfig::default();
        let mut r = Registrar::default();
        let tcp = Peer::tcp("127.0.0.1:6000".parse().unwrap(), Some(ConnId(9)));
        let plain = "Contact: <sip:a@127.0.0.1:6000;transport=tcp>\r\n";
        let outbound = "Contact: <sip:a@127.0.0.1:6001;transport=tcp>;+sip.instance=\"<urn:uuid:9>\";reg-id=1\r\n";
        r.apply(t0, "a@localhost", &register(plain, "", 1), tcp, &cfg)
            .unwrap();
        r.apply(t0, "a@localhost", &register(outbound, "", 2), tcp, &cfg)
            .unwrap();
        assert!(r.is_registered_flow("a@localhost", &tcp, t0));
        assert_eq!(r.flow_closed(ConnId(9)), vec!["a@localhost".to_owned()]);
        let left: Vec<_> = r.lookup("a@localhost", t0).collect();
        assert_eq!(left.len(), 1);
        assert_eq!(
            left[0].flow.conn, None,
            "the plain binding now goes to its Contact"
        );
    }
}
