//! `cpm client`: a command-line CPM client over the sans-IO core in `cpm-client`.
//!
//! # The driver
//!
//! [`Driver`] moves bytes and arms one timer; every protocol decision is the core's:
//!
//! - UDP: one socket bound to an ephemeral port on the interface that faces the server (for a
//!   server on 127.0.0.1, `127.0.0.1:0`); every datagram read goes to
//!   [`Client::handle_datagram`], every [`cpm_client::Transmit`] is sent to its peer.
//! - TCP: one connection to the server, opened before the core is built (its local address is
//!   the Contact) and again whenever the core has something to send while there is none
//!   (after the server closed it, the core schedules a re-registration, and that REGISTER
//!   reopens the connection). Bytes read go to [`Client::handle_stream_data`] (the core frames
//!   them with `cpm_sip::StreamFramer`); EOF, read or write errors and failed connects are
//!   reported as [`Client::handle_connection_closed`]; [`Client::poll_close`] closes it.
//! - MSRP (sessions): `msrp.rs`, one small task per connection the core asks for
//!   ([`cpm_client::Client::poll_conn_command`]), reading through `cpm_msrp::Decoder` and
//!   reporting to [`cpm_client::Client::handle_conn_event`]; no protocol logic. With
//!   `--msrp-relay` the relay's host is resolved here (the core resolves no names) and the
//!   core connects every session to it (RFC 4976, [`cpm_client::ClientConfig::msrp_relay`]).
//! - Time: `std::time::Instant` is the core's `now`; the wall clock is read once, at start.
//!   One `sleep_until(client.poll_timeout())`.
//!
//! The loop is [`Driver::step`]: flush every transmit, hand out one event if there is one,
//! otherwise wait for a datagram/stream read, the core's deadline, the caller's deadline or the
//! stop signal (SIGINT/SIGTERM/SIGHUP for `listen`). The commands (`listen` in
//! `listen.rs`, `send`, `chat` in `chat.rs`, `send-file` and the downloads of `listen
//! --download-dir` in `file.rs`) are small programs over `step`; `history` (`history.rs`) is a plain HTTP GET
//! with digest authentication.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Args, CommandFactory as _, Subcommand, ValueEnum};
use cpm_client::{
    Client, ClientConfig, Event, MsrpRelay, MsrpUri, ReceivedImdn, ReceivedMessage, SessionKind,
    TransportKind, notification_kind, notification_status,
};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

mod chat;
mod file;
mod history;
mod listen;
mod msrp;

use history::history;
#[cfg(test)]
use history::{history_line, parse_http, query_escape};
use listen::listen;

/// The SIP port of `--server HOST` without one.
const SIP_PORT: u16 = 5060;
/// The MSRP port of a relay URI without one (RFC 4975 section 15.1).
const MSRP_PORT: u16 = 2855;
/// The HTTP port of `--http HOST` without one (and of the default `--http`).
const HTTP_PORT: u16 = 8080;
/// How long `send --wait-imdn` waits for its registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for a final response (the core's Timer F is 32 s; this is a backstop).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(40);
/// How long shutdown waits for the de-registration to be answered.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest HTTP answer `history` reads.
const MAX_HTTP_ANSWER: usize = 64 * 1024 * 1024;

/// The transport of `--transport`.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub(crate) enum Transport {
    /// UDP (retransmissions by the transaction layer).
    #[default]
    Udp,
    /// One TCP connection to the server.
    Tcp,
}

