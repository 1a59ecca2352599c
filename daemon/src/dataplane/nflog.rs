//! The packets the pod chains log (`log group N`), read from the kernel's nfnetlink_log over
//! netfilter netlink. The layout follows the kernel's uapi `linux/netfilter/nfnetlink_log.h`.
//!
//! One process may bind a group in a network namespace; the kernel sends that group's
//! packets to it alone, batched, and unbinds it when its socket closes.

use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::netlink::{
    attribute, kernel_socket, messages, parse_acks, push_attr, push_message, AF_UNSPEC, NLM_F_ACK,
    NLM_F_REQUEST,
};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

/// Enough of a packet for its IP header with options and the ports after it.
pub const COPY_RANGE: u32 = 128;
/// The kernel sends what it holds after this long (hundredths of a second) or this many
/// packets, whichever comes first: a line within 0.1 s, and few wake-ups under a burst.
const FLUSH_AFTER: u32 = 10;
const FLUSH_AT: u32 = 64;
/// The kernel's buffer per batch, and ours: a burst the daemon reads late is kept rather
/// than lost (`ENOBUFS` says when some were).
const BATCH_BUFFER: u32 = 64 * 1024;
const RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// One logged packet: the rule's prefix, the family (`NFPROTO_IPV4`/`IPV6`) and the
/// packet from its network header, cut at `COPY_RANGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub prefix: String,
    pub family: u8,
    pub packet: Vec<u8>,
}

/// What one read brought.
#[derive(Debug, Default)]
pub enum Read {
    Packets(Vec<Logged>),
    /// Nothing within the read's timeout.
    #[default]
    Idle,
    /// The socket's buffer overflowed: some packets were lost before these.
    Overrun,
}

/// The socket bound to one log group.
pub struct NflogSocket {
    socket: Socket,
    buffer: Vec<u8>,
}

impl NflogSocket {
    /// Bind `group` in the calling thread's network namespace. Fails when another process
    /// holds it (`EBUSY`) or the kernel has no nfnetlink_log.
    pub fn bind(group: u16, read_timeout: Duration) -> std::io::Result<Self> {
        let socket = kernel_socket(NETLINK_NETFILTER)?;
        // Root may exceed rmem_max; without the room a burst read late is lost.
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &RECEIVE_BUFFER,
        );
        let timeout = nix::sys::time::TimeVal::new(
            read_timeout.as_secs() as _,
            read_timeout.subsec_micros() as _,
        );
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)?;
        socket.send(&bind_message(group), 0)?;
        let mut reply = vec![0; 8192];
        let len = socket.recv(&mut &mut reply[..], 0)?;
        match parse_acks(reply.get(..len).unwrap_or_default()).first() {
            Some(ack) if ack.code == 0 => {}
            Some(ack) => return Err(std::io::Error::from_raw_os_error(-ack.code)),
            None => return Err(std::io::Error::other("no answer to the bind")),
        }
        Ok(Self {
            socket,
            buffer: vec![0; BATCH_BUFFER as usize * 2],
        })
    }

    /// The next batch of logged packets, waiting at most the read timeout.
    pub fn read(&mut self) -> std::io::Result<Read> {
        match self.socket.recv(&mut &mut self.buffer[..], 0) {
            Ok(len) => Ok(Read::Packets(parse_packets(
                self.buffer.get(..len).unwrap_or_default(),
            ))),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => Ok(Read::Overrun),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Read::Idle)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(Read::Idle),
            Err(e) => Err(e),
        }
    }
}

