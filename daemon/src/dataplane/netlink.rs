//! nf_tables over netfilter netlink: batches of messages framed by BATCH_BEGIN and
//! BATCH_END, each batch one all-or-nothing transaction (like an `nft -f` script), without
//! what makes `nft` slow: starting a process and fetching the whole ruleset into its cache
//! before every command (DESIGN.md: ~9 ms small, ~37 ms at 10k chains).
//!
//! This module frames messages and owns the socket; `batch` holds a transaction's messages,
//! and `elements`, `structure` and `table` say what goes in one. The layout follows the kernel's uapi `linux/netfilter/nf_tables.h` and
//! `nfnetlink.h`.

use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::batch::Batch;
use super::DataplaneError;

// netlink / nfnetlink framing
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLMSG_ERROR: u16 = 0x2;
pub(super) const NLMSG_DONE: u16 = 0x3;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(super) const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFPROTO_INET: u8 = 1;
pub(super) const NFPROTO_BRIDGE: u8 = 7;
pub(super) const AF_UNSPEC: u8 = 0;

// nf_tables message kinds (`NFT_MSG_*`), one place for every module that sends or reads them.
pub(super) const NFT_MSG_NEWTABLE: u16 = 0;
pub(super) const NFT_MSG_GETTABLE: u16 = 1;
pub(super) const NFT_MSG_DELTABLE: u16 = 2;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_DELCHAIN: u16 = 5;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFT_MSG_DELRULE: u16 = 8;
pub(super) const NFT_MSG_NEWSET: u16 = 9;
pub(super) const NFT_MSG_GETSET: u16 = 10;
pub(super) const NFT_MSG_DELSET: u16 = 11;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(super) const NFT_MSG_GETSETELEM: u16 = 13;
pub(super) const NFT_MSG_DELSETELEM: u16 = 14;

pub(super) fn c_string(s: &str) -> Vec<u8> {
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// nlattr: length (header included, padding excluded), type, payload padded to 4 bytes.
/// Payloads are a key (at most 32 bytes), a name, a rule's expressions, or an element list
/// that `ElementLists` keeps under `MAX_ELEMENT_BYTES`: all far below the 16-bit limit,
/// which the length saturates at rather than wrap, so a broken invariant is a refused
/// message.
pub(super) fn push_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    pad(out);
}

/// A NUL-terminated string attribute (a name), without building the string first.
pub(super) fn push_str(out: &mut Vec<u8>, kind: u16, s: &str) {
    let len = u16::try_from(4 + s.len() + 1).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    pad(out);
}

/// An attribute of `kind` whose payload `fill` writes in place, after the header, whose
/// length is set once the payload is written: the same bytes as `push_attr` of a payload
/// built apart, without building it apart (a whole table has tens of thousands of them).
pub(super) fn push_attr_with(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&kind.to_ne_bytes());
    fill(out);
    let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(out);
}

/// A nested attribute of `kind` (NLA_F_NESTED is added): `fill` writes the attributes it
/// holds.
pub(super) fn push_nested(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    push_attr_with(out, kind | NLA_F_NESTED, fill);
}

/// nlmsghdr + nfgenmsg + attributes.
pub(super) fn push_message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    // Attributes are bounded (see `push_attr`): a message is ~60 KiB at most.
    let len = u32::try_from(16 + 4 + attrs.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// One NLMSG_ERROR of a reply: the sequence number of the message it answers and its errno
/// (0 is an acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u32,
    pub code: i32,
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Each netlink message of a datagram: its type and its bytes, header included. Whatever the
/// kernel (or anything else on the socket) sends, this yields what is well-formed and stops
/// at the first thing that is not; it never panics.
pub(super) fn messages(datagram: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = u32_at(rest, 0)? as usize;
        let kind = u16::from_ne_bytes(rest.get(4..6)?.try_into().ok()?);
        let message = rest.get(..len).filter(|_| len >= 16)?;
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
        Some((kind, message))
    })
}

/// The attributes of one netlink message: (type without flags, payload). Like `messages`,
/// it yields what is well-formed and stops at the first thing that is not.
pub(super) fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(bytes.get(2..4)?.try_into().ok()?) & !NLA_F_NESTED;
        let payload = bytes.get(4..len)?;
        bytes = bytes.get((len + 3) & !3..).unwrap_or_default();
        Some((kind, payload))
    })
}

pub(super) fn attribute(bytes: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(bytes).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// A NUL-ended string attribute's text.
pub(super) fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes.strip_suffix(&[0]).unwrap_or(bytes)).ok()
}

/// A big-endian 32-bit attribute.
pub(super) fn be32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// The acknowledgements and errors in a datagram.
pub fn parse_acks(datagram: &[u8]) -> Vec<Ack> {
    messages(datagram)
        .filter(|(kind, _)| *kind == NLMSG_ERROR)
        // nlmsgerr: errno, then the header of the message it answers (its seq at +8).
        .filter_map(|(_, message)| {
            Some(Ack {
                seq: u32_at(message, 20 + 8)?,
                code: u32_at(message, 16)? as i32,
            })
        })
        .collect()
}