/// Flags of `cpm client`; each is also accepted after the subcommand.
#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The SIP server (the node), HOST:PORT, or HOST for port 5060.
    #[arg(long, global = true, value_name = "HOST[:PORT]", value_parser = sip_server)]
    server: Option<String>,
    /// The user's address of record, user@domain (also the digest username).
    #[arg(long, global = true, value_name = "AOR")]
    user: Option<String>,
    /// The user's password.
    #[arg(long, global = true, value_name = "PW")]
    password: Option<String>,
    /// The device name; one registration per (user, device). Default: `default`
    /// (`default-send` for `send --wait-imdn`).
    #[arg(long, global = true, value_name = "NAME")]
    device: Option<String>,
    /// SIP transport.
    #[arg(long, global = true, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// Print one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    /// The node's admin HTTP API, HOST:PORT, or HOST for port 8080 (default: the server's
    /// host).
    #[arg(long, global = true, value_name = "HOST[:PORT]", value_parser = http_server)]
    http: Option<String>,
    /// Give up when the server has not answered anything (nor accepted the TCP connection)
    /// within SECS: nothing is listening there, or it does not take us.
    #[arg(long, global = true, value_name = "SECS", default_value = "5", value_parser = seconds)]
    timeout: Duration,
    /// Send every session's media through this MSRP relay (RFC 4976), `msrp://HOST:PORT;tcp`:
    /// the client authenticates to it (AUTH, digest with --user and --password) before each
    /// session's SDP, and puts its Use-Path in `a=path`.
    #[arg(long, global = true, value_name = "URI", value_parser = msrp_relay)]
    msrp_relay: Option<MsrpUri>,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register and print every message, notification and event until SIGINT, SIGTERM or
    /// SIGHUP (then unregister, waiting at most 3 s for the answer). Delivery notifications
    /// are sent automatically. Exits 1 when the server does not answer the first REGISTER within
    /// --timeout or refuses the credentials; once it has answered, failed refreshes (the
    /// node restarting, the network down) are retried with back-off, each reported on stderr.
    Listen {
        /// Also send a display notification for every message that asks for one.
        #[arg(long)]
        auto_display: bool,
        /// Registration lifetime asked for, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        expires: u32,
        /// Take file transfers and store each received file in DIR (as `NAME.part` while
        /// it arrives; renamed to NAME, or `NAME (1)`..., once its size and SHA-1 are
        /// checked; deleted when it fails). Without it, file transfers are refused.
        #[arg(long, value_name = "DIR")]
        download_dir: Option<std::path::PathBuf>,
    },
    /// Send a pager-mode message (1-1, or 1-N to several recipients) and print the final
    /// response; a text over 1,300 bytes to one recipient goes in Large Message Mode (an
    /// MSRP session, the MSRP 200 its response). Exit status: 0 on a 2xx, 1 otherwise.
    Send {
        /// A recipient (repeatable).
        #[arg(long = "to", value_name = "AOR")]
        to: Vec<String>,
        /// `[AOR] TEXT`: an optional recipient, then the text.
        #[arg(value_name = "[AOR] TEXT", required = true, num_args = 1..=2)]
        words: Vec<String>,
        /// Register first and wait up to SECONDS for the delivery notifications, printing
        /// each.
        #[arg(long, value_name = "SECONDS")]
        wait_imdn: Option<f64>,
    },
    /// Register, start a chat session (MSRP) with PEER and send every line read from
    /// stdin. On a terminal, incoming messages are printed as they come (and marked
    /// displayed), with the delivery and display state of ours, until EOF (Ctrl-D), SIGINT or
    /// the session's end. From a pipe: exit 0 once every line got its MSRP 200 (and, with
    /// --wait-delivered, its delivery notification), 1 with the reason otherwise (the SIP
    /// status of a refused session, a timeout).
    Chat {
        /// The peer, user@domain.
        #[arg(value_name = "AOR")]
        peer: String,
        /// Also wait up to SECONDS for the delivery notification of every message sent.
        #[arg(long, value_name = "SECONDS")]
        wait_delivered: Option<f64>,
    },
    /// Send a file (RFC 5547, an MSRP session with the file transfer ICSI) to PEER. Prints
    /// `sent NAME SIZE bytes sha-1 HEX` once the network stored the whole file and checked
    /// its hash (a progress bar on a terminal meanwhile); exit status 0 then, 1 with the
    /// reason otherwise (refused, an MSRP error, a timeout, the connection lost).
    SendFile {
        /// The peer, user@domain.
        #[arg(value_name = "AOR")]
        peer: String,
        /// The file to send.
        #[arg(value_name = "PATH")]
        path: std::path::PathBuf,
    },
    /// Print the user's stored message history (from the node's admin HTTP API).
    History {
        /// Only the conversation with this peer.
        #[arg(long, value_name = "AOR")]
        with: Option<String>,
        /// At most N messages.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

/// `HOST[:PORT]` (a host name, an IPv4 address, an IPv6 address with or without brackets)
/// as `host:port`, the port `default_port` when left out.
fn host_port(s: &str, default_port: u16) -> Result<String, String> {
    let bad = || format!("{s:?} is not HOST or HOST:PORT");
    if let Ok(a) = s.parse::<SocketAddr>() {
        return if a.port() == 0 {
            Err(bad())
        } else {
            Ok(a.to_string())
        };
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port).to_string());
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::new(ip.into(), default_port).to_string());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
        ),
        None => (s, default_port),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(format!("{host}:{port}"))
}

fn sip_server(s: &str) -> Result<String, String> {
    host_port(s, SIP_PORT)
}

fn http_server(s: &str) -> Result<String, String> {
    host_port(s, HTTP_PORT)
}

/// An MSRP relay's URI (RFC 4976 section 5: `msrp://HOST[:PORT];tcp`, port 2855 when left
/// out). `msrps:` is refused: the client's MSRP transport has no TLS.
fn msrp_relay(s: &str) -> Result<MsrpUri, String> {
    let uri: MsrpUri = s
        .parse()
        .map_err(|_| format!("{s:?} is not an MSRP URI (msrp://HOST:PORT;tcp)"))?;
    if uri.is_secure() {
        return Err(format!(
            "{s:?}: msrps (TLS) is not supported by cpm client; use msrp://"
        ));
    }
    Ok(uri)
}

