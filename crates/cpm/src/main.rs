//! `cpm`: the CPM node, client and tools.
//!
//! - `cpm serve`: the node (SIP/IP Core: registrar, digest authentication, proxy, CPM routing;
//!   admin HTTP with `/health` and `/metrics`).
//! - `cpm admin user add|list|remove`: accounts in the node's store (works while it runs).
//! - `cpm sip check`: parse SIP messages and print the verdict a CPM node gives them.
//! - `cpm client listen|send|chat|history`: a CPM client (see `client.rs`).

mod api;
mod client;
mod config;
mod directory;
mod http;
mod lock;
mod metrics;
mod node;
mod security;

/// mimalloc: the node allocates and frees many small buffers per message; glibc's malloc
/// spent a fifth of the core's time in its own bookkeeping in the relay benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::{Args, Parser, Subcommand};
use cpm_sip::{Frame, Limits, Message, StreamFramer, Verdict, check_request};
use cpm_store::{Aor, Store, StoreError};

/// CPM: an open implementation of OMA Converged IP Messaging.
#[derive(Parser)]
#[command(name = "cpm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an all-in-one CPM node: SIP/IP Core (registrar, digest authentication, stateful
    /// proxy, CPM routing), SQLite store, admin HTTP (/health, /metrics). Stops on SIGINT or
    /// SIGTERM.
    Serve(Box<ServeArgs>),
    /// SIP tools.
    Sip {
        #[command(subcommand)]
        command: SipCommand,
    },
    /// Administration of a node's data directory (works while the node runs).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// A CPM client: register and listen, send pager messages (1-1 and 1-N; Large Message
    /// Mode over 1,300 bytes), chat in an MSRP session, read the stored history.
    Client(Box<client::ClientArgs>),
}

/// Flags of `cpm serve`; each overrides the same key of the config file.
#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (every key has a default; see --print-config).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A domain to serve (repeatable; the first is the default realm).
    #[arg(long, value_name = "DOMAIN")]
    domain: Vec<String>,
    /// SIP listen address, UDP and TCP.
    #[arg(long, value_name = "ADDR:PORT")]
    sip_listen: Option<std::net::SocketAddr>,
    /// Address peers reach us at (Via, Record-Route), when listening on a wildcard address.
    #[arg(long, value_name = "ADDR:PORT")]
    advertise: Option<std::net::SocketAddr>,
    /// MSRP listen address (TCP; sessions' media). Default: port 2855 on the SIP address.
    #[arg(long, value_name = "ADDR:PORT")]
    msrp_listen: Option<std::net::SocketAddr>,
    /// Admin HTTP listen address.
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<std::net::SocketAddr>,
    /// Data directory (SQLite store, nonce secret).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A trusted peer, ADDR or ADDR/PREFIX (repeatable): not challenged, its
    /// P-Asserted-Identity kept.
    #[arg(long, value_name = "ADDR[/PREFIX]")]
    trusted_peer: Vec<String>,
    /// The Participating Function CPM requests are routed through.
    #[arg(long, value_name = "ADDR:PORT")]
    participating_function: Option<std::net::SocketAddr>,
    /// Another domain and its core, DOMAIN=ADDR:PORT (repeatable).
    #[arg(long, value_name = "DOMAIN=ADDR:PORT")]
    peer_domain: Vec<String>,
    /// A digest algorithm to offer, MD5 or SHA-256 (repeatable, in order of preference;
    /// replaces the configured list).
    #[arg(long, value_name = "ALG")]
    digest_algorithm: Vec<String>,
    /// Threads, and as many node shards, each with its own core and PF (0: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Log filter (info, debug, cpm=debug, ...); RUST_LOG wins when set.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log one JSON object per line.
    #[arg(long)]
    log_json: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// User accounts (digest credentials for REGISTER).
    ///
    /// Exit status: 0 on success, 1 if the user exists (add) or does not (remove), 2 on bad
    /// input or a storage error.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the digest realm is the domain of the AOR. Only digest hashes of
    /// the password are stored.
    Add {
        /// The address of record, `user@domain` (for example `alice@localhost`).
        aor: String,
        /// The password the user's client authenticates with.
        #[arg(long, value_name = "PW")]
        password: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Print the accounts, one AOR per line.
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Delete an account.
    Remove {
        /// The address of record, `user@domain`.
        aor: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Args)]
struct DataDir {
    /// The node's data directory (holds cpm.db).
    #[arg(long, value_name = "DIR", default_value = "./cpm-data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum SipCommand {
    /// Parse SIP messages and print what a CPM node would answer to each.
    ///
    /// Exit status: 0 if every message is acceptable, 1 if one is refused, 2 on a usage or IO
    /// error.
    Check {
        /// Files holding one message each (as one UDP datagram); `-` or nothing reads stdin.
        files: Vec<PathBuf>,
        /// Treat each input as a TCP byte stream that may hold several messages.
        #[arg(long)]
        stream: bool,
        /// Convert bare LF line ends to CRLF first (for messages pasted from documents).
        #[arg(long)]
        lf: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Client(args) => client::run(*args),
        Command::Sip {
            command: SipCommand::Check { files, stream, lf },
        } => check(&files, stream, lf),
        Command::Admin {
            command: AdminCommand::User { command },
        } => match admin_user(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cpm: {e}");
                match e {
                    StoreError::UserExists(_) => ExitCode::from(1),
                    _ => ExitCode::from(2),
                }
            }
        },
    }
}

