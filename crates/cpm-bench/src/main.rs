//! `cpm-bench`: the load generator of `bench/msrp.sh` (not part of CI; no timing is asserted
//! anywhere).
//!
//! - `chat`: receivers and senders (users provisioned beforehand with `cpm admin user add`,
//!   all with the same password) register over UDP with digest, each sender opens its
//!   sessions (INVITE with an SDP offer for MSRP, ACK; the node's PFs anchor the media) and
//!   the ramp offers each rate for a while, paced per sender and bounded by a window of
//!   messages in flight per session. One JSON line per step: offered, sent, answered 200,
//!   failed, p50/p99/max latency (send → MSRP 200, which the PF sends only after both users'
//!   histories committed), the node's and our own CPU.
//! - `idle`: opens sessions, lets them sit, and reads the node's RSS before, with them, and
//!   after their BYEs: bytes per idle session.
//! - `tcp`: the reference of the same run, raw loopback TCP with the same connection count,
//!   window and message size (a sink in this process acknowledging each message with 32
//!   bytes).
//!
//! Every user is a [`cpm_client::Client`] core (our own sans-IO client, the one `cpm client`
//! runs), driven by a tokio task ([`agent`]).

mod agent;
mod tcpref;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio::sync::watch;

use agent::{Control, Spec, Stats, StepStats};

#[derive(Parser)]
#[command(
    name = "cpm-bench",
    about = "MSRP session load generator for bench/msrp.sh"
)]
struct Cli {
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Chat messages/s ramp through the node's PFs.
    Chat(ChatArgs),
    /// Node RSS per idle session.
    Idle(UsersArgs),
    /// Raw loopback TCP reference.
    Tcp(tcpref::TcpArgs),
}

#[derive(Args, Clone)]
struct UsersArgs {
    /// The node's SIP address (UDP).
    #[arg(long)]
    server: SocketAddr,
    /// The users' domain.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Every user's password.
    #[arg(long, default_value = "benchpw")]
    password: String,
    /// Senders, named `<sender-prefix><i>` (i from 0).
    #[arg(long, default_value_t = 50)]
    senders: usize,
    /// Receivers, named `<receiver-prefix><i>`.
    #[arg(long, default_value_t = 50)]
    receivers: usize,
    #[arg(long, default_value = "snd")]
    sender_prefix: String,
    #[arg(long, default_value = "rcv")]
    receiver_prefix: String,
    /// Sessions per sender (session j of sender i goes to receiver (i·S + j) mod receivers).
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// The node's PID (CPU and RSS read from /proc).
    #[arg(long)]
    node_pid: Option<u32>,
    /// `idle`: seconds the sessions (and, after their BYEs, the node) sit before the RSS is
    /// read: past the 32 s that INVITE transactions and forks are kept (RFC 3261 Timer B,
    /// RFC 6026), so what is left is the sessions' own state.
    #[arg(long, default_value_t = 40.0)]
    settle: f64,
    /// Seconds to wait for registrations and sessions.
    #[arg(long, default_value_t = 120.0)]
    setup_timeout: f64,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    users: UsersArgs,
    /// Messages in flight per session.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Chat text length in bytes (the CPIM and MSRP headers come on top).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Offered rates, messages/s over all senders (space or comma separated).
    #[arg(long, default_value = "1000 2000 5000 10000")]
    rates: String,
    /// Seconds per step.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// A step is clean with no failure, every message answered, >= 95 % of the offered
    /// rate sent, and p99 at most this (ms).
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
    /// Seconds to wait for the answers after a step.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Go on after an unclean step (default: stop there).
    #[arg(long)]
    keep_going: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Chat(a) => chat(a).await,
            Cmd::Idle(a) => idle(a).await,
            Cmd::Tcp(a) => tcpref::run(a).await,
        }
    });
    // Sessions and connections die with the process (the node sees them close).
    rt.shutdown_timeout(Duration::from_millis(100));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// User-mode plus kernel CPU seconds of a process (`self` or a PID), from /proc.
pub(crate) fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks as f64 / 100.0)
}

/// Resident set of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn print(v: &serde_json::Value) {
    println!("{v}");
}

