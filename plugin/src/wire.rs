//! The plugin↔daemon protocol on the Unix socket.
//!
//! One connection carries one request and one reply, each a single line of JSON:
//! `{"version":1,"request":{"op":"attach",…}}` and `{"version":1,"reply":{…}}` or
//! `{"version":1,"error":{"kind":"bad_request","message":"…"}}`. A daemon that does not speak
//! the request's version answers `unsupported_version` with its own version, so either side can
//! be upgraded first. The blocking client here is what the plugin uses; the daemon reuses the
//! types and `decode_request`.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// A frame longer than this is refused unread: no honest request comes near it.
pub const MAX_FRAME: usize = 1 << 20;

/// One network attachment of one container, as the runtime names it (CNI spec: the key is the
/// container ID plus the interface name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentId {
    pub container_id: String,
    pub ifname: String,
}

impl fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// The Kubernetes pod an attachment belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the plugin learned on ADD and hands to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: AttachmentId,
    pub pod: PodRef,
    /// The pod's network namespace path (`CNI_NETNS`).
    pub netns: String,
    /// The pod's own addresses, from the prevResult.
    pub ips: Vec<IpAddr>,
    /// The host side of the pod's veth, when the prevResult names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_interface: Option<String>,
}

/// A request from the plugin (or an operator's tool) to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Commit the pod's rules, record the attachment, then answer.
    Attach { attachment: Attachment },
    /// Remove the attachment's rules and record; absent is not an error.
    Detach { id: AttachmentId },
    /// Are the attachment's rules in the kernel?
    Check { id: AttachmentId },
    /// Is the daemon ready to serve attachments?
    Status,
    /// Detach everything not in `valid` (CNI 1.1 GC).
    Gc { valid: Vec<AttachmentId> },
    /// Which pods this node enforces, and by which policies (`podwalld pods`).
    Pods,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    Attached {
        chains: Vec<String>,
    },
    Detached {
        existed: bool,
    },
    Checked,
    Status {
        /// `/readyz`: rules programmed and in sync, every watched kind synced.
        ready: bool,
        attachments: usize,
        reason: Option<String>,
        /// Whether an ADD can be served now: the kernel takes changes (an API outage does
        /// not stop ADDs, which are served from the stored state). Absent from a daemon
        /// older than this field: then `ready` says it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serving: Option<bool>,
    },
    Gc {
        removed: Vec<AttachmentId>,
    },
    Pods {
        pods: Vec<EnforcedPod>,
        /// What the rules' counters said of each policy so far (absent from older daemons).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        policies: Vec<PolicyCounts>,
    },
}

/// New connections a policy allowed (its rule matched first) and denied (dropped in a chain
/// it isolates), in one direction, since the daemon started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCounts {
    /// `namespace/name` of a NetworkPolicy, the name of a ClusterNetworkPolicy.
    pub policy: String,
    /// `NetworkPolicy`, or the ClusterNetworkPolicy's `Admin` or `Baseline` (empty from a
    /// daemon older than this field, which counted NetworkPolicies only).
    #[serde(default)]
    pub tier: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub allowed: u64,
    pub denied: u64,
}

/// A pod this node enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcedPod {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    /// `attached` (podwall's ADD), `adopted` (running without one) or `quarantined` (its
    /// labels are not known yet).
    pub how: String,
    /// The policies that isolate it, `namespace/name`; empty when none does.
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

/// Why the daemon could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The frame was not a request of this protocol.
    BadRequest,
    /// The request's protocol version is not spoken here.
    UnsupportedVersion,
    /// The peer is not allowed to use the socket.
    Forbidden,
    /// CHECK: the daemon has no such attachment.
    NotAttached,
    /// CHECK: the attachment is recorded but its rules are not all in the kernel.
    RulesMissing,
    /// The kernel refused the change; nothing was committed.
    Kernel,
    /// The state store failed.
    Store,
    /// Anything else inside the daemon.
    Internal,
}

/// An error answer: a kind a program can act on and a message a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The request line on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub version: u32,
    pub request: Request,
}

/// The reply line on the socket: exactly one of `reply` and `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyFrame {
    pub version: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Reply(Reply),
    Error(WireError),
}

impl ReplyFrame {
    pub fn reply(reply: Reply) -> Self {
        Self {
            version: VERSION,
            outcome: Outcome::Reply(reply),
        }
    }
    pub fn error(err: WireError) -> Self {
        Self {
            version: VERSION,
            outcome: Outcome::Error(err),
        }
    }
}

