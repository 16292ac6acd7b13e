//! The node's configuration: one TOML file, every key with a default, flags on top.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything `cpm serve` reads. `cpm serve --print-config` prints the effective values.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NodeConfig {
    /// The domains served (registrar, location service, digest realm); the first is the
    /// default.
    pub(crate) domains: Vec<String>,
    /// SIP listen address (UDP and TCP on the same port).
    pub(crate) sip_listen: SocketAddr,
    /// The address others reach us at, for Via and Record-Route; defaults to `sip_listen`
    /// (set it when listening on 0.0.0.0).
    pub(crate) advertise: Option<SocketAddr>,
    /// MSRP listen address (TCP): the Participating Function anchors every session's media
    /// here and writes it in the SDP. Unset: port 2855 on the SIP address (an ephemeral port
    /// when the SIP port is 0).
    pub(crate) msrp_listen: Option<SocketAddr>,
    /// Admin HTTP listen address (`/health`, `/metrics`).
    pub(crate) http_listen: SocketAddr,
    /// Data directory (SQLite store `cpm.db`, the nonce secret).
    pub(crate) data_dir: PathBuf,
    /// Runtime worker threads, and as many node shards (`Node`s, a user on one); 0 means
    /// one per core.
    pub(crate) threads: usize,
    /// Address ranges (`ADDR[/PREFIX]`) whose requests are not challenged and whose
    /// P-Asserted-Identity is kept: the SBC/P-CSCF or application servers in front.
    pub(crate) trusted_peers: Vec<String>,
    /// An external Participating Function CPM requests are routed through (`HOST:PORT`).
    /// Unset (the default): the node's own PF serves its users in process.
    pub(crate) participating_function: Option<SocketAddr>,
    /// Other domains and the address of their core.
    pub(crate) peer_domains: BTreeMap<String, SocketAddr>,
    /// Registrar limits.
    pub(crate) registrar: RegistrarSection,
    /// Authentication.
    pub(crate) auth: AuthSection,
    /// Per-source limits on new requests.
    pub(crate) limits: LimitsSection,
    /// Overload control: refuse new work with 503 when the node cannot take more.
    pub(crate) overload: OverloadSection,
    /// Transports.
    pub(crate) transport: TransportSection,
    /// The HTTP server.
    pub(crate) http: HttpSection,
    /// Logs.
    pub(crate) log: LogSection,
    /// The node's own Participating Function (pager mode, deferred delivery).
    pub(crate) pf: PfSection,
    /// The message store.
    pub(crate) store: StoreSection,
}

/// `[pf]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PfSection {
    /// How long a message waits for a device to accept it before the sender gets
    /// `202 Accepted` and the message stays in the deferred queue.
    pub(crate) delivery_timeout_ms: u64,
    /// How long an undelivered message is kept for deferred delivery; 0 keeps it forever.
    /// Expired messages produce a failure IMDN when the sender asked for one.
    pub(crate) deferred_ttl_secs: u64,
    /// How often the deferred queue is checked for expired messages.
    pub(crate) expiry_interval_ms: u64,
    /// At most this many message requests in progress; more get 503 with Retry-After.
    pub(crate) max_in_progress: usize,
    /// Most messages waiting in one recipient's deferred queue; more get 486.
    pub(crate) max_deferred_per_recipient: u64,
    /// Most bytes of message bodies waiting in one recipient's deferred queue; more get 486
    /// (413 for a message larger than that on its own).
    pub(crate) max_deferred_bytes_per_recipient: u64,
    /// Most messages from one sender waiting in one recipient's queue; more get 486.
    pub(crate) max_deferred_per_sender: u64,
    /// The largest pager-mode message content in octets (OMA CPM: 1,300); a larger one gets
    /// `413 Use Large Message Mode` (the client then sends it in a session).
    pub(crate) max_pager_bytes: usize,
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StoreSection {
    /// `full` (fsync at every commit: durable against power loss) or `normal` (durable
    /// against a crash of the process only).
    pub(crate) synchronous: String,
    /// At most this many operations share one transaction (group commit).
    pub(crate) max_batch: usize,
}

impl Default for PfSection {
    fn default() -> Self {
        Self {
            delivery_timeout_ms: 8_000,
            deferred_ttl_secs: 7 * 24 * 3600,
            expiry_interval_ms: 10_000,
            max_in_progress: 100_000,
            max_deferred_per_recipient: 1000,
            max_deferred_bytes_per_recipient: 16 * 1024 * 1024,
            max_deferred_per_sender: 100,
            max_pager_bytes: 1300,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            synchronous: "full".into(),
            max_batch: 1024,
        }
    }
}