/// A positive number of seconds (fractions allowed).
fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}

/// What every command needs, checked.
struct Common {
    /// `host:port`.
    server: String,
    user: String,
    password: String,
    device: Option<String>,
    transport: TransportKind,
    json: bool,
    http: Option<String>,
    timeout: Duration,
    /// `--msrp-relay`.
    msrp_relay: Option<MsrpUri>,
}

/// A usage error in clap's format (exit status 2).
fn usage_error(kind: clap::error::ErrorKind, msg: &str) -> ! {
    let mut cmd = crate::Cli::command();
    let sub = cmd
        .find_subcommand_mut("client")
        .map(|c| c.clone().bin_name("cpm client"));
    match sub {
        Some(mut c) => c.error(kind, msg).exit(),
        None => cmd.error(kind, msg).exit(),
    }
}

/// Runs `cpm client`.
pub(crate) fn run(args: ClientArgs) -> ExitCode {
    use clap::error::ErrorKind;
    let missing = |flag: &str| {
        usage_error(
            ErrorKind::MissingRequiredArgument,
            &format!("the following required argument was not provided: --{flag}"),
        )
    };
    let common = Common {
        server: args
            .server
            .unwrap_or_else(|| missing("server <HOST[:PORT]>")),
        user: args.user.unwrap_or_else(|| missing("user <AOR>")),
        password: args.password.unwrap_or_else(|| missing("password <PW>")),
        device: args.device,
        transport: match args.transport {
            Transport::Udp => TransportKind::Udp,
            Transport::Tcp => TransportKind::Tcp,
        },
        json: args.json,
        http: args.http,
        timeout: args.timeout,
        msrp_relay: args.msrp_relay,
    };
    if !common.user.contains('@') {
        usage_error(
            ErrorKind::InvalidValue,
            &format!("--user {:?} is not user@domain", common.user),
        );
    }
    if let ClientCommand::Send {
        to,
        words,
        wait_imdn,
    } = &args.command
    {
        if words.len() == 1 && to.is_empty() {
            usage_error(
                ErrorKind::MissingRequiredArgument,
                "send needs a recipient: `send AOR TEXT` or `send --to AOR TEXT`",
            );
        }
        if wait_imdn.is_some_and(|w| !(w.is_finite() && w >= 0.0)) {
            usage_error(
                ErrorKind::InvalidValue,
                "--wait-imdn wants a number of seconds",
            );
        }
    }
    if let ClientCommand::SendFile { peer, path } = &args.command {
        if peer.trim().is_empty() || peer.chars().any(char::is_whitespace) {
            usage_error(
                ErrorKind::InvalidValue,
                &format!("send-file: {peer:?} is not a recipient"),
            );
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => usage_error(
                ErrorKind::InvalidValue,
                &format!("send-file: {} is not a regular file", path.display()),
            ),
            Err(e) => usage_error(
                ErrorKind::InvalidValue,
                &format!("send-file: cannot read {}: {e}", path.display()),
            ),
        }
    }
    if let ClientCommand::Listen {
        download_dir: Some(dir),
        ..
    } = &args.command
        && !dir.is_dir()
    {
        usage_error(
            ErrorKind::InvalidValue,
            &format!("--download-dir {} is not a directory", dir.display()),
        );
    }
    if let ClientCommand::Chat {
        wait_delivered: Some(w),
        ..
    } = &args.command
        && !(w.is_finite() && *w >= 0.0)
    {
        usage_error(
            ErrorKind::InvalidValue,
            "--wait-delivered wants a number of seconds",
        );
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cpm: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match args.command {
            ClientCommand::Listen {
                auto_display,
                expires,
                download_dir,
            } => listen(&common, auto_display, expires, download_dir).await,
            ClientCommand::SendFile { peer, path } => file::send_file(&common, &peer, &path).await,
            ClientCommand::Send {
                mut to,
                mut words,
                wait_imdn,
            } => {
                let text = words.pop().unwrap_or_default();
                to.extend(words);
                send(&common, &to, &text, wait_imdn).await
            }
            ClientCommand::Chat {
                peer,
                wait_delivered,
            } => chat::chat(&common, &peer, wait_delivered).await,
            ClientCommand::History { with, limit } => history(&common, with, limit).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            if common.json {
                emit(&json!({"type": "error", "error": e}).to_string());
            }
            eprintln!("cpm: {e}");
            ExitCode::from(1)
        }
    }
}

// -------------------------------------------------------------------- output

