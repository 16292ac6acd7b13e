//! One CPM network node as a sans-IO core: the SIP/IP Core ([`cpm_proxy::Proxy`]) and the
//! Conversation Server functions it routes through (the node's Participating Function today;
//! the Controlling Function and the MSRP relay next), composed in one object that `cpm serve`
//! and the simulator drive the same way.
//!
//! The functions talk SIP to each other as the outline draws them (client → core → PF → core
//! → …, OMA CPM Conversation Functions 5.2.3.2, the ISC interface between the S-CSCF and its
//! application servers), but a hop inside the node is a value: a function sends to a
//! [`Peer::local`] address, its transaction layer hands the parsed [`Message`] over
//! ([`cpm_sip_core::Handoff`]), and the node gives it to the receiving function at once. Nothing
//! is serialised, parsed again, or put on a socket; a peer of kind
//! [`TransportKind::Local`](cpm_sip_core::TransportKind::Local) cannot come from the network,
//! so it also proves the sender is one of the node's functions. Which function serves which
//! requests is the core's application-server table ([`cpm_proxy::ApplicationServer`]).
//!
//! # Driver loop
//!
//! The same contract as every core of the project (STYLE.md, "one driver contract"):
//!
//! 1. Build the node with [`Node::new`], then restore what the store kept
//!    ([`Node::restore_bindings`], read before anything else runs).
//! 2. Feed what the network delivers — messages, parse errors, keep-alives, closed
//!    connections — to [`Node::handle_input`] with the current time, as [`Input::Core`]: every
//!    message from the network enters through the SIP/IP Core. Feed every answer the driver
//!    owes the node as input too: [`Input::Stored`] for each [`Output::Store`] and
//!    `Input::Core(cpm_proxy::Input::User { .. })` for each [`Output::LookupUser`] (in any
//!    order, whenever they are ready).
//! 3. Drain [`Node::poll_output`] until `None`. [`Output`] is exhaustive on purpose: a driver
//!    matches every variant, so a new one fails to compile until the driver handles it.
//!    - [`Output::Transmit`]: send the bytes; [`Output::Close`]: close that connection;
//!    - [`Output::Store`]: run the operation (the store commits in batches) and answer with
//!      [`Input::Stored`] carrying the same id. Every id comes from the node's one
//!      allocator; no acknowledgement leaves the node before its commit was answered;
//!    - [`Output::LookupUser`]: read the user directory off the loop and answer with
//!      `Input::Core(cpm_proxy::Input::User { .. })` (the request waits in the core
//!      meanwhile);
//!    - [`Output::Shard`]: give it to that shard's node as [`Input::Shard`] (a node of
//!      several shards, [`shard`]; one shard never outputs it);
//!    - [`Output::Event`]: log it or count it.
//! 4. Sleep until [`Node::poll_timeout`] (or until input arrives), then call
//!    [`Node::handle_timeout`] with the current time, and drain again (step 3).
//!
//! Time only comes in as `now`; the node never reads a clock, a socket or a file.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod shard;

use core::net::SocketAddr;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use cpm_conversation::{ParticipatingFunction, PfConfig, PfStats};
use cpm_proxy::{
    ApplicationServer, Proxy, ProxyConfig, QueryId, SecurityEvent, Service, Stats as CoreStats,
};
use cpm_sip::Message;
use cpm_sip_core::{ConnId, Function, Handoff, Peer, Transmit};
use cpm_store::{BindingRecord, OpError, OpId, Outcome, StoreOp};
use foldhash::fast::FixedState;

pub use shard::{Dispatch, Router, ShardHop, Shards, shard_of_op};

/// How one node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The SIP/IP Core. Its `advertised` address is the node's SIP address; its
    /// application-server table says which requests go to which function (the node adds
    /// the entries for its own functions).
    pub core: ProxyConfig,
    /// The node's own Participating Function, or `None` when the core's table names an
    /// external one (on the network) instead. Its addressing fields are set by the node.
    pub participating: Option<PfConfig>,
    /// Report every in-node hop as an [`Event::Hop`] (traces, the simulator's transcript).
    pub trace_hops: bool,
    /// Which shard of the node this is ([`shard`]); one by default.
    pub shards: Shards,
}

