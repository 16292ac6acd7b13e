//! The registrar's location service (RFC 3261 section 10.3): bindings per address-of-record,
//! one per device (RFC 5626 `+sip.instance` and `reg-id`), with expiry.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpm_sip::{Contact, HeaderName, NameAddr, Request, StatusCode, Uri};
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

    /// The device key the store keeps the binding under: `+sip.instance` (with `reg-id`), or
    /// the Contact URI for a device without an instance id.
    pub fn key(&self) -> String {
        match (&self.instance, self.reg_id) {
            (Some(i), Some(r)) => format!("{i};reg-id={r}"),
            (Some(i), None) => i.clone(),
            (None, _) => self.contact.uri.to_string(),
        }
    }

    /// Whether the binding can outlive the node: one registered over UDP. A binding made
    /// over a connection is reached over that connection, which a restart closes; such
    /// clients register again when they reconnect (RFC 5626 section 4.4.1), while a stored
    /// binding would send requests to the client's ephemeral port, where nothing listens.
    pub fn is_durable(&self) -> bool {
        !self.flow.transport.is_reliable()
    }

    /// The binding as the store keeps it; `unix_ms` is the wall clock at `now`.
    pub fn to_record(&self, aor: &str, now: Instant, unix_ms: u64) -> cpm_store::BindingRecord {
        let left = self.expires_at.saturating_duration_since(now).as_millis() as u64;
        cpm_store::BindingRecord {
            aor: aor.to_owned(),
            key: self.key(),
            contact: self.contact.to_string(),
            destination: format!(
                "{}:{}",
                self.flow.transport.as_via_token().to_ascii_lowercase(),
                self.flow.addr
            ),
            path: self.path.clone(),
            expires_at_ms: unix_ms + left,
        }
    }

    /// A binding back from the store (`None` if the record does not parse or has lapsed).
    pub fn from_record(r: &cpm_store::BindingRecord, now: Instant, unix_ms: u64) -> Option<Self> {
        let contact = NameAddr::parse(&r.contact)?;
        let (transport, addr) = r.destination.split_once(':')?;
        let transport = cpm_sip_core::TransportKind::from_via_token(transport)?;
        let addr = addr.parse().ok()?;
        let left = r.expires_at_ms.checked_sub(unix_ms).filter(|l| *l > 0)?;
        let instance = contact
            .param("+sip.instance")
            .and_then(|p| p.unquoted_value())
            .map(|v| v.into_owned());
        let reg_id = contact
            .param("reg-id")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| v.parse().ok());
        Some(Self {
            contact,
            instance,
            reg_id,
            expires_at: now + Duration::from_millis(left),
            call_id: String::new(),
            cseq: 0,
            flow: Peer {
                transport,
                addr,
                conn: None,
            },
            path: r.path.clone(),
        })
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

/// The canonical address-of-record of a SIP URI (one copy, in the codec).
pub use cpm_sip::cpm::aor_of;

/// The bindings of every address-of-record.
///
/// Memory per binding matters (a node holds millions): the address-of-record is one shared
/// string for the map and the expiry set, and an address-of-record's list starts with room
/// for one binding (a `Vec` would start with four, most users have one device).
#[derive(Debug, Default)]
pub struct Registrar {
    by_aor: HashMap<Arc<str>, Vec<Binding>>,
    expiries: BTreeSet<(Instant, Arc<str>)>,
    count: usize,
}

impl Registrar {
    /// The shared key of `aor` and its list, made (with room for one binding) if it has none.
    fn list(&mut self, aor: &str) -> (Arc<str>, &mut Vec<Binding>) {
        let key = self
            .by_aor
            .get_key_value(aor)
            .map_or_else(|| Arc::from(aor), |(k, _)| Arc::clone(k));
        let list = self
            .by_aor
            .entry(Arc::clone(&key))
            .or_insert_with(|| Vec::with_capacity(1));
        (key, list)
    }

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
                let (_, list) = self.list(aor);
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
                let (_, list) = self.list(aor);
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
                    let (key, list) = self.list(aor);
                    let before = list.len();
                    list.retain(|o| !o.same_device(&b));
                    let removed = before - list.len();
                    let at = b.expires_at;
                    if expires > 0 {
                        list.push(b);
                    }
                    self.count -= removed;
                    if expires > 0 {
                        self.expiries.insert((at, key));
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
                affected.push(aor.to_string());
            }
            for b in list.iter_mut().filter(|b| b.flow.conn == Some(conn)) {
                b.flow.conn = None;
            }
        }
        self.by_aor.retain(|_, l| !l.is_empty());
        affected
    }

    /// Puts back a binding read from the store after a restart (replacing one of the same
    /// device).
    pub fn restore(&mut self, aor: &str, b: Binding) {
        let (key, list) = self.list(aor);
        let before = list.len();
        list.retain(|o| !o.same_device(&b));
        let removed = before - list.len();
        let at = b.expires_at;
        list.push(b);
        self.count = self.count - removed + 1;
        self.expiries.insert((at, key));
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