/// `cpm admin user ...`. Listing or removing in a directory without a database reads as no
/// users and creates nothing.
fn admin_user(command: UserCommand) -> Result<ExitCode, StoreError> {
    match command {
        UserCommand::Add {
            aor,
            password,
            data,
        } => {
            // Refuse bad input before creating the data directory.
            let aor = Aor::parse(&aor)?;
            if password.is_empty() {
                return Err(StoreError::EmptyPassword);
            }
            let store = Store::open(&data.data_dir)?;
            store.add_user(aor.as_str(), &password, aor.domain(), unix_now())?;
            println!("added {aor} (realm {})", aor.domain());
        }
        UserCommand::List { data } => {
            if !has_database(&data.data_dir) {
                return Ok(ExitCode::SUCCESS);
            }
            for user in Store::open(&data.data_dir)?.list_users()? {
                println!("{}", user.aor);
            }
        }
        UserCommand::Remove { aor, data } => {
            let aor = Aor::parse(&aor)?;
            let removed = has_database(&data.data_dir)
                && Store::open(&data.data_dir)?.remove_user(aor.as_str())?;
            if !removed {
                eprintln!("cpm: no such user {aor}");
                return Ok(ExitCode::from(1));
            }
            println!("removed {aor}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn has_database(data_dir: &Path) -> bool {
    data_dir.join(cpm_store::DB_FILE).is_file()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut cfg = match &args.config {
        Some(path) => match config::NodeConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cpm: {e}");
                return ExitCode::from(2);
            }
        },
        None => config::NodeConfig::default(),
    };
    if !args.domain.is_empty() {
        cfg.domains = args.domain.clone();
    }
    if let Some(a) = args.sip_listen {
        cfg.sip_listen = a;
    }
    if let Some(a) = args.advertise {
        cfg.advertise = Some(a);
    }
    if let Some(a) = args.msrp_listen {
        cfg.msrp_listen = Some(a);
    }
    if let Some(a) = args.http_listen {
        cfg.http_listen = a;
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    cfg.trusted_peers.extend(args.trusted_peer.iter().cloned());
    if let Some(pf) = args.participating_function {
        cfg.participating_function = Some(pf);
    }
    for pd in &args.peer_domain {
        let Some((domain, addr)) = pd.split_once('=') else {
            eprintln!("cpm: --peer-domain wants DOMAIN=ADDR:PORT, got {pd:?}");
            return ExitCode::from(2);
        };
        let Ok(addr) = addr.parse() else {
            eprintln!("cpm: --peer-domain {pd:?}: {addr:?} is not ADDR:PORT");
            return ExitCode::from(2);
        };
        cfg.peer_domains.insert(domain.to_owned(), addr);
    }
    if !args.digest_algorithm.is_empty() {
        cfg.auth.digest_algorithms = args.digest_algorithm.clone();
    }
    if let Some(t) = args.threads {
        cfg.threads = t;
    }
    if let Some(l) = &args.log_level {
        cfg.log.level = l.clone();
    }
    if args.log_json {
        cfg.log.json = true;
    }
    if let Err(e) = cfg.validate() {
        eprintln!("cpm: {e}");
        return ExitCode::from(2);
    }
    if args.print_config {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg.log);
    match node::serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpm: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(log: &config::LogSection) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // No colour codes unless a person reads the terminal: log watchers (fail2ban) match
    // plain lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn read_input(path: &PathBuf) -> std::io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v)?;
        Ok(v)
    } else {
        std::fs::read(path)
    }
}

fn lf_to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// One line per message: `ok` with a summary, or the response the node would send.
fn report(name: &str, parsed: Result<Message, cpm_sip::ParseError>) -> bool {
    match parsed {
        Ok(Message::Request(r)) => match check_request(&r) {
            Ok(()) => {
                println!(
                    "{name}: ok: {} {} ({} headers, {} body octets)",
                    r.method,
                    r.uri,
                    r.headers.len(),
                    r.body.len()
                );
                true
            }
            Err(rej) => {
                println!("{name}: refused: {} {}", rej.status, rej.reason);
                false
            }
        },
        Ok(Message::Response(r)) => {
            println!(
                "{name}: ok: response {} {} ({} headers, {} body octets)",
                r.status,
                r.reason,
                r.headers.len(),
                r.body.len()
            );
            true
        }
        Err(e) => {
            match e.verdict() {
                Verdict::Respond(status, reason) => {
                    println!("{name}: refused: {status} {reason} ({e})")
                }
                _ => println!("{name}: dropped silently ({e})"),
            }
            false
        }
    }
}

fn check(files: &[PathBuf], stream: bool, lf: bool) -> ExitCode {
    let stdin = [PathBuf::from("-")];
    let inputs = if files.is_empty() { &stdin[..] } else { files };
    let mut all_ok = true;
    for path in inputs {
        let name = path.display().to_string();
        let mut data = match read_input(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cpm: cannot read {name}: {e}");
                return ExitCode::from(2);
            }
        };
        if lf {
            data = lf_to_crlf(&data);
        }
        if !stream {
            all_ok &= report(
                &name,
                Message::parse_datagram(Bytes::from(data), &Limits::default()),
            );
            continue;
        }
        let mut framer = StreamFramer::default();
        let mut buf = BytesMut::from(&data[..]);
        let mut n = 0;
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(Frame::Message(m))) => {
                    n += 1;
                    all_ok &= report(&format!("{name}#{n}"), Ok(m));
                }
                Ok(Some(Frame::KeepAlive)) => {}
                Ok(None) => {
                    if !buf.is_empty() {
                        println!("{name}: {} octets left: incomplete message", buf.len());
                        all_ok = false;
                    }
                    break;
                }
                Err(e) => {
                    n += 1;
                    all_ok &= report(&format!("{name}#{n}"), Err(e.clone()));
                    if e.scope() == cpm_sip::Scope::Connection {
                        println!("{name}: framing lost, the connection would be closed");
                        break;
                    }
                }
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