/// `[registrar]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RegistrarSection {
    pub(crate) min_expires: u32,
    pub(crate) max_expires: u32,
    pub(crate) default_expires: u32,
    pub(crate) max_devices_per_user: usize,
}

/// `[auth]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthSection {
    /// Lifetime of a digest nonce; older ones are answered with `stale=true`.
    pub(crate) nonce_ttl_secs: u64,
    /// Digest algorithms offered, one challenge each, in this order: `MD5`, `SHA-256`.
    /// MD5 alone by default, because deployed UAs (baresip 1.0, SIPp) fail on a SHA-256
    /// challenge; `["SHA-256", "MD5"]` offers both (RFC 8760), the stronger first.
    pub(crate) digest_algorithms: Vec<String>,
    /// Most nonces remembered for replay detection (RFC 7616 nonce counts); when full, the
    /// oldest are forgotten and refused (their clients get a fresh challenge).
    pub(crate) nonce_table_size: usize,
    /// Failed authentications from one source address within `failure_window_secs` that
    /// block the source (SIP: silence over UDP, 403 over TCP; HTTP: 429).
    pub(crate) max_failures_per_source: u32,
    /// Failed authentications for one user (from any source) within the window that block
    /// the user for new devices (its registered devices keep working).
    pub(crate) max_failures_per_user: u32,
    /// The window failures are counted in.
    pub(crate) failure_window_secs: u64,
    /// The first block; each further block of the same source or user doubles it.
    pub(crate) block_secs: u64,
    /// The longest block.
    pub(crate) max_block_secs: u64,
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsSection {
    /// Out-of-dialog SIP requests per second one source address may send (on average);
    /// more are dropped over UDP and answered 503 with Retry-After over TCP, before any
    /// transaction or store work. Trusted peers and peer-domain cores are not limited.
    pub(crate) requests_per_sec_per_source: u32,
    /// How many one source may send at once (the token bucket's size).
    pub(crate) burst_per_source: u32,
    /// Most source addresses tracked at once.
    pub(crate) tracked_sources: usize,
    /// UDP datagrams per second one source address may send (requests, responses and
    /// retransmissions alike), counted before a datagram is parsed: a flood is dropped for
    /// the price of a lookup and other sources are still heard. 0: no budget. Trusted peers,
    /// peer-domain cores and an external PF have none.
    pub(crate) udp_packets_per_sec_per_source: u32,
    /// How many datagrams one source may send at once.
    pub(crate) udp_burst_per_source: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            requests_per_sec_per_source: 500,
            burst_per_source: 1000,
            tracked_sources: 100_000,
            udp_packets_per_sec_per_source: 2000,
            udp_burst_per_source: 4000,
        }
    }
}

/// `[overload]`: RFC 5390 overload control. New out-of-dialog requests are answered
/// `503 Service Unavailable` with `Retry-After` at once, statelessly, while the measured delay
/// says the node cannot take more; in-dialog requests, responses and retransmissions always
/// pass.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OverloadSection {
    /// `false`: never refuse for load (the per-source limits still apply).
    pub(crate) enabled: bool,
    /// The queue delay to stay under: once requests have waited longer than this between
    /// the socket and the core for a whole `interval_ms`, new ones that waited this long are
    /// refused until the queue has stayed shorter for an interval.
    pub(crate) target_ms: u64,
    /// See `target_ms`.
    pub(crate) interval_ms: u64,
    /// The store latency past which (for an interval) every new request is refused.
    pub(crate) store_target_ms: u64,
    /// The Retry-After of a refusal (a jitter of up to as much again is added).
    pub(crate) retry_after_secs: u32,
    /// Most live SIP transactions; a new request beyond is refused the same way.
    pub(crate) max_transactions: usize,
    /// Most store operations waiting for their commit; a new request beyond is refused the
    /// same way (the store queue's bound).
    pub(crate) max_store_in_flight: usize,
}

