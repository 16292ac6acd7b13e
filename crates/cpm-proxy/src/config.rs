//! Configuration of the SIP/IP Core.

use core::net::{IpAddr, SocketAddr};
use std::collections::HashMap;
use std::time::Duration;

use cpm_sip_core::Peer;
use cpm_sip_core::digest::Algorithm;
use cpm_sip_core::guard::ThrottleConfig;
use cpm_sip_core::overload::OverloadConfig;
use cpm_sip_core::transaction::TimerConfig;

/// An address range `ADDR[/PREFIX]` whose requests are trusted: not challenged, and their
/// P-Asserted-Identity kept (RFC 3325 trust domain). The SBC/P-CSCF or application servers in
/// front of the core.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct TrustedPeer {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length (32 / 128 for a single host).
    pub prefix: u8,
}

impl TrustedPeer {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Self { addr, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Registrar limits (RFC 3261 section 10.3).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct RegistrarConfig {
    /// Shortest accepted registration; shorter ones get 423 with Min-Expires.
    pub min_expires: u32,
    /// Longest registration; longer requests are shortened.
    pub max_expires: u32,
    /// Used when the REGISTER names no expiry.
    pub default_expires: u32,
    /// Most bindings per address-of-record (devices); more get 403.
    pub max_bindings_per_aor: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires: 10,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_aor: 16,
        }
    }
}

/// Everything the core needs to know about itself and its neighbours.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The domains this core serves (registrar and location service); the first is the default
    /// realm for digest authentication.
    pub domains: Vec<String>,
    /// Our own SIP address as others reach it: goes into Via, Record-Route, Service-Route.
    pub advertised: SocketAddr,
    /// Other addresses of this node (the listen address, the host's interfaces): a URI with
    /// one of them as host names our domain, like the advertised address and loopback.
    pub own_addresses: Vec<IpAddr>,
    /// Requests from these ranges are not challenged, and keep their P-Asserted-Identity.
    pub trusted_peers: Vec<TrustedPeer>,
    /// The application servers CPM requests are routed through, in order (outline section
    /// 5.2.3.2; the S-CSCF's initial filter criteria of 3GPP TS 29.228, reduced to what CPM
    /// needs): the first entry whose [`Service`] matches a request serves it, on the
    /// originating side and again on the terminating side. Empty: CPM requests are routed
    /// like any other.
    pub application_servers: Vec<ApplicationServer>,
    /// At most this many requests wait for the user directory at once; more are answered
    /// `503` with `Retry-After` (the directory is read off the driver's loop, so its answers
    /// can fall behind).
    pub max_pending_lookups: usize,
    /// Other domains and the address of their core (inter-domain routing); requests for a
    /// domain that is neither ours nor here get 404 (no open relay).
    pub peer_domains: HashMap<String, SocketAddr>,
    /// Registrar limits.
    pub registrar: RegistrarConfig,
    /// How long a digest nonce stays valid; older ones get `stale=true`.
    pub nonce_ttl: Duration,
    /// Secret for stateless digest nonces; the driver draws it at start.
    pub nonce_secret: [u8; 32],
    /// Digest algorithms offered in challenges, one header each, in this order (RFC 8760).
    /// MD5 only by default: deployed UAs break on a second challenge they do not know
    /// (baresip 1.0 with libre 1.1 aborts on SHA-256 even after an MD5 one; SIPp reads only the
    /// first). `[Sha256, Md5]` offers both, the stronger first.
    pub digest_algorithms: Vec<Algorithm>,
    /// Most nonces the replay table remembers (RFC 7616 section 3.4 nonce counts).
    pub nonce_table_size: usize,
    /// Failed-authentication limits per source and per user, and the back-off.
    pub auth_throttle: ThrottleConfig,
    /// Out-of-dialog requests per second one source address may send (a token bucket);
    /// trusted peers and peer-domain cores are not limited.
    pub source_rate: u32,
    /// Out-of-dialog requests one source may send at once (the bucket's size).
    pub source_burst: u32,
    /// Most source addresses the rate limiter tracks.
    pub tracked_sources: usize,
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Overload control: new out-of-dialog requests are refused with 503 and Retry-After
    /// while the measured queue delay or store latency says the node cannot take more
    /// ([`cpm_sip_core::overload`]).
    pub overload: OverloadConfig,
    /// At most this many live transactions; a new request past it is refused like an
    /// overloaded one (a bound on memory whatever the delays say).
    pub max_transactions: usize,
    /// At most this many store operations of the node waiting for their receipts (told by
    /// the driver, [`crate::Proxy::set_store_backlog`]); a new request past it is refused
    /// like an overloaded one: a bound on the store queue's memory whatever its latency says.
    pub max_store_in_flight: usize,
    /// Seed for tags and branch suffixes (a simulation replays byte for byte).
    pub rng_seed: u64,
    /// Which shard of its node this core is (`cpm serve --threads`). With several, the
    /// shard is written at the end of the branch of every request it sends
    /// ([`crate::proxy::branch_shard`]), so that the responses find their way back to it,
    /// and what remains to do for a local target on another shard (its terminating phase,
    /// its bindings) is handed to that shard's core.
    pub shards: Shards,
}

