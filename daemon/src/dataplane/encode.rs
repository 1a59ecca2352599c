//! Expressions as the kernel takes them: the `NFTA_RULE_EXPRESSIONS` of a rule, each
//! expression its name and attributes as nf_tables.h numbers them, and a rule's comment as
//! nft stores it. Pure.

use super::elements::{NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_LIST_ELEM, NFTA_VERDICT_CODE};
use super::exprs::{Expr, NFT_GOTO, REG_1, REG_VERDICT};
use super::netlink::{c_string, push_attr, NLA_F_NESTED};

const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_SADDR: u32 = 1;
/// NFTA_VERDICT_CHAIN: the chain of a jump or goto.
const NFTA_VERDICT_CHAIN: u16 = 2;

/// The `NFTA_RULE_EXPRESSIONS` payload.
pub fn encode(exprs: &[Expr]) -> Vec<u8> {
    let mut list = Vec::new();
    for expr in exprs {
        let (name, data) = encode_one(expr);
        let mut elem = Vec::new();
        push_attr(&mut elem, NFTA_EXPR_NAME, &c_string(name));
        push_attr(&mut elem, NFTA_EXPR_DATA | NLA_F_NESTED, &data);
        push_attr(&mut list, NFTA_LIST_ELEM | NLA_F_NESTED, &elem);
    }
    list
}

fn be32(out: &mut Vec<u8>, kind: u16, value: u32) {
    push_attr(out, kind, &value.to_be_bytes());
}

/// A value in `NFTA_DATA_VALUE`, nested in attribute `kind`.
fn data(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let mut nested = Vec::new();
    push_attr(&mut nested, NFTA_DATA_VALUE, value);
    push_attr(out, kind | NLA_F_NESTED, &nested);
}

fn encode_one(expr: &Expr) -> (&'static str, Vec<u8>) {
    let mut out = Vec::new();
    let name = match expr {
        Expr::Meta(key) => {
            be32(&mut out, 2, *key); // NFTA_META_KEY
            be32(&mut out, 1, REG_1); // NFTA_META_DREG
            "meta"
        }
        Expr::Ct(key) => {
            be32(&mut out, 2, *key); // NFTA_CT_KEY
            be32(&mut out, 1, REG_1); // NFTA_CT_DREG
            "ct"
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            be32(&mut out, 1, *dreg); // NFTA_PAYLOAD_DREG
            be32(&mut out, 2, *base); // NFTA_PAYLOAD_BASE
            be32(&mut out, 3, *offset); // NFTA_PAYLOAD_OFFSET
            be32(&mut out, 4, *len); // NFTA_PAYLOAD_LEN
            "payload"
        }
        Expr::And(mask) => {
            be32(&mut out, 1, REG_1); // NFTA_BITWISE_SREG
            be32(&mut out, 2, REG_1); // NFTA_BITWISE_DREG
            be32(&mut out, 3, mask.len() as u32); // NFTA_BITWISE_LEN
            data(&mut out, 4, mask); // NFTA_BITWISE_MASK
            data(&mut out, 5, &vec![0; mask.len()]); // NFTA_BITWISE_XOR
            "bitwise"
        }
        Expr::Cmp(op, value) => {
            be32(&mut out, 1, REG_1); // NFTA_CMP_SREG
            be32(&mut out, 2, *op as u32); // NFTA_CMP_OP
            data(&mut out, 3, value); // NFTA_CMP_DATA
            "cmp"
        }
        Expr::Lookup { set, id } => {
            lookup(&mut out, set, *id);
            "lookup"
        }
        Expr::NotIn { set, id } => {
            lookup(&mut out, set, *id);
            be32(&mut out, 5, NFT_LOOKUP_F_INV); // NFTA_LOOKUP_FLAGS
            "lookup"
        }
        Expr::Vmap(map) => {
            lookup(&mut out, map, None);
            be32(&mut out, 3, REG_VERDICT); // NFTA_LOOKUP_DREG
            "lookup"
        }
        Expr::FibSaddrType => {
            be32(&mut out, 1, REG_1); // NFTA_FIB_DREG
            be32(&mut out, 2, NFT_FIB_RESULT_ADDRTYPE); // NFTA_FIB_RESULT
            be32(&mut out, 3, NFTA_FIB_F_SADDR); // NFTA_FIB_FLAGS
            "fib"
        }
        Expr::Counter => {
            // As nft sends it: both values, zero.
            push_attr(&mut out, 1, &0u64.to_be_bytes()); // NFTA_COUNTER_BYTES
            push_attr(&mut out, 2, &0u64.to_be_bytes()); // NFTA_COUNTER_PACKETS
            "counter"
        }
        Expr::Limit(rate) => {
            // As nft sends it: rate and burst in packets, per second, no flags.
            push_attr(&mut out, 1, &u64::from(*rate).to_be_bytes()); // NFTA_LIMIT_RATE
            push_attr(&mut out, 2, &1u64.to_be_bytes()); // NFTA_LIMIT_UNIT
            be32(&mut out, 3, *rate); // NFTA_LIMIT_BURST
            be32(&mut out, 4, 0); // NFTA_LIMIT_TYPE: NFT_LIMIT_PKTS
            be32(&mut out, 5, 0); // NFTA_LIMIT_FLAGS
            "limit"
        }
        Expr::Log { prefix, group } => {
            push_attr(&mut out, 2, &c_string(prefix)); // NFTA_LOG_PREFIX
            push_attr(&mut out, 1, &group.to_be_bytes()); // NFTA_LOG_GROUP
            "log"
        }
        Expr::Verdict(code) => {
            immediate_verdict(&mut out, *code, None);
            "immediate"
        }
        Expr::Goto(chain) => {
            immediate_verdict(&mut out, NFT_GOTO, Some(chain));
            "immediate"
        }
    };
    (name, out)
}

/// A lookup of register 1 in the named set, or in the batch's set `id`.
fn lookup(out: &mut Vec<u8>, set: &str, id: Option<u32>) {
    push_attr(out, 1, &c_string(set)); // NFTA_LOOKUP_SET
    be32(out, 2, REG_1); // NFTA_LOOKUP_SREG
    if let Some(id) = id {
        be32(out, 4, id); // NFTA_LOOKUP_SET_ID
    }
}

/// An `immediate` of a verdict into the verdict register; `chain` for a jump or goto.
fn immediate_verdict(out: &mut Vec<u8>, code: i32, chain: Option<&str>) {
    be32(out, 1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
    let mut verdict = Vec::new();
    push_attr(&mut verdict, NFTA_VERDICT_CODE, &code.to_be_bytes());
    if let Some(chain) = chain {
        push_attr(&mut verdict, NFTA_VERDICT_CHAIN, &c_string(chain));
    }
    let mut value = Vec::new();
    push_attr(&mut value, NFTA_DATA_VERDICT | NLA_F_NESTED, &verdict);
    push_attr(out, 2 | NLA_F_NESTED, &value); // NFTA_IMMEDIATE_DATA
}

/// A rule's comment as nft stores it in the rule's user data (`NFTNL_UDATA_RULE_COMMENT`).
/// Comments are at most `MAX_COMMENT` (128) bytes, so the length fits its byte.
pub fn comment_userdata(comment: &str) -> Vec<u8> {
    let text = c_string(comment);
    let mut out = vec![0, u8::try_from(text.len()).unwrap_or(u8::MAX)];
    out.extend(text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_is_stored_with_its_nul_and_length() {
        assert_eq!(comment_userdata("s#1"), vec![0, 4, b's', b'#', b'1', 0]);
    }
}
