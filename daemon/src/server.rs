//! The Unix socket the plugin talks to: one request line, one reply line per connection.
//!
//! Only root may use it: the socket file is 0600 and every peer's credentials are checked
//! (SO_PEERCRED), because a process that can attach or detach pods can open or close any
//! pod's firewall.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use podwall::wire::{self, ErrorKind, ReplyFrame, Request, WireError, MAX_FRAME};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::accept::accept_each;
use crate::core::{lock, Core, CoreError};
use crate::sources::kube::PodLookup;

/// A client that has not sent a whole line by then gets an error instead of a hung socket.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Bind the socket at `path`, replacing a stale one but never one a live daemon serves.
pub fn bind(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("another podwalld is serving {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to root", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    Ok(listener)
}

/// Serve until `shutdown` is cancelled. Each connection runs on its own task; requests reach
/// `Core` one at a time.
pub async fn serve_socket(
    listener: UnixListener,
    core: Arc<Mutex<Core>>,
    lookup: Option<PodLookup>,
    shutdown: CancellationToken,
) {
    accept_each(listener, "plugin socket", shutdown, |stream| {
        tokio::spawn(connection(stream, core.clone(), lookup.clone()));
    })
    .await;
}

async fn connection(mut stream: UnixStream, core: Arc<Mutex<Core>>, lookup: Option<PodLookup>) {
    let reply = match answer(&mut stream, core, lookup).await {
        Ok(reply) => reply,
        Err(err) => {
            debug!(error = %err.message, "refused request");
            ReplyFrame::error(err)
        }
    };
    // The peer may have gone; there is no one left to tell.
    let _ = stream.write_all(&wire::encode_line(&reply)).await;
    let _ = stream.shutdown().await;
}

async fn answer(
    stream: &mut UnixStream,
    core: Arc<Mutex<Core>>,
    lookup: Option<PodLookup>,
) -> Result<ReplyFrame, WireError> {
    let uid = stream
        .peer_cred()
        .map_err(|e| {
            WireError::new(
                ErrorKind::Forbidden,
                format!("cannot read peer credentials: {e}"),
            )
        })?
        .uid();
    // Read the request even from a peer about to be refused: answering before its write
    // would hand it EPIPE ("daemon down, try again") instead of the reason.
    let line = read_line(stream).await;
    if uid != 0 {
        warn!(uid, "refused a socket peer that is not root");
        return Err(WireError::new(
            ErrorKind::Forbidden,
            format!("peer uid {uid} is not root"),
        ));
    }
    let line = line?;
    let request = wire::decode_request(&line)?;
    let looked_up = std::time::Instant::now();
    if let (Some(lookup), Request::Attach { attachment }) = (&lookup, &request) {
        let key = podwall_policy::PodKey::new(&attachment.pod.namespace, &attachment.pod.name);
        let known = lock(&core).knows_pod(&key);
        if !known {
            if let Some(pod) = lookup.get(&key.namespace, &key.name).await {
                lock(&core).learn_pod(pod);
            }
        }
    }
    let queued = std::time::Instant::now();
    let lookup = queued - looked_up;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut core = lock(&core);
        core.queued(&request, lookup, queued.elapsed());
        core.handle(request)
    })
    .await
    .map_err(|e| WireError::new(ErrorKind::Internal, format!("request handler failed: {e}")))?;
    outcome.map(ReplyFrame::reply).map_err(to_wire)
}

/// The plugin's view of a core error: its kind decides what the plugin tells the runtime.
fn to_wire(err: CoreError) -> WireError {
    let kind = match &err {
        CoreError::BadAttachment(_) => ErrorKind::BadRequest,
        CoreError::NotAttached(_) => ErrorKind::NotAttached,
        CoreError::RulesMissing(_) => ErrorKind::RulesMissing,
        CoreError::Kernel(_) => ErrorKind::Kernel,
        CoreError::Store(_) => ErrorKind::Store,
        CoreError::Stopping => ErrorKind::Internal,
    };
    WireError::new(kind, err.to_string())
}

async fn read_line(stream: &mut UnixStream) -> Result<Vec<u8>, WireError> {
    let mut reader = BufReader::new(stream.take(MAX_FRAME as u64 + 1));
    let mut line = Vec::new();
    match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) if line.is_empty() => {
            Err(WireError::new(ErrorKind::BadRequest, "no request received"))
        }
        Err(_) => Err(WireError::new(
            ErrorKind::BadRequest,
            "incomplete request: no end of line",
        )),
        Ok(Err(e)) => Err(WireError::new(
            ErrorKind::BadRequest,
            format!("reading request: {e}"),
        )),
        Ok(Ok(_)) if line.len() > MAX_FRAME => Err(WireError::new(
            ErrorKind::BadRequest,
            format!("request longer than {MAX_FRAME} bytes"),
        )),
        Ok(Ok(_)) => Ok(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_core_error_reaches_the_plugin_with_its_own_kind_and_words() {
        let id = podwall::wire::AttachmentId {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        for (err, kind) in [
            (
                CoreError::BadAttachment("has no IP addresses"),
                ErrorKind::BadRequest,
            ),
            (CoreError::NotAttached(id), ErrorKind::NotAttached),
            (CoreError::RulesMissing("x".into()), ErrorKind::RulesMissing),
            (CoreError::Kernel("refused".into()), ErrorKind::Kernel),
            (CoreError::Store("full".into()), ErrorKind::Store),
            (CoreError::Stopping, ErrorKind::Internal),
        ] {
            let wire = to_wire(err.clone());
            assert_eq!(wire.kind, kind);
            assert_eq!(wire.message, err.to_string());
        }
    }
}
