//! End-to-end interoperability tests: third-party SIP software (SIPp 3.6.1 from `sip-tester`,
//! baresip 1.0 from `baresip-core`) against the real `cpm serve`, all on 127.0.0.1 with free
//! ports.
//!
//! Every external process is bounded twice: by its own option (SIPp `-timeout` and `-m`,
//! baresip `-t`) and by a wall-clock limit enforced here while waiting for it. Each one is held
//! by a [`Proc`] guard that kills it by PID when dropped, so a failing assertion or a panic
//! leaves nothing running. Waits poll (the node's metrics, `/proc/net`, output files) instead
//! of sleeping.
//!
//! The SIPp scenarios are in `tests/sipp/`; they take their parameters as `-key NAME VALUE`
//! and the digest credentials as `-au USER -ap PASSWORD` (SIPp 3.6.1 does not expand
//! keywords inside `[authentication ...]`, and supports MD5 only).
//!
//! `sipp` and `baresip` missing is a failure that says to run `./scripts/test`, which installs
//! them.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Node, TempDir, cpm_bin, free_port};

/// The accounts every test node has, `(aor, password)`.
const USERS: &[(&str, &str)] = &[("alice@localhost", "alicepw"), ("bob@localhost", "bobpw")];

/// Extra `cpm serve` flags: debug logs, shown when a test fails.
const NODE_FLAGS: &[&str] = &["--log-level", "debug"];

/// SIPp's own global limit for one run (`-timeout`, with `-timeout_error`).
const SIPP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a SIPp run may last on the wall clock before the test kills it.
const SIPP_WALL: Duration = Duration::from_secs(45);

/// How long baresip may take to register.
const REGISTER_WAIT: Duration = Duration::from_secs(15);

/// baresip quits by itself after this many seconds (`-t`), whatever happens to the test.
const BARESIP_LIFETIME_SECS: u64 = 60;

/// How long a metric may lag behind what the peers saw.
const METRIC_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Processes

/// Fails the test unless `tool` is on the PATH.
fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "`{tool}` is not installed: run ./scripts/test, which installs the Debian packages \
         sip-tester (sipp) and baresip-core (baresip) when they are missing"
    );
}

/// Polls `done` every 20 ms until it holds or `limit` passes; returns whether it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed by PID when dropped (on every path, panics included).
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child,
            what: what.to_owned(),
        }
    }

    /// Waits for the exit at most `limit`; `None` when it had to be killed.
    fn wait_bounded(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            self.kill();
        }
        status
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            eprintln!("killing {} (pid {})", self.what, self.child.id());
            self.kill();
        }
    }
}

/// Whether something listens on 127.0.0.1:`port`: a UDP socket or a TCP listener, read from
/// `/proc/net` (no probe socket that could race the owner's bind).
fn port_bound(port: u16, tcp: bool) -> bool {
    let table = if tcp {
        "/proc/net/tcp"
    } else {
        "/proc/net/udp"
    };
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string(table).is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let mut f = l.split_whitespace();
            // sl, local_address, rem_address, st (0A = LISTEN for TCP).
            f.next();
            f.next() == Some(local.as_str()) && (!tcp || f.nth(1) == Some("0A"))
        })
    })
}

/// The last `n` characters of `s`.
fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[start..]
}

/// `s` without ANSI colour sequences (ESC `[` parameters final-letter), which baresip and the
/// node's log both write.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The tail of the node's log, for failure messages.
fn node_log(node: &Node) -> String {
    tail(&strip_ansi(&node.log()), 6000).to_owned()
}

// ---------------------------------------------------------------------------------------------
// SIPp

/// Transport of a SIPp run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn sipp_mode(self) -> &'static str {
        match self {
            Self::Udp => "u1",
            Self::Tcp => "t1",
        }
    }
}

/// A running SIPp, with the directory its logs go to.
struct Sipp {
    proc: Proc,
    name: String,
    dir: TempDir,
}

/// What a finished SIPp run left behind.
struct SippRun {
    name: String,
    /// Exit code (0: every call succeeded); `None` when killed or signalled.
    code: Option<i32>,
    stdout: String,
    errors: String,
    /// The `-trace_msg` log: every message sent and received.
    messages: String,
}

