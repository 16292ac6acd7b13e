//! The SIP transport driver on real sockets (127.0.0.1, port 0). Every wait is bounded.

use core::net::SocketAddr;
use core::time::Duration;

use bytes::Bytes;
use cpm_runtime::{NetEvent, SipTransport, SipTransportConfig, SipTransportHandle};
use cpm_sip::{Limits, ParseErrorKind, Scope};
use cpm_sip_core::{ConnId, Peer, Transmit, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// Bound on every wait: generous, only reached when something is broken.
const STEP: Duration = Duration::from_secs(5);

fn config() -> SipTransportConfig {
    SipTransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
}

async fn bind(config: SipTransportConfig) -> (SipTransport, SipTransportHandle) {
    SipTransport::bind(config).await.expect("bind")
}

async fn next(transport: &mut SipTransport) -> NetEvent {
    timeout(STEP, transport.recv())
        .await
        .expect("an event in time")
}

fn request(n: u32, transport: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{transport} client.example.com;branch=z9hG4bK{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag={n}\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: call-{n}\r\n\
         CSeq: {n} OPTIONS\r\n\
         Content-Length: 5\r\n\
         \r\n\
         hello"
    )
    .into_bytes()
}

fn response(n: u32) -> Vec<u8> {
    format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK{n}\r\n\
         From: <sip:alice@example.com>;tag={n}\r\n\
         To: <sip:bob@example.com>;tag=b\r\n\
         Call-ID: call-{n}\r\n\
         CSeq: {n} OPTIONS\r\n\
         Content-Length: 0\r\n\
         \r\n"
    )
    .into_bytes()
}