/// A netlink socket of `protocol` in the calling thread's network namespace, connected to
/// the kernel; a kernel that never answers must not hang the daemon, so reads time out.
pub(super) fn kernel_socket(protocol: isize) -> std::io::Result<Socket> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout = nix::sys::time::TimeVal::new(Duration::from_secs(5).as_secs() as _, 0);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)?;
    Ok(socket)
}

/// A netfilter netlink socket in the calling thread's network namespace.
pub struct NftSocket {
    socket: Socket,
    seq: u32,
    /// The send buffer we asked for.
    send_buffer: usize,
}

/// The default send buffer (`wmem_default`) is ~208 KiB; batches up to this need no change.
const DEFAULT_SEND_BUFFER: usize = 200 * 1024;
/// Headroom above a batch's size when the send buffer is raised for it.
const SEND_SLACK: usize = 64 * 1024;

impl NftSocket {
    pub fn open() -> Result<Self, DataplaneError> {
        let socket = kernel_socket(NETLINK_NETFILTER).map_err(io_error)?;
        Ok(Self {
            socket,
            seq: 1,
            send_buffer: DEFAULT_SEND_BUFFER,
        })
    }

    /// Commit the batch as one transaction: all or nothing. A refusal names the messages
    /// the kernel refused and why.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), DataplaneError> {
        if batch.is_empty() {
            return Ok(());
        }
        let first = self.seq;
        let expected = batch.len();
        let datagram = batch.encode(first);
        self.seq = self.seq.wrapping_add(expected as u32 + 2);
        // The kernel takes a batch only whole, in one datagram, and refuses one larger than
        // the socket's send buffer: make room (CAP_NET_ADMIN may exceed wmem_max, as nft does).
        if datagram.len() + SEND_SLACK > self.send_buffer {
            let size = datagram.len() + SEND_SLACK;
            nix::sys::socket::setsockopt(
                &self.socket,
                nix::sys::socket::sockopt::SndBufForce,
                &size,
            )
            .map_err(|e| io_error(e.into()))?;
            self.send_buffer = size;
        }
        self.socket.send(&datagram, 0).map_err(io_error)?;
        let mut errors = Vec::new();
        let mut done = false;
        while !done {
            let reply = match self.socket.recv_from_full() {
                Ok((reply, _)) => reply,
                // Only refusals are answered before the last message: this many answers
                // are refusals, and a refused message aborts the batch.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    errors.push(format!(
                        "more messages were refused than the kernel could report ({e})"
                    ));
                    break;
                }
                Err(e) => return Err(io_error(e)),
            };
            for ack in parse_acks(&reply) {
                let error = || std::io::Error::from_raw_os_error(-ack.code).to_string();
                match ack.seq.wrapping_sub(first) as usize {
                    // BATCH_BEGIN refused (no permission, say), or the commit failed as a
                    // whole: nothing else will answer.
                    0 if ack.code != 0 => {
                        errors.push(error());
                        done = true;
                    }
                    n if n >= 1 && n <= expected => {
                        done |= n == expected;
                        if ack.code != 0 {
                            errors.push(format!("{}: {}", batch.what(n - 1), error()));
                        }
                    }
                    // An answer to an earlier batch (one that timed out) is not this one's.
                    _ => {}
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DataplaneError::Rejected {
                ops: expected,
                detail: errors.join("; "),
            })
        }
    }

    /// Every table of the namespace, as the kernel lists them (no content: cheap).
    pub fn tables(&mut self) -> Result<Vec<TableEntry>, DataplaneError> {
        let messages = self.dump("the tables", NFT_MSG_GETTABLE, AF_UNSPEC, &[])?;
        Ok(messages.iter().filter_map(|m| table_entry(m)).collect())
    }

    /// The messages answering a dump request of `kind` (`NFT_MSG_GET*`) with `attrs`, up to
    /// the kernel's DONE: each a whole message, header included. `what` names the objects
    /// in an error.
    pub fn dump(
        &mut self,
        what: &str,
        kind: u16,
        family: u8,
        attrs: &[u8],
    ) -> Result<Vec<Vec<u8>>, DataplaneError> {
        let mut found = Vec::new();
        self.dump_each(what, kind, family, attrs, |m| found.push(m))?;
        Ok(found)
    }

    /// The same dump, each message handed to `each` as it arrives instead of kept: a table
    /// of thousands of rules is read without holding its listing.
    pub fn dump_each(
        &mut self,
        what: &str,
        kind: u16,
        family: u8,
        attrs: &[u8],
        mut each: impl FnMut(Vec<u8>),
    ) -> Result<(), DataplaneError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut request = Vec::new();
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        push_message(&mut request, kind, flags, seq, family, 0, attrs);
        self.socket.send(&request, 0).map_err(io_error)?;
        loop {
            let (reply, _) = self.socket.recv_from_full().map_err(io_error)?;
            let part = parse_dump(&reply, Some(seq));
            part.messages.into_iter().for_each(&mut each);
            if let Some(code) = part.error {
                let error = std::io::Error::from_raw_os_error(-code);
                return Err(DataplaneError::Dump(format!("listing {what}: {error}")));
            }
            if part.done {
                return Ok(());
            }
        }
    }
}

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_HANDLE: u16 = 4;