impl SippRun {
    /// A failure report: exit code, SIPp's errors, its final statistics screen and the last
    /// messages it exchanged.
    fn report(&self) -> String {
        format!(
            "SIPp {} exited with {:?}\n--- errors:\n{}\n--- stdout (tail):\n{}\n--- messages \
             (tail):\n{}",
            self.name,
            self.code,
            tail(&self.errors, 3000),
            tail(&self.stdout, 3000),
            tail(&self.messages, 4000),
        )
    }

    /// Asserts exit code 0; the message carries the report and the node's log.
    fn assert_success(&self, node: &Node) {
        assert_eq!(
            self.code,
            Some(0),
            "{}\n--- node log (tail):\n{}",
            self.report(),
            node_log(node)
        );
    }
}

/// Starts SIPp in the background: scenario `scenario` of `tests/sipp`, bound to
/// 127.0.0.1:`port`, sending to `remote` (a client) or waiting for requests (`None`, a
/// server), with `args` added. Its own limit is `-timeout` [`SIPP_TIMEOUT`]; give servers
/// `-m N` so they exit after N calls.
fn spawn_sipp_background(
    name: &str,
    remote: Option<SocketAddr>,
    scenario: &str,
    port: u16,
    transport: Transport,
    args: &[String],
) -> Sipp {
    let dir = TempDir::new(&format!("sipp-{name}"));
    let sf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(scenario);
    let mut cmd = Command::new("sipp");
    if let Some(remote) = remote {
        cmd.arg(remote.to_string());
    }
    cmd.arg("-sf")
        .arg(&sf)
        .args(["-t", transport.sipp_mode()])
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-nostdin", "-timeout_error"])
        .args(["-timeout", &format!("{}s", SIPP_TIMEOUT.as_secs())])
        .args(["-trace_err", "-error_file"])
        .arg(dir.path().join("errors.log"))
        .args(["-trace_msg", "-message_file"])
        .arg(dir.path().join("messages.log"))
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).expect("sipp stdout file"))
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr")).expect("sipp stderr file"),
        ));
    let proc = Proc::spawn(&format!("sipp {name}"), &mut cmd);
    Sipp {
        proc,
        name: name.to_owned(),
        dir,
    }
}

impl Sipp {
    /// Waits (at most 10 s) until `port` is bound, so nothing is sent to it too early.
    fn wait_listening(&mut self, port: u16, transport: Transport) {
        let bound = wait_until(Duration::from_secs(10), || {
            port_bound(port, transport == Transport::Tcp) || !self.proc.running()
        });
        if !(bound && self.proc.running()) {
            let read =
                |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            panic!(
                "SIPp {} did not start listening on 127.0.0.1:{port}\n{}{}",
                self.name,
                tail(&read("stdout"), 3000),
                tail(&read("stderr"), 3000)
            );
        }
    }

    /// Waits for the exit (at most [`SIPP_WALL`], then kills) and collects what it left.
    fn finish(mut self) -> SippRun {
        let status = self.proc.wait_bounded(SIPP_WALL);
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        let mut stdout = read("stdout");
        stdout.push_str(&read("stderr"));
        if status.is_none() {
            let _ = write!(stdout, "\n[killed after {SIPP_WALL:?}]");
        }
        SippRun {
            name: self.name.clone(),
            code: status.and_then(|s| s.code()),
            stdout,
            errors: read("errors.log"),
            messages: read("messages.log"),
        }
    }
}

/// Runs SIPp to completion (see [`spawn_sipp_background`]).
fn run_sipp(
    name: &str,
    remote: SocketAddr,
    scenario: &str,
    transport: Transport,
    args: &[String],
) -> SippRun {
    spawn_sipp_background(name, Some(remote), scenario, free_port(), transport, args).finish()
}

/// SIPp command-line arguments: `-key NAME VALUE` for each scenario parameter, then `rest`.
fn sipp_args(keys: &[(&str, &str)], rest: &[&str]) -> Vec<String> {
    keys.iter()
        .flat_map(|(k, v)| ["-key", k, v])
        .chain(rest.iter().copied())
        .map(String::from)
        .collect()
}