/// One frame as bytes, newline-terminated.
pub fn encode_line<T: Serialize>(frame: &T) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(frame).expect("wire frames serialise: no maps with non-string keys");
    line.push(b'\n');
    line
}

/// Parse a request line. The version is checked before the body, so a newer peer gets
/// `unsupported_version` rather than a confusing parse error.
pub fn decode_request(line: &[u8]) -> Result<Request, WireError> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let versioned: Versioned = serde_json::from_slice(line).map_err(|e| {
        WireError::new(
            ErrorKind::BadRequest,
            format!("not a podwall request frame: {e}"),
        )
    })?;
    if versioned.version != VERSION {
        return Err(WireError::new(
            ErrorKind::UnsupportedVersion,
            format!(
                "protocol version {} is not supported; this daemon speaks {VERSION}",
                versioned.version
            ),
        ));
    }
    let frame: RequestFrame = serde_json::from_slice(line)
        .map_err(|e| WireError::new(ErrorKind::BadRequest, format!("malformed request: {e}")))?;
    Ok(frame.request)
}

/// What went wrong talking to the daemon, from the client's side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (or it does not exist): the daemon is down.
    #[error("cannot reach podwalld at {path}")]
    Unreachable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The daemon was reached but did not answer in time or hung up.
    #[error("podwalld at {path} did not answer")]
    NoAnswer {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The answer was not a reply frame.
    #[error("podwalld sent a malformed reply: {0}")]
    Malformed(String),
    /// The daemon answered with an error.
    #[error("podwalld: {0}")]
    Daemon(WireError),
}

/// Send one request and wait for its reply, all within `timeout`.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let path = socket.display().to_string();
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Unreachable {
        path: path.clone(),
        source,
    })?;
    let no_answer = |source| ClientError::NoAnswer {
        path: path.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(no_answer)?;
    stream.set_write_timeout(Some(timeout)).map_err(no_answer)?;
    let frame = RequestFrame {
        version: VERSION,
        request: request.clone(),
    };
    stream.write_all(&encode_line(&frame)).map_err(no_answer)?;
    let mut line = Vec::new();
    BufReader::new(stream.take(MAX_FRAME as u64))
        .read_until(b'\n', &mut line)
        .map_err(no_answer)?;
    if line.is_empty() {
        return Err(no_answer(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        )));
    }
    let reply: ReplyFrame =
        serde_json::from_slice(&line).map_err(|e| ClientError::Malformed(e.to_string()))?;
    match reply.outcome {
        Outcome::Reply(reply) => Ok(reply),
        Outcome::Error(err) => Err(ClientError::Daemon(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment() -> Attachment {
        Attachment {
            id: AttachmentId {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            pod: PodRef {
                namespace: "x".into(),
                name: "a".into(),
                uid: None,
            },
            netns: "/run/netns/p".into(),
            ips: vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            host_interface: Some("veth1".into()),
        }
    }

    #[test]
    fn request_round_trips_through_a_line() {
        let req = Request::Attach {
            attachment: attachment(),
        };
        let line = encode_line(&RequestFrame {
            version: VERSION,
            request: req.clone(),
        });
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(decode_request(&line).unwrap(), req);
    }

    #[test]
    fn request_line_names_its_operation() {
        let line = encode_line(&RequestFrame {
            version: VERSION,
            request: Request::Status,
        });
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"version\":1,\"request\":{\"op\":\"status\"}}\n"
        );
    }

    #[test]
    fn other_version_is_refused_before_the_body_is_read() {
        let err = decode_request(br#"{"version":7,"request":{"op":"teleport"}}"#).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnsupportedVersion);
        assert!(err.message.contains('7'), "{}", err.message);
    }

    #[test]
    fn garbage_is_a_bad_request() {
        assert_eq!(
            decode_request(b"\x00\x01hello").unwrap_err().kind,
            ErrorKind::BadRequest
        );
        assert_eq!(
            decode_request(br#"{"version":1,"request":{"op":"nope"}}"#)
                .unwrap_err()
                .kind,
            ErrorKind::BadRequest
        );
    }

    #[test]
    fn error_reply_has_one_error_object() {
        let frame = ReplyFrame::error(WireError::new(
            ErrorKind::Forbidden,
            "peer uid 1000 is not root",
        ));
        let text = String::from_utf8(encode_line(&frame)).unwrap();
        assert_eq!(
            text,
            "{\"version\":1,\"error\":{\"kind\":\"forbidden\",\"message\":\"peer uid 1000 is not root\"}}\n"
        );
        let back: ReplyFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn call_reports_a_missing_socket_as_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let err = call(
            &dir.path().join("none.sock"),
            &Request::Status,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    }
}
