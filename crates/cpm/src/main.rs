//! `cpm`: the CPM node, client and tools.
//!
//! Today: `cpm sip check` (parse SIP messages and print the verdict a CPM node gives them),
//! `cpm admin user add|list|remove` (accounts in the node's store) and `cpm serve` (announces
//! the node; the SIP/IP Core arrives with the next issue).

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
    /// Run an all-in-one CPM node (SIP/IP Core, Conversation Server, storage, admin HTTP).
    Serve,
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
        Command::Serve => {
            println!(
                "cpm {}: the CPM node is not available in this build yet; it arrives with the \
                 SIP/IP Core (registrar, proxy, transports).\n\
                 Available now:\n  cpm sip check FILE...   parse SIP messages and print the \
                 verdict\nPlanned: cpm serve, cpm client, cpm admin, cpm bench.",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
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
