//! The MSRP transport driver on real sockets (127.0.0.1, port 0). Every wait is bounded;
//! nothing sleeps to let something happen, tests poll for it.

use core::net::SocketAddr;
use core::time::Duration;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cpm_msrp::{ConnCommand, ConnEvent, ConnId, Flag, Frame, Head, Scope};
use cpm_runtime::{MsrpHandle, MsrpStats, MsrpTransport, MsrpTransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on every wait: generous, only reached when something is broken.
const STEP: Duration = Duration::from_secs(5);

fn config() -> MsrpTransportConfig {
    MsrpTransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
}

async fn bind(config: MsrpTransportConfig) -> (MsrpTransport, MsrpHandle) {
    MsrpTransport::bind(config).await.expect("bind")
}

async fn next(transport: &mut MsrpTransport) -> ConnEvent {
    timeout(STEP, transport.recv())
        .await
        .expect("an event in time")
        .expect("transport running")
}

/// A SEND to session `session` with `body`, ending in `flag`.
fn send_request(tid: &str, session: &str, body: &str, flag: char) -> Vec<u8> {
    format!(
        "MSRP {tid} SEND\r\n\
         To-Path: msrp://bob.example.com:8888/{session};tcp\r\n\
         From-Path: msrp://alice.example.com:7777/a1;tcp\r\n\
         Message-ID: m-{tid}\r\n\
         Byte-Range: 1-{len}/{len}\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         {body}\r\n\
         -------{tid}{flag}\r\n",
        len = body.len()
    )
    .into_bytes()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Reads `len` octets.
async fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    timeout(STEP, stream.read_exact(&mut out))
        .await
        .expect("bytes in time")
        .expect("read");
    out
}

/// Reads until the other side closes (or resets).
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = timeout(STEP, stream.read_to_end(&mut out))
        .await
        .expect("close in time");
    out
}