/// Prints one line and flushes (readers follow stdout through a pipe).
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Text on one line: line breaks shown as `\n`.
fn one_line(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

fn message_line(m: &ReceivedMessage, json_out: bool) -> String {
    if json_out {
        return json!({
            "type": "message",
            "from": m.from,
            "to": m.to,
            "recipients": m.recipients,
            "text": m.text,
            "content_type": m.content_type,
            "conversation_id": m.conversation_id,
            "contribution_id": m.contribution_id,
            "message_id": m.message_id,
            "date_time": m.date_time,
            "deferred": m.deferred,
            "display_requested": m.display_requested,
        })
        .to_string();
    }
    format!(
        "message from={} to={} conversation={} contribution={} id={}{}: {}",
        m.from,
        m.to,
        m.conversation_id.as_deref().unwrap_or("-"),
        m.contribution_id.as_deref().unwrap_or("-"),
        m.message_id,
        if m.deferred { " deferred" } else { "" },
        one_line(&m.text)
    )
}

fn imdn_line(i: &ReceivedImdn, json_out: bool) -> String {
    let status = notification_status(i.notification);
    if json_out {
        return json!({
            "type": "imdn",
            "status": status,
            "notification": notification_kind(i.notification),
            "from": i.from,
            "message_id": i.message_id,
            "datetime": i.datetime,
            "recipient": i.recipient,
        })
        .to_string();
    }
    format!("imdn {status} from={} id={}", i.from, i.message_id)
}

/// The line for an event of `listen` (and the background events of `send`).
fn event_line(ev: &Event, c: &Common, device: &str, json_out: bool) -> Option<String> {
    Some(match ev {
        Event::Registered { expires } if json_out => json!({
            "type": "registered", "user": c.user, "device": device, "expires": expires,
        })
        .to_string(),
        Event::Registered { expires } => {
            format!("registered {} device={device} expires={expires}", c.user)
        }
        Event::RegistrationFailed {
            status,
            reason,
            will_retry,
        } if json_out => json!({
            "type": "error", "error": "registration failed", "status": status,
            "reason": reason, "will_retry": will_retry,
        })
        .to_string(),
        Event::RegistrationFailed {
            status,
            reason,
            will_retry,
        } => format!(
            "error registration failed: {status} {reason}{}",
            if *will_retry { " (retrying)" } else { "" }
        ),
        Event::Unregistered { status } if json_out => {
            json!({"type": "unregistered", "status": status}).to_string()
        }
        Event::Unregistered { .. } => "unregistered".to_owned(),
        Event::Message(m) => message_line(m, json_out),
        Event::Imdn(i) => imdn_line(i, json_out),
        Event::NotificationSent {
            to,
            message_id,
            notification,
            status,
            reason,
        } => {
            let what = notification_status(*notification);
            if json_out {
                json!({
                    "type": "imdn_sent", "status": what, "to": to, "message_id": message_id,
                    "response": status, "reason": reason,
                })
                .to_string()
            } else {
                format!("imdn-sent {what} to={to} id={message_id}: {status} {reason}")
            }
        }
        Event::SessionIncoming { from, kind, .. } if json_out => json!({
            "type": "session-incoming", "from": from, "kind": kind_name(*kind),
        })
        .to_string(),
        Event::SessionIncoming { from, kind, .. } => {
            format!("session-incoming from={from} kind={}", kind_name(*kind))
        }
        Event::SessionStarted {
            peer,
            kind,
            incoming,
            ..
        } if json_out => json!({
            "type": "session-started", "peer": peer, "kind": kind_name(*kind),
            "incoming": incoming,
        })
        .to_string(),
        Event::SessionStarted { peer, kind, .. } => {
            format!("session-started peer={peer} kind={}", kind_name(*kind))
        }
        Event::SessionEnded {
            status,
            reason,
            by_peer,
            ..
        } if json_out => json!({
            "type": "session-ended", "status": status, "reason": reason, "by_peer": by_peer,
        })
        .to_string(),
        Event::SessionEnded { status, reason, .. } => {
            format!("session-ended: {status} {reason}")
        }
        Event::Composing { from, active, .. } if json_out => json!({
            "type": "composing", "from": from, "state": if *active { "active" } else { "idle" },
        })
        .to_string(),
        Event::Composing { from, active, .. } => format!(
            "composing from={from} state={}",
            if *active { "active" } else { "idle" }
        ),
        // Send results are printed by `send` itself, file events by `listen` and
        // `send-file`.
        Event::SendResult { .. }
        | Event::FileIncoming { .. }
        | Event::FileNeeded { .. }
        | Event::FileData { .. }
        | Event::FileProgress { .. }
        | Event::FileSent { .. }
        | Event::FileReceived { .. }
        | Event::FileFailed { .. } => return None,
    })
}

/// `chat` or `large-message`.
fn kind_name(k: SessionKind) -> &'static str {
    match k {
        SessionKind::Chat => "chat",
        SessionKind::LargeMessage => "large-message",
        SessionKind::FileTransfer => "file-transfer",
    }
}