impl Default for OverloadSection {
    fn default() -> Self {
        let o = cpm_sip_core::overload::OverloadConfig::default();
        Self {
            enabled: o.enabled,
            target_ms: o.target.as_millis() as u64,
            interval_ms: o.interval.as_millis() as u64,
            store_target_ms: o.store_target.as_millis() as u64,
            retry_after_secs: o.retry_after_secs,
            max_transactions: 500_000,
            max_store_in_flight: 100_000,
        }
    }
}

impl OverloadSection {
    /// The core's settings.
    pub(crate) fn config(&self) -> cpm_sip_core::overload::OverloadConfig {
        cpm_sip_core::overload::OverloadConfig {
            enabled: self.enabled,
            target: std::time::Duration::from_millis(self.target_ms),
            interval: std::time::Duration::from_millis(self.interval_ms),
            store_target: std::time::Duration::from_millis(self.store_target_ms),
            retry_after_secs: self.retry_after_secs,
        }
    }
}

/// `[transport]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TransportSection {
    /// A TCP connection with no traffic either way for this long is closed.
    pub(crate) tcp_idle_timeout_secs: u64,
    /// Most TCP connections open at once; at the limit a connection that never sent a
    /// complete message, else the longest idle, makes room for a new one.
    pub(crate) max_connections: usize,
    /// Most TCP connections from one IP address at once.
    pub(crate) tcp_max_connections_per_source: usize,
    /// A TCP message must arrive whole within this of its first byte, and an accepted
    /// connection must send its first message within this (slow-loris defence).
    pub(crate) tcp_message_timeout_secs: u64,
    /// Largest SIP message body.
    pub(crate) max_message_bytes: usize,
    /// Most MSRP connections open at once (a session between two users of this node takes
    /// two client connections and an in-process pipe with two ends); more are refused.
    pub(crate) msrp_max_connections: usize,
}

/// `[http]`: the admin and history HTTP server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HttpSection {
    /// Most HTTP connections open at once; more are closed at once.
    pub(crate) max_connections: usize,
    /// Most HTTP connections from one IP address at once.
    pub(crate) max_connections_per_source: usize,
    /// A connection must deliver a request's whole header within this of being opened or
    /// of its last response, or it is closed (idle keep-alive and slow headers alike).
    pub(crate) idle_timeout_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_source: 64,
            idle_timeout_secs: 10,
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSection {
    /// `info`, `debug`, ... or any `tracing` filter (`RUST_LOG` wins when set).
    pub(crate) level: String,
    /// One JSON object per line instead of human-readable lines.
    pub(crate) json: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            domains: vec!["localhost".into()],
            sip_listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            advertise: None,
            msrp_listen: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./cpm-data"),
            threads: 0,
            trusted_peers: Vec::new(),
            participating_function: None,
            peer_domains: BTreeMap::new(),
            registrar: RegistrarSection::default(),
            auth: AuthSection::default(),
            limits: LimitsSection::default(),
            overload: OverloadSection::default(),
            transport: TransportSection::default(),
            http: HttpSection::default(),
            log: LogSection::default(),
            pf: PfSection::default(),
            store: StoreSection::default(),
        }
    }
}

impl Default for RegistrarSection {
    fn default() -> Self {
        let r = cpm_proxy::RegistrarConfig::default();
        Self {
            min_expires: r.min_expires,
            max_expires: r.max_expires,
            default_expires: r.default_expires,
            max_devices_per_user: r.max_bindings_per_aor,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            nonce_ttl_secs: 300,
            digest_algorithms: vec!["MD5".into()],
            nonce_table_size: 200_000,
            max_failures_per_source: 10,
            max_failures_per_user: 20,
            failure_window_secs: 60,
            block_secs: 60,
            max_block_secs: 3600,
        }
    }
}