impl NodeConfig {
    /// A node with its own Participating Function serving CPM pager mode.
    pub fn new(core: ProxyConfig) -> Self {
        let pf = PfConfig::new(
            core.advertised,
            Peer::local(Function::Core, core.advertised),
        );
        Self {
            core,
            participating: Some(pf),
            trace_hops: false,
            shards: Shards::default(),
        }
    }
}

/// What the driver feeds the node.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Built and consumed at once, never stored in bulk.
pub enum Input {
    /// For the SIP/IP Core, the node's entry point: what the network delivered (messages,
    /// parse errors, keep-alives, closed connections) and the answers to
    /// [`Output::LookupUser`] ([`cpm_proxy::Input::User`]).
    Core(cpm_proxy::Input),
    /// The same as [`Input::Core`], for what the network delivered, with the time the
    /// transport received it: the wait until [`Node::handle_input`] is the queue delay the
    /// core's overload control measures (feed every network event this way in a driver
    /// whose queue can grow).
    Network {
        /// When the transport took it off the socket.
        received: Instant,
        /// The event.
        input: cpm_proxy::Input,
    },
    /// A message from a function on another shard ([`Output::Shard`] of that shard).
    Shard(ShardHop),
    /// The outcome of an [`Output::Store`] operation.
    Stored {
        /// The operation's id.
        id: OpId,
        /// What the store did.
        result: Result<Outcome, OpError>,
    },
    /// What the node's MSRP transport reports (connections of the sessions the PF anchors;
    /// a node of several shards routes each by [`Router::msrp_shard`]).
    Msrp(cpm_msrp::ConnEvent),
}

/// What the node asks the driver to do. Exhaustive: see the driver loop in the crate docs.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Built and consumed at once, never stored in bulk.
pub enum Output {
    /// Send bytes to the network.
    Transmit(Transmit),
    /// Close a stream connection (its framing was lost).
    Close(ConnId),
    /// Run a store operation and answer with [`Input::Stored`] (the same id).
    Store {
        /// Echo it in the answer.
        id: OpId,
        /// The operation.
        op: StoreOp,
    },
    /// Look up a digest username in a realm; answer with
    /// `Input::Core(cpm_proxy::Input::User { .. })`.
    LookupUser {
        /// Echo it in the answer.
        query: QueryId,
        /// The digest username, or an address-of-record.
        username: String,
        /// The realm.
        realm: String,
    },
    /// A message for a function on another shard: give it to that shard as
    /// [`Input::Shard`], in order.
    Shard(ShardHop),
    /// Something for the node's MSRP transport to do (write, connect, close); its results
    /// come back as [`Input::Msrp`].
    Msrp(cpm_msrp::ConnCommand),
    /// Something to log or count.
    Event(Event),
}

/// Something that happened in the node, for logs and metrics.
#[derive(Debug)]
pub enum Event {
    /// A security rule acted (see [`SecurityEvent`]).
    Security(SecurityEvent),
    /// The core's registration write failed: the registration stands in memory, only a
    /// restart would lose it.
    PersistFailed(OpError),
    /// A message went from one function of the node to another (only with
    /// [`NodeConfig::trace_hops`]).
    Hop {
        /// The sending function.
        from: Function,
        /// The receiving function.
        to: Function,
        /// The message (shared with the receiver's copy where the type allows).
        message: Box<Message>,
    },
    /// A function sent to a function this node does not run (a configuration error,
    /// reported once per message; the message is answered by the sender's timers).
    NoSuchFunction(Function),
}

