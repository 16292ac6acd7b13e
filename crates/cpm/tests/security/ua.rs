//! A raw SIP user agent for the attack tests: hand-written requests over UDP or TCP, answers
//! read with our own codec, digest answered with our own digest code. Every read is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_sip::{Frame, HeaderName, Message, Request, Response, StreamFramer};
use cpm_sip_core::digest::{self, Challenge};

/// Turns `\n` line ends into CRLF (the requests below are written with `\n`).
pub(crate) fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// What came back: a final response, or nothing within the wait.
pub(crate) type Answer = Option<Response>;

/// A UDP socket on loopback that sends raw requests and reads what comes back.
pub(crate) struct Udp {
    /// The socket.
    pub(crate) sock: UdpSocket,
}

impl Udp {
    /// A socket on a free loopback port.
    pub(crate) fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        Self { sock }
    }

    /// Its address (for Via and Contact).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    /// Sends `text` (with `\n` line ends) to `to`.
    pub(crate) fn send(&self, to: SocketAddr, text: &str) {
        self.sock.send_to(&crlf(text), to).expect("send");
    }

    /// The next message within `wait`, or `None`.
    pub(crate) fn recv(&self, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            let Ok(n) = self.sock.recv(&mut buf) else {
                return None;
            };
            if let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n])) {
                return Some(m);
            }
        }
    }

    /// The next request within `wait` (responses are skipped).
    pub(crate) fn recv_request(&self, wait: Duration) -> Option<Request> {
        let deadline = Instant::now() + wait;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now()))? {
                Message::Request(r) => return Some(r),
                Message::Response(_) => {}
            }
        }
    }

    /// The first final response within `wait` (provisional ones and requests are skipped).
    pub(crate) fn final_response(&self, wait: Duration) -> Answer {
        let deadline = Instant::now() + wait;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now()))? {
                Message::Response(r) if r.status.is_final() => return Some(r),
                _ => {}
            }
        }
    }

    /// Sends a request and waits (up to 3 s) for its final response.
    pub(crate) fn request(&self, to: SocketAddr, text: &str) -> Answer {
        self.send(to, text);
        self.final_response(Duration::from_secs(3))
    }
}

/// A TCP connection to the node that sends raw requests and frames what comes back.
pub(crate) struct Tcp {
    /// The connection.
    pub(crate) stream: TcpStream,
    framer: StreamFramer,
    buf: BytesMut,
}

impl Tcp {
    /// Connects (within 2 s).
    pub(crate) fn connect(to: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
        Self {
            stream,
            framer: StreamFramer::default(),
            buf: BytesMut::new(),
        }
    }

    /// Connects from a chosen loopback source address.
    pub(crate) fn connect_from(ip: &str, to: SocketAddr) -> Self {
        Self {
            stream: tcp_from(ip, to).expect("connect"),
            framer: StreamFramer::default(),
            buf: BytesMut::new(),
        }
    }

    /// Its local address (for Via and Contact).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("addr")
    }

    /// Writes `text` (with `\n` line ends).
    pub(crate) fn send(&mut self, text: &str) {
        self.stream.write_all(&crlf(text)).expect("write");
    }

    /// The next message within `wait`; `None` on timeout or when the node closed the
    /// connection.
    pub(crate) fn recv(&mut self, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        loop {
            match self.framer.decode(&mut self.buf) {
                Ok(Some(Frame::Message(m))) => return Some(m),
                Ok(Some(Frame::KeepAlive)) => continue,
                Ok(None) => {}
                Err(_) => return None,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The first final response within `wait`.
    pub(crate) fn final_response(&mut self, wait: Duration) -> Answer {
        let deadline = Instant::now() + wait;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now()))? {
                Message::Response(r) if r.status.is_final() => return Some(r),
                _ => {}
            }
        }
    }

    /// Sends a request and waits (up to 3 s) for its final response.
    pub(crate) fn request(&mut self, text: &str) -> Answer {
        self.send(text);
        self.final_response(Duration::from_secs(3))
    }
}

/// The status code of an answer, 0 for none (so assertion messages show what came back).
pub(crate) fn status(a: &Answer) -> u16 {
    a.as_ref().map_or(0, |r| r.status.as_u16())
}

/// The digest challenge of a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`).
pub(crate) fn challenge_of(r: &Response) -> Challenge {
    let h = r
        .headers
        .get(&HeaderName::WwwAuthenticate)
        .or_else(|| r.headers.get(&HeaderName::ProxyAuthenticate))
        .expect("a digest challenge");
    Challenge::parse(&h.value().expect("text")).expect("challenge parses")
}

/// The `Authorization` value answering `r`'s challenge for `method` on `uri`.
pub(crate) fn answer(
    r: &Response,
    method: &str,
    uri: &str,
    user: &str,
    pw: &str,
    nc: u32,
) -> String {
    digest::respond(&challenge_of(r), method, uri, user, pw, "0a4f113b", nc)
}

/// A REGISTER for `user@localhost` from `from` (`transport` is `UDP` or `TCP`), with an
/// optional `Authorization` value.
pub(crate) fn register(
    user: &str,
    from: SocketAddr,
    transport: &str,
    cseq: u32,
    auth: Option<&str>,
) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:localhost SIP/2.0\n\
         Via: SIP/2.0/{transport} {from};branch=z9hG4bKsec{cseq}x{port}\n\
         Max-Forwards: 70\n\
         From: <sip:{user}@localhost>;tag=r{port}\n\
         To: <sip:{user}@localhost>\n\
         Call-ID: sec-reg-{user}-{port}\n\
         CSeq: {cseq} REGISTER\n\
         Contact: <sip:{user}@{from};transport={t}>\n\
         Expires: 300\n\
         {auth}Content-Length: 0\n\n",
        port = from.port(),
        t = transport.to_ascii_lowercase(),
    )
}

