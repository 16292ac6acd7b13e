//! [`Network`]: the hosts, the links between them and the virtual clock.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_client::{Client, ClientConfig, Event, ReceivedImdn, ReceivedMessage, SendId};
use cpm_conversation::{ParticipatingFunction, PfConfig};
use cpm_proxy::{Proxy, ProxyConfig, TrustedPeer, UserRecord};
use cpm_sip::{Limits, Message};
use cpm_sip_core::digest::{self, Algorithm};
use cpm_sip_core::{Function, Peer, Transmit};
use cpm_store::{
    Backend, HistoryQuery, MemoryStore, MessageRecord, OpError, OpId, Outcome, StoreOp,
};

use crate::link::LinkConfig;
use crate::rng::{SimRng, derive_seed};

/// The wall clock at the start of every simulation, in milliseconds since the Unix epoch
/// (2026-11-25T16:00:00Z). Wall time at virtual time `t` is this plus `t`.
pub const UNIX_BASE_MS: u64 = 1_795_622_400_000;

/// Steps (instants at which something happens) one `Network` may take in all before it gives
/// up with the transcript, unless [`Network::set_max_steps`] says otherwise.
pub const DEFAULT_MAX_STEPS: u64 = 1_000_000;

/// Rounds of output draining at one instant before the simulator calls it a livelock.
const MAX_FLUSH_ROUNDS: usize = 10_000;

/// Transcript lines a failure report shows (the newest ones).
const FAILURE_TAIL: usize = 400;

/// Names a domain of the network (returned by [`Network::add_domain`]).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct DomainId(usize);

/// Names a client (one device of one user, returned by [`Network::add_client`]).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ClientId(usize);

/// A host on the simulated network: a domain's SIP/IP Core or a client.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Node {
    /// A domain (its core is the host on the network; its PF and store sit behind it).
    Domain(DomainId),
    /// A client.
    Client(ClientId),
}

impl From<DomainId> for Node {
    fn from(d: DomainId) -> Self {
        Self::Domain(d)
    }
}

impl From<ClientId> for Node {
    fn from(c: ClientId) -> Self {
        Self::Client(c)
    }
}

/// How one domain is set up. [`Network::add_domain_with`] hands it to the test with the
/// simulator's defaults filled in; afterwards the simulator sets the addressing fields again
/// (`proxy.advertised`; the node sets `pf.address`, `pf.core` and the core's application-server row) and adds
/// every other domain to `proxy.peer_domains` (unless the test named it) and to
/// `proxy.trusted_peers`.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// The SIP/IP Core.
    pub proxy: ProxyConfig,
    /// The Participating Function.
    pub pf: PfConfig,
    /// How long after its first operation a store batch commits (group commit: operations
    /// that arrive meanwhile join the batch).
    pub commit_delay: Duration,
}

/// Counters of the datagram links.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct WireStats {
    /// Datagrams handed to a link.
    pub sent: u64,
    /// Datagrams that arrived at a host (duplicates count twice).
    pub delivered: u64,
    /// Datagrams the links lost.
    pub lost: u64,
    /// Datagrams the links duplicated.
    pub duplicated: u64,
    /// Datagrams to an address no host has.
    pub unroutable: u64,
}

/// The final answer to one [`Network::send`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SendOutcome {
    /// The status code (408 when the client gave up).
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The `imdn.Message-ID` the message carried.
    pub message_id: String,
}

/// A message seen on the network (see [`Network::set_capture`]).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Captured {
    /// When it arrived.
    pub at: Instant,
    /// The sending host's name: `a.test` (a core), `pf.a.test` (a PF),
    /// `alice@a.test/phone` (a client).
    pub from: String,
    /// The receiving host's name.
    pub to: String,
    /// The bytes.
    pub payload: Bytes,
}

/// One domain: its node (SIP/IP Core and Participating Function, [`cpm_node::Node`], the
/// same object `cpm serve` drives), memory store, user directory.
struct Domain {
    name: String,
    core_addr: SocketAddr,
    config: DomainConfig,
    node: cpm_node::Node,
    store: MemoryStore,
    /// Operations waiting for the next commit.
    queue: Vec<(OpId, StoreOp)>,
    commit_at: Option<Instant>,
    /// AOR → password.
    users: BTreeMap<String, String>,
}

impl core::fmt::Debug for Domain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Domain")
            .field("name", &self.name)
            .field("core_addr", &self.core_addr)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Domain {
    /// The host name of one of the domain's functions: `a.test` (the core), `pf.a.test`.
    fn function_name(&self, f: Function) -> String {
        match f {
            Function::Core => self.name.clone(),
            other => format!("{}.{}", other.name(), self.name),
        }
    }

    /// Builds the domain's node from its configuration.
    fn build_node(config: &DomainConfig, core: ProxyConfig, base: Instant) -> cpm_node::Node {
        let cfg = cpm_node::NodeConfig {
            core,
            participating: Some(config.pf.clone()),
            // The transcript and the capture show the in-node hops too.
            trace_hops: true,
            shards: cpm_node::Shards::default(),
        };
        cpm_node::Node::new(cfg, base, UNIX_BASE_MS)
    }

    /// Queues a store operation for the next commit (group commit: the first operation sets
    /// the commit time, later ones join its batch).
    fn enqueue(&mut self, now: Instant, id: OpId, op: StoreOp) {
        self.queue.push((id, op));
        if self.commit_at.is_none() {
            self.commit_at = Some(now + self.config.commit_delay);
        }
    }

    /// The user directory: a digest username (`alice` or `alice@a.test`) in a realm.
    fn lookup(&self, username: &str, realm: &str) -> Option<UserRecord> {
        let aor = if username.contains('@') {
            username.to_ascii_lowercase()
        } else {
            format!(
                "{}@{}",
                username.to_ascii_lowercase(),
                realm.to_ascii_lowercase()
            )
        };
        let password = self.users.get(&aor)?;
        Some(UserRecord {
            ha1_md5: digest::ha1(Algorithm::Md5, username, realm, password),
            ha1_sha256: digest::ha1(Algorithm::Sha256, username, realm, password),
            aor,
        })
    }
}