/// The node's counters, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct NodeStats {
    /// The SIP/IP Core's counters.
    pub core: CoreStats,
    /// Live registration bindings.
    pub registrations: u64,
    /// Live SIP transactions in the core.
    pub transactions: u64,
    /// The node's Participating Function's counters, if it has one.
    pub participating: Option<PfStats>,
    /// Message requests in progress in the node's PF.
    pub pf_in_progress: u64,
    /// Messages handed from one function to another inside the node.
    pub hops: u64,
    /// User-directory lookups asked of the driver.
    pub user_lookups: u64,
    /// What the core's overload control did.
    pub load: cpm_sip_core::overload::LoadStats,
    /// Store operations asked for and not answered yet.
    pub store_in_flight: u64,
}

impl core::ops::AddAssign for NodeStats {
    /// Adds another shard's counters.
    fn add_assign(&mut self, o: Self) {
        self.core += o.core;
        self.registrations += o.registrations;
        self.transactions += o.transactions;
        self.participating = match (self.participating, o.participating) {
            (Some(mut a), Some(b)) => {
                a += b;
                Some(a)
            }
            (a, b) => a.or(b),
        };
        self.pf_in_progress += o.pf_in_progress;
        self.hops += o.hops;
        self.user_lookups += o.user_lookups;
        self.load += o.load;
        self.store_in_flight += o.store_in_flight;
    }
}

/// Whose store operation an id is.
#[derive(Clone, Copy, Debug)]
enum OpOwner {
    /// A registration write of the core (fire and forget).
    Core,
    /// The PF's operation, under its own id.
    Participating(OpId),
}

/// One CPM node: see the crate docs.
pub struct Node {
    addr: SocketAddr,
    core: Proxy,
    pf: Option<ParticipatingFunction>,
    trace_hops: bool,
    shards: Shards,
    /// The one allocator of store operation ids, and whose each one is.
    next_op: u64,
    /// With when each was asked for: the store's latency is an overload signal.
    ops: HashMap<OpId, (OpOwner, Instant), FixedState>,
    /// In-node messages not yet delivered (a hop can cause more hops).
    hops: VecDeque<(Function, Handoff)>,
    outputs: VecDeque<Output>,
    hop_count: u64,
    user_lookups: u64,
}

impl Node {
    /// A node with no state. `unix_ms` is the wall clock at `now`.
    pub fn new(mut cfg: NodeConfig, now: Instant, unix_ms: u64) -> Self {
        let addr = cfg.core.advertised;
        let shards = cfg.shards;
        cfg.core.shards = shards;
        if shards.count > 1 {
            // The shards' tags, branches and Call-IDs must not repeat each other's.
            let spread = u64::from(shards.index).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            cfg.core.rng_seed ^= spread;
            if let Some(pf) = &mut cfg.participating {
                pf.rng_seed ^= spread;
                pf.expire_deferred = shards.index == 0;
            }
        }
        if let Some(pf) = &mut cfg.participating {
            pf.shard = shards.index;
        }
        let pf = cfg.participating.take().map(|mut pf| {
            pf.address = addr;
            pf.core = Peer::local(Function::Core, addr);
            let server = Peer::local(Function::Participating, addr);
            if !cfg
                .core
                .application_servers
                .iter()
                .any(|a| a.server == server)
            {
                cfg.core.application_servers.push(ApplicationServer {
                    service: Service::Pager,
                    server,
                });
                // Sessions (INVITE with a CPM ICSI) when the node anchors MSRP.
                if pf.msrp.is_some() {
                    cfg.core.application_servers.push(ApplicationServer {
                        service: Service::Session,
                        server,
                    });
                }
            }
            ParticipatingFunction::new(pf, now, unix_ms)
        });
        Self {
            addr,
            core: Proxy::new(cfg.core, now, unix_ms / 1000),
            pf,
            trace_hops: cfg.trace_hops,
            shards,
            next_op: shard::first_op(shards),
            ops: HashMap::with_hasher(FixedState::with_seed(0)),
            hops: VecDeque::new(),
            outputs: VecDeque::new(),
            hop_count: 0,
            user_lookups: 0,
        }
    }

