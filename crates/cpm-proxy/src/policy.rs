//! Who a sender is and where the core may send on someone's behalf: the rules that keep the
//! node from being an open relay or a forger's mouthpiece (see ARCHITECTURE.md, "Security
//! rules of the core").
//!
//! - **Own names.** A host that is one of the node's domains (also written with a trailing
//!   dot, in any case), `localhost`, a loopback or unspecified address, or one of the node's
//!   own addresses stands for the node's domain, whatever the port: `sip:alice@127.0.0.1`
//!   and `sip:alice@localhost.` are alice of this node, and must prove it.
//! - **Senders.** A `sip:`/`sips:` From, or an `im:`/`pres:` one (RFC 3860/3859 map onto the
//!   same user@host), is a local user of ours or a user of a foreign domain. Any other
//!   scheme (`tel:`, `urn:`, unknown) cannot be checked by this core and is taken only from
//!   the trust domain or a peer domain's core.
//! - **Foreign domains** are taken only from that domain's configured core
//!   (`peer_domains`) or from a trusted peer.
//! - **Next hops.** A preloaded Route or a foreign Request-URI is followed only for the trust
//!   domain, an authenticated local user, a dialog this core is on (its signed Record-Route),
//!   or when it leads to a configured peer core, a trusted peer or the Participating Function.

use core::net::IpAddr;

use cpm_sip::{Host, Uri};
use cpm_sip_core::{Peer, TransportKind};

use crate::config::ProxyConfig;

/// Who the From of a request says sent it, as this core can judge it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Sender {
    /// A user of one of our domains: `alice@localhost` (lowercase domain).
    Local(String),
    /// A user of another domain (lowercase, without a trailing dot).
    Foreign(String),
    /// A URI this core cannot tie to a domain (`tel:`, `urn:`, no user, unknown scheme).
    Unverifiable,
}

/// A domain name as compared: lowercase, without the trailing dot of a fully qualified name.
pub(crate) fn normalize_domain(d: &str) -> String {
    d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase()
}

impl ProxyConfig {
    /// The domain of ours a host stands for, if it is one of our names or addresses (any
    /// port): a served domain gives itself; `localhost` and our addresses give the default
    /// domain.
    pub fn own_domain(&self, host: &Host) -> Option<String> {
        let ip = match host {
            Host::Domain(d) => {
                let d = normalize_domain(d);
                if let Some(ours) = self.domains.iter().find(|x| x.eq_ignore_ascii_case(&d)) {
                    return Some(ours.to_ascii_lowercase());
                }
                if d == "localhost" {
                    return Some(self.default_domain().to_owned());
                }
                return None;
            }
            Host::Ipv4(a) => IpAddr::V4(*a),
            Host::Ipv6(a) => a.parse::<IpAddr>().ok()?,
        };
        let ours = ip.is_loopback()
            || ip.is_unspecified()
            || ip == self.advertised.ip()
            || self.own_addresses.contains(&ip);
        ours.then(|| self.default_domain().to_owned())
    }

    /// Who a From (or P-Asserted-Identity) URI names.
    pub(crate) fn sender(&self, uri: &Uri) -> Sender {
        let sip;
        let u = match uri {
            Uri::Sip(u) => u,
            // RFC 3860 (im:) and RFC 3859 (pres:) name the same user@host as sip: does.
            Uri::Absolute(a)
                if a.scheme.eq_ignore_ascii_case("im") || a.scheme.eq_ignore_ascii_case("pres") =>
            {
                match Uri::parse(&format!("sip:{}", a.rest)) {
                    Ok(Uri::Sip(u)) => {
                        sip = u;
                        &sip
                    }
                    _ => return Sender::Unverifiable,
                }
            }
            _ => return Sender::Unverifiable,
        };
        if let Some(domain) = self.own_domain(&u.host) {
            let Some(user) = u.user.as_deref() else {
                return Sender::Unverifiable;
            };
            let user = String::from_utf8_lossy(&cpm_sip::unescape(user)).into_owned();
            return Sender::Local(format!("{user}@{domain}"));
        }
        match &u.host {
            Host::Domain(d) => Sender::Foreign(normalize_domain(d)),
            // A foreign IP address is no domain anyone can vouch for.
            Host::Ipv4(_) | Host::Ipv6(_) => Sender::Unverifiable,
        }
    }