/// A table as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// `NFPROTO_*`.
    pub family: u8,
    pub name: String,
    /// Numbered per namespace, never reused within a boot.
    pub handle: u64,
}

/// What one datagram of a dump said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DumpReply {
    /// The messages answering the dump, header included.
    pub messages: Vec<Vec<u8>>,
    pub done: bool,
    pub error: Option<i32>,
}

/// The messages in a datagram answering the request numbered `seq` (anything else is
/// skipped), or any request when `None`. Reads what is well-formed and stops at the first
/// thing that is not; it never panics.
pub fn parse_dump(datagram: &[u8], seq: Option<u32>) -> DumpReply {
    let mut part = DumpReply::default();
    let answers = |m: &&[u8]| seq.is_none() || u32_at(m, 8) == seq;
    for (kind, message) in messages(datagram).filter(|(_, m)| answers(m)) {
        match kind {
            NLMSG_DONE => part.done = true,
            NLMSG_ERROR => {
                let code = u32_at(message, 16).map_or(0, |c| c as i32);
                if code != 0 {
                    part.error = Some(code);
                    part.done = true;
                }
            }
            _ => part.messages.push(message.to_vec()),
        }
    }
    part
}

/// nlmsghdr (16), nfgenmsg (its family first), then the attributes.
fn table_entry(message: &[u8]) -> Option<TableEntry> {
    let table = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE;
    if u16::from_ne_bytes(message.get(4..6)?.try_into().ok()?) != table {
        return None;
    }
    let attrs = message.get(20..)?;
    let name = attribute(attrs, NFTA_TABLE_NAME)?;
    let name = std::str::from_utf8(name.strip_suffix(&[0]).unwrap_or(name)).ok()?;
    let handle = attribute(attrs, NFTA_TABLE_HANDLE)?;
    Some(TableEntry {
        family: *message.get(16)?,
        name: name.to_string(),
        handle: u64::from_be_bytes(handle.get(..8)?.try_into().ok()?),
    })
}

fn io_error(source: std::io::Error) -> DataplaneError {
    DataplaneError::Exec {
        program: "netfilter netlink socket".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_errors_are_read_from_a_reply() {
        let mut reply = Vec::new();
        for code in [0i32, -2] {
            reply.extend_from_slice(&36u32.to_ne_bytes());
            reply.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            reply.extend_from_slice(&[0; 10]);
            reply.extend_from_slice(&code.to_ne_bytes());
            reply.extend_from_slice(&[0; 16]);
        }
        let codes: Vec<i32> = parse_acks(&reply).iter().map(|a| a.code).collect();
        assert_eq!(codes, vec![0, -2]);
    }

    #[test]
    fn tables_are_read_from_a_dump_answering_this_request_only() {
        let table = |family: u8, name: &str, handle: u64, seq: u32| {
            let mut attrs = Vec::new();
            push_attr(&mut attrs, NFTA_TABLE_NAME, &c_string(name));
            push_attr(&mut attrs, NFTA_TABLE_HANDLE, &handle.to_be_bytes());
            let mut out = Vec::new();
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE;
            push_message(&mut out, kind, 0, seq, family, 0, &attrs);
            out
        };
        let mut datagram = table(NFPROTO_INET, "podwall", 7, 5);
        datagram.extend(table(NFPROTO_BRIDGE, "podwall", 9, 4)); // an older request's
        datagram.extend(table(NFPROTO_BRIDGE, "podwall", 8, 5));
        let part = parse_dump(&datagram, Some(5));
        let found: Vec<(u8, String, u64)> = (part.messages.iter())
            .filter_map(|m| table_entry(m))
            .map(|t| (t.family, t.name, t.handle))
            .collect();
        let podwall = "podwall".to_string();
        assert_eq!(
            found,
            [
                (NFPROTO_INET, podwall.clone(), 7),
                (NFPROTO_BRIDGE, podwall, 8)
            ]
        );
        assert!(!part.done);
        let mut done = Vec::new();
        push_message(&mut done, NLMSG_DONE, 0, 5, 0, 0, &[]);
        assert!(parse_dump(&done, Some(5)).done);
        for cut in 0..datagram.len() {
            let _ = parse_dump(&datagram[..cut], Some(5));
        }
    }

    #[test]
    fn replies_of_any_shape_are_read_without_panicking() {
        for datagram in [
            &b""[..],
            &[0xff; 3],
            &[36, 0, 0, 0, 2, 0],
            &[16, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
            &[
                0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ] {
            let _ = parse_acks(datagram);
        }
    }
}
