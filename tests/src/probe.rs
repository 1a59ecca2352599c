//! Real traffic between pods: echo servers inside a pod and probes from another.
//!
//! Every probe has a short timeout (a denied connection costs under a second) and checks an
//! echoed payload, not just a handshake, so a half-working path does not count as reachable.
//! Sockets are created inside the pod's namespace (`TestNetns::run_in`) and then used from
//! ordinary threads: a socket stays in the namespace it was born in.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::TestNetns;

/// How long a probe waits for a connection or an echo.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// How often a server loop looks at its stop flag.
const SERVER_TICK: Duration = Duration::from_millis(20);

/// An echo server (TCP and UDP on the same port) running in a pod until dropped.
pub struct EchoServer {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Listen on all addresses of `ns` (IPv4 and IPv6), TCP and UDP, on `port`.
    pub fn start(ns: &TestNetns, port: u16) -> Self {
        let (tcp, udp) = ns
            .run_in(|| -> std::io::Result<_> {
                // One IPv6 socket per protocol that also takes IPv4 (dual-stack is Linux's
                // default for `::`), falling back to IPv4 when IPv6 is off in the namespace.
                let tcp = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
                    .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?;
                let udp = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))
                    .or_else(|_| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))?;
                Ok((tcp, udp))
            })
            .unwrap_or_else(|e| panic!("binding echo server on port {port} in {}: {e}", ns.name()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = vec![tcp_loop(tcp, stop.clone()), udp_loop(udp, stop.clone())];
        EchoServer {
            port,
            stop,
            threads,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_loop(listener: TcpListener, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    listener
        .set_nonblocking(true)
        .expect("a fresh listener takes O_NONBLOCK");
    std::thread::spawn(move || {
        let mut conns = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => conns.push(echo_conn(stream, stop.clone())),
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(SERVER_TICK),
                Err(_) => std::thread::sleep(SERVER_TICK),
            }
        }
        for c in conns {
            let _ = c.join();
        }
    })
}

fn echo_conn(mut stream: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(SERVER_TICK * 5));
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    })
}

fn udp_loop(socket: UdpSocket, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    socket
        .set_read_timeout(Some(SERVER_TICK * 5))
        .expect("a fresh socket takes a timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], peer);
            }
        }
    })
}

/// A payload unique enough that a stray packet cannot pass for our echo.
fn payload() -> Vec<u8> {
    format!(
        "pwt-probe-{}-{}\n",
        std::process::id(),
        crate::netns::next_id()
    )
    .into_bytes()
}

/// Can `from` open a TCP connection to `to:port` and get an echo back?
pub fn tcp_connects(from: &TestNetns, to: IpAddr, port: u16, timeout: Duration) -> bool {
    match TcpConn::open(from, to, port, timeout) {
        Ok(mut conn) => conn.echoes(timeout),
        Err(_) => false,
    }
}

/// Does a UDP datagram from `from` to `to:port` come back from the echo server in time?
pub fn udp_reaches(from: &TestNetns, to: IpAddr, port: u16, timeout: Duration) -> bool {
    let socket = from.run_in(move || {
        let bind: SocketAddr = match to {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        UdpSocket::bind(bind)
    });
    let Ok(socket) = socket else { return false };
    let sent = payload();
    let exchange = || -> std::io::Result<bool> {
        socket.set_read_timeout(Some(timeout))?;
        socket.connect((to, port))?;
        socket.send(&sent)?;
        let mut buf = [0u8; 2048];
        let n = socket.recv(&mut buf)?;
        Ok(buf[..n] == sent[..])
    };
    exchange().unwrap_or(false)
}

/// An established TCP connection from one pod to another's echo server, kept open so a
/// test can check that it survives something (a daemon restart, a policy change).
pub struct TcpConn {
    stream: TcpStream,
}

impl TcpConn {
    /// Connect from `from` to `to:port` within `timeout`.
    pub fn open(from: &TestNetns, to: IpAddr, port: u16, timeout: Duration) -> Result<Self> {
        let stream = from
            .run_in(move || TcpStream::connect_timeout(&SocketAddr::new(to, port), timeout))
            .with_context(|| format!("connecting from {} to {to}:{port}", from.name()))?;
        stream.set_nodelay(true)?;
        Ok(TcpConn { stream })
    }

    /// Send a line and read it back within `timeout`.
    pub fn echo(&mut self, timeout: Duration) -> Result<()> {
        let sent = payload();
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))?;
        self.stream.write_all(&sent)?;
        let mut got = vec![0u8; sent.len()];
        self.stream
            .read_exact(&mut got)
            .context("reading the echo")?;
        if got != sent {
            bail!("echo mismatch: sent {sent:?}, got {got:?}");
        }
        Ok(())
    }

    /// Does the connection still carry data both ways?
    pub fn echoes(&mut self, timeout: Duration) -> bool {
        self.echo(timeout).is_ok()
    }
}

/// `GET <path>` from inside `ns` to `addr` (HTTP/1.1, connection closed after): the status
/// code and the body.
pub fn http_get(ns: &TestNetns, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let response = ns.run_in(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(request.as_bytes())?;
        let mut text = String::new();
        s.take(4 * 1024 * 1024).read_to_string(&mut text)?;
        Ok(text)
    })?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