/// What one flush of a domain records: transcript lines and captured messages of the hops
/// inside its node.
#[derive(Debug)]
struct Notes {
    stamp: String,
    now: Instant,
    lines: Option<Vec<String>>,
    captured: Option<Vec<Captured>>,
}

impl Notes {
    /// A message handed from one function of a node to another: noted (its bytes are
    /// made only for the transcript and the capture; the node hands over the value).
    fn hop(&mut self, from: &str, to: &str, message: &Message) {
        if self.lines.is_none() && self.captured.is_none() {
            return;
        }
        let payload = message.to_bytes();
        if let Some(lines) = &mut self.lines {
            lines.push(line(&self.stamp, from, to, &payload, ""));
        }
        if let Some(captured) = &mut self.captured {
            captured.push(Captured {
                at: self.now,
                from: from.to_owned(),
                to: to.to_owned(),
                payload,
            });
        }
    }
}

#[derive(Debug)]
struct ClientHost {
    /// `alice@a.test/phone`.
    name: String,
    aor: String,
    addr: SocketAddr,
    client: Client,
    events: Vec<(Instant, Event)>,
    /// What the device's datagrams pass through before they leave (a hostile device).
    tamper: Option<fn(Bytes) -> Bytes>,
}

/// A datagram on a link.
#[derive(Debug, Eq, Ord, PartialEq, PartialOrd)]
struct Flight {
    at: Instant,
    seq: u64,
    from: Node,
    from_addr: SocketAddr,
    to: SocketAddr,
    payload: Bytes,
    /// The second copy of a duplicated datagram.
    copy: bool,
}

/// The whole CPM network in one thread on virtual time.
///
/// Domains (each a SIP/IP Core, its Participating Function and a [`MemoryStore`]) and
/// clients ([`cpm_client::Client`] over UDP, each on an address of its own) exchange
/// datagrams over links ([`LinkConfig`]: latency, jitter, loss, duplication, reordering). The
/// hop between a domain's core and its PF is lossless and instant, as in the node
/// (`crates/cpm/src/node.rs`): what the core sends to the PF's address is parsed and given to
/// the PF as coming from the core, and the other way round. Store operations are executed
/// in batches [`DomainConfig::commit_delay`] after the first one; their outcomes go back to
/// the PF.
///
/// Time only moves when the network runs ([`Network::run_for`], [`Network::run_until`]): it
/// jumps to the earliest deadline of any core, in-flight datagram or pending commit. All
/// randomness (link faults, the seeds of every core) comes from the seed given to
/// [`Network::new`], so a run replays exactly. A run that exceeds its step budget panics with
/// the transcript: no test can hang.
///
/// Addresses: domain `i` (in order of [`Network::add_domain`]) has its core at
/// `10.0.{i+1}.1:5060` and its PF at `10.0.{i+1}.2:5060`; client `k` is at
/// `10.1.{k/250}.{k%250+1}:5060`.
#[derive(Debug)]
pub struct Network {
    seed: u64,
    base: Instant,
    now: Instant,
    rng: SimRng,
    started: bool,
    domains: Vec<Domain>,
    clients: Vec<ClientHost>,
    hosts: HashMap<SocketAddr, Node>,
    default_link: LinkConfig,
    links: HashMap<(Node, Node), LinkConfig>,
    wire: BinaryHeap<Reverse<Flight>>,
    /// The MSRP connections (reliable, ordered).
    msrp: crate::msrp::MsrpNet,
    next_seq: u64,
    stats: WireStats,
    transcript: Option<Vec<String>>,
    capture: Option<Vec<Captured>>,
    steps: u64,
    max_steps: u64,
}

