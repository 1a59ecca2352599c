//! `GET /livez`, `/readyz` (and its older name `/healthz`) and `/metrics` over a deliberately
//! small HTTP/1.1 responder: fixed routes, one request per connection, so no web framework
//! is pulled in.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::accept::accept_each;
use crate::health::Health;
use crate::metrics::Metrics;

const MAX_REQUEST: usize = 8192;

/// Connections answered at once: probes and a scraper need a few; a client that opens more
/// gets its extra connections closed unanswered instead of costing the daemon memory.
pub const MAX_CONNECTIONS: usize = 16;

/// Answer the probes and `/metrics` until `shutdown`, each connection on its own task.
/// `detail`: whether a 503 says why (the reasons name namespaces, policies and kernel
/// errors): only on the node's loopback; elsewhere the reason is in the log alone.
pub async fn serve_http(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    detail: bool,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    accept_each(listener, "health and metrics", shutdown, |stream| {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            return; // dropping the stream closes it
        };
        let (health, metrics) = (health.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            // A client that stalls or sends junk just loses its connection.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                respond(stream, &health, &metrics, detail),
            )
            .await;
        });
    })
    .await;
}

async fn respond(
    mut stream: TcpStream,
    health: &Health,
    metrics: &Metrics,
    detail: bool,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, content_type, body) = route(&buf, health, metrics, detail);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The response for a raw request head: pure, so the routes are unit-tested.
fn route(
    request: &[u8],
    health: &Health,
    metrics: &Metrics,
    detail: bool,
) -> (&'static str, &'static str, String) {
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(line).unwrap_or("").split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/livez") => match health.stalled(std::time::Instant::now()) {
            None => ("200 OK", "text/plain", "ok\n".into()),
            Some(reason) => (
                "503 Service Unavailable",
                "text/plain",
                format!("{reason}\n"),
            ),
        },
        ("GET", "/readyz" | "/healthz") => match health.reason() {
            None => ("200 OK", "text/plain", "ok\n".into()),
            Some(reason) if detail => (
                "503 Service Unavailable",
                "text/plain",
                format!("{reason}\n"),
            ),
            Some(_) => (
                "503 Service Unavailable",
                "text/plain",
                "not ready: the reason is in podwalld's log\n".into(),
            ),
        },
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_reports_the_reason_while_unready() {
        let health = Health::default();
        let metrics = Metrics::default();
        let (status, _, body) = route(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            &health,
            &metrics,
            true,
        );
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("not programmed"), "{body}");
        // Served beyond the node's loopback, the reason stays in the log.
        let (status, _, body) = route(b"GET /healthz HTTP/1.1\r\n\r\n", &health, &metrics, false);
        assert_eq!(status, "503 Service Unavailable");
        assert!(!body.contains("not programmed"), "{body}");
        health.set_ready();
        assert_eq!(
            route(b"GET /healthz HTTP/1.1\r\n\r\n", &health, &metrics, true).0,
            "200 OK"
        );
    }

    #[test]
    fn readyz_is_healthz_and_livez_does_not_follow_readiness() {
        let (health, metrics) = (Health::default(), Metrics::default());
        let get = |path: &str| {
            let request = format!("GET {path} HTTP/1.1\r\n\r\n");
            route(request.as_bytes(), &health, &metrics, true)
        };
        health.beat();
        health.set_source("pods", Err("the API server is unreachable".into()));
        assert_eq!(get("/readyz").0, "503 Service Unavailable");
        assert_eq!(get("/readyz"), get("/healthz"));
        assert_eq!(
            get("/livez").0,
            "200 OK",
            "an API outage is no reason to restart"
        );
        health.set_source("pods", Ok(()));
        health.set_ready();
        assert_eq!(get("/readyz").0, "200 OK");
    }

    #[test]
    fn metrics_and_unknown_paths() {
        let (health, metrics) = (Health::default(), Metrics::default());
        let (status, _, body) = route(b"GET /metrics HTTP/1.1\r\n\r\n", &health, &metrics, true);
        assert_eq!(status, "200 OK");
        assert!(body.contains("podwall_attachments 0"));
        assert_eq!(
            route(b"GET /nope HTTP/1.1\r\n\r\n", &health, &metrics, true).0,
            "404 Not Found"
        );
        assert_eq!(
            route(b"POST /healthz HTTP/1.1\r\n\r\n", &health, &metrics, true).0,
            "405 Method Not Allowed"
        );
        assert_eq!(
            route(b"\x00\xff", &health, &metrics, true).0,
            "405 Method Not Allowed"
        );
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_unanswered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_http(
            listener,
            Arc::new(Health::default()),
            Arc::new(Metrics::default()),
            true,
            shutdown.clone(),
        ));
        let ask = |mut stream: TcpStream| async move {
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply).await;
            reply
        };
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let extra = TcpStream::connect(addr).await.unwrap();
        assert!(ask(extra).await.is_empty(), "one past the cap is answered");
        drop(idle);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = TcpStream::connect(addr).await.unwrap();
        assert!(ask(again).await.starts_with(b"HTTP/1.1 200"));
        shutdown.cancel();
    }
}
