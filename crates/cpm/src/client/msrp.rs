//! The MSRP transport of `cpm client`: a small tokio task per connection, no protocol logic.
//!
//! The core asks for connections and writes ([`ConnCommand`]); each connection task opens
//! its `TcpStream`, runs the bytes it reads through a `cpm_msrp::Decoder` and reports what
//! it yields as [`ConnEvent`]s on one channel, in order (`Connected` first, `Closed` last),
//! and writes what the core sends. The client never listens (RFC 6135).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cpm_client::{ConnCommand, ConnEvent, ConnId};
use cpm_msrp::{Decoder, Scope};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Events waiting for the driver loop before the connection tasks wait (back-pressure on
/// a peer that sends faster than the core reads).
const EVENT_QUEUE: usize = 1024;

/// What a connection task is told.
enum Write {
    Bytes(Bytes),
    Close,
}

/// The connections of one client.
pub(super) struct MsrpTransport {
    next: u64,
    conns: HashMap<ConnId, mpsc::UnboundedSender<Write>>,
    events_tx: mpsc::Sender<ConnEvent>,
    events_rx: mpsc::Receiver<ConnEvent>,
    /// The connect timeout (`--timeout`).
    timeout: Duration,
}

impl MsrpTransport {
    pub(super) fn new(timeout: Duration) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Self {
            next: 1,
            conns: HashMap::new(),
            events_tx,
            events_rx,
            timeout,
        }
    }

    /// Carries out one command of the core.
    pub(super) fn command(&mut self, cmd: ConnCommand) {
        match cmd {
            ConnCommand::Connect { token, addr } => {
                let conn = ConnId(self.next);
                self.next += 1;
                let (tx, rx) = mpsc::unbounded_channel();
                self.conns.insert(conn, tx);
                tokio::spawn(run(
                    conn,
                    token,
                    addr,
                    rx,
                    self.events_tx.clone(),
                    self.timeout,
                ));
            }
            ConnCommand::Send { conn, bytes } => {
                if let Some(tx) = self.conns.get(&conn) {
                    let _ = tx.send(Write::Bytes(bytes));
                }
            }
            ConnCommand::Close { conn } => {
                if let Some(tx) = self.conns.remove(&conn) {
                    let _ = tx.send(Write::Close);
                }
            }
        }
    }

    /// The next event of any connection (pending forever when there is none: the transport
    /// holds a sender itself).
    pub(super) async fn next_event(&mut self) -> Option<ConnEvent> {
        let ev = self.events_rx.recv().await;
        if let Some(ConnEvent::Closed { conn }) = &ev {
            self.conns.remove(conn);
        }
        ev
    }
}

/// One connection: connect, then read and write until either side closes.
async fn run(
    conn: ConnId,
    token: u64,
    addr: SocketAddr,
    mut writes: mpsc::UnboundedReceiver<Write>,
    events: mpsc::Sender<ConnEvent>,
    timeout: Duration,
) {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "MSRP connect failed");
            let _ = events.send(ConnEvent::ConnectFailed { token }).await;
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "MSRP connect timed out");
            let _ = events.send(ConnEvent::ConnectFailed { token }).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    if events
        .send(ConnEvent::Connected { token, conn })
        .await
        .is_err()
    {
        return;
    }
    let (mut r, mut w) = stream.into_split();
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    'conn: loop {
        tokio::select! {
            read = r.read_buf(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(_) => {}
                }
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(frame)) => {
                            if events.send(ConnEvent::Frame { conn, frame }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            let fatal = error.scope() == Scope::Connection;
                            if events.send(ConnEvent::Error { conn, error }).await.is_err() {
                                return;
                            }
                            if fatal {
                                break 'conn;
                            }
                        }
                    }
                }
            }
            cmd = writes.recv() => match cmd {
                Some(Write::Bytes(b)) => {
                    if w.write_all(&b).await.is_err() {
                        break 'conn;
                    }
                }
                Some(Write::Close) | None => {
                    let _ = w.shutdown().await;
                    break 'conn;
                }
            },
        }
    }
    let _ = events.send(ConnEvent::Closed { conn }).await;
}