/// One REGISTER of `user@localhost` by SIPp, Contact `sip:user@127.0.0.1:contact_port`
/// (`;transport=tcp` over TCP), the 401 answered with `auth_user` / `password`.
struct Register<'a> {
    user: &'a str,
    auth_user: &'a str,
    password: &'a str,
    contact_port: u16,
    transport: Transport,
}

impl Register<'_> {
    /// bob, with his password, for a contact on `contact_port`.
    fn bob(contact_port: u16, transport: Transport) -> Self {
        Self {
            user: "bob",
            auth_user: "bob",
            password: "bobpw",
            contact_port,
            transport,
        }
    }

    /// `register.xml`: 401, REGISTER with digest, 200 expected.
    fn run(&self, node: &Node) -> SippRun {
        self.run_scenario(node, "register.xml")
    }

    /// `register_rejected.xml`: 401, REGISTER with digest, a second 401 expected.
    fn run_rejected(&self, node: &Node) -> SippRun {
        self.run_scenario(node, "register_rejected.xml")
    }

    fn run_scenario(&self, node: &Node, scenario: &str) -> SippRun {
        let port = self.contact_port.to_string();
        let params = match self.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        let keys = [
            ("user", self.user),
            ("domain", "localhost"),
            ("contact_port", port.as_str()),
            ("contact_params", params),
        ];
        let rest = ["-au", self.auth_user, "-ap", self.password, "-m", "1"];
        let name = format!("register-{}", self.user);
        let args = sipp_args(&keys, &rest);
        run_sipp(&name, node.sip, scenario, self.transport, &args)
    }
}

/// `scenario` from alice to bob, the 407 answered with alice's password: `count` calls
/// (MESSAGEs or INVITE dialogs) at `rate` per second.
fn sipp_alice_uac(
    node: &Node,
    scenario: &str,
    count: u32,
    rate: u32,
    transport: Transport,
) -> SippRun {
    let (count, rate) = (count.to_string(), rate.to_string());
    let keys = [
        ("user", "alice"),
        ("domain", "localhost"),
        ("target", "bob"),
    ];
    let rest = ["-au", "alice", "-ap", "alicepw", "-m", &count, "-r", &rate];
    let args = sipp_args(&keys, &rest);
    run_sipp("alice-uac", node.sip, scenario, transport, &args)
}

/// Starts a SIPp server on a free port that expects `count` calls of `scenario` (`-m`), and
/// waits until it listens; returns it and its port.
fn sipp_bob_uas(scenario: &str, count: u32, transport: Transport) -> (Sipp, u16) {
    let port = free_port();
    let args = sipp_args(&[], &["-m", &count.to_string()]);
    let mut uas = spawn_sipp_background("bob-uas", None, scenario, port, transport, &args);
    uas.wait_listening(port, transport);
    (uas, port)
}

// ---------------------------------------------------------------------------------------------
// baresip

/// A headless baresip with its own configuration directory, driven through its stdin (a
/// pipe, like the FIFO of the peers README). Killed by PID on drop.
struct Baresip {
    proc: Proc,
    /// Kept open while baresip runs: on end of input baresip spins on its stdin.
    stdin: Option<ChildStdin>,
    dir: TempDir,
    user: String,
}