impl Default for TransportSection {
    fn default() -> Self {
        Self {
            tcp_idle_timeout_secs: 300,
            max_connections: 10_000,
            tcp_max_connections_per_source: 256,
            tcp_message_timeout_secs: 10,
            max_message_bytes: 1024 * 1024,
            msrp_max_connections: 50_000,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            json: false,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file; unknown keys are errors (a typo must not be silently ignored).
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks what serde cannot: non-empty domains, parsable trusted peers, sane limits.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.domains.is_empty() || self.domains.iter().any(|d| d.trim().is_empty()) {
            return Err("at least one non-empty domain is needed".into());
        }
        for t in &self.trusted_peers {
            if cpm_proxy::TrustedPeer::parse(t).is_none() {
                return Err(format!("trusted peer {t:?} is not ADDR or ADDR/PREFIX"));
            }
        }
        if self.auth.digest_algorithms.is_empty() {
            return Err("auth.digest_algorithms: name at least one of MD5, SHA-256".into());
        }
        for a in &self.auth.digest_algorithms {
            if cpm_sip_core::digest::Algorithm::parse(a).is_none() {
                return Err(format!(
                    "auth.digest_algorithms: unknown algorithm {a:?} (MD5 or SHA-256)"
                ));
            }
        }
        if !matches!(self.store.synchronous.as_str(), "full" | "normal") {
            return Err(format!(
                "store.synchronous: {:?} is not \"full\" or \"normal\"",
                self.store.synchronous
            ));
        }
        let a = &self.auth;
        if a.nonce_table_size == 0
            || a.max_failures_per_source == 0
            || a.max_failures_per_user == 0
            || a.failure_window_secs == 0
            || a.block_secs == 0
        {
            return Err(
                "auth: nonce_table_size, max_failures_per_source, max_failures_per_user, \
                 failure_window_secs and block_secs must be at least 1"
                    .into(),
            );
        }
        if a.max_block_secs < a.block_secs {
            return Err("auth: max_block_secs must be at least block_secs".into());
        }
        let t = &self.transport;
        if t.max_connections == 0
            || t.msrp_max_connections == 0
            || t.tcp_max_connections_per_source == 0
            || t.tcp_message_timeout_secs == 0
        {
            return Err(
                "transport: connection limits and tcp_message_timeout_secs must be at least 1"
                    .into(),
            );
        }
        let h = &self.http;
        if h.max_connections == 0 || h.max_connections_per_source == 0 || h.idle_timeout_secs == 0 {
            return Err("http: every value must be at least 1".into());
        }
        let l = &self.limits;
        if l.requests_per_sec_per_source == 0 || l.burst_per_source == 0 || l.tracked_sources == 0 {
            return Err("limits: every value must be at least 1".into());
        }
        let o = &self.overload;
        if o.target_ms == 0
            || o.interval_ms == 0
            || o.store_target_ms == 0
            || o.max_transactions == 0
            || o.max_store_in_flight == 0
        {
            return Err("overload: every value must be at least 1".into());
        }
        if self.store.max_batch == 0 || self.pf.max_in_progress == 0 {
            return Err("store.max_batch and pf.max_in_progress must be at least 1".into());
        }
        let pf = &self.pf;
        if pf.max_deferred_per_recipient == 0
            || pf.max_deferred_bytes_per_recipient == 0
            || pf.max_deferred_per_sender == 0
        {
            return Err("pf: the deferred queue limits must be at least 1".into());
        }
        if self.pf.expiry_interval_ms == 0 {
            return Err("pf.expiry_interval_ms must be at least 1".into());
        }
        let r = &self.registrar;
        if r.min_expires > r.max_expires || r.default_expires > r.max_expires {
            return Err("registrar: need min_expires <= default_expires <= max_expires".into());
        }
        if self.advertise.is_none() && self.sip_listen.ip().is_unspecified() {
            return Err(
                "sip_listen is a wildcard address: set `advertise` to the address peers reach"
                    .into(),
            );
        }
        Ok(())
    }

    /// The effective configuration as TOML, every key: TOML has no null, so an unset optional
    /// key is printed commented out, with an example value, where it would stand (the output
    /// reads back as the same configuration).
    pub(crate) fn to_toml(&self) -> String {
        let body =
            toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"));
        let mut unset = String::new();
        if self.advertise.is_none() {
            unset.push_str(
                "# advertise = \"203.0.113.10:5060\"    # unset: the sip_listen address\n",
            );
        }
        if self.participating_function.is_none() {
            unset.push_str(
                "# participating_function = \"127.0.0.1:5090\"    # unset: the node's own, in process\n",
            );
        }
        // The top-level keys come before the first table; the unset ones go last among them.
        let split = body
            .match_indices('\n')
            .map(|(i, _)| i + 1)
            .find(|&i| body[i..].starts_with('['))
            .unwrap_or(body.len());
        let (top, tables) = body.split_at(split);
        let top = top.trim_end_matches('\n');
        format!("{top}\n{unset}\n{tables}")
    }
}

impl AuthSection {
    /// The failed-authentication throttle these settings describe (SIP and HTTP each run
    /// one).
    pub(crate) fn throttle(&self) -> cpm_sip_core::guard::ThrottleConfig {
        use std::time::Duration;
        cpm_sip_core::guard::ThrottleConfig {
            max_source_failures: self.max_failures_per_source,
            max_user_failures: self.max_failures_per_user,
            window: Duration::from_secs(self.failure_window_secs),
            block: Duration::from_secs(self.block_secs),
            max_block: Duration::from_secs(self.max_block_secs),
            ..cpm_sip_core::guard::ThrottleConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of the configuration, dotted (`auth.block_secs`); `peer_domains` is one key
    /// (its keys are the user's domains).
    fn all_keys() -> Vec<String> {
        let full = NodeConfig {
            advertise: Some(SocketAddr::from(([192, 0, 2, 1], 5060))),
            participating_function: Some(SocketAddr::from(([127, 0, 0, 1], 5090))),
            ..NodeConfig::default()
        };
        let table = toml::Table::try_from(&full).expect("the configuration is a TOML table");
        let mut keys = Vec::new();
        for (k, v) in &table {
            match v {
                toml::Value::Table(t) if k != "peer_domains" => {
                    keys.extend(t.keys().map(|sub| format!("{k}.{sub}")));
                }
                _ => keys.push(k.clone()),
            }
        }
        keys.sort();
        keys
    }

    /// The keys a TOML text names, set (`key = v`) or commented out (`# key = v`), dotted by
    /// their `[table]`; a `[peer_domains]` header names `peer_domains`.
    fn keys_named(text: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut table = String::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix('[') {
                table = name.split(']').next().unwrap_or_default().to_owned();
                if table == "peer_domains" {
                    keys.push(table.clone());
                }
                continue;
            }
            let line = line.strip_prefix("# ").unwrap_or(line);
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            keys.push(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
        keys.sort();
        keys.dedup();
        keys
    }

    fn missing(text: &str) -> Vec<String> {
        let named = keys_named(text);
        all_keys()
            .into_iter()
            .filter(|k| !named.contains(k))
            .collect()
    }

    #[test]
    fn print_config_names_every_key_and_reads_back() {
        let default = NodeConfig::default();
        let text = default.to_toml();
        assert_eq!(missing(&text), Vec::<String>::new(), "{text}");
        assert!(text.contains("\n# advertise = \""), "{text}");
        assert!(text.contains("\n# participating_function = \""), "{text}");
        let back: NodeConfig = toml::from_str(&text).expect("print-config parses");
        assert_eq!(back, default);
        let mut set = NodeConfig {
            advertise: Some(SocketAddr::from(([192, 0, 2, 1], 5060))),
            participating_function: Some(SocketAddr::from(([127, 0, 0, 1], 5090))),
            ..NodeConfig::default()
        };
        set.peer_domains.insert(
            "example.net".into(),
            SocketAddr::from(([192, 0, 2, 2], 5060)),
        );
        let text = set.to_toml();
        assert!(text.contains("\nadvertise = \"192.0.2.1:5060\""), "{text}");
        assert!(!text.contains("# advertise"), "{text}");
        assert_eq!(toml::from_str::<NodeConfig>(&text).expect("parses"), set);
        // The commented-out examples are valid values.
        let uncommented = NodeConfig::default()
            .to_toml()
            .replace("# advertise", "advertise")
            .replace("# participating_function", "participating_function");
        let c: NodeConfig = toml::from_str(&uncommented).expect("uncommented parses");
        assert!(c.advertise.is_some() && c.participating_function.is_some());
    }

    #[test]
    fn example_config_is_the_defaults_and_names_every_key() {
        let text = include_str!("../../../cpm.example.toml");
        let c: NodeConfig = toml::from_str(text).expect("cpm.example.toml parses");
        assert_eq!(c, NodeConfig::default());
        c.validate().expect("the defaults are valid");
        assert_eq!(missing(text), Vec::<String>::new());
    }

    /// The sample in the README's "Run a node" section (the `toml` block with `[registrar]`).
    #[test]
    fn readme_config_sample_is_the_defaults_and_names_every_key() {
        let readme = include_str!("../../../README.md");
        let sample = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
            .find(|block| block.contains("[registrar]"))
            .expect("the README has the configuration sample");
        let c: NodeConfig = toml::from_str(sample).expect("the README sample parses");
        assert_eq!(c, NodeConfig::default());
        assert_eq!(missing(sample), Vec::<String>::new());
    }
}