impl Network {
    /// An empty network whose every random choice derives from `seed`. The transcript is
    /// on; links are [`LinkConfig::default`].
    pub fn new(seed: u64) -> Self {
        // The one clock read of the simulator: the origin of virtual time. Nothing depends
        // on its value; every later time is this plus an offset.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        Self {
            seed,
            base,
            now: base,
            rng: SimRng::new(derive_seed(seed, "links")),
            started: false,
            domains: Vec::new(),
            clients: Vec::new(),
            hosts: HashMap::new(),
            default_link: LinkConfig::default(),
            links: HashMap::new(),
            wire: BinaryHeap::new(),
            msrp: crate::msrp::MsrpNet::default(),
            next_seq: 0,
            stats: WireStats::default(),
            transcript: Some(Vec::new()),
            capture: None,
            steps: 0,
            max_steps: DEFAULT_MAX_STEPS,
        }
    }

    // ------------------------------------------------------------------ building

    /// Adds a domain with the default configuration. Add every domain before the network
    /// first runs (each core learns the others' addresses at construction).
    pub fn add_domain(&mut self, name: &str) -> DomainId {
        self.add_domain_with(name, |_| {})
    }

    /// Adds a domain; `configure` may change its configuration (see [`DomainConfig`]).
    pub fn add_domain_with(
        &mut self,
        name: &str,
        configure: impl FnOnce(&mut DomainConfig),
    ) -> DomainId {
        assert!(
            !self.started,
            "add every domain before the network runs or a client acts"
        );
        let name = name.to_ascii_lowercase();
        assert!(
            self.domain_index(&name).is_none(),
            "domain {name} added twice"
        );
        let i = self.domains.len();
        let net = u8::try_from(i + 1).expect("at most 255 domains");
        let core_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, net, 1)), 5060);
        let mut proxy = ProxyConfig::new(&name, core_addr);
        proxy.rng_seed = derive_seed(self.seed, &format!("proxy {name}"));
        let mut secret = [0u8; 32];
        for (k, chunk) in secret.chunks_mut(8).enumerate() {
            let v = derive_seed(self.seed, &format!("nonce secret {name} {k}"));
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        proxy.nonce_secret = secret;
        let mut pf = PfConfig::new(core_addr, Peer::local(Function::Core, core_addr));
        pf.rng_seed = derive_seed(self.seed, &format!("pf {name}"));
        // The PF anchors sessions on the node's MSRP listener.
        pf.msrp = Some(SocketAddr::new(core_addr.ip(), crate::msrp::MSRP_PORT));
        let mut config = DomainConfig {
            proxy,
            pf,
            commit_delay: Duration::from_millis(2),
        };
        configure(&mut config);
        config.proxy.advertised = core_addr;
        let domain = Domain {
            node: Domain::build_node(&config, config.proxy.clone(), self.base),
            name,
            core_addr,
            config,
            store: MemoryStore::new(),
            queue: Vec::new(),
            commit_at: None,
            users: BTreeMap::new(),
        };
        if let Some(at) = domain.config.pf.msrp {
            self.msrp.listen(at, Node::Domain(DomainId(i)));
        }
        self.domains.push(domain);
        self.hosts.insert(core_addr, Node::Domain(DomainId(i)));
        self.rewire();
        DomainId(i)
    }

    /// Builds every core again with the current set of domains: each knows the others as
    /// peer domains and trusts their cores. Only before the network has run.
    fn rewire(&mut self) {
        let all: Vec<(String, SocketAddr)> = self
            .domains
            .iter()
            .map(|d| (d.name.clone(), d.core_addr))
            .collect();
        for d in &mut self.domains {
            let mut cfg = d.config.proxy.clone();
            for (name, addr) in all.iter().filter(|(n, _)| *n != d.name) {
                cfg.peer_domains.entry(name.clone()).or_insert(*addr);
                if !cfg.is_trusted(addr.ip()) {
                    cfg.trusted_peers.push(TrustedPeer {
                        addr: addr.ip(),
                        prefix: 32,
                    });
                }
            }
            d.node = Domain::build_node(&d.config, cfg, self.base);
        }
    }

    /// Adds a user to its domain's directory (the domain must exist).
    pub fn add_user(&mut self, aor: &str, password: &str) {
        let d = self.domain_of(aor);
        self.domains[d]
            .users
            .insert(aor.to_ascii_lowercase(), password.to_owned());
    }

    /// Adds a device of a user (password from the directory; a user not in it gets a
    /// password no directory entry matches). It does not register: see
    /// [`Network::register`].
    pub fn add_client(&mut self, aor: &str, device: &str) -> ClientId {
        self.add_client_with(aor, device, |_| {})
    }

    /// Adds a device; `configure` may change its configuration. The simulator sets `server`
    /// (the home domain's core) and `local_addr` again afterwards.
    pub fn add_client_with(
        &mut self,
        aor: &str,
        device: &str,
        configure: impl FnOnce(&mut ClientConfig),
    ) -> ClientId {
        let d = self.domain_of(aor);
        let aor = aor.to_ascii_lowercase();
        let k = self.clients.len();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                10,
                1,
                u8::try_from(k / 250).expect("at most 64000 clients"),
                (k % 250 + 1) as u8,
            )),
            5060,
        );
        let password = self.domains[d]
            .users
            .get(&aor)
            .cloned()
            .unwrap_or_else(|| "not-in-the-directory".to_owned());
        let server = self.domains[d].core_addr;
        let mut cfg = ClientConfig::new(aor.clone(), password, server, addr);
        cfg.device = device.to_owned();
        cfg.seed = derive_seed(self.seed, &format!("client {aor}/{device}"));
        configure(&mut cfg);
        cfg.server = server;
        cfg.local_addr = addr;
        let client = Client::new(cfg, self.now, self.unix_ms())
            .unwrap_or_else(|e| panic!("client {aor}/{device}: {e}"));
        self.clients.push(ClientHost {
            name: format!("{aor}/{device}"),
            aor,
            addr,
            client,
            events: Vec::new(),
            tamper: None,
        });
        self.hosts.insert(addr, Node::Client(ClientId(k)));
        ClientId(k)
    }

    /// Passes every datagram `c` sends through `tamper` before it leaves (`None`: as sent):
    /// a compromised or hostile device that still holds its user's credentials.
    pub fn set_tamper(&mut self, c: ClientId, tamper: Option<fn(Bytes) -> Bytes>) {
        self.clients[c.0].tamper = tamper;
    }

    /// The link used between hosts that have none of their own.
    pub fn set_default_link(&mut self, link: LinkConfig) {
        self.default_link = link;
    }

    /// The link between two hosts (both directions).
    pub fn set_link(&mut self, a: impl Into<Node>, b: impl Into<Node>, link: LinkConfig) {
        let (a, b) = (a.into(), b.into());
        self.links.insert((a.min(b), a.max(b)), link);
    }

    /// The link between a client and its home domain's core.
    pub fn set_access_link(&mut self, client: ClientId, link: LinkConfig) {
        let d = self.domain_of(&self.clients[client.0].aor);
        self.set_link(client, DomainId(d), link);
    }

    /// Changes a domain's store commit delay.
    pub fn set_commit_delay(&mut self, domain: DomainId, delay: Duration) {
        self.domains[domain.0].config.commit_delay = delay;
    }

    /// Makes the domain's next store batch fail (as a failed commit: nothing applied, every
    /// operation answered with an error). Calling it `n` times fails the next `n` batches.
    pub fn fail_next_commit(&mut self, domain: DomainId) {
        self.domains[domain.0].store.fail_next_commit();
    }

    /// The step budget of the whole run (see [`DEFAULT_MAX_STEPS`]).
    pub fn set_max_steps(&mut self, max: u64) {
        self.max_steps = max;
    }

    /// Turns the transcript on or off (on by default; off drops what was recorded).
    pub fn set_transcript(&mut self, on: bool) {
        self.transcript = on.then(|| self.transcript.take().unwrap_or_default());
    }

    /// Turns the capture of every delivered message (network datagrams and core–PF hops,
    /// with their bytes) on or off (off by default; off drops what was captured).
    pub fn set_capture(&mut self, on: bool) {
        self.capture = on.then(|| self.capture.take().unwrap_or_default());
    }

    // ------------------------------------------------------------------ client commands

    /// Starts the client's registration (it then keeps it refreshed).
    pub fn register(&mut self, c: ClientId) {
        self.with_client(c, |client, now| client.register(now));
    }

    /// Registers the clients and runs until each is registered (panics with the transcript
    /// after 120 s of virtual time).
    pub fn register_all(&mut self, clients: &[ClientId]) {
        for &c in clients {
            self.register(c);
        }
        let clients = clients.to_vec();
        self.wait_for("every client registered", Duration::from_secs(120), |net| {
            clients.iter().all(|&c| net.is_registered(c))
        });
    }

    /// Removes the client's registration.
    pub fn unregister(&mut self, c: ClientId) {
        self.with_client(c, |client, now| client.unregister(now));
    }

    /// Sends a pager message from the client to `to` (one recipient: 1-1; several: 1-N
    /// through the exploder). Panics if the client refuses the arguments (a test bug).
    pub fn send(&mut self, c: ClientId, to: &[&str], text: &str) -> SendId {
        let to: Vec<String> = to.iter().map(|s| (*s).to_owned()).collect();
        self.with_client(c, |client, now| client.send_message(now, &to, text))
            .unwrap_or_else(|e| panic!("send refused: {e}"))
    }

    /// Sends the display notification for a message the client received; whether one was
    /// sent.
    pub fn send_displayed(&mut self, c: ClientId, message_id: &str) -> bool {
        self.with_client(c, |client, now| client.send_displayed(now, message_id))
    }

    /// Any other command: `f` gets the client and the current virtual time.
    pub fn with_client<R>(&mut self, c: ClientId, f: impl FnOnce(&mut Client, Instant) -> R) -> R {
        self.started = true;
        let now = self.now;
        f(&mut self.clients[c.0].client, now)
    }

    // ------------------------------------------------------------------ running

    /// Runs for `d` of virtual time: everything due until then happens.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.step(end) {}
        self.now = self.now.max(end);
    }

    /// Runs until `cond` holds (checked whenever every output of an instant has been moved)
    /// or `limit` of virtual time has passed; whether `cond` held.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.flush();
            if cond(self) {
                return true;
            }
            if !self.step(end) {
                self.now = self.now.max(end);
                return cond(self);
            }
        }
    }

    /// [`Network::run_until`], panicking with `what` and the transcript if `cond` does not
    /// hold within `limit`.
    pub fn wait_for(&mut self, what: &str, limit: Duration, cond: impl FnMut(&Self) -> bool) {
        if !self.run_until(limit, cond) {
            self.fail(&format!("not reached within {limit:?}: {what}"));
        }
    }

    /// Panics with `what` and the newest transcript lines.
    pub fn fail(&self, what: &str) -> ! {
        let lines = self.transcript();
        let tail = &lines[lines.len().saturating_sub(FAILURE_TAIL)..];
        panic!(
            "{what}\n(seed {}, t={:.3}s, {} steps)\n--- transcript: last {} of {} lines ---\n{}",
            self.seed,
            self.elapsed().as_secs_f64(),
            self.steps,
            tail.len(),
            lines.len(),
            tail.join("\n")
        );
    }

    /// Moves every output, then advances to the next deadline if it is at or before `end`
    /// and runs what is due then. False when nothing is due until `end`.
    fn step(&mut self, end: Instant) -> bool {
        self.started = true;
        self.flush();
        let Some(next) = self.next_deadline() else {
            return false;
        };
        if next > end {
            return false;
        }
        self.steps += 1;
        if self.steps > self.max_steps {
            self.fail(&format!("step budget of {} exceeded", self.max_steps));
        }
        self.now = self.now.max(next);
        let now = self.now;
        while self.wire.peek().is_some_and(|Reverse(f)| f.at <= now) {
            let Some(Reverse(f)) = self.wire.pop() else {
                break;
            };
            self.deliver(f);
            self.flush();
        }
        while let Some((host, events)) = self.msrp.pop_due(now) {
            for ev in events {
                match host {
                    Node::Client(c) => self.clients[c.0].client.handle_conn_event(now, ev),
                    Node::Domain(d) => self.domains[d.0]
                        .node
                        .handle_input(now, cpm_node::Input::Msrp(ev)),
                }
            }
            self.flush();
        }
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i].client;
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    let name = self.clients[i].name.clone();
                    self.fail(&format!("busy loop: client {name} is due again at once"));
                }
            }
        }
        for i in 0..self.domains.len() {
            let d = &mut self.domains[i];
            if d.node.poll_timeout().is_some_and(|t| t <= now) {
                d.node.handle_timeout(now);
                if d.node.poll_timeout().is_some_and(|t| t <= now) {
                    let name = d.name.clone();
                    self.fail(&format!("busy loop: node {name} is due again at once"));
                }
            }
            if self.domains[i].commit_at.is_some_and(|t| t <= now) {
                self.commit(i);
            }
        }
        true
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.wire.peek().map(|Reverse(f)| f.at);
        if let Some(t) = self.msrp.next_at() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for c in &self.clients {
            take(c.client.poll_timeout());
        }
        for d in &self.domains {
            take(d.node.poll_timeout());
            take(d.commit_at);
        }
        next
    }

    /// Moves every core's outputs until none has any.
    fn flush(&mut self) {
        for _ in 0..MAX_FLUSH_ROUNDS {
            let mut moved = false;
            for i in 0..self.clients.len() {
                moved |= self.flush_client(i);
            }
            for i in 0..self.domains.len() {
                moved |= self.flush_domain(i);
            }
            if !moved {
                return;
            }
        }
        self.fail("the cores keep producing output at one instant");
    }

    fn flush_client(&mut self, i: usize) -> bool {
        let now = self.now;
        let host = &mut self.clients[i];
        let mut out = Vec::new();
        let mut moved = false;
        while let Some(t) = host.client.poll_transmit() {
            out.push(t);
        }
        while let Some(e) = host.client.poll_event() {
            moved = true;
            host.events.push((now, e));
        }
        let mut msrp = Vec::new();
        while let Some(c) = host.client.poll_conn_command() {
            msrp.push(c);
        }
        // UDP only: there is no connection to close.
        let _ = host.client.poll_close();
        let addr = host.addr;
        let tamper = host.tamper;
        moved |= !out.is_empty() || !msrp.is_empty();
        for c in msrp {
            self.msrp.command(now, Node::Client(ClientId(i)), c);
        }
        for mut t in out {
            if let Some(tamper) = tamper {
                t.payload = tamper(t.payload);
            }
            self.send_datagram(Node::Client(ClientId(i)), addr, t);
        }
        moved
    }

    /// Carries out one domain's node outputs: datagrams onto the links, store operations
    /// into the next batch, user lookups from the directory, hops into the transcript.
    fn flush_domain(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut notes = Notes {
            stamp: self.stamp(),
            now,
            lines: self.transcript.is_some().then(Vec::new),
            captured: self.capture.is_some().then(Vec::new),
        };
        let mut out: Vec<Transmit> = Vec::new();
        let mut msrp = Vec::new();
        let mut moved = false;
        let mut misrouted = None;
        let d = &mut self.domains[i];
        let core_addr = d.core_addr;
        for _ in 0..MAX_FLUSH_ROUNDS {
            let Some(o) = d.node.poll_output() else {
                break;
            };
            moved = true;
            match o {
                cpm_node::Output::Transmit(x) => out.push(x),
                // UDP only: there is no connection to close.
                cpm_node::Output::Close(_) => {}
                cpm_node::Output::LookupUser {
                    query,
                    username,
                    realm,
                } => {
                    let user = d.lookup(&username, &realm);
                    d.node.handle_input(
                        now,
                        cpm_node::Input::Core(cpm_proxy::Input::User { query, user }),
                    );
                }
                cpm_node::Output::Store { id, op } => d.enqueue(now, id, op),
                cpm_node::Output::Shard(hop) => {
                    misrouted = Some(format!(
                        "{} sent to its shard {}, but runs one",
                        d.name, hop.shard
                    ));
                }
                cpm_node::Output::Msrp(c) => msrp.push(c),
                cpm_node::Output::Event(e) => match e {
                    cpm_node::Event::Hop { from, to, message } => {
                        let (from, to) = (d.function_name(from), d.function_name(to));
                        notes.hop(&from, &to, &message);
                    }
                    cpm_node::Event::NoSuchFunction(f) => {
                        misrouted = Some(format!(
                            "{} sent to {}, which it does not run",
                            d.name,
                            f.name()
                        ));
                    }
                    // Logged by the node's driver in production; nothing to simulate.
                    cpm_node::Event::Security(_) | cpm_node::Event::PersistFailed(_) => {}
                },
            }
        }
        if let (Some(transcript), Some(lines)) = (&mut self.transcript, notes.lines) {
            transcript.extend(lines);
        }
        if let (Some(capture), Some(captured)) = (&mut self.capture, notes.captured) {
            capture.extend(captured);
        }
        if let Some(why) = misrouted {
            self.fail(&why);
        }
        for x in out {
            self.send_datagram(Node::Domain(DomainId(i)), core_addr, x);
        }
        for c in msrp {
            self.msrp.command(now, Node::Domain(DomainId(i)), c);
        }
        moved
    }

    /// Runs the domain's queued store operations as one batch and hands the outcomes to
    /// the PF.
    fn commit(&mut self, i: usize) {
        let now = self.now;
        let t = self.stamp();
        let d = &mut self.domains[i];
        d.commit_at = None;
        let batch = std::mem::take(&mut d.queue);
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let kinds: Vec<&'static str> = batch.iter().map(|(_, op)| op_name(op)).collect();
        let results = d.store.execute(batch);
        let failed = results
            .iter()
            .any(|(_, r)| matches!(r, Err(OpError::Backend(_))));
        let text = format!(
            "{t} store.{}: {} {n} op(s): {}",
            d.name,
            if failed {
                "commit FAILED for"
            } else {
                "commit"
            },
            kinds.join(", ")
        );
        for (id, result) in results {
            d.node
                .handle_input(now, cpm_node::Input::Stored { id, result });
        }
        self.log(text);
    }

    fn send_datagram(&mut self, from: Node, from_addr: SocketAddr, t: Transmit) {
        self.stats.sent += 1;
        let to = self.hosts.get(&t.peer.addr).copied();
        let link = match to {
            Some(to) => self
                .links
                .get(&(from.min(to), from.max(to)))
                .copied()
                .unwrap_or(self.default_link),
            None => self.default_link,
        };
        if self.rng.chance(link.loss) {
            self.stats.lost += 1;
            if self.transcript.is_some() {
                let text = line(
                    &self.stamp(),
                    &self.name_of(from),
                    &self.name_at(t.peer.addr),
                    &t.payload,
                    "  [LOST]",
                );
                self.log(text);
            }
            return;
        }
        let copies = if self.rng.chance(link.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for k in 0..copies {
            let mut delay = link.latency + self.rng.up_to(link.jitter);
            if self.rng.chance(link.reorder) {
                delay += self.rng.up_to(link.reorder_delay);
            }
            self.next_seq += 1;
            self.wire.push(Reverse(Flight {
                at: self.now + delay,
                seq: self.next_seq,
                from,
                from_addr,
                to: t.peer.addr,
                payload: t.payload.clone(),
                copy: k > 0,
            }));
        }
    }

    fn deliver(&mut self, f: Flight) {
        let now = self.now;
        let Some(&to) = self.hosts.get(&f.to) else {
            self.stats.unroutable += 1;
            if self.transcript.is_some() {
                let text = line(
                    &self.stamp(),
                    &self.name_of(f.from),
                    &f.to.to_string(),
                    &f.payload,
                    "  [NO HOST]",
                );
                self.log(text);
            }
            return;
        };
        self.stats.delivered += 1;
        if self.transcript.is_some() {
            let text = line(
                &self.stamp(),
                &self.name_of(f.from),
                &self.name_of(to),
                &f.payload,
                if f.copy { "  [DUP]" } else { "" },
            );
            self.log(text);
        }
        if self.capture.is_some() {
            let c = Captured {
                at: now,
                from: self.name_of(f.from),
                to: self.name_of(to),
                payload: f.payload.clone(),
            };
            if let Some(capture) = &mut self.capture {
                capture.push(c);
            }
        }
        match to {
            Node::Client(c) => {
                self.clients[c.0]
                    .client
                    .handle_datagram(now, f.from_addr, f.payload)
            }
            Node::Domain(d) => {
                if f.payload.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    return;
                }
                let peer = Peer::udp(f.from_addr);
                let input = match Message::parse_datagram(f.payload.clone(), &Limits::default()) {
                    Ok(message) => cpm_proxy::Input::Message { peer, message },
                    Err(error) => cpm_proxy::Input::ParseError {
                        peer,
                        error,
                        raw: f.payload,
                    },
                };
                self.domains[d.0]
                    .node
                    .handle_input(now, cpm_node::Input::Core(input));
            }
        }
    }

    // ------------------------------------------------------------------ looking

    /// Cuts every MSRP connection of a client (its network went away): both ends learn it
    /// is closed.
    pub fn cut_msrp(&mut self, c: ClientId) {
        let now = self.now;
        for conn in self.msrp.conns_of(Node::Client(c)) {
            self.msrp.cut(
                now,
                crate::msrp::End {
                    host: Node::Client(c),
                    conn,
                },
            );
        }
    }

    /// Octets written on MSRP connections so far.
    pub fn msrp_bytes(&self) -> u64 {
        self.msrp.bytes
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.duration_since(self.base)
    }

    /// The wall clock now, in milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        UNIX_BASE_MS + self.elapsed().as_millis() as u64
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The link counters.
    pub fn wire_stats(&self) -> WireStats {
        self.stats
    }

    /// The transcript: one line per datagram delivered, lost or sent across a core–PF hop,
    /// and per store commit: `time src → dst first-line`.
    pub fn transcript(&self) -> &[String] {
        self.transcript.as_deref().unwrap_or_default()
    }

    /// The captured messages, oldest first (empty unless [`Network::set_capture`]).
    pub fn captured(&self) -> &[Captured] {
        self.capture.as_deref().unwrap_or_default()
    }

    /// The captured SIP requests from `from` to `to` (host names as in [`Captured`]) that
    /// parse, oldest first.
    pub fn captured_requests(&self, from: &str, to: &str) -> Vec<cpm_sip::Request> {
        self.captured()
            .iter()
            .filter(|c| c.from == from && c.to == to)
            .filter_map(
                |c| match Message::parse_datagram(c.payload.clone(), &Limits::default()) {
                    Ok(Message::Request(r)) => Some(r),
                    _ => None,
                },
            )
            .collect()
    }

    /// The transcript as one text.
    pub fn transcript_text(&self) -> String {
        self.transcript().join("\n")
    }

    /// The domain's id by name.
    pub fn domain(&self, name: &str) -> DomainId {
        DomainId(
            self.domain_index(name)
                .unwrap_or_else(|| panic!("no domain {name}")),
        )
    }

    /// The domain's node (its SIP/IP Core and Participating Function).
    pub fn node(&self, d: DomainId) -> &cpm_node::Node {
        &self.domains[d.0].node
    }

    /// The domain's SIP/IP Core.
    pub fn proxy(&self, d: DomainId) -> &Proxy {
        self.domains[d.0].node.core()
    }

    /// The domain's Participating Function.
    pub fn pf(&self, d: DomainId) -> &ParticipatingFunction {
        self.domains[d.0]
            .node
            .participating()
            .expect("every simulated domain runs its own PF")
    }

    /// The domain's store.
    pub fn store(&self, d: DomainId) -> &MemoryStore {
        &self.domains[d.0].store
    }

    /// The address of the domain's core.
    pub fn core_addr(&self, d: DomainId) -> SocketAddr {
        self.domains[d.0].core_addr
    }

    /// The client core.
    pub fn client(&self, c: ClientId) -> &Client {
        &self.clients[c.0].client
    }

    /// The client's address.
    pub fn client_addr(&self, c: ClientId) -> SocketAddr {
        self.clients[c.0].addr
    }

    /// Whether the client's registration is current.
    pub fn is_registered(&self, c: ClientId) -> bool {
        self.clients[c.0].client.is_registered()
    }

    /// Every event the client reported, with when.
    pub fn events(&self, c: ClientId) -> &[(Instant, Event)] {
        &self.clients[c.0].events
    }

    /// The messages the client received, in order.
    pub fn received(&self, c: ClientId) -> Vec<&ReceivedMessage> {
        self.events(c)
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Message(m) => Some(&**m),
                _ => None,
            })
            .collect()
    }

    /// The disposition notifications the client received, in order.
    pub fn imdns(&self, c: ClientId) -> Vec<&ReceivedImdn> {
        self.events(c)
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Imdn(m) => Some(&**m),
                _ => None,
            })
            .collect()
    }

    /// The final answer to a send, once it came.
    pub fn send_outcome(&self, c: ClientId, id: SendId) -> Option<SendOutcome> {
        self.events(c).iter().find_map(|(_, e)| match e {
            Event::SendResult {
                id: i,
                status,
                reason,
                message_id,
            } if *i == id => Some(SendOutcome {
                status: *status,
                reason: reason.clone(),
                message_id: message_id.clone(),
            }),
            _ => None,
        })
    }

    /// The status of a send's final answer, once it came.
    pub fn send_status(&self, c: ClientId, id: SendId) -> Option<u16> {
        self.send_outcome(c, id).map(|o| o.status)
    }

    /// A user's conversation history in its domain's store (`StoreOp::History`, oldest
    /// first).
    pub fn history(&self, aor: &str) -> Vec<MessageRecord> {
        self.read(
            aor,
            StoreOp::History(HistoryQuery {
                owner: aor.to_ascii_lowercase(),
                limit: usize::MAX,
                ..HistoryQuery::default()
            }),
        )
    }

    /// A user's deferred queue in its domain's store (`StoreOp::PendingDeferred`, oldest
    /// first).
    pub fn pending_deferred(&self, aor: &str) -> Vec<MessageRecord> {
        self.read(
            aor,
            StoreOp::PendingDeferred {
                owner: aor.to_ascii_lowercase(),
                limit: usize::MAX,
            },
        )
    }

    /// Runs a read on a copy of the store, so that it neither counts as a commit nor
    /// consumes a failure armed with [`Network::fail_next_commit`].
    fn read(&self, aor: &str, op: StoreOp) -> Vec<MessageRecord> {
        let mut store = self.domains[self.domain_of(aor)].store.clone();
        for _ in 0..1000 {
            let mut answer = store.execute(vec![(OpId(u64::MAX), op.clone())]);
            match answer.pop() {
                Some((_, Ok(Outcome::Messages(records)))) => return records,
                // An armed commit failure of the copy: used up, try again.
                Some((_, Err(OpError::Backend(_)))) => continue,
                other => panic!("store read {op:?} answered {other:?}"),
            }
        }
        panic!("store read {op:?} keeps failing");
    }

    // ------------------------------------------------------------------ internals

    fn domain_index(&self, name: &str) -> Option<usize> {
        self.domains
            .iter()
            .position(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// The index of the domain of `user@domain`; panics if there is none.
    fn domain_of(&self, aor: &str) -> usize {
        let domain = aor
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_else(|| panic!("{aor} is not user@domain"));
        self.domain_index(domain)
            .unwrap_or_else(|| panic!("no domain {domain} (for {aor})"))
    }

    fn name_of(&self, n: Node) -> String {
        match n {
            Node::Domain(d) => self.domains[d.0].name.clone(),
            Node::Client(c) => self.clients[c.0].name.clone(),
        }
    }

    fn name_at(&self, addr: SocketAddr) -> String {
        self.hosts
            .get(&addr)
            .map_or_else(|| addr.to_string(), |&n| self.name_of(n))
    }

    /// The time column of the transcript.
    fn stamp(&self) -> String {
        format!("{:>9.3}s", self.elapsed().as_secs_f64())
    }

    fn log(&mut self, text: String) {
        if let Some(t) = &mut self.transcript {
            t.push(text);
        }
    }
}

/// One transcript line: `time src → dst first-line [CSeq method of a response] suffix`.
fn line(t: &str, src: &str, dst: &str, payload: &[u8], suffix: &str) -> String {
    let text = String::from_utf8_lossy(payload);
    let first = text.lines().next().unwrap_or_default();
    let first: String = first.chars().take(120).collect();
    // A response names its request's method (from CSeq), so the ladder reads on its own.
    let method = first
        .starts_with("SIP/")
        .then(|| {
            text.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("cseq")
                    .then(|| value.split_whitespace().nth(1).map(str::to_owned))?
            })
        })
        .flatten()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    format!("{t} {src} → {dst}  {first}{method}{suffix}")
}