impl Baresip {
    /// Starts baresip as `user@localhost` (password `password`), outbound proxy the node,
    /// listening on a free port, with one contact (`contact`, a baresip contacts line).
    fn start(node: &Node, user: &str, password: &str, contact: &str) -> Self {
        let dir = TempDir::new(&format!("baresip-{user}"));
        // baresip also opens its SIP/TLS listener on the next port: both must be free.
        let listen = (0..100)
            .map(|_| free_port())
            .find(|&p| {
                p < u16::MAX
                    && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
                    && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            })
            .expect("two free ports in a row");
        let config = format!(
            "sip_listen\t127.0.0.1:{listen}\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\tstdio.so\n\
             module\tg711.so\n\
             module_app\taccount.so\n\
             module_app\tmenu.so\n\
             module_app\tcontact.so\n\
             audio_player\taufile,/dev/null\n\
             audio_source\tausine,440\n"
        );
        let account = format!(
            "<sip:{user}@localhost>;auth_pass={password};outbound=\"sip:{}\";regint=300\n",
            node.sip
        );
        std::fs::write(dir.path().join("config"), config).expect("baresip config");
        std::fs::write(dir.path().join("accounts"), account).expect("baresip accounts");
        std::fs::write(dir.path().join("contacts"), format!("{contact}\n"))
            .expect("baresip contacts");
        let out = std::fs::File::create(dir.path().join("out")).expect("baresip output");
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(dir.path())
            .arg("-s") // SIP trace: the failure reports show the messages.
            .args(["-t", &BARESIP_LIFETIME_SECS.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("baresip output"))
            .stderr(out);
        let mut proc = Proc::spawn(&format!("baresip {user}"), &mut cmd);
        let stdin = proc.child.stdin.take();
        Self {
            proc,
            stdin,
            dir,
            user: user.to_owned(),
        }
    }

    /// Everything baresip printed so far, colour codes removed.
    fn output(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.dir.path().join("out")).unwrap_or_default())
    }

    /// Polls the output until it contains `needle` (at most `limit`).
    fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.output().contains(needle))
    }

    /// A failure report: baresip's output and the node's log.
    fn report(&self, node: &Node) -> String {
        format!(
            "--- baresip {} output (tail):\n{}\n--- node log (tail):\n{}",
            self.user,
            tail(&self.output(), 6000),
            node_log(node)
        )
    }

    /// Waits (at most [`REGISTER_WAIT`]) for "registered successfully"; fails at once on
    /// baresip's registration error line (`reg: <aor>: ...`).
    fn wait_registered(&self, node: &Node) {
        let failure = format!("reg: sip:{}@localhost:", self.user);
        let mut out = String::new();
        wait_until(REGISTER_WAIT, || {
            out = self.output();
            out.contains("registered successfully") || out.contains(&failure)
        });
        assert!(
            out.contains("registered successfully") && !out.contains(&failure),
            "baresip {} did not register with the node\n{}",
            self.user,
            self.report(node)
        );
    }

    /// Types one command line.
    fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("baresip stdin");
        writeln!(stdin, "{line}").expect("write to baresip");
        stdin.flush().expect("flush baresip stdin");
    }

    /// `/quit`, then waits (bounded) for the exit; the guard kills it if it does not.
    fn quit(&mut self) {
        self.command("/quit");
        if self.proc.wait_bounded(Duration::from_secs(5)).is_none() {
            eprintln!("baresip {} ignored /quit: killed", self.user);
        }
        self.stdin = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// SIPp registers bob over UDP (401, digest, 200) with both forms of the digest username;
/// a wrong password gets a second 401.
#[test]
fn sipp_register_with_digest() {
    require("sipp");
    let node = Node::start(USERS, NODE_FLAGS);
    let contact_port = free_port();

    for auth_user in ["bob", "bob@localhost"] {
        let challenges = node.metric("cpm_auth_challenges_total").unwrap_or(0);
        let good = Register {
            auth_user,
            ..Register::bob(contact_port, Transport::Udp)
        };
        good.run(&node).assert_success(&node);
        // The same Contact each time: one binding.
        let bindings = node.wait_metric("cpm_registrations", |v| v == 1, METRIC_WAIT);
        assert_eq!(bindings, Some(1), "after REGISTER as {auth_user}");
        let now = node.wait_metric("cpm_auth_challenges_total", |v| v > challenges, METRIC_WAIT);
        assert!(
            now.is_some_and(|v| v > challenges),
            "no 401 counted for {auth_user}"
        );

        // A wrong password: 401, digest, 401 again; the binding stays.
        let challenges = now.unwrap_or(0);
        let wrong = Register {
            password: "not-bobpw",
            ..good
        };
        wrong.run_rejected(&node).assert_success(&node);
        let now = node.wait_metric(
            "cpm_auth_challenges_total",
            |v| v >= challenges + 2,
            METRIC_WAIT,
        );
        assert!(
            now.is_some_and(|v| v >= challenges + 2),
            "a wrong password as {auth_user}: two 401 expected, counter {now:?} from {challenges}"
        );
        assert_eq!(node.metric("cpm_registrations"), Some(1));
    }
    assert!(node.metric("cpm_auth_challenges_total") >= Some(1));
}

/// Sends `count` MESSAGEs from a SIPp UAC (alice, proxy digest) to a SIPp UAS registered as
/// bob by a separate SIPp REGISTER, all over `transport`; checks both ends and the node.
fn message_relay(transport: Transport, count: u32, rate: u32) {
    require("sipp");
    let node = Node::start(USERS, NODE_FLAGS);
    let (uas, uas_port) = sipp_bob_uas("uas_message.xml", count, transport);
    let register = Register::bob(uas_port, transport).run(&node);
    register.assert_success(&node);
    // The binding must outlive the registering process (and its TCP connection).
    assert_eq!(
        node.wait_metric("cpm_registrations", |v| v == 1, METRIC_WAIT),
        Some(1),
        "bob's binding is gone once the REGISTER run ended\n{}\n--- node log (tail):\n{}",
        register.report(),
        node_log(&node)
    );

    let uac = sipp_alice_uac(&node, "uac_message.xml", count, rate, transport);
    uac.assert_success(&node);
    // The UAS exits 0 once it has answered `count` MESSAGEs (-m), so it received them all.
    uas.finish().assert_success(&node);
    let forwarded = node.wait_metric(
        "cpm_messages_forwarded_total",
        |v| v == u64::from(count),
        METRIC_WAIT,
    );
    assert_eq!(
        forwarded,
        Some(u64::from(count)),
        "cpm_messages_forwarded_total"
    );
}

/// 50 MESSAGEs at 50/s over UDP through the node to a registered SIPp UAS.
#[test]
fn sipp_message_relay_to_registered_uas() {
    message_relay(Transport::Udp, 50, 50);
}

/// The same over TCP: REGISTER, UAC and UAS all on TCP, 20 MESSAGEs.
#[test]
fn tcp_register_and_message() {
    message_relay(Transport::Tcp, 20, 20);
}

/// Five calls (INVITE with proxy digest, 100/180/200, ACK, BYE) from a SIPp UAC as alice
/// through the node to a SIPp UAS registered as bob. The UAS checks that the INVITE carries
/// the node's Record-Route and that INVITE, ACK and BYE each came through the node.
#[test]
fn sipp_call_through_proxy() {
    const CALLS: u32 = 5;
    require("sipp");
    let node = Node::start(USERS, NODE_FLAGS);
    let (uas, uas_port) = sipp_bob_uas("uas_call.xml", CALLS, Transport::Udp);
    Register::bob(uas_port, Transport::Udp)
        .run(&node)
        .assert_success(&node);
    let bindings = node.wait_metric("cpm_registrations", |v| v == 1, METRIC_WAIT);
    assert_eq!(bindings, Some(1), "bob's binding");
    let received_before = node
        .metric("cpm_sip_requests_received_total")
        .expect("metrics");

    let uac = sipp_alice_uac(&node, "uac_call.xml", CALLS, 10, Transport::Udp);
    uac.assert_success(&node);
    uas.finish().assert_success(&node);

    // Per call the node got INVITE, ACK (of the 407), INVITE, ACK, BYE.
    let want = received_before + 5 * u64::from(CALLS);
    let received = node.wait_metric(
        "cpm_sip_requests_received_total",
        |v| v >= want,
        METRIC_WAIT,
    );
    assert!(
        received.is_some_and(|v| v >= want),
        "cpm_sip_requests_received_total {received:?}, want >= {want}"
    );
}

/// baresip registers as bob; a SIPp UAC as alice sends it "hello from sipp".
#[test]
fn baresip_receives_message_from_sipp() {
    require("sipp");
    require("baresip");
    let node = Node::start(USERS, NODE_FLAGS);
    let mut bob = Baresip::start(&node, "bob", "bobpw", "\"Alice\" <sip:alice@localhost>");
    bob.wait_registered(&node);

    let uac = sipp_alice_uac(&node, "uac_message.xml", 1, 1, Transport::Udp);
    uac.assert_success(&node);
    assert!(
        bob.wait_for(
            "sip:alice@localhost: \"hello from sipp",
            Duration::from_secs(5)
        ),
        "baresip did not show the MESSAGE text\n{}",
        bob.report(&node)
    );
    bob.quit();
}

/// baresip registers as alice and sends `/message` to its contact bob, a SIPp UAS.
#[test]
fn baresip_sends_message_to_sipp_uas() {
    const TEXT: &str = "hello from baresip";
    require("sipp");
    require("baresip");
    let node = Node::start(USERS, NODE_FLAGS);
    let (uas, uas_port) = sipp_bob_uas("uas_message.xml", 1, Transport::Udp);
    Register::bob(uas_port, Transport::Udp)
        .run(&node)
        .assert_success(&node);

    let mut alice = Baresip::start(&node, "alice", "alicepw", "\"Bob\" <sip:bob@localhost>");
    alice.wait_registered(&node);
    alice.command("/contact_next");
    assert!(
        alice.wait_for(
            "Current contact: Bob <sip:bob@localhost>",
            Duration::from_secs(5)
        ),
        "baresip did not select bob\n{}",
        alice.report(&node)
    );
    alice.command(&format!("/message {TEXT}"));

    let uas = uas.finish();
    assert_eq!(
        uas.code,
        Some(0),
        "{}\n{}",
        uas.report(),
        alice.report(&node)
    );
    assert!(
        uas.messages.contains(TEXT),
        "the UAS got a MESSAGE without the text\n{}",
        uas.report()
    );
    alice.quit();
}

/// A SIPp UAC sends 20 CPM pager messages (CPIM body, msg ICSI) as alice to bob, a SIPp UAS:
/// each goes through the node's Participating Function on both sides (stored in alice's and
/// bob's history) and reaches the UAS with the CPM headers.
#[test]
fn sipp_pager_messages_through_the_participating_function() {
    const COUNT: u32 = 20;
    require("sipp");
    let node = Node::start(USERS, NODE_FLAGS);
    let (uas, uas_port) = sipp_bob_uas("uas_message.xml", COUNT, Transport::Udp);
    Register::bob(uas_port, Transport::Udp)
        .run(&node)
        .assert_success(&node);
    let uac = sipp_alice_uac(&node, "uac_pager.xml", COUNT, 20, Transport::Udp);
    uac.assert_success(&node);
    let uas = uas.finish();
    uas.assert_success(&node);
    assert!(
        uas.messages
            .contains("Conversation-ID: 6f1c2b1e-0000-4000-8000-00000000beef")
            && uas
                .messages
                .contains("P-Asserted-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg")
            && uas.messages.contains("imdn.Message-ID: sipp-"),
        "the UAS got the MESSAGE without its CPM headers or CPIM body\n{}",
        uas.report()
    );
    for metric in [
        "cpm_pf_messages_sent_total",
        "cpm_pf_messages_received_total",
        "cpm_pf_delivered_total",
    ] {
        assert_eq!(
            node.wait_metric(metric, |v| v == u64::from(COUNT), METRIC_WAIT),
            Some(u64::from(COUNT)),
            "{metric}\n{}",
            node_log(&node)
        );
    }
}

/// baresip registers as bob; `cpm client send` (alice) sends it a CPM pager message through
/// both PFs; baresip shows the text.
#[test]
fn baresip_receives_a_message_sent_by_cpm_client() {
    require("baresip");
    let node = Node::start(USERS, NODE_FLAGS);
    let mut bob = Baresip::start(&node, "bob", "bobpw", "\"Alice\" <sip:alice@localhost>");
    bob.wait_registered(&node);
    let out = Command::new(cpm_bin())
        .args(["client", "--server", &node.sip.to_string()])
        .args(["--user", "alice@localhost", "--password", "alicepw"])
        .args(["send", "bob@localhost", "hello baresip from cpm"])
        .output()
        .expect("run cpm client send");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("200"),
        "cpm client send: {:?}\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        bob.report(&node)
    );
    assert!(
        bob.wait_for("hello baresip from cpm", Duration::from_secs(5)),
        "baresip did not show the text\n{}",
        bob.report(&node)
    );
    bob.quit();
}