/// FNV-1a over parts, each followed by a separator (so `["ab", "c"]` and `["a", "bc"]`
/// differ): the branch hash of RFC 3261 16.6 step 8 and the shard of a user.
pub(crate) fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Which shard of a node an element is, of how many: a user's bindings, flows and
/// terminating state live on [`Shards::of_user`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Shards {
    /// This shard, `0..count`.
    pub index: u16,
    /// How many shards the node runs (1: not sharded).
    pub count: u16,
}

impl Default for Shards {
    /// One shard: the whole node.
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shards {
    /// The shard of a user, by the user part of its address-of-record (unescaped): the host
    /// does not count, so `alice@localhost` and `alice@127.0.0.1` are one user of the node.
    pub fn of_user(self, user: &str) -> u16 {
        if self.count <= 1 {
            return 0;
        }
        // Stable across builds and runs (the shard of a stored binding must not change with
        // a restart), no seed to keep.
        (fnv(&[user.as_bytes()]) % u64::from(self.count)) as u16
    }

    /// [`Shards::of_user`] for an address-of-record `user@host`.
    pub fn of_aor(self, aor: &str) -> u16 {
        self.of_user(aor.rsplit_once('@').map_or(aor, |(u, _)| u))
    }
}

impl ProxyConfig {
    /// A configuration for one domain at one address, with defaults for the rest.
    pub fn new(domain: &str, advertised: SocketAddr) -> Self {
        Self {
            domains: vec![domain.to_ascii_lowercase()],
            advertised,
            own_addresses: Vec::new(),
            trusted_peers: Vec::new(),
            application_servers: Vec::new(),
            max_pending_lookups: 10_000,
            peer_domains: HashMap::new(),
            registrar: RegistrarConfig::default(),
            nonce_ttl: Duration::from_secs(300),
            nonce_secret: [7; 32],
            digest_algorithms: vec![Algorithm::Md5],
            nonce_table_size: 200_000,
            auth_throttle: ThrottleConfig::default(),
            source_rate: 500,
            source_burst: 1000,
            tracked_sources: 100_000,
            timers: TimerConfig::default(),
            overload: OverloadConfig::default(),
            max_transactions: 500_000,
            max_store_in_flight: 100_000,
            rng_seed: 1,
            shards: Shards::default(),
        }
    }

    /// Whether `domain` is one we serve (a trailing dot, as in a fully qualified name, does
    /// not make it another domain).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Whether requests from `ip` are trusted.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_peers.iter().any(|t| t.contains(ip))
    }

    /// The realm of a domain's users: the domain itself.
    pub fn default_domain(&self) -> &str {
        self.domains.first().map_or("localhost", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_ranges() {
        let t = TrustedPeer::parse("10.1.0.0/16").unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(!t.contains("10.2.0.1".parse().unwrap()));
        let h = TrustedPeer::parse("127.0.0.1").unwrap();
        assert!(h.contains("127.0.0.1".parse().unwrap()));
        assert!(!h.contains("127.0.0.2".parse().unwrap()));
        assert!(
            TrustedPeer::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            TrustedPeer::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(TrustedPeer::parse("1.2.3.4/33").is_none());
        assert!(TrustedPeer::parse("nonsense").is_none());
    }
}

/// Which CPM requests an application server serves.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Service {
    /// Every request carrying a CPM ICSI, of any method.
    Any,
    /// CPM pager mode: `MESSAGE` with a CPM ICSI (standalone, 1-N, deferred).
    Pager,
    /// CPM sessions: `INVITE` with a CPM ICSI (chat, Large Message Mode, file transfer).
    Session,
}

impl Service {
    /// Whether a CPM request of this method is this service's.
    pub fn serves(self, method: &cpm_sip::Method) -> bool {
        match self {
            Self::Any => true,
            Self::Pager => *method == cpm_sip::Method::Message,
            Self::Session => *method == cpm_sip::Method::Invite,
        }
    }
}

/// One row of the core's application-server table: a service and who serves it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ApplicationServer {
    /// The requests it serves.
    pub service: Service,
    /// Where they go: a function of this node ([`Peer::local`]) or an address on the network
    /// (UDP across a network; TCP by any connection to that address).
    pub server: Peer,
}

impl ProxyConfig {
    /// The application server for a CPM request of this method, if the table names one.
    pub fn application_server_for(&self, method: &cpm_sip::Method) -> Option<Peer> {
        self.application_servers
            .iter()
            .find(|a| a.service.serves(method))
            .map(|a| a.server)
    }

    /// Whether `peer` is one of the application servers: a function of this node (a local
    /// peer cannot come from the network), or a configured server's address.
    pub fn is_application_server(&self, peer: &Peer) -> bool {
        peer.function().is_some()
            || self
                .application_servers
                .iter()
                .any(|a| a.server.function().is_none() && a.server.addr == peer.addr)
    }
}