#[track_caller]
fn expect_accepted(event: ConnEvent) -> ConnId {
    match event {
        ConnEvent::Accepted { conn, .. } => conn,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// A whole message off the transport: its head, its body (data pieces joined) and its flag.
async fn next_message(transport: &mut MsrpTransport, conn: ConnId) -> (Head, Option<Bytes>, Flag) {
    let head = match next(transport).await {
        ConnEvent::Frame {
            conn: c,
            frame: Frame::Head(head),
        } if c == conn => head,
        other => panic!("expected a head on {conn:?}, got {other:?}"),
    };
    let mut body: Option<BytesMut> = None;
    loop {
        match next(transport).await {
            ConnEvent::Frame {
                conn: c,
                frame: Frame::Data(d),
            } if c == conn => {
                assert!(!d.is_empty());
                body.get_or_insert_default().extend_from_slice(&d);
            }
            ConnEvent::Frame {
                conn: c,
                frame: Frame::End { flag },
            } if c == conn => return (head, body.map(BytesMut::freeze), flag),
            other => panic!("expected data or an end-line on {conn:?}, got {other:?}"),
        }
    }
}

/// Polls the stats until `done` holds.
async fn wait_stats(handle: &MsrpHandle, done: impl Fn(&MsrpStats) -> bool) -> MsrpStats {
    timeout(STEP, async {
        loop {
            let stats = handle.stats();
            if done(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("stats in time")
}

#[tokio::test]
async fn split_send_arrives_as_head_data_end_and_a_send_command_reaches_the_peer() {
    let (mut transport, handle) = bind(config()).await;
    let mut client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut transport).await);

    let mut wire = send_request("tr01", "s1", "Hey Bob, are you there?", '$');
    wire.extend(send_request("tr02", "s1", "second", '+'));
    // Odd pieces: through the start line, the headers, the body and the end-line.
    for piece in wire.chunks(7) {
        client.write_all(piece).await.expect("write");
        client.flush().await.expect("flush");
    }
    let (head, body, flag) = next_message(&mut transport, conn).await;
    assert_eq!(head.transact_id().as_str(), "tr01");
    assert_eq!(head.headers().message_id(), Some("m-tr01"));
    assert_eq!(body.as_deref(), Some(&b"Hey Bob, are you there?"[..]));
    assert_eq!(flag, Flag::Complete);
    let (head, body, flag) = next_message(&mut transport, conn).await;
    assert_eq!(head.transact_id().as_str(), "tr02");
    assert_eq!(body.as_deref(), Some(&b"second"[..]));
    assert_eq!(flag, Flag::Continued);

    let answer = Bytes::from_static(b"MSRP tr01 200 OK\r\nTo-Path: msrp://alice.example.com:7777/a1;tcp\r\nFrom-Path: msrp://bob.example.com:8888/s1;tcp\r\n-------tr01$\r\n");
    handle.execute(
        0,
        ConnCommand::Send {
            conn,
            bytes: answer.clone(),
        },
    );
    assert_eq!(read_exact(&mut client, answer.len()).await, answer);

    // Unknown connections: dropped silently.
    handle.execute(
        0,
        ConnCommand::Send {
            conn: ConnId(9999),
            bytes: answer.clone(),
        },
    );
    handle.execute(0, ConnCommand::Close { conn: ConnId(9999) });

    // The peer closes: Closed.
    drop(client);
    match next(&mut transport).await {
        ConnEvent::Closed { conn: c } => assert_eq!(c, conn),
        other => panic!("expected Closed, got {other:?}"),
    }
    let stats = wait_stats(&handle, |s| s.open == 0 && s.bytes_out > 0).await;
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.bytes_in, wire.len() as u64);
    assert_eq!(stats.bytes_out, answer.len() as u64);
    handle.shutdown();
    assert!(transport.recv().await.is_none());
}

#[tokio::test]
async fn close_flushes_what_is_queued_first() {
    let (mut transport, handle) = bind(config()).await;
    let mut client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut transport).await);
    let payload = Bytes::from(vec![b'x'; 256 * 1024]);
    handle.execute(
        0,
        ConnCommand::Send {
            conn,
            bytes: payload.clone(),
        },
    );
    handle.execute(0, ConnCommand::Close { conn });
    let got = read_to_close(&mut client).await;
    assert_eq!(got.len(), payload.len());
    match next(&mut transport).await {
        ConnEvent::Closed { conn: c } => assert_eq!(c, conn),
        other => panic!("expected Closed, got {other:?}"),
    }
    // Sends after the close are dropped.
    handle.execute(
        0,
        ConnCommand::Send {
            conn,
            bytes: payload,
        },
    );
    assert!(transport.try_recv().is_none());
}

#[tokio::test]
async fn a_full_event_queue_stops_reading_and_nothing_is_lost() {
    let mut cfg = config();
    cfg.event_capacity = 1;
    let (mut transport, handle) = bind(cfg).await;
    let mut client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut transport).await);
    let mut wire = Vec::new();
    for i in 0..300 {
        wire.extend(send_request(
            &format!("tx{i:03}"),
            "s1",
            "backpressure",
            '$',
        ));
    }
    client.write_all(&wire).await.expect("write");
    wait_stats(&handle, |s| s.bytes_in > 0).await;
    // Each yield lets the read task run: it would read everything if it did not wait.
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    let read = handle.stats().bytes_in;
    assert!(
        read < wire.len() as u64 / 2,
        "read {read} of {}",
        wire.len()
    );
    for i in 0..300 {
        let (head, body, _) = next_message(&mut transport, conn).await;
        assert_eq!(head.transact_id().as_str(), format!("tx{i:03}"));
        assert_eq!(body.as_deref(), Some(&b"backpressure"[..]));
    }
    assert_eq!(handle.stats().bytes_in, wire.len() as u64);
}

#[tokio::test]
async fn connect_to_another_transport_and_frames_flow_both_ways() {
    let (mut a, a_handle) = bind(config()).await;
    let (mut b, b_handle) = bind(config()).await;
    a_handle.execute(
        0,
        ConnCommand::Connect {
            token: 42,
            addr: b_handle.local_addr(),
        },
    );
    let a_conn = match next(&mut a).await {
        ConnEvent::Connected { token: 42, conn } => conn,
        other => panic!("expected Connected, got {other:?}"),
    };
    let b_conn = expect_accepted(next(&mut b).await);

    a_handle.execute(
        0,
        ConnCommand::Send {
            conn: a_conn,
            bytes: send_request("ab01", "s1", "from a", '$').into(),
        },
    );
    let (head, body, _) = next_message(&mut b, b_conn).await;
    assert_eq!(head.transact_id().as_str(), "ab01");
    assert_eq!(body.as_deref(), Some(&b"from a"[..]));

    b_handle.execute(
        0,
        ConnCommand::Send {
            conn: b_conn,
            bytes: send_request("ba01", "a1", "from b", '$').into(),
        },
    );
    let (head, body, _) = next_message(&mut a, a_conn).await;
    assert_eq!(head.transact_id().as_str(), "ba01");
    assert_eq!(body.as_deref(), Some(&b"from b"[..]));

    a_handle.execute(0, ConnCommand::Close { conn: a_conn });
    assert!(matches!(next(&mut a).await, ConnEvent::Closed { conn } if conn == a_conn));
    assert!(matches!(next(&mut b).await, ConnEvent::Closed { conn } if conn == b_conn));
    assert_eq!(a_handle.stats().connected, 1);
}