// ---------------------------------------------------------------------------------------------
// Kamailio as an MSRP relay (RFC 4976)

/// The msrp module of Debian's `kamailio` package.
const KAMAILIO_MSRP_SO: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/msrp.so";

/// The relay's configuration; its placeholders are filled in by [`KamailioRelay::start`].
const KAMAILIO_MSRP_CFG: &str = include_str!("peers/kamailio-msrp.cfg");

/// How long Kamailio may take to listen, and to exit after SIGTERM.
const KAMAILIO_WAIT: Duration = Duration::from_secs(10);

/// Whether `tool` is on the PATH.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Kamailio running `tests/peers/kamailio-msrp.cfg` on a free loopback port, in its own
/// process group (its main process signals its whole group when it shuts down). Dropped: SIGTERM
/// to its main process by PID (which stops its children), a bounded wait, then SIGKILL to the
/// group it leads.
struct KamailioRelay {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl KamailioRelay {
    fn start(users: &[(&str, &str)], realm: &str) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut table = String::new();
        for (aor, pw) in users {
            let _ = writeln!(table, "$sht(users=>{aor}) = \"{pw}\";");
        }
        for attempt in 1..=5 {
            let dir = TempDir::new("kamailio-msrp");
            let port = free_port();
            let cfg = KAMAILIO_MSRP_CFG
                .replace("KAM_PORT", &port.to_string())
                .replace("KAM_REALM", realm)
                .replace("KAM_USERS", &table);
            let cfg_path = dir.path().join("kamailio.cfg");
            std::fs::write(&cfg_path, cfg).expect("write kamailio.cfg");
            let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log file");
            let child = Command::new("kamailio")
                .args(["-DD", "-E", "-m", "64", "-M", "8", "-f"])
                .arg(&cfg_path)
                .arg("-P")
                .arg(dir.path().join("kamailio.pid"))
                .arg("-w")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .expect("start kamailio");
            let mut relay = Self { child, port, dir };
            wait_until(KAMAILIO_WAIT, || {
                port_bound(port, true) || !matches!(relay.child.try_wait(), Ok(None))
            });
            if port_bound(port, true) && matches!(relay.child.try_wait(), Ok(None)) {
                return relay;
            }
            let log = relay.log();
            // A parallel test may take the port between our probe and the bind: another.
            assert!(
                attempt < 5 && log.contains("bind"),
                "kamailio did not start (attempt {attempt}):\n{}",
                tail(&log, 4000)
            );
            relay.stop();
        }
        unreachable!("the last attempt panics")
    }