/// Starts every user; returns the control channel and the statistics once the receivers
/// and senders registered and the sessions are up (or failed).
async fn setup(
    u: &UsersArgs,
    window: usize,
    text: Arc<str>,
    before_sessions: impl FnOnce(),
) -> Result<(watch::Sender<Control>, Arc<Stats>, f64), String> {
    let stats = Arc::new(Stats::default());
    let (tx, rx) = watch::channel(Control {
        step: 0,
        rate: 0.0,
        since: Instant::now(),
        end: false,
        open: false,
    });
    let deadline = Instant::now() + Duration::from_secs_f64(u.setup_timeout);
    let spec = |aor: String, peers: Vec<String>| Spec {
        aor,
        password: u.password.clone(),
        server: u.server,
        peers,
        window,
        text: text.clone(),
    };
    for i in 0..u.receivers {
        let s = spec(format!("{}{i}@{}", u.receiver_prefix, u.domain), Vec::new());
        tokio::spawn(agent::run(s, rx.clone(), stats.clone()));
    }
    let total = u.senders * u.sessions;
    for i in 0..u.senders {
        let peers = (0..u.sessions)
            .map(|j| {
                format!(
                    "{}{}@{}",
                    u.receiver_prefix,
                    (i * u.sessions + j) % u.receivers,
                    u.domain
                )
            })
            .collect();
        let s = spec(format!("{}{i}@{}", u.sender_prefix, u.domain), peers);
        tokio::spawn(agent::run(s, rx.clone(), stats.clone()));
    }
    let users = u.receivers + u.senders;
    wait_until(deadline, "users registered", || {
        let r = stats.registered.load(Ordering::Relaxed);
        let f = stats.reg_failed.load(Ordering::Relaxed);
        (r + f >= users).then_some(f)
    })
    .await
    .and_then(|f| {
        if f == 0 {
            Ok(())
        } else {
            Err(format!("{f} users failed to register"))
        }
    })?;
    before_sessions();
    let t0 = Instant::now();
    // (Copied out first: `borrow` holds the watch's lock, which `send` takes too.)
    let c = *tx.borrow();
    let _ = tx.send(Control { open: true, ..c });
    wait_until(deadline, "sessions up", || {
        let up = stats.sessions_up.load(Ordering::Relaxed);
        let failed = stats.sessions_failed.load(Ordering::Relaxed);
        let rf = stats.reg_failed.load(Ordering::Relaxed);
        (up + failed >= total || rf > 0).then_some(())
    })
    .await?;
    let up = stats.sessions_up.load(Ordering::Relaxed);
    print(&json!({
        "type": "setup",
        "senders": u.senders,
        "receivers": u.receivers,
        "sessions_wanted": total,
        "sessions_up": up,
        "sessions_failed": stats.sessions_failed.load(Ordering::Relaxed),
        "registration_failures": stats.reg_failed.load(Ordering::Relaxed),
        "setup_secs": t0.elapsed().as_secs_f64(),
        "sessions_per_sec": up as f64 / t0.elapsed().as_secs_f64(),
    }));
    if up == 0 {
        return Err("no session came up".into());
    }
    Ok((tx, stats, t0.elapsed().as_secs_f64()))
}