// -------------------------------------------------------------------- driver

/// What [`Driver::step`] returns.
enum Step {
    /// An event from the core.
    Event(Event),
    /// The caller's deadline passed.
    Deadline,
    /// SIGINT or SIGTERM.
    Stop,
    /// A line read from stdin (`chat`).
    Line(String),
    /// Stdin is at its end (`chat`).
    InputEnd,
    /// The core took input from the network and has no event for the caller: a caller
    /// waiting for a state (no transaction pending) looks again.
    Input,
}

/// The socket side of a client.
enum Net {
    Udp(UdpSocket),
    Tcp {
        server: SocketAddr,
        conn: Option<(OwnedReadHalf, OwnedWriteHalf)>,
    },
}

/// Moves bytes between the sockets and one [`Client`] core.
struct Driver {
    client: Client,
    net: Net,
    buf: Vec<u8>,
    stop: Option<watch::Receiver<bool>>,
    /// Whether anything came back from the server yet (a datagram, stream bytes).
    heard: bool,
    /// `--timeout`: the TCP connect timeout, and how long the commands wait for the first
    /// answer.
    timeout: Duration,
    /// What `--server` named, for the messages (`host:port`, and the address if different).
    server_name: String,
    /// The MSRP connections of the core's sessions.
    msrp: msrp::MsrpTransport,
    /// Lines read from stdin (`chat`), until its end.
    input: Option<mpsc::UnboundedReceiver<String>>,
}

/// Resolves HOST:PORT (the first address).
async fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport} has no address"))
}

/// The local address the OS would use to reach `server` (a connected probe socket; nothing
/// is sent).
fn local_ip_towards(server: SocketAddr) -> IpAddr {
    let any: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(server).and_then(|()| s.local_addr()))
        .map_or_else(|_| any.ip(), |a| a.ip())
}

async fn connect(server: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The hint after an error that suggests nothing (of ours) listens there.
const NOT_RUNNING: &str = "is cpm serve running there?";

/// The hint after a 401 or 407 that the client could not answer.
fn auth_hint(status: u16) -> &'static str {
    if matches!(status, 401 | 407) {
        " (wrong user or password?)"
    } else {
        ""
    }
}

