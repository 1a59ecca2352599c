//! One nftables transaction being built, and where messages go (`Sink`): into a `Batch` that
//! `netlink::NftSocket` sends as one datagram, framed by BATCH_BEGIN and BATCH_END, or into
//! a fold that only reads them (`exact`). Pure.

use super::netlink::{
    push_message, AF_UNSPEC, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES,
    NLM_F_ACK, NLM_F_REQUEST,
};

/// One nftables transaction being built: the messages that go between BATCH_BEGIN and
/// BATCH_END, in order.
#[derive(Debug, Default)]
pub struct Batch {
    messages: Vec<Message>,
}

#[derive(Debug)]
struct Message {
    /// `NFT_MSG_*`.
    kind: u16,
    /// Flags beyond REQUEST and ACK, which every message has.
    flags: u16,
    family: u8,
    attrs: Vec<u8>,
    /// What the message does, for the error when the kernel refuses it.
    what: String,
}

/// Where the messages of a transaction go: a [`Batch`] to send, or a fold that reads what
/// they would write (`exact::Fold`) without holding them.
pub trait Sink {
    /// An nf_tables message of `kind` (`NFT_MSG_*`) for the table `family`; `what` names it
    /// in an error.
    fn push(&mut self, kind: u16, flags: u16, family: u8, attrs: Vec<u8>, what: String);
}

impl Sink for Batch {
    fn push(&mut self, kind: u16, flags: u16, family: u8, attrs: Vec<u8>, what: String) {
        self.messages.push(Message {
            kind,
            flags,
            family,
            attrs,
            what,
        });
    }
}

impl Batch {
    /// What message `n` does, for the error when the kernel refuses it.
    pub(super) fn what(&self, n: usize) -> &str {
        self.messages.get(n).map_or("?", |m| m.what.as_str())
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Each message's kind (`NFT_MSG_*`), table family and attributes, in order.
    #[cfg(test)]
    pub(super) fn messages(&self) -> impl Iterator<Item = (u16, u8, &[u8])> {
        (self.messages.iter()).map(|m| (m.kind, m.family, m.attrs.as_slice()))
    }

    /// The datagram, BATCH_BEGIN numbered `first_seq` and each message after it the next
    /// number. Only the last message asks for an acknowledgement: the kernel answers every
    /// message it refuses anyway, in order, so the last answer says the batch is done. An
    /// answer for each message would overflow the socket's receive buffer on a batch of a
    /// few hundred messages (a whole table holds thousands), and the kernel drops what does
    /// not fit.
    pub fn encode(&self, first_seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seq = first_seq;
        let framing = |out: &mut Vec<u8>, kind, seq| {
            push_message(
                out,
                kind,
                NLM_F_REQUEST,
                seq,
                AF_UNSPEC,
                NFNL_SUBSYS_NFTABLES,
                &[],
            );
        };
        framing(&mut out, NFNL_MSG_BATCH_BEGIN, seq);
        for (i, m) in self.messages.iter().enumerate() {
            seq = seq.wrapping_add(1);
            let ack = if i + 1 == self.messages.len() {
                NLM_F_ACK
            } else {
                0
            };
            let flags = NLM_F_REQUEST | ack | m.flags;
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | m.kind;
            push_message(&mut out, kind, flags, seq, m.family, 0, &m.attrs);
        }
        framing(&mut out, NFNL_MSG_BATCH_END, seq.wrapping_add(1));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::netlink::{u32_at, NFPROTO_INET, NLM_F_CREATE};

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(bytes[at..at + 2].try_into().unwrap())
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end() {
        let mut batch = Batch::default();
        batch.push(12, NLM_F_CREATE, NFPROTO_INET, vec![1, 0, 0, 0], "x".into());
        let bytes = batch.encode(7);
        // BATCH_BEGIN: 20 bytes, type 0x10, seq 7, res_id = nftables subsystem (big-endian).
        assert_eq!(u32_at(&bytes, 0), Some(20));
        assert_eq!(u16_at(&bytes, 4), NFNL_MSG_BATCH_BEGIN);
        assert_eq!(u32_at(&bytes, 8), Some(7));
        assert_eq!(&bytes[18..20], &[0, 10]);
        // The message: seq 8, acknowledged (it is the last), nftables subsystem in its type.
        assert_eq!(u16_at(&bytes, 24), (10 << 8) | 12);
        assert_eq!(u16_at(&bytes, 26), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(u32_at(&bytes, 28), Some(8));
        // BATCH_END is the last 20 bytes, seq 9.
        let end = &bytes[bytes.len() - 20..];
        assert_eq!(u16_at(end, 4), NFNL_MSG_BATCH_END);
        assert_eq!(u32_at(end, 8), Some(9));
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn only_the_last_message_of_a_batch_asks_for_an_acknowledgement() {
        let mut batch = Batch::default();
        for _ in 0..3 {
            batch.push(12, NLM_F_CREATE, NFPROTO_INET, vec![1, 0, 0, 0], "x".into());
        }
        let bytes = batch.encode(1);
        // BATCH_BEGIN (20 bytes), then three messages of 24 bytes.
        let flags: Vec<u16> = (0..3).map(|i| u16_at(&bytes, 20 + 24 * i + 6)).collect();
        let plain = NLM_F_REQUEST | NLM_F_CREATE;
        assert_eq!(flags, [plain, plain, plain | NLM_F_ACK]);
    }
}