/// Registers `user@localhost` with its password over UDP from `ua`; panics unless 200.
pub(crate) fn register_udp(ua: &Udp, node: SocketAddr, user: &str, pw: &str) {
    let r = ua
        .request(node, &register(user, ua.addr(), "UDP", 1, None))
        .expect("a 401");
    assert_eq!(r.status.as_u16(), 401);
    let auth = answer(&r, "REGISTER", "sip:localhost", user, pw, 1);
    let r = ua.request(node, &register(user, ua.addr(), "UDP", 2, Some(&auth)));
    assert_eq!(status(&r), 200, "REGISTER of {user}");
}

/// An out-of-dialog request `method` to `ruri` with `From: from_uri`, sent from `via`
/// (`transport` `UDP` or `TCP`), with extra header lines (each ending in `\n`) and a
/// plain-text body (none when empty). INVITE gets a Contact.
pub(crate) fn request(
    method: &str,
    ruri: &str,
    from_uri: &str,
    via: SocketAddr,
    transport: &str,
    call_id: &str,
    extra: &str,
    body: &str,
) -> String {
    let contact = if method == "INVITE" {
        format!("Contact: <sip:caller@{via}>\n")
    } else {
        String::new()
    };
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: text/plain\n"
    };
    format!(
        "{method} {ruri} SIP/2.0\n\
         Via: SIP/2.0/{transport} {via};branch=z9hG4bK{call_id}\n\
         Max-Forwards: 70\n\
         From: <{from_uri}>;tag=f{call_id}\n\
         To: <{ruri}>\n\
         Call-ID: {call_id}\n\
         CSeq: 1 {method}\n\
         {contact}{extra}{ctype}Content-Length: {}\n\n{body}",
        body.len()
    )
}

/// Registers `user@localhost` over the TCP connection `tcp`; panics unless 200.
pub(crate) fn register_tcp(tcp: &mut Tcp, user: &str, pw: &str) {
    let from = tcp.addr();
    let r = tcp
        .request(&register(user, from, "TCP", 1, None))
        .expect("a 401");
    assert_eq!(r.status.as_u16(), 401);
    let auth = answer(&r, "REGISTER", "sip:localhost", user, pw, 1);
    let r = tcp.request(&register(user, from, "TCP", 2, Some(&auth)));
    assert_eq!(status(&r), 200, "REGISTER of {user} over TCP");
}

/// A pager MESSAGE with a plain-text body (see [`request`]).
pub(crate) fn message(
    ruri: &str,
    from_uri: &str,
    via: SocketAddr,
    transport: &str,
    call_id: &str,
    extra: &str,
    body: &str,
) -> String {
    request(
        "MESSAGE", ruri, from_uri, via, transport, call_id, extra, body,
    )
}

/// Tests that load the machine (floods) run alone: they take this lock for writing, every
/// other attack test for reading, so no timing-sensitive check runs beside a flood.
static HEAVY: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by an ordinary attack test for its whole run.
pub(crate) fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    HEAVY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Held by a flood test for its whole run.
pub(crate) fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    HEAVY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A UDP socket on a given loopback address (the attacker's own source address: loopback
/// has the whole 127.0.0.0/8).
pub(crate) fn udp_from(ip: &str) -> Udp {
    Udp {
        sock: UdpSocket::bind((ip, 0)).expect("bind a loopback source"),
    }
}

/// Waits up to `wait` for anything on `sock`; returns how many datagrams and bytes came.
pub(crate) fn drain(sock: &UdpSocket, wait: Duration) -> (usize, usize) {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65535];
    let (mut n, mut bytes) = (0, 0);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (n, bytes);
        }
        sock.set_read_timeout(Some(left)).expect("timeout");
        match sock.recv(&mut buf) {
            Ok(len) => {
                n += 1;
                bytes += len;
            }
            Err(_) => return (n, bytes),
        }
    }
}

/// An HTTP answer: status, header lines, body.
pub(crate) struct HttpAnswer {
    /// The status code (0 when the connection gave nothing).
    pub(crate) status: u16,
    /// `(lowercase name, value)` pairs.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: String,
}

impl HttpAnswer {
    /// The first header of that (lowercase) name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A TCP connection from a chosen loopback source address.
pub(crate) fn tcp_from(ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let local: SocketAddr = format!("{ip}:0").parse().expect("address");
    sock.bind(&local.into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(sock.into())
}

/// `GET path` over HTTP/1.1 from source address `from` (one request per connection), with an
/// optional `Authorization` value; bounded to 5 s.
pub(crate) fn http_get(from: &str, to: SocketAddr, path: &str, auth: Option<&str>) -> HttpAnswer {
    let mut s = tcp_from(from, to).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n{auth}\r\n"
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return HttpAnswer {
            status: 0,
            headers: Vec::new(),
            body: text,
        };
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The `Authorization` value answering an HTTP 401's first digest challenge for `GET path`.
pub(crate) fn http_answer(r: &HttpAnswer, path: &str, user: &str, pw: &str, nc: u32) -> String {
    let value = r.header("www-authenticate").expect("a digest challenge");
    let ch = Challenge::parse(value).expect("challenge parses");
    digest::respond(&ch, "GET", path, user, pw, "0b5e22c4", nc)
}