/// 8 random bytes from the OS for the core's seed; the time and PID if that fails.
fn seed() -> u64 {
    use std::io::Read as _;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Driver {
    /// Opens the socket (or connection) and builds the core.
    /// `deferred`: whether the device takes the user's deferred messages (see
    /// [`ClientConfig::deferred`]).
    /// `files`: whether it takes file transfers ([`ClientConfig::file_transfer`]).
    async fn open(
        c: &Common,
        device: &str,
        expires: u32,
        deferred: bool,
        files: bool,
    ) -> Result<Self, String> {
        let server = resolve(&c.server).await?;
        let server_name = if server.to_string() == c.server {
            c.server.clone()
        } else {
            format!("{} ({server})", c.server)
        };
        let (net, local) = match c.transport {
            TransportKind::Udp => {
                let sock = UdpSocket::bind((local_ip_towards(server), 0))
                    .await
                    .map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
                let local = sock.local_addr().map_err(|e| e.to_string())?;
                (Net::Udp(sock), local)
            }
            TransportKind::Tcp | TransportKind::Local(_) => {
                let stream = connect(server, c.timeout)
                    .await
                    .map_err(|e| format!("cannot connect to {server_name}: {e} ({NOT_RUNNING})"))?;
                let local = stream.local_addr().map_err(|e| e.to_string())?;
                (
                    Net::Tcp {
                        server,
                        conn: Some(stream.into_split()),
                    },
                    local,
                )
            }
        };
        let mut cfg = ClientConfig::new(c.user.clone(), c.password.clone(), server, local);
        cfg.device = device.to_owned();
        cfg.transport = c.transport;
        cfg.expires = expires;
        cfg.seed = seed();
        cfg.deferred = deferred;
        cfg.file_transfer = files;
        if let Some(uri) = &c.msrp_relay {
            let host = uri.host().as_str();
            let port = uri.port().unwrap_or(MSRP_PORT);
            let addr = resolve(&format!("{host}:{port}")).await?;
            cfg.msrp_relay = Some(MsrpRelay {
                uri: uri.clone(),
                addr,
            });
        }
        let client = Client::new(cfg, Instant::now(), unix_ms()).map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            net,
            buf: vec![0; 65_536],
            stop: None,
            heard: false,
            timeout: c.timeout,
            server_name,
            msrp: msrp::MsrpTransport::new(c.timeout),
            input: None,
        })
    }

    /// The error when nothing answered within `--timeout`.
    fn no_answer(&self) -> String {
        format!(
            "no answer from {} within {} s ({NOT_RUNNING})",
            self.server_name,
            self.timeout.as_secs_f64()
        )
    }

    /// `deadline`, or the end of the wait for a first answer if that is earlier and nothing
    /// was heard yet (from `start`).
    /// Registers and waits for the answer (at most [`REGISTER_TIMEOUT`]): `Ok(true)` once
    /// registered, `Ok(false)` when a stop signal came first; a refusal or no answer is an
    /// error.
    async fn register_and_wait(&mut self) -> Result<bool, String> {
        let start = Instant::now();
        self.client.register(start);
        let deadline = start + REGISTER_TIMEOUT;
        loop {
            match self.step(self.answer_deadline(start, Some(deadline))).await {
                Step::Event(Event::Registered { .. }) => return Ok(true),
                Step::Event(Event::RegistrationFailed {
                    status,
                    reason,
                    will_retry: false,
                }) => {
                    return Err(format!(
                        "registration failed: {status} {reason}{}",
                        auth_hint(status)
                    ));
                }
                Step::Event(_) | Step::Line(_) | Step::InputEnd | Step::Input => {}
                Step::Deadline | Step::Stop if !self.heard => return Err(self.no_answer()),
                Step::Deadline => {
                    self.shutdown(|_| {}).await;
                    return Err("registration timed out".into());
                }
                Step::Stop => {
                    self.shutdown(|_| {}).await;
                    return Ok(false);
                }
            }
        }
    }

    fn answer_deadline(&self, start: Instant, deadline: Option<Instant>) -> Option<Instant> {
        if self.heard {
            return deadline;
        }
        let first = start + self.timeout;
        Some(deadline.map_or(first, |d| d.min(first)))
    }

    /// Sends everything the core has queued; opens the TCP connection if needed.
    async fn flush(&mut self) {
        loop {
            if self.client.poll_close() {
                self.closed();
            }
            while let Some(cmd) = self.client.poll_conn_command() {
                self.msrp.command(cmd);
            }
            let Some(t) = self.client.poll_transmit() else {
                return;
            };
            match &mut self.net {
                Net::Udp(sock) => {
                    // A lost datagram is the transaction layer's to retransmit.
                    if let Err(e) = sock.send_to(&t.payload, t.peer.addr).await {
                        tracing::debug!(error = %e, "UDP send failed");
                    }
                }
                Net::Tcp { server, conn } => {
                    if conn.is_none() {
                        match connect(*server, self.timeout).await {
                            Ok(s) => {
                                if let Ok(local) = s.local_addr() {
                                    self.client.handle_connected(Instant::now(), local);
                                }
                                *conn = Some(s.into_split());
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "TCP connect failed");
                                self.client.handle_connection_closed(Instant::now());
                                continue;
                            }
                        }
                    }
                    let Net::Tcp {
                        conn: Some((_, w)), ..
                    } = &mut self.net
                    else {
                        continue;
                    };
                    if w.write_all(&t.payload).await.is_err() {
                        self.closed();
                    }
                }
            }
        }
    }

    /// The TCP connection is gone: drop it and tell the core.
    fn closed(&mut self) {
        if let Net::Tcp { conn, .. } = &mut self.net {
            *conn = None;
        }
        self.client.handle_connection_closed(Instant::now());
    }

    /// Runs until the core has an event, `deadline` passes or the stop signal comes.
    /// What [`Driver::step`] returns once the core took input: its next event, or
    /// [`Step::Input`].
    async fn after_input(&mut self) -> Step {
        self.flush().await;
        self.client.poll_event().map_or(Step::Input, Step::Event)
    }

    async fn step(&mut self, deadline: Option<Instant>) -> Step {
        loop {
            self.flush().await;
            if let Some(ev) = self.client.poll_event() {
                return Step::Event(ev);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Step::Deadline;
            }
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
                continue;
            }
            let wake = [self.client.poll_timeout(), deadline]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            let stop = async {
                match &mut self.stop {
                    Some(rx) => {
                        let _ = rx.wait_for(|v| *v).await;
                    }
                    None => std::future::pending().await,
                }
            };
            enum Got {
                Datagram(usize, SocketAddr),
                Stream(usize),
                Closed,
                Nothing,
                Stop,
                Msrp(cpm_client::ConnEvent),
                Line(Option<String>),
            }
            let got = {
                let buf = &mut self.buf;
                let msrp = &mut self.msrp;
                let input = async {
                    match &mut self.input {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let read = async {
                    match &mut self.net {
                        Net::Udp(sock) => match sock.recv_from(buf).await {
                            Ok((n, from)) => Got::Datagram(n, from),
                            // ICMP errors and the like: nothing to read.
                            Err(_) => Got::Nothing,
                        },
                        Net::Tcp {
                            conn: Some((r, _)), ..
                        } => match r.read(buf).await {
                            Ok(0) | Err(_) => Got::Closed,
                            Ok(n) => Got::Stream(n),
                        },
                        Net::Tcp { conn: None, .. } => std::future::pending().await,
                    }
                };
                tokio::select! {
                    g = read => g,
                    ev = msrp.next_event() => ev.map_or(Got::Nothing, Got::Msrp),
                    line = input => Got::Line(line),
                    () = sleep => Got::Nothing,
                    () = stop => Got::Stop,
                }
            };
            let now = Instant::now();
            match got {
                Got::Datagram(n, from) => {
                    self.heard = true;
                    let data = Bytes::copy_from_slice(&self.buf[..n]);
                    self.client.handle_datagram(now, from, data);
                    return self.after_input().await;
                }
                Got::Stream(n) => {
                    self.heard = true;
                    self.client.handle_stream_data(now, &self.buf[..n]);
                    return self.after_input().await;
                }
                Got::Closed => self.closed(),
                Got::Msrp(ev) => {
                    self.client.handle_conn_event(now, ev);
                    return self.after_input().await;
                }
                Got::Line(Some(line)) => {
                    self.flush().await;
                    return Step::Line(line);
                }
                Got::Line(None) => {
                    self.input = None;
                    self.flush().await;
                    return Step::InputEnd;
                }
                Got::Nothing => {}
                Got::Stop => {
                    // Report the stop once; the shutdown that follows runs without it.
                    self.stop = None;
                    return Step::Stop;
                }
            }
        }
    }

    /// Lets requests in flight (the BYE of a Large Message Mode session) finish, waiting at
    /// most [`UNREGISTER_TIMEOUT`].
    async fn settle(&mut self) {
        let deadline = Instant::now() + UNREGISTER_TIMEOUT;
        while self.client.has_pending() || !self.client.sessions().is_empty() {
            if matches!(self.step(Some(deadline)).await, Step::Deadline | Step::Stop) {
                return;
            }
        }
    }

    /// Unregisters and waits (bounded) for the answer; the events meanwhile go to `on_event`.
    /// Returns the de-registration's status (0: nothing was registered), `None` when it got
    /// no answer in time.
    async fn shutdown(&mut self, mut on_event: impl FnMut(&Event)) -> Option<u16> {
        self.stop = None;
        self.client.unregister(Instant::now());
        let deadline = Instant::now() + UNREGISTER_TIMEOUT;
        while let Step::Event(ev) = self.step(Some(deadline)).await {
            on_event(&ev);
            if let Event::Unregistered { status } = ev {
                return Some(status);
            }
        }
        None
    }
}

