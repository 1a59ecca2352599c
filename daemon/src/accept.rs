//! The accept loop both listeners share: the plugin's Unix socket and the health and metrics
//! HTTP port.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A listener whose connections `accept_each` hands out.
pub trait Listener {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Hand each connection to `handle` (which spawns its task) until `shutdown`. A failed
/// accept (out of file descriptors, say) is logged and retried shortly, never fatal.
pub async fn accept_each<L: Listener>(
    listener: L,
    what: &'static str,
    shutdown: CancellationToken,
    mut handle: impl FnMut(L::Stream),
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept_one() => match accepted {
                Ok(stream) => handle(stream),
                Err(err) => {
                    warn!(error = %err, listener = what, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