/// Expects a message from `peer` with exactly `bytes`; returns the peer as reported.
#[track_caller]
fn expect_message(event: NetEvent, addr: SocketAddr, bytes: &[u8]) -> Peer {
    match event {
        NetEvent::Message { peer, message } => {
            assert_eq!(peer.addr, addr);
            assert_eq!(&message.to_bytes()[..], bytes);
            peer
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

async fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    timeout(STEP, stream.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .expect("read");
    buf
}

/// Reads until the other side closes; a reset counts as closed too.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = timeout(STEP, stream.read_to_end(&mut got))
        .await
        .expect("close in time");
    got
}

#[tokio::test]
async fn udp_message_arrives_with_its_peer_and_keepalives_are_ignored() {
    let (mut transport, _handle) = bind(config()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    client
        .send_to(b"\r\n\r\n", transport.local_addr())
        .await
        .expect("send");
    let msg = request(1, "UDP");
    client
        .send_to(&msg, transport.local_addr())
        .await
        .expect("send");
    let client_addr = client.local_addr().expect("addr");
    let peer = expect_message(next(&mut transport).await, client_addr, &msg);
    assert_eq!(peer, Peer::udp(client_addr));
}

#[tokio::test]
async fn udp_send_reaches_a_plain_socket_from_the_bound_port() {
    let (transport, handle) = bind(config()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    let client_addr = client.local_addr().expect("addr");
    let payload = Bytes::from(response(2));
    handle.send(Transmit {
        peer: Peer::udp(client_addr),
        payload: payload.clone(),
    });
    let mut buf = vec![0; 65535];
    let (len, from) = timeout(STEP, client.recv_from(&mut buf))
        .await
        .expect("datagram in time")
        .expect("recv");
    assert_eq!(&buf[..len], &payload[..]);
    assert_eq!(from, transport.local_addr());
}

#[tokio::test]
async fn udp_malformed_datagram_is_a_parse_error_with_the_raw_bytes() {
    let (mut transport, _handle) = bind(config()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    let bad = b"OPTIONS sip:bob@example.com SIP/2.0\r\nContent-Length: 99\r\n\r\nshort";
    client
        .send_to(bad, transport.local_addr())
        .await
        .expect("send");
    match next(&mut transport).await {
        NetEvent::ParseError {
            peer,
            error,
            raw_head,
        } => {
            assert_eq!(peer, Peer::udp(client.local_addr().expect("addr")));
            assert_eq!(error.kind(), &ParseErrorKind::ContentLengthTooLarge);
            assert_eq!(&raw_head[..], &bad[..]);
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_frames_pipelined_split_and_keepalive_input_then_sends_back() {
    let (mut transport, handle) = bind(config()).await;
    let mut client = connect(transport.local_addr()).await;
    let client_addr = client.local_addr().expect("addr");
    let (m1, m2, m3) = (request(1, "TCP"), request(2, "TCP"), request(3, "TCP"));

    client
        .write_all(&[m1.clone(), m2.clone()].concat())
        .await
        .expect("write");
    client.write_all(b"\r\n\r\n").await.expect("write");
    for part in [&m3[..10], &m3[10..60], &m3[60..]] {
        client.write_all(part).await.expect("write");
        client.flush().await.expect("flush");
    }

    let first = expect_message(next(&mut transport).await, client_addr, &m1);
    let conn = first.conn.expect("a TCP message names its connection");
    assert_eq!(first, Peer::tcp(client_addr, Some(conn)));
    assert_eq!(
        expect_message(next(&mut transport).await, client_addr, &m2),
        first
    );
    for _ in 0..2 {
        assert_eq!(
            next(&mut transport).await,
            NetEvent::KeepAlive { peer: first }
        );
    }
    assert_eq!(
        expect_message(next(&mut transport).await, client_addr, &m3),
        first
    );

    let answer = response(3);
    handle.send(Transmit {
        peer: first,
        payload: Bytes::from(answer.clone()),
    });
    assert_eq!(read_exact(&mut client, answer.len()).await, answer);
}

#[tokio::test]
async fn tcp_outbound_connects_on_demand_and_replies_come_back_on_it() {
    let (mut transport, handle) = bind(config()).await;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
    let server_addr = listener.local_addr().expect("addr");

    let m1 = request(1, "TCP");
    handle.send(Transmit {
        peer: Peer::tcp(server_addr, None),
        payload: Bytes::from(m1.clone()),
    });
    let (mut server, _) = timeout(STEP, listener.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    assert_eq!(read_exact(&mut server, m1.len()).await, m1);

    let reply = response(1);
    server.write_all(&reply).await.expect("write");
    let peer = expect_message(next(&mut transport).await, server_addr, &reply);
    assert_eq!(peer.transport, TransportKind::Tcp);
    let conn = peer.conn.expect("the new connection has an id");

    // Sends by address and by id reuse the connection.
    let (m2, m3) = (request(2, "TCP"), request(3, "TCP"));
    handle.send(Transmit {
        peer: Peer::tcp(server_addr, None),
        payload: Bytes::from(m2.clone()),
    });
    handle.send(Transmit {
        peer: Peer::tcp(server_addr, Some(conn)),
        payload: Bytes::from(m3.clone()),
    });
    assert_eq!(
        read_exact(&mut server, m2.len() + m3.len()).await,
        [m2, m3].concat()
    );
}

#[tokio::test]
async fn tcp_connect_failure_is_reported() {
    let (mut transport, handle) = bind(config()).await;
    let closed_addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        listener.local_addr().expect("addr")
    };
    let peer = Peer::tcp(closed_addr, None);
    handle.send(Transmit {
        peer,
        payload: Bytes::from(request(1, "TCP")),
    });
    match next(&mut transport).await {
        NetEvent::SendFailed { transmit_peer, .. } => assert_eq!(transmit_peer, peer),
        other => panic!("expected a send failure, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_idle_connection_is_closed() {
    let (mut transport, _handle) = bind(SipTransportConfig {
        tcp_idle_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut client = connect(transport.local_addr()).await;
    let client_addr = client.local_addr().expect("addr");
    let msg = request(1, "TCP");
    client.write_all(&msg).await.expect("write");
    let conn = expect_message(next(&mut transport).await, client_addr, &msg)
        .conn
        .expect("conn");
    assert_eq!(
        next(&mut transport).await,
        NetEvent::ConnectionClosed {
            conn,
            addr: client_addr
        }
    );
    assert!(read_to_close(&mut client).await.is_empty());
}

#[tokio::test]
async fn tcp_oversized_head_loses_the_connection_after_the_answer() {
    let limits = Limits {
        max_head_len: 256,
        ..Limits::default()
    };
    let (mut transport, handle) = bind(SipTransportConfig { limits, ..config() }).await;
    let client = connect(transport.local_addr()).await;
    let client_addr = client.local_addr().expect("addr");
    let (mut rd, mut wr) = client.into_split();
    // Far more than the driver reads before giving up on the framing: the rest stays unread
    // in the socket, which must not turn the close into a reset that eats the answer.
    let mut flood = b"OPTIONS sip:bob@example.com SIP/2.0\r\nX-Long: ".to_vec();
    flood.resize(64 * 1024, b'a');
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&flood).await;
        wr
    });

    let conn = match next(&mut transport).await {
        NetEvent::ParseError {
            peer,
            error,
            raw_head,
        } => {
            assert_eq!(peer.addr, client_addr);
            assert_eq!(error.scope(), Scope::Connection);
            assert_eq!(error.kind(), &ParseErrorKind::TooLarge("header section"));
            assert!(raw_head.starts_with(b"OPTIONS sip:bob@example.com SIP/2.0\r\n"));
            assert!(raw_head.len() <= limits.max_head_len);
            peer.conn.expect("conn")
        }
        other => panic!("expected a parse error, got {other:?}"),
    };

    // The core answers 513, then closes.
    let answer = b"SIP/2.0 513 Message Too Large\r\nContent-Length: 0\r\n\r\n";
    handle.send(Transmit {
        peer: Peer::tcp(client_addr, Some(conn)),
        payload: Bytes::from_static(answer),
    });
    handle.close(conn);
    assert_eq!(
        next(&mut transport).await,
        NetEvent::ConnectionClosed {
            conn,
            addr: client_addr
        }
    );
    let mut got = Vec::new();
    timeout(STEP, rd.read_to_end(&mut got))
        .await
        .expect("close in time")
        .expect("a clean close, not a reset");
    assert_eq!(got, answer);
    drop(timeout(STEP, writer).await.expect("writer done"));
}

#[tokio::test]
async fn tcp_bad_message_keeps_the_connection() {
    let (mut transport, _handle) = bind(config()).await;
    let mut client = connect(transport.local_addr()).await;
    let client_addr = client.local_addr().expect("addr");
    let bad =
        b"OPTIONS sip:bob@example.com SIP/2.0\r\nCSeq: x OPTIONS\r\nContent-Length: 2\r\n\r\n";
    let good = request(2, "TCP");
    client
        .write_all(&[&bad[..], b"hi", &good[..]].concat())
        .await
        .expect("write");
    match next(&mut transport).await {
        NetEvent::ParseError {
            peer,
            error,
            raw_head,
        } => {
            assert_eq!(peer.addr, client_addr);
            assert_eq!(error.scope(), Scope::Message);
            assert_eq!(&raw_head[..], &bad[..]);
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    expect_message(next(&mut transport).await, client_addr, &good);
}

#[tokio::test]
async fn tcp_connections_beyond_the_limit_are_refused() {
    let (mut transport, handle) = bind(SipTransportConfig {
        max_connections: 1,
        ..config()
    })
    .await;
    let mut first = connect(transport.local_addr()).await;
    let msg = request(1, "TCP");
    first.write_all(&msg).await.expect("write");
    expect_message(
        next(&mut transport).await,
        first.local_addr().expect("addr"),
        &msg,
    );

    let mut second = connect(transport.local_addr()).await;
    assert!(read_to_close(&mut second).await.is_empty());

    // Opening one more ourselves is refused too.
    let peer = Peer::tcp(SocketAddr::from(([127, 0, 0, 1], 9)), None);
    handle.send(Transmit {
        peer,
        payload: Bytes::from(msg),
    });
    match next(&mut transport).await {
        NetEvent::SendFailed { transmit_peer, .. } => assert_eq!(transmit_peer, peer),
        other => panic!("expected a send failure, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_closes_connections() {
    let (mut transport, handle) = bind(config()).await;
    let mut client = connect(transport.local_addr()).await;
    let msg = request(1, "TCP");
    client.write_all(&msg).await.expect("write");
    let peer = expect_message(
        next(&mut transport).await,
        client.local_addr().expect("addr"),
        &msg,
    );
    assert!(matches!(peer.conn, Some(ConnId(_))));
    handle.shutdown();
    assert!(read_to_close(&mut client).await.is_empty());
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<SipTransportHandle>();
    send::<SipTransport>();
    send::<NetEvent>();
}

/// A TCP connection from a chosen loopback source address (loopback is all of 127/8).
async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((ip, 0)))
        .expect("bind the source address");
    let stream = timeout(STEP, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Polls the transport's TCP counters until `done` holds (bounded).
async fn wait_stats(handle: &SipTransportHandle, done: impl Fn(&cpm_runtime::TcpStats) -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let s = handle.tcp_stats();
        if done(&s) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never got there: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn tcp_connections_beyond_the_per_address_limit_are_refused() {
    let (mut transport, handle) = bind(SipTransportConfig {
        max_connections_per_source: 2,
        ..config()
    })
    .await;
    let addr = transport.local_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    wait_stats(&handle, |s| s.open == 2).await;
    let mut third = connect_from([127, 0, 0, 1], addr).await;
    assert!(read_to_close(&mut third).await.is_empty(), "closed at once");
    wait_stats(&handle, |s| s.refused_per_source == 1).await;
    // Another address is still welcome.
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    let msg = request(1, "TCP");
    other.write_all(&msg).await.expect("write");
    expect_message(
        next(&mut transport).await,
        other.local_addr().expect("addr"),
        &msg,
    );
    // A closed connection frees its place.
    drop(held.pop());
    wait_stats(&handle, |s| s.open == 2).await;
    let mut again = connect_from([127, 0, 0, 1], addr).await;
    again.write_all(&msg).await.expect("write");
    loop {
        match next(&mut transport).await {
            NetEvent::Message { peer, .. } => {
                assert_eq!(peer.addr, again.local_addr().expect("addr"));
                break;
            }
            NetEvent::ConnectionClosed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn slow_or_silent_connections_are_closed_by_the_message_timeout() {
    let (mut transport, handle) = bind(SipTransportConfig {
        tcp_message_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;
    let addr = transport.local_addr();
    // A good client: one whole message, then quiet (it stays open: idle is not slow).
    let mut good = connect(addr).await;
    let msg = request(1, "TCP");
    good.write_all(&msg).await.expect("write");
    expect_message(
        next(&mut transport).await,
        good.local_addr().expect("addr"),
        &msg,
    );
    // A silent one and a slow-loris one (a byte every 100 ms, never a whole header).
    let mut silent = connect(addr).await;
    let slow = connect(addr).await;
    let (mut slow_rd, mut slow_wr) = slow.into_split();
    let writer = tokio::spawn(async move {
        for b in b"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP x".iter() {
            if slow_wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(read_to_close(&mut silent).await.is_empty());
    let mut got = Vec::new();
    let _ = timeout(STEP, slow_rd.read_to_end(&mut got))
        .await
        .expect("the slow one is closed in time");
    assert!(got.is_empty());
    writer.abort();
    wait_stats(&handle, |s| s.message_timeouts == 2).await;
    // The good client is still served.
    let msg2 = request(2, "TCP");
    good.write_all(&msg2).await.expect("write");
    loop {
        match next(&mut transport).await {
            NetEvent::Message { peer, message } => {
                assert_eq!(peer.addr, good.local_addr().expect("addr"));
                assert_eq!(&message.to_bytes()[..], &msg2[..]);
                break;
            }
            NetEvent::ConnectionClosed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn at_the_limit_a_silent_connection_is_evicted_for_a_new_one() {
    let (mut transport, handle) = bind(SipTransportConfig {
        max_connections: 2,
        ..config()
    })
    .await;
    let addr = transport.local_addr();
    let mut silent = connect_from([127, 0, 0, 3], addr).await;
    let mut talker = connect(addr).await;
    let msg = request(1, "TCP");
    talker.write_all(&msg).await.expect("write");
    expect_message(
        next(&mut transport).await,
        talker.local_addr().expect("addr"),
        &msg,
    );
    wait_stats(&handle, |s| s.open == 2).await;
    // A third client: the silent connection goes, the newcomer is served.
    let mut newcomer = connect(addr).await;
    assert!(
        read_to_close(&mut silent).await.is_empty(),
        "the silent one is evicted"
    );
    let msg2 = request(2, "TCP");
    newcomer.write_all(&msg2).await.expect("write");
    let mut served = false;
    for _ in 0..3 {
        match next(&mut transport).await {
            NetEvent::Message { peer, .. } => {
                assert_eq!(peer.addr, newcomer.local_addr().expect("addr"));
                served = true;
                break;
            }
            NetEvent::ConnectionClosed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(served);
    assert_eq!(handle.tcp_stats().evicted, 1);
    // The talker was not touched.
    talker.write_all(&request(3, "TCP")).await.expect("write");
    assert!(matches!(
        next(&mut transport).await,
        NetEvent::Message { .. }
    ));
}

/// Overload control must see the wait in the kernel's socket buffer: a datagram read while
/// the receive task could not keep up is stamped with the time the socket was last empty,
/// and one read after the socket sat idle is stamped with when it arrived.
#[tokio::test]
async fn udp_events_carry_the_wait_in_the_socket_buffer() {
    let (mut transport, _handle) = bind(config()).await;
    let server = transport.local_addr();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Idle first: the stamp of a lone datagram is when it came, not when the socket was last
    // seen empty (seconds before).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = std::time::Instant::now();
    client.send_to(&request(1, "UDP"), server).await.unwrap();
    let (stamp, _) = timeout(STEP, transport.recv_stamped()).await.unwrap();
    assert!(
        stamp + Duration::from_millis(100) >= sent,
        "a datagram after an idle socket: stamped {:?} before it was sent",
        sent.saturating_duration_since(stamp)
    );
    // Nobody reads the events: once the event queue is full the receive task waits, the
    // socket fills, and what it reads afterwards has been waiting since the burst began.
    let burst = std::time::Instant::now();
    for n in 0..10_000 {
        client.send_to(&request(n, "UDP"), server).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut oldest_last = None;
    while let Ok((stamp, _)) = timeout(Duration::from_millis(200), transport.recv_stamped()).await {
        oldest_last = Some(stamp);
    }
    let last = oldest_last.expect("events");
    assert!(
        last <= burst + Duration::from_millis(300),
        "the last datagram read after the stall is stamped {:?} after the burst began: \
         the socket's wait is not counted",
        last.saturating_duration_since(burst)
    );
}