    /// Whether `peer` is the configured core of a peer domain (any of them). Over UDP the
    /// source must be the configured address exactly (a core sends from its SIP port); over
    /// TCP the port is the connection's own, so the address alone counts.
    pub(crate) fn is_peer_core(&self, peer: &Peer) -> bool {
        self.peer_domains.values().any(|a| same_host(peer, a))
    }

    /// Whether `peer` is the configured core of `domain`.
    pub(crate) fn is_core_of(&self, domain: &str, peer: &Peer) -> bool {
        self.peer_domains
            .iter()
            .any(|(d, a)| normalize_domain(d) == domain && same_host(peer, a))
    }

    /// Whether sending to `dest` is always allowed: a peer domain's core, a trusted peer, the
    /// application servers.
    pub(crate) fn is_known_next_hop(&self, dest: &Peer) -> bool {
        self.is_application_server(dest)
            || self.peer_domains.values().any(|a| *a == dest.addr)
            || self.is_trusted(dest.addr.ip())
    }
}

fn same_host(peer: &Peer, configured: &core::net::SocketAddr) -> bool {
    match peer.transport {
        TransportKind::Udp => peer.addr == *configured,
        TransportKind::Tcp => peer.addr.ip() == configured.ip(),
        // A function of this node is not another domain's core.
        TransportKind::Local(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProxyConfig {
        let mut c = ProxyConfig::new("localhost", "127.0.0.1:5070".parse().unwrap());
        c.domains.push("example.org".into());
        c.own_addresses = vec!["192.0.2.10".parse().unwrap()];
        c.peer_domains
            .insert("peer.test".into(), "198.51.100.7:5060".parse().unwrap());
        c
    }

    fn sender(s: &str) -> Sender {
        cfg().sender(&Uri::parse(s).unwrap())
    }

    #[test]
    fn look_alike_hosts_are_our_domain() {
        let alice = Sender::Local("alice@localhost".into());
        assert_eq!(sender("sip:alice@localhost"), alice);
        assert_eq!(sender("sip:alice@LOCALHOST."), alice);
        assert_eq!(sender("sip:alice@127.0.0.1"), alice);
        assert_eq!(sender("sip:alice@127.0.0.1:9999"), alice);
        assert_eq!(sender("sip:alice@[::1]"), alice);
        assert_eq!(sender("sips:alice@192.0.2.10"), alice);
        assert_eq!(sender("im:alice@localhost"), alice);
        assert_eq!(sender("pres:alice@localhost."), alice);
        assert_eq!(
            sender("sip:bob@Example.Org."),
            Sender::Local("bob@example.org".into())
        );
        assert_eq!(sender("sip:%61lice@localhost"), alice);
    }

    #[test]
    fn other_senders() {
        assert_eq!(
            sender("sip:mallory@otherdomain.test."),
            Sender::Foreign("otherdomain.test".into())
        );
        assert_eq!(
            sender("im:mallory@otherdomain.test"),
            Sender::Foreign("otherdomain.test".into())
        );
        assert_eq!(sender("tel:+15551234"), Sender::Unverifiable);
        assert_eq!(sender("urn:service:sos"), Sender::Unverifiable);
        assert_eq!(sender("sip:localhost"), Sender::Unverifiable);
        assert_eq!(sender("sip:x@203.0.113.5"), Sender::Unverifiable);
    }

    #[test]
    fn peer_cores() {
        let c = cfg();
        let udp = Peer::udp("198.51.100.7:5060".parse().unwrap());
        let other_port = Peer::udp("198.51.100.7:5999".parse().unwrap());
        let tcp = Peer::tcp("198.51.100.7:40000".parse().unwrap(), None);
        assert!(c.is_core_of("peer.test", &udp));
        assert!(!c.is_core_of("peer.test", &other_port));
        assert!(c.is_core_of("peer.test", &tcp));
        assert!(!c.is_core_of("other.test", &udp));
        assert!(c.is_known_next_hop(&udp));
        assert!(!c.is_known_next_hop(&other_port));
    }
}