/// A watch that turns true on SIGINT, SIGTERM or SIGHUP (the terminal closed). The handlers are installed before this
/// returns (not when a task first runs), so a signal that comes at once is not the default
/// one that kills the process without de-registering.
fn stop_signal() -> watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    tokio::spawn(async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait(term.take()) => {}
            () = wait(int.take()) => {}
            () = wait(hup.take()) => {}
        }
        let _ = tx.send(true);
    });
    rx
}

// -------------------------------------------------------------------- send

async fn send(
    c: &Common,
    to: &[String],
    text: &str,
    wait_imdn: Option<f64>,
) -> Result<ExitCode, String> {
    let device = c.device.clone().unwrap_or_else(|| {
        if wait_imdn.is_some() {
            "default-send".to_owned()
        } else {
            "default".to_owned()
        }
    });
    // A device registered only to hear the notifications does not take the user's
    // deferred messages.
    let mut d = Driver::open(c, &device, 600, c.device.is_some(), false).await?;
    // Register first, so that the notifications can reach this device.
    if wait_imdn.is_some() && !d.register_and_wait().await? {
        return Err("registration timed out".into());
    }
    let id = d
        .client
        .send_message(Instant::now(), to, text)
        .map_err(|e| e.to_string())?;
    let message_id = d.client.message_id(id).unwrap_or_default().to_owned();
    // Notifications can overtake the final response: keep them for after it.
    let mut early: Vec<ReceivedImdn> = Vec::new();
    let start = Instant::now();
    let deadline = start + RESPONSE_TIMEOUT;
    let (status, reason) = loop {
        match d.step(d.answer_deadline(start, Some(deadline))).await {
            Step::Event(Event::SendResult {
                id: i,
                status,
                reason,
                ..
            }) if i == id => break (status, reason),
            Step::Event(Event::Imdn(i)) if i.message_id == message_id => early.push(*i),
            Step::Event(_) | Step::Line(_) | Step::InputEnd | Step::Input => {}
            Step::Deadline | Step::Stop if !d.heard => return Err(d.no_answer()),
            Step::Deadline | Step::Stop => {
                break (408, "Request Timeout (no final response)".to_owned());
            }
        }
    };
    response_line(c.json, status, &reason, &message_id);
    // A large message's session still ends (its BYE): let it, briefly.
    d.settle().await;
    if !(200..300).contains(&status) {
        eprintln!("cpm: send failed: {status} {reason}{}", auth_hint(status));
        if wait_imdn.is_some() {
            d.shutdown(|_| {}).await;
        }
        return Ok(ExitCode::from(1));
    }
    let Some(wait) = wait_imdn else {
        return Ok(ExitCode::SUCCESS);
    };
    // Wait until every recipient reported delivery (or failure), or the time is up.
    let mut waiting: Vec<String> = to.iter().map(|t| expected_reporter(t, &c.user)).collect();
    waiting.sort();
    waiting.dedup();
    let report = |i: &ReceivedImdn, waiting: &mut Vec<String>| {
        emit(&imdn_line(i, c.json));
        if notification_kind(i.notification) == "delivery" {
            waiting.retain(|w| *w != i.from);
        }
    };
    for i in &early {
        report(i, &mut waiting);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(wait);
    while !waiting.is_empty() {
        match d.step(Some(deadline)).await {
            Step::Event(Event::Imdn(i)) if i.message_id == message_id => {
                report(&i, &mut waiting);
            }
            Step::Event(_) | Step::Line(_) | Step::InputEnd | Step::Input => {}
            Step::Deadline | Step::Stop => break,
        }
    }
    if !waiting.is_empty() {
        eprintln!(
            "cpm: no delivery notification from {} within {wait} s",
            waiting.join(", ")
        );
    }
    d.shutdown(|_| {}).await;
    Ok(ExitCode::SUCCESS)
}

/// The AOR a recipient's notifications come from.
fn expected_reporter(recipient: &str, own: &str) -> String {
    let r = cpm_client::aor_of(recipient);
    if r.contains('@') {
        return r;
    }
    let domain = own.rsplit_once('@').map_or("", |(_, d)| d);
    format!("{r}@{domain}")
}

fn response_line(json_out: bool, status: u16, reason: &str, message_id: &str) {
    if json_out {
        emit(
            &json!({
                "type": "response", "status": status, "reason": reason, "message_id": message_id,
            })
            .to_string(),
        );
    } else {
        emit(&format!("{status} {reason}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies() {
        let a = parse_http(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}xx").unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"{}"[..]));
        let a = parse_http(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(&a.body[..], b"abcde");
        assert!(parse_http(b"garbage").is_none());
    }

    #[test]
    fn server_addresses() {
        let sip = |s: &str| host_port(s, SIP_PORT);
        assert_eq!(sip("127.0.0.1").as_deref(), Ok("127.0.0.1:5060"));
        assert_eq!(sip("127.0.0.1:5070").as_deref(), Ok("127.0.0.1:5070"));
        assert_eq!(sip("localhost").as_deref(), Ok("localhost:5060"));
        assert_eq!(
            sip("sip.example.org.:5080").as_deref(),
            Ok("sip.example.org.:5080")
        );
        assert_eq!(sip("::1").as_deref(), Ok("[::1]:5060"));
        assert_eq!(sip("[::1]").as_deref(), Ok("[::1]:5060"));
        assert_eq!(
            sip("[2001:db8::1]:5062").as_deref(),
            Ok("[2001:db8::1]:5062")
        );
        assert_eq!(host_port("node", HTTP_PORT).as_deref(), Ok("node:8080"));
        for bad in [
            "",
            ":5060",
            "host:",
            "host:sip",
            "host:0",
            "host:65536",
            "a b",
            "[::1",
            "[x]",
            "-h",
            "h..x",
            "1.2.3.4:5:6",
        ] {
            assert!(sip(bad).is_err(), "{bad:?}");
        }
        assert!(seconds("0").is_err() && seconds("-1").is_err() && seconds("inf").is_err());
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn history_lines() {
        let m = json!({"direction": "sent", "peer": "bob@localhost", "state": "delivered",
            "text": "hello\nworld", "created_at_ms": 1_795_622_400_000u64});
        assert_eq!(
            history_line(&m),
            "2026-11-25T16:00:00Z sent → bob@localhost [delivered] hello\\nworld"
        );
        assert_eq!(query_escape("bob@localhost"), "bob@localhost");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
        assert_eq!(expected_reporter("bob", "alice@localhost"), "bob@localhost");
        assert_eq!(
            expected_reporter("sip:bob@localhost", "alice@x"),
            "bob@localhost"
        );
    }
}