    /// Restores registrations the store kept (before anything else runs). Returns how many
    /// bindings were restored; the third-party REGISTERs they cause go out with the next
    /// drain.
    pub fn restore_bindings(
        &mut self,
        now: Instant,
        unix_ms: u64,
        records: &[BindingRecord],
    ) -> usize {
        let n = self.core.restore_bindings(now, unix_ms, records);
        self.run(now);
        n
    }

    /// Feeds one input (see the driver loop).
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Core(input) => self.core.handle_input(now, input),
            Input::Network { received, input } => {
                // The store queue is bounded here: past the limit new work is refused.
                self.core.set_store_backlog(self.ops.len());
                self.core.handle_received(now, received, input);
            }
            Input::Shard(hop) => {
                self.core
                    .shard_delay(now, now.saturating_duration_since(hop.sent));
                let peer = Peer::local_on(hop.from, self.addr, hop.from_shard);
                self.hand_to(now, peer, hop.to, hop.message);
            }
            Input::Stored { id, result } => match self.ops.remove(&id).map(|(owner, asked)| {
                self.core
                    .store_latency(now, now.saturating_duration_since(asked));
                owner
            }) {
                Some(OpOwner::Core) => {
                    if let Err(e) = result {
                        self.outputs
                            .push_back(Output::Event(Event::PersistFailed(e)));
                    }
                }
                Some(OpOwner::Participating(id)) => {
                    if let Some(pf) = &mut self.pf {
                        pf.handle_input(now, cpm_conversation::Input::Stored { id, result });
                    }
                }
                // Not ours (answered twice, or after a restart of the node object): nothing
                // waits for it.
                None => {}
            },
            Input::Msrp(ev) => match &mut self.pf {
                Some(pf) => pf.handle_input(now, cpm_conversation::Input::Msrp(ev)),
                // No function anchors media here: a connection the driver accepted is closed.
                None => {
                    if let cpm_msrp::ConnEvent::Accepted { conn, .. } = ev {
                        self.outputs
                            .push_back(Output::Msrp(cpm_msrp::ConnCommand::Close { conn }));
                    }
                }
            },
        }
        self.run(now);
    }

    /// Runs every function's timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        if let Some(pf) = &mut self.pf {
            pf.handle_timeout(now);
        }
        self.run(now);
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline of any function.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let core = self.core.poll_timeout();
        let pf = self
            .pf
            .as_ref()
            .and_then(ParticipatingFunction::poll_timeout);
        match (core, pf) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The node's counters.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            core: self.core.stats(),
            registrations: self.core.registrations() as u64,
            transactions: self.core.transactions() as u64,
            participating: self.pf.as_ref().map(ParticipatingFunction::stats),
            pf_in_progress: self.pf.as_ref().map_or(0, |pf| pf.in_progress() as u64),
            hops: self.hop_count,
            user_lookups: self.user_lookups,
            load: self.core.load_stats(),
            store_in_flight: self.ops.len() as u64,
        }
    }

    /// The queue delay the node's other shards see now (the largest, as their drivers last
    /// measured it): a new request here is refused while it stands above the overload
    /// target, as if this shard's own queue stood (the work it brings is partly theirs).
    pub fn set_remote_delay(&mut self, delay: core::time::Duration) {
        self.core.set_remote_delay(delay);
    }

    /// The node's SIP address (the core's advertised address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SIP/IP Core, for inspection (tests, metrics).
    pub fn core(&self) -> &Proxy {
        &self.core
    }

    /// The node's Participating Function, if it runs one.
    pub fn participating(&self) -> Option<&ParticipatingFunction> {
        self.pf.as_ref()
    }

    /// Moves outputs until no function has any: what leaves the node is queued for the
    /// driver, what goes to another function is handed to it at once.
    fn run(&mut self, now: Instant) {
        loop {
            while let Some(out) = self.core.poll_output() {
                match out {
                    cpm_proxy::Output::Transmit(t) => self.outputs.push_back(Output::Transmit(t)),
                    cpm_proxy::Output::Handoff(h) => self.hops.push_back((Function::Core, h)),
                    cpm_proxy::Output::Close(c) => self.outputs.push_back(Output::Close(c)),
                    cpm_proxy::Output::Persist(op) => {
                        let id = self.allocate(OpOwner::Core, now);
                        self.outputs.push_back(Output::Store { id, op: *op });
                    }
                    cpm_proxy::Output::LookupUser {
                        query,
                        username,
                        realm,
                    } => {
                        self.user_lookups += 1;
                        self.outputs.push_back(Output::LookupUser {
                            query,
                            username,
                            realm,
                        });
                    }
                    cpm_proxy::Output::Security(e) => {
                        self.outputs.push_back(Output::Event(Event::Security(e)));
                    }
                }
            }
            if let Some(pf) = &mut self.pf {
                while let Some(out) = pf.poll_output() {
                    match out {
                        cpm_conversation::Output::Transmit(t) => {
                            self.outputs.push_back(Output::Transmit(t));
                        }
                        cpm_conversation::Output::Handoff(h) => {
                            self.hops.push_back((Function::Participating, h));
                        }
                        cpm_conversation::Output::Msrp(c) => {
                            self.outputs.push_back(Output::Msrp(c));
                        }
                        cpm_conversation::Output::Store { id, op } => {
                            // Allocated here, not in `allocate`: `pf` borrows `self.pf`.
                            self.next_op += 1;
                            let node_id = OpId(self.next_op);
                            self.ops.insert(node_id, (OpOwner::Participating(id), now));
                            self.outputs.push_back(Output::Store { id: node_id, op });
                        }
                    }
                }
            }
            let Some((from, hop)) = self.hops.pop_front() else {
                return;
            };
            self.deliver(now, from, hop);
        }
    }

    /// One in-node hop: `from` handed `hop.message` to `hop.to`.
    fn deliver(&mut self, now: Instant, from: Function, hop: Handoff) {
        self.hop_count += 1;
        if self.trace_hops {
            self.outputs.push_back(Output::Event(Event::Hop {
                from,
                to: hop.to,
                message: Box::new(hop.message.clone()),
            }));
        }
        let message = hop.message;
        // For a function on another shard (the core's choice) it crosses there; so does a
        // request the PF hands to the core for a user of another shard: straight to that
        // shard's core, which runs the terminating part as this one would (one core pass
        // fewer than through this core).
        let shard = hop.shard.unwrap_or_else(|| match (&message, from, hop.to) {
            (Message::Request(r), Function::Participating, Function::Core) => {
                self.core.target_shard(r).unwrap_or(self.shards.index)
            }
            _ => self.shards.index,
        });
        if shard != self.shards.index {
            self.outputs.push_back(Output::Shard(ShardHop {
                shard,
                to: hop.to,
                from_shard: self.shards.index,
                from,
                sent: now,
                message,
            }));
            return;
        }
        self.hand_to(now, Peer::local(from, self.addr), hop.to, message);
    }

    /// Gives `message` from `peer` (one of the node's functions) to the function `to`.
    fn hand_to(&mut self, now: Instant, peer: Peer, to: Function, message: Message) {
        match to {
            Function::Core => self
                .core
                .handle_input(now, cpm_proxy::Input::Message { peer, message }),
            Function::Participating => match &mut self.pf {
                Some(pf) => {
                    pf.handle_input(now, cpm_conversation::Input::Message { peer, message })
                }
                None => self
                    .outputs
                    .push_back(Output::Event(Event::NoSuchFunction(to))),
            },
            Function::Controlling => self
                .outputs
                .push_back(Output::Event(Event::NoSuchFunction(to))),
        }
    }

    fn allocate(&mut self, owner: OpOwner, now: Instant) -> OpId {
        self.next_op += 1;
        let id = OpId(self.next_op);
        self.ops.insert(id, (owner, now));
        id
    }
}