/// BIND for `group`, with the whole packet copied up to `COPY_RANGE`, and the batching.
fn bind_message(group: u16) -> Vec<u8> {
    let mut attrs = Vec::new();
    push_attr(&mut attrs, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    // struct nfulnl_msg_config_mode: be32 copy_range, u8 copy_mode, u8 pad.
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend([NFULNL_COPY_PACKET, 0]);
    push_attr(&mut attrs, NFULA_CFG_MODE, &mode);
    push_attr(&mut attrs, NFULA_CFG_NLBUFSIZ, &BATCH_BUFFER.to_be_bytes());
    push_attr(&mut attrs, NFULA_CFG_TIMEOUT, &FLUSH_AFTER.to_be_bytes());
    push_attr(&mut attrs, NFULA_CFG_QTHRESH, &FLUSH_AT.to_be_bytes());
    let mut out = Vec::new();
    push_message(
        &mut out,
        (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        1,
        AF_UNSPEC,
        group,
        &attrs,
    );
    out
}

/// The logged packets of a datagram (the kernel batches several). Whatever it holds, this
/// keeps what is well-formed and never panics.
pub fn parse_packets(datagram: &[u8]) -> Vec<Logged> {
    let packet = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;
    messages(datagram)
        .filter(|(kind, _)| *kind == packet)
        .filter_map(|(_, message)| {
            let family = *message.get(16)?;
            let attrs = message.get(20..)?;
            let prefix = attribute(attrs, NFULA_PREFIX).unwrap_or_default();
            let prefix = prefix.split(|b| *b == 0).next().unwrap_or_default();
            Some(Logged {
                prefix: String::from_utf8_lossy(prefix).into_owned(),
                family,
                packet: attribute(attrs, NFULA_PAYLOAD)?.to_vec(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::netlink::{push_attr, push_message};
    use super::*;

    fn logged(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, 1, &[0x08, 0x00, 2, 0]); // NFULA_PACKET_HDR
        push_attr(&mut attrs, NFULA_PREFIX, prefix);
        push_attr(&mut attrs, NFULA_PAYLOAD, payload);
        let mut out = Vec::new();
        push_message(&mut out, NFNL_SUBSYS_ULOG << 8, 2, 0, 2, 7, &attrs);
        out
    }

    #[test]
    fn a_batch_gives_each_packet_with_its_prefix_and_family() {
        let mut datagram = logged(b"in_0123\0", &[0x45, 1, 2, 3]);
        datagram.extend(logged(b"eg_4567\0", &[0x45, 9]));
        // The batch's end, and a packet without a payload: left out.
        push_message(&mut datagram, 3, 2, 0, 0, 0, &[]);
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFULA_PREFIX, b"x\0");
        push_message(&mut datagram, NFNL_SUBSYS_ULOG << 8, 2, 0, 2, 7, &attrs);
        let packets = parse_packets(&datagram);
        assert_eq!(
            packets,
            [
                Logged {
                    prefix: "in_0123".into(),
                    family: 2,
                    packet: vec![0x45, 1, 2, 3]
                },
                Logged {
                    prefix: "eg_4567".into(),
                    family: 2,
                    packet: vec![0x45, 9]
                }
            ]
        );
    }

    #[test]
    fn a_cut_or_foreign_datagram_gives_what_is_whole() {
        let whole = logged(b"in_0123\0", &[0x45, 1, 2, 3]);
        for cut in 0..whole.len() {
            assert!(parse_packets(&whole[..cut]).len() <= 1);
        }
        // A config message (type 0x401) is not a packet.
        let mut config = whole.clone();
        config[4] = 1;
        assert!(parse_packets(&config).is_empty());
    }

    #[test]
    fn the_bind_asks_for_the_group_the_packet_and_prompt_batches() {
        let message = bind_message(1027);
        assert_eq!(&message[4..6], &0x401u16.to_ne_bytes());
        assert_eq!(&message[18..20], &1027u16.to_be_bytes());
        let attrs = &message[20..];
        assert_eq!(attribute(attrs, NFULA_CFG_CMD), Some(&[1u8][..]));
        assert_eq!(
            attribute(attrs, NFULA_CFG_MODE),
            Some(&[0, 0, 0, 128, 2, 0][..])
        );
        assert_eq!(
            attribute(attrs, NFULA_CFG_TIMEOUT),
            Some(&10u32.to_be_bytes()[..])
        );
    }
}