#[tokio::test]
async fn connect_failure_is_reported_with_the_token() {
    // A port nobody listens on: bind one, take its address, close it.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let (mut transport, handle) = bind(config()).await;
    handle.execute(0, ConnCommand::Connect { token: 7, addr });
    assert!(matches!(
        next(&mut transport).await,
        ConnEvent::ConnectFailed { token: 7 }
    ));
}

/// Session id of the last To-Path entry (the local one).
fn session_of(head: &Head) -> Option<&str> {
    head.headers().to_path().last()?.session_id()
}

#[tokio::test]
async fn sharded_dispatch_keeps_a_message_on_its_heads_shard() {
    let dispatch: cpm_runtime::MsrpDispatcher =
        Arc::new(|head: &Head| usize::from(session_of(head) == Some("s1")));
    let (mut shards, handle) = MsrpTransport::bind_sharded(config(), 2, dispatch)
        .await
        .expect("bind");
    let mut client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut shards[0]).await);

    let mut wire = send_request("tr01", "s1", "for shard one", '$');
    wire.extend(send_request("tr02", "s0", "for shard zero", '$'));
    wire.extend(send_request("tr03", "s1", "one again", '$'));
    for piece in wire.chunks(11) {
        client.write_all(piece).await.expect("write");
    }
    let (head, body, _) = next_message(&mut shards[1], conn).await;
    assert_eq!(head.transact_id().as_str(), "tr01");
    assert_eq!(body.as_deref(), Some(&b"for shard one"[..]));
    let (head, _, _) = next_message(&mut shards[0], conn).await;
    assert_eq!(head.transact_id().as_str(), "tr02");
    let (head, body, _) = next_message(&mut shards[1], conn).await;
    assert_eq!(head.transact_id().as_str(), "tr03");
    assert_eq!(body.as_deref(), Some(&b"one again"[..]));

    // A bad head (no Message-ID in a SEND) is refused for this message only: shard 0.
    client
        .write_all(b"MSRP tr04 SEND\r\nTo-Path: msrp://b.example.com:1/s1;tcp\r\nFrom-Path: msrp://a.example.com:1/a1;tcp\r\nContent-Type: text/plain\r\n\r\nx\r\n-------tr04$\r\n")
        .await
        .expect("write");
    match next(&mut shards[0]).await {
        ConnEvent::Error { conn: c, error } => {
            assert_eq!(c, conn);
            assert_eq!(error.scope(), Scope::Message);
            assert_eq!(error.transact_id().map(|t| t.as_str()), Some("tr04"));
        }
        other => panic!("expected a message error, got {other:?}"),
    }

    // Both shards heard of the connection: both hear it close.
    drop(client);
    for shard in &mut shards {
        assert!(matches!(next(shard).await, ConnEvent::Closed { conn: c } if c == conn));
    }
    assert!(shards[0].try_recv().is_none() && shards[1].try_recv().is_none());

    // A connect's answer goes to the shard that asked.
    handle.execute(
        1,
        ConnCommand::Connect {
            token: 5,
            addr: handle.local_addr(),
        },
    );
    assert!(matches!(
        next(&mut shards[1]).await,
        ConnEvent::Connected { token: 5, .. }
    ));
    assert!(matches!(
        next(&mut shards[0]).await,
        ConnEvent::Accepted { .. }
    ));
}