async fn wait_until<T>(
    deadline: Instant,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

async fn chat(a: ChatArgs) -> Result<(), String> {
    let rates: Vec<f64> = a
        .rates
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad rate {s:?}")))
        .collect::<Result<_, _>>()?;
    let text: Arc<str> = "x".repeat(a.size).into();
    let (tx, stats, _) = setup(&a.users, a.window, text, || {}).await?;
    let node = a.users.node_pid;
    let senders = a.users.senders as f64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut total_ok, mut total_sent) = (0u64, 0u64);
    for (k, &rate) in rates.iter().enumerate() {
        let node_cpu0 = node.and_then(|p| cpu_secs(&p.to_string()));
        let own0 = cpu_secs("self");
        let recv0 = stats.received.load(Ordering::Relaxed);
        let imdn0 = stats.imdns.load(Ordering::Relaxed);
        let (b0, n0) = (
            stats.send_bytes.load(Ordering::Relaxed),
            stats.send_count.load(Ordering::Relaxed),
        );
        let t0 = Instant::now();
        let _ = tx.send(Control {
            step: k,
            rate: rate / senders,
            since: t0,
            end: false,
            open: true,
        });
        tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
        let _ = tx.send(Control {
            step: k,
            rate: 0.0,
            since: t0,
            end: false,
            open: true,
        });
        let elapsed = t0.elapsed().as_secs_f64();
        let node_cpu1 = node.and_then(|p| cpu_secs(&p.to_string()));
        let own1 = cpu_secs("self");
        let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain);
        while stats.outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let unanswered = stats.outstanding.load(Ordering::Relaxed).max(0);
        let StepStats {
            sent,
            ok,
            failed,
            statuses,
            mut lat_us,
        } = stats.take_step(k);
        lat_us.sort_unstable();
        total_ok += ok;
        total_sent += sent;
        let p50 = percentile(&lat_us, 0.50);
        let p99 = percentile(&lat_us, 0.99);
        let max = lat_us.last().map_or(f64::NAN, |&m| f64::from(m) / 1000.0);
        let offered_total = rate * a.duration;
        let clean = failed == 0
            && unanswered == 0
            && sent as f64 >= 0.95 * offered_total
            && p99 <= a.max_p99_ms;
        let (b1, n1) = (
            stats.send_bytes.load(Ordering::Relaxed),
            stats.send_count.load(Ordering::Relaxed),
        );
        let cpu_pct = |c0: Option<f64>, c1: Option<f64>| match (c0, c1) {
            (Some(x), Some(y)) => json!(((y - x) / elapsed * 1000.0).round() / 10.0),
            _ => json!(null),
        };
        print(&json!({
            "type": "step",
            "offered": rate,
            "duration": a.duration,
            "sent": sent,
            "ok": ok,
            "failed": failed,
            "unanswered": unanswered,
            "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "achieved": (ok as f64 / a.duration).round(),
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "clean": clean,
            "received": stats.received.load(Ordering::Relaxed) - recv0,
            "imdns": stats.imdns.load(Ordering::Relaxed) - imdn0,
            "send_bytes_avg": if n1 > n0 { json!((b1 - b0) / (n1 - n0)) } else { json!(null) },
            "node_cpu_pct": cpu_pct(node_cpu0, node_cpu1),
            "gen_cpu_pct": cpu_pct(own0, own1),
            "node_rss_kib": node.and_then(rss_kib),
            "sessions_ended": stats.sessions_ended.load(Ordering::Relaxed),
        }));
        if !clean && !a.keep_going {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The receivers get each message after the sender's 200 (the terminating PF stores,
    // answers, then relays): count them once everything settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    print(&json!({
        "type": "total",
        "sent": total_sent,
        "ok": total_ok,
        "received": stats.received.load(Ordering::Relaxed),
        "imdns": stats.imdns.load(Ordering::Relaxed),
        "sessions_ended": stats.sessions_ended.load(Ordering::Relaxed),
    }));
    let _ = tx.send(Control {
        step: rates.len(),
        rate: 0.0,
        since: Instant::now(),
        end: true,
        open: true,
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

async fn idle(u: UsersArgs) -> Result<(), String> {
    let pid = u.node_pid.ok_or("idle needs --node-pid")?;
    let mut rss0 = None;
    let (tx, stats, setup_secs) = setup(&u, 1, "".into(), || {
        // Every user registered, no session yet.
        std::thread::sleep(Duration::from_secs(2));
        rss0 = rss_kib(pid);
    })
    .await?;
    let rss0 = rss0.ok_or("cannot read the node's RSS")?;
    let up = stats.sessions_up.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(u.settle)).await;
    let rss1 = rss_kib(pid).ok_or("cannot read the node's RSS")?;
    let c = *tx.borrow();
    let _ = tx.send(Control { end: true, ..c });
    let _ = wait_until(Instant::now() + Duration::from_secs(60), "BYEs", || {
        (stats.sessions_ended.load(Ordering::Relaxed) >= up).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs_f64(u.settle)).await;
    let rss2 = rss_kib(pid).ok_or("cannot read the node's RSS")?;
    print(&json!({
        "type": "idle",
        "senders": u.senders,
        "receivers": u.receivers,
        "sessions_wanted": u.senders * u.sessions,
        "sessions_up": up,
        "sessions_failed": stats.sessions_failed.load(Ordering::Relaxed),
        "incoming_up": stats.incoming_up.load(Ordering::Relaxed),
        "setup_secs": setup_secs,
        "settle_secs": u.settle,
        "rss_before_kib": rss0,
        "rss_with_sessions_kib": rss1,
        "rss_after_bye_kib": rss2,
        "bytes_per_session": if up > 0 { json!(((rss1 as f64 - rss0 as f64) * 1024.0 / up as f64).round()) } else { json!(null) },
        "sessions_ended": stats.sessions_ended.load(Ordering::Relaxed),
    }));
    Ok(())
}