    /// The relay's URI, as `--msrp-relay` takes it.
    fn uri(&self) -> String {
        format!("msrp://127.0.0.1:{};tcp", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// SIGTERM to the main process, a bounded wait, SIGKILL to its group if it is still there.
    fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let exited = wait_until(KAMAILIO_WAIT, || !matches!(self.child.try_wait(), Ok(None)));
        if !exited {
            eprintln!("killing kamailio's process group {pid}");
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for KamailioRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cpm client listen --json`, its stdout lines on a channel; killed by PID when dropped.
struct JsonListener {
    /// Held for its `Drop` (the kill by PID).
    _proc: Proc,
    lines: std::sync::mpsc::Receiver<String>,
}

impl JsonListener {
    fn start(node: &Node, user: &str, password: &str) -> Self {
        use std::io::BufRead as _;
        let mut proc = Proc::spawn(
            "cpm client listen",
            Command::new(cpm_bin())
                .args(["client", "--server", &node.sip.to_string()])
                .args(["--user", user, "--password", password])
                .args(["listen", "--json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let out = proc.child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut l = Self { _proc: proc, lines };
        l.wait_for("registered", |v| v["type"] == "registered");
        l
    }

    /// The next line satisfying `want`, within 15 s.
    fn wait_for(
        &mut self,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: serde_json::Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("listen: not JSON ({e}): {line}"));
                    if want(&v) {
                        return v;
                    }
                    seen.push(line);
                }
                Err(_) => break,
            }
        }
        panic!("listen: no {what} line; saw {seen:#?}");
    }
}

/// `cpm client chat` from a pipe with these lines, through `--msrp-relay`; bounded by
/// [`SIPP_WALL`]. Exit code, stdout, stderr.
fn chat_through_relay(node: &Node, relay: &str, peer: &str, input: &str) -> (i32, String, String) {
    let mut proc = Proc::spawn(
        "cpm client chat",
        Command::new(cpm_bin())
            .args(["client", "--server", &node.sip.to_string()])
            .args(["--user", "alice@localhost", "--password", "alicepw"])
            .args(["--msrp-relay", relay, "--json", "chat", peer])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin: ChildStdin = proc.child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(proc.child.stdout.take().expect("stdout")));
    let err = read(Box::new(proc.child.stderr.take().expect("stderr")));
    let status = proc.wait_bounded(SIPP_WALL);
    (
        status.and_then(|s| s.code()).unwrap_or(-1),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Issue 13 deliverable 7: a chat whose media goes through Kamailio's msrp module as the
/// client's MSRP relay (RFC 4976). Alice's client authenticates to the relay (AUTH, 401 with a
/// digest challenge, AUTH with her credentials, 200 with Use-Path), offers `a=path` = relay's
/// Use-Path + her URI; the PF takes the relayed connection (From-Path: relay, alice), stores
/// each line and relays it to bob; its success REPORTs come back through the relay. Both
/// histories have the lines; Kamailio's log shows the AUTH, the relayed SENDs and REPORTs.
#[test]
fn a_chat_through_kamailio_as_msrp_relay_reaches_bob_and_both_histories() {
    if !on_path("kamailio") || !Path::new(KAMAILIO_MSRP_SO).is_file() {
        eprintln!(
            "SKIPPED: kamailio (Debian package `kamailio`, with {KAMAILIO_MSRP_SO}) is not \
             installed"
        );
        return;
    }
    let started = Instant::now();
    let node = Node::start(USERS, NODE_FLAGS);
    let relay = KamailioRelay::start(USERS, "localhost");
    let mut bob = JsonListener::start(&node, "bob@localhost", "bobpw");
    let lines = ["hello bob via kamailio", "second line, relayed"];
    let (code, out, err) = chat_through_relay(
        &node,
        &relay.uri(),
        "bob@localhost",
        &format!("{}\n", lines.join("\n")),
    );
    let context = || {
        format!(
            "stdout {out}\nstderr {err}\nkamailio log:\n{}\nnode log:\n{}",
            tail(&relay.log(), 4000),
            node_log(&node)
        )
    };
    assert_eq!(code, 0, "chat through the relay failed\n{}", context());
    for text in lines {
        let m = bob.wait_for(text, |v| v["type"] == "message" && v["text"] == text);
        assert_eq!(m["from"], "alice@localhost");
    }
    // Both histories have the lines.
    for (user, pw, peer) in [
        ("alice@localhost", "alicepw", "bob@localhost"),
        ("bob@localhost", "bobpw", "alice@localhost"),
    ] {
        let (code, hist, herr) = common::run_client(&[
            "--server",
            &node.sip.to_string(),
            "--http",
            &node.http.to_string(),
            "--user",
            user,
            "--password",
            pw,
            "--json",
            "history",
            "--with",
            peer,
        ]);
        assert_eq!(code, 0, "{user}: history: {hist} {herr}");
        for text in lines {
            assert!(
                hist.contains(text),
                "{user}'s history lacks {text:?}: {hist}"
            );
        }
    }
    // Kamailio did the relaying: the challenge, the AUTH, the SENDs on to the PF, the PF's
    // success REPORTs back to the client.
    let log = strip_ansi(&relay.log());
    for needle in [
        "msrp-relay: AUTH from",
        "msrp-relay: AUTH ok user=alice@localhost session=",
        "msrp-relay: relayed SEND",
        "msrp-relay: relayed REPORT",
    ] {
        assert!(
            log.contains(needle),
            "kamailio log lacks {needle:?}\n{}",
            context()
        );
    }
    let sends = log.matches("msrp-relay: relayed SEND").count();
    let reports = log.matches("msrp-relay: relayed REPORT").count();
    // The binding SEND and one per line; a REPORT per line.
    assert!(sends > lines.len(), "{sends} SENDs relayed\n{}", context());
    assert_eq!(reports, lines.len(), "REPORTs relayed\n{}", context());
    drop(bob);
    drop(relay);
    eprintln!("kamailio msrp relay test: {:?}", started.elapsed());
}