#[tokio::test]
async fn garbage_gives_a_connection_error_then_closed() {
    let (mut transport, handle) = bind(config()).await;
    let mut client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut transport).await);
    client
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    match next(&mut transport).await {
        ConnEvent::Error { conn: c, error } => {
            assert_eq!(c, conn);
            assert_eq!(error.scope(), Scope::Connection);
            assert_eq!(error.status(), 400);
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
    // The core may answer in the grace period; without a Close the connection goes anyway.
    let answer = Bytes::from_static(b"bye");
    handle.execute(
        0,
        ConnCommand::Send {
            conn,
            bytes: answer.clone(),
        },
    );
    assert!(matches!(next(&mut transport).await, ConnEvent::Closed { conn: c } if c == conn));
    assert_eq!(read_to_close(&mut client).await, answer);
}

#[tokio::test]
async fn a_connection_error_closes_at_the_cores_close_after_its_answer() {
    let (mut transport, handle) = bind(config()).await;
    let mut client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut transport).await);
    client.write_all(b"\x00\x01garbage").await.expect("write");
    assert!(matches!(
        next(&mut transport).await,
        ConnEvent::Error { error, .. } if error.scope() == Scope::Connection
    ));
    let answer = Bytes::from_static(b"MSRP answer");
    handle.execute(
        0,
        ConnCommand::Send {
            conn,
            bytes: answer.clone(),
        },
    );
    handle.execute(0, ConnCommand::Close { conn });
    let closed = timeout(Duration::from_millis(900), transport.recv())
        .await
        .expect("closed before the grace runs out");
    assert!(matches!(closed, Some(ConnEvent::Closed { conn: c }) if c == conn));
    assert_eq!(read_to_close(&mut client).await, answer);
}

#[tokio::test]
async fn a_peer_that_does_not_read_is_closed_when_its_queue_is_full() {
    let mut cfg = config();
    cfg.max_queued_bytes = 256 * 1024;
    let (mut transport, handle) = bind(cfg).await;
    let _client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut transport).await);
    let piece = Bytes::from(vec![b'x'; 64 * 1024]);
    // The kernel's buffers take a few MiB first; then our queue grows past the limit.
    let closed = timeout(STEP, async {
        loop {
            handle.execute(
                0,
                ConnCommand::Send {
                    conn,
                    bytes: piece.clone(),
                },
            );
            if let Some(event) = transport.try_recv() {
                return event;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("closed in time");
    assert!(matches!(closed, ConnEvent::Closed { conn: c } if c == conn));
    let stats = wait_stats(&handle, |s| s.open == 0).await;
    assert_eq!(stats.queue_full, 1);
}

#[tokio::test]
async fn one_send_over_the_queue_limit_closes() {
    let mut cfg = config();
    cfg.max_queued_bytes = 1000;
    let (mut transport, handle) = bind(cfg).await;
    let mut client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut transport).await);
    handle.execute(
        0,
        ConnCommand::Send {
            conn,
            bytes: Bytes::from(vec![b'x'; 1001]),
        },
    );
    assert!(matches!(next(&mut transport).await, ConnEvent::Closed { conn: c } if c == conn));
    assert!(read_to_close(&mut client).await.is_empty());
    assert_eq!(handle.stats().queue_full, 1);
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_millis(200);
    let (mut transport, handle) = bind(cfg).await;
    let mut client = connect(handle.local_addr()).await;
    let conn = expect_accepted(next(&mut transport).await);
    // Traffic keeps it open; then silence closes it.
    client
        .write_all(&send_request("tr01", "s1", "hi", '$'))
        .await
        .expect("write");
    let _ = next_message(&mut transport, conn).await;
    assert!(matches!(next(&mut transport).await, ConnEvent::Closed { conn: c } if c == conn));
    assert!(read_to_close(&mut client).await.is_empty());
    assert_eq!(handle.stats().idle_closed, 1);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let mut cfg = config();
    cfg.max_connections = 2;
    let (mut transport, handle) = bind(cfg).await;
    let _one = connect(handle.local_addr()).await;
    let _two = connect(handle.local_addr()).await;
    expect_accepted(next(&mut transport).await);
    expect_accepted(next(&mut transport).await);
    let mut three = connect(handle.local_addr()).await;
    assert!(read_to_close(&mut three).await.is_empty());
    let stats = wait_stats(&handle, |s| s.refused == 1).await;
    assert_eq!((stats.open, stats.accepted), (2, 2));
    // A connect at the limit fails too.
    handle.execute(
        0,
        ConnCommand::Connect {
            token: 3,
            addr: handle.local_addr(),
        },
    );
    assert!(matches!(
        next(&mut transport).await,
        ConnEvent::ConnectFailed { token: 3 }
    ));
    assert!(transport.try_recv().is_none());
}

#[tokio::test]
async fn shutdown_ends_recv_and_closes_connections() {
    let (mut transport, handle) = bind(config()).await;
    let mut client = connect(handle.local_addr()).await;
    expect_accepted(next(&mut transport).await);
    handle.shutdown();
    handle.shutdown();
    assert!(transport.recv().await.is_none());
    assert!(transport.try_recv().is_none());
    assert!(read_to_close(&mut client).await.is_empty());
    assert_eq!(handle.stats().open, 0);
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<MsrpHandle>();
    send::<MsrpTransport>();
}