fn op_name(op: &StoreOp) -> &'static str {
    match op {
        StoreOp::AppendMessage(_) => "append",
        StoreOp::UpdateState { .. } => "update-state",
        StoreOp::PendingDeferred { .. } => "pending-deferred",
        StoreOp::ExpireDeferred { .. } => "expire-deferred",
        StoreOp::History(_) => "history",
        StoreOp::SaveBinding(_) => "save-binding",
        StoreOp::RemoveBinding { .. } => "remove-binding",
        StoreOp::LoadBindings { .. } => "load-bindings",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small lossy two-domain run; returns its transcript and final histories.
    fn run(seed: u64) -> (Vec<String>, Vec<MessageRecord>, Vec<MessageRecord>) {
        let mut net = Network::new(seed);
        net.add_domain("a.test");
        net.add_domain("b.test");
        net.add_user("alice@a.test", "a");
        net.add_user("bob@b.test", "b");
        net.set_default_link(LinkConfig::lossy(0.2, 0.1, 0.2));
        let alice = net.add_client("alice@a.test", "phone");
        let bob = net.add_client("bob@b.test", "phone");
        let bob2 = net.add_client("bob@b.test", "tablet");
        net.register_all(&[alice, bob, bob2]);
        for i in 0..5 {
            net.send(alice, &["bob@b.test"], &format!("m{i}"));
            net.run_for(Duration::from_millis(100));
        }
        net.run_for(Duration::from_secs(60));
        (
            net.transcript().to_vec(),
            net.history("alice@a.test"),
            net.history("bob@b.test"),
        )
    }

    #[test]
    fn a_seed_replays_exactly() {
        let first = run(42);
        assert!(first.0.len() > 50, "{:#?}", first.0);
        assert_eq!(first, run(42));
        assert_ne!(first.0, run(43).0);
    }

    #[test]
    fn time_only_moves_forward_and_runs_are_bounded() {
        let mut net = Network::new(1);
        net.add_domain("a.test");
        let t0 = net.now();
        net.run_for(Duration::from_secs(30));
        assert_eq!(net.elapsed(), Duration::from_secs(30));
        assert!(net.now() > t0);
        // All there is: the PF's expiry timer at 10, 20 and 30 s, and the commits of the
        // first two expiry passes 2 ms later.
        assert_eq!(net.steps(), 5);
        net.set_max_steps(net.steps() + 1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            net.run_for(Duration::from_secs(100));
        }));
        assert!(r.is_err(), "the step budget stops a run");
    }

    #[test]
    fn registrations_reach_the_store() {
        let mut net = Network::new(1);
        let a = net.add_domain("a.test");
        net.add_user("alice@a.test", "pw");
        let phone = net.add_client("alice@a.test", "phone");
        let tablet = net.add_client("alice@a.test", "tablet");
        net.register_all(&[phone, tablet]);
        net.run_for(Duration::from_millis(100));
        let stored: Vec<&str> = net.store(a).bindings().map(|b| b.aor.as_str()).collect();
        assert_eq!(stored, ["alice@a.test", "alice@a.test"]);
    }

    #[test]
    fn the_directory_answers_both_username_forms() {
        let mut net = Network::new(1);
        let a = net.add_domain("a.test");
        net.add_user("Alice@A.test", "pw");
        let d = &net.domains[a.0];
        let full = d.lookup("alice@a.test", "a.test").expect("full AOR");
        let short = d.lookup("alice", "a.test").expect("user part");
        assert_eq!(full.aor, "alice@a.test");
        assert_eq!(short.aor, "alice@a.test");
        assert_eq!(
            full.ha1_md5,
            digest::ha1(Algorithm::Md5, "alice@a.test", "a.test", "pw")
        );
        assert!(d.lookup("mallory", "a.test").is_none());
    }
}
