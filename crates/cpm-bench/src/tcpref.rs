//! The reference of the same run: raw loopback TCP with the chat ramp's shape (connections,
//! window, message size), no SIP, no MSRP, nothing stored. A sink in this process reads the
//! messages and acknowledges each with 32 bytes (about an MSRP 200's share of the work);
//! each client connection keeps `window` messages in flight and times each from its write
//! to its acknowledgement.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const ACK: usize = 32;

#[derive(Args)]
pub(crate) struct TcpArgs {
    /// Client connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Bytes per message (the chat ramp reports its SENDs' average on-wire size).
    #[arg(long, default_value_t = 600)]
    size: usize,
    /// Seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

async fn sink(mut s: TcpStream, size: usize) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let acks = vec![b'A'; ACK * 256];
    let mut partial = 0usize;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        partial += n;
        let mut done = partial / size;
        partial %= size;
        while done > 0 {
            let k = done.min(256);
            if s.write_all(&acks[..k * ACK]).await.is_err() {
                return;
            }
            done -= k;
        }
    }
}

async fn client(addr: std::net::SocketAddr, a: (usize, usize, Instant), out: Arc<Mutex<Vec<u32>>>) {
    let (window, size, until) = a;
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.set_nodelay(true);
    let msg = vec![b'm'; size];
    let mut buf = vec![0u8; 64 * 1024];
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let mut lat = Vec::new();
    let mut partial = 0usize;
    loop {
        let running = Instant::now() < until;
        while running && in_flight.len() < window {
            if s.write_all(&msg).await.is_err() {
                return;
            }
            in_flight.push_back(Instant::now());
        }
        if in_flight.is_empty() {
            break;
        }
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        partial += n;
        let now = Instant::now();
        while partial >= ACK {
            partial -= ACK;
            if let Some(t) = in_flight.pop_front() {
                lat.push(u32::try_from(now.duration_since(t).as_micros()).unwrap_or(u32::MAX));
            }
        }
    }
    out.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(lat);
}

/// Runs the reference and prints one JSON line.
pub(crate) async fn run(a: TcpArgs) -> Result<(), String> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let size = a.size.max(1);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(sink(s, size));
        }
    });
    let out = Arc::new(Mutex::new(Vec::new()));
    let cpu0 = crate::cpu_secs("self");
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(a.duration);
    let tasks: Vec<_> = (0..a.conns)
        .map(|_| tokio::spawn(client(addr, (a.window, size, until), out.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = crate::cpu_secs("self");
    let mut lat = std::mem::take(
        &mut *out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |&v| f64::from(v) / 1000.0)
    };
    println!(
        "{}",
        json!({
            "type": "tcp",
            "conns": a.conns,
            "window": a.window,
            "size": size,
            "messages": lat.len(),
            "rate": (lat.len() as f64 / elapsed).round(),
            "mb_per_sec": (lat.len() as f64 * size as f64 / elapsed / 1e6 * 10.0).round() / 10.0,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "cpu_pct": match (cpu0, cpu1) { (Some(x), Some(y)) => json!(((y - x) / elapsed * 1000.0).round() / 10.0), _ => json!(null) },
        })
    );
    Ok(())
}
