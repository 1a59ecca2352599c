//! An interpreter of the `inet podwall` table as the kernel holds it: `nft -j list table
//! inet podwall` parsed into chains, sets and maps, and a new connection's first packet run
//! through the table's base chains the way netfilter does.
//!
//! It knows nftables, not podwall: rules are sequences of match, verdict-map and verdict
//! expressions; `jump` pushes, `goto` replaces, `return` or falling off a regular chain
//! goes back to the caller, and falling off a base chain applies its policy. A packet is
//! judged as the first of its connection (`ct state new`), from a source that is not the
//! node itself, as it would reach the `forward` hook. An expression it does not know is an
//! error, never a guess: what podwall renders is the shape of `dataplane/render.rs`, and a
//! new shape must be taught here.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use anyhow::{anyhow, bail, Context, Result};
use podwall_policy::Protocol;
use serde_json::Value;

use crate::cmd::Output;
use crate::netns::TestNetns;
use crate::nft::{table_exists, FAMILY, TABLE};

/// The first packet of a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {}/{}",
            self.src,
            self.dst,
            self.protocol.as_str(),
            self.port
        )
    }
}

/// What the table did with a packet, and the path it took (`egress4 → jump in_… → #2
/// "ns/p#0" return`), for failure reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub accepted: bool,
    pub trace: Vec<String>,
}

/// One value of a packet field or a set element's component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Datum {
    Addr(IpAddr),
    Num(u64),
    Word(String),
}

impl Datum {
    fn parse(v: &Value) -> Result<Datum> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(Datum::Num)
                .ok_or_else(|| anyhow!("not a whole number: {n}")),
            Value::String(s) => Ok(match s.parse::<IpAddr>() {
                Ok(ip) => Datum::Addr(ip),
                Err(_) => match s.parse::<u64>() {
                    Ok(n) => Datum::Num(n),
                    Err(_) => Datum::Word(s.clone()),
                },
            }),
            other => bail!("not a value: {other}"),
        }
    }

    /// Whether `self` lies in `lo..=hi` (same kind only).
    fn within(&self, lo: &Datum, hi: &Datum) -> bool {
        match (self, lo, hi) {
            (Datum::Addr(v), Datum::Addr(a), Datum::Addr(b)) => {
                v.is_ipv4() == a.is_ipv4() && a <= v && v <= b
            }
            (Datum::Num(v), Datum::Num(a), Datum::Num(b)) => a <= v && v <= b,
            (Datum::Word(v), Datum::Word(a), Datum::Word(b)) => v == a && v == b,
            _ => false,
        }
    }
}

/// A set element (or map key): one inclusive interval per component of a concatenation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element(Vec<(Datum, Datum)>);

impl Element {
    fn parse(v: &Value) -> Result<Element> {
        match v {
            Value::Object(o) if o.contains_key("elem") => Element::parse(&o["elem"]["val"]),
            Value::Object(o) if o.contains_key("concat") => {
                let parts = o["concat"]
                    .as_array()
                    .ok_or_else(|| anyhow!("concat is not a list: {v}"))?;
                let mut out = Vec::new();
                for part in parts {
                    out.extend(Element::parse(part)?.0);
                }
                Ok(Element(out))
            }
            other => Ok(Element(vec![interval(other)?])),
        }
    }

    fn contains(&self, key: &[Datum]) -> bool {
        self.0.len() == key.len()
            && self
                .0
                .iter()
                .zip(key)
                .all(|((lo, hi), value)| value.within(lo, hi))
    }
}

/// A named set's elements: single values in a hash set (pod sets hold thousands), ranges
/// and prefixes in a list.
#[derive(Debug, Clone, Default)]
struct Elements {
    exact: HashSet<Vec<Datum>>,
    ranges: Vec<Element>,
}

impl Elements {
    fn new(elems: Vec<Element>) -> Self {
        let mut out = Elements::default();
        for e in elems {
            if e.0.iter().all(|(lo, hi)| lo == hi) {
                out.exact
                    .insert(e.0.into_iter().map(|(lo, _)| lo).collect());
            } else {
                out.ranges.push(e);
            }
        }
        out
    }

    fn contains(&self, key: &[Datum]) -> bool {
        self.exact.contains(key) || self.ranges.iter().any(|e| e.contains(key))
    }
}

/// A single value, `{"range": [a, b]}` or `{"prefix": {"addr", "len"}}` as an interval.
fn interval(v: &Value) -> Result<(Datum, Datum)> {
    match v {
        Value::Object(o) if o.contains_key("range") => {
            let r = o["range"]
                .as_array()
                .filter(|r| r.len() == 2)
                .ok_or_else(|| anyhow!("a range is two values: {v}"))?;
            Ok((Datum::parse(&r[0])?, Datum::parse(&r[1])?))
        }
        Value::Object(o) if o.contains_key("prefix") => {
            let addr: IpAddr = o["prefix"]["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| anyhow!("a prefix needs an address: {v}"))?;
            let len = o["prefix"]["len"]
                .as_u64()
                .ok_or_else(|| anyhow!("a prefix needs a length: {v}"))?;
            let (first, last) = prefix_bounds(addr, len as u32)?;
            Ok((Datum::Addr(first), Datum::Addr(last)))
        }
        other => {
            let d = Datum::parse(other)?;
            Ok((d.clone(), d))
        }
    }
}

fn prefix_bounds(addr: IpAddr, len: u32) -> Result<(IpAddr, IpAddr)> {
    Ok(match addr {
        IpAddr::V4(v4) => {
            if len > 32 {
                bail!("prefix /{len} of {addr}");
            }
            let host = if len == 0 { u32::MAX } else { u32::MAX >> len };
            let bits = u32::from(v4) & !host;
            (IpAddr::V4(bits.into()), IpAddr::V4((bits | host).into()))
        }
        IpAddr::V6(v6) => {
            if len > 128 {
                bail!("prefix /{len} of {addr}");
            }
            let host = if len == 0 {
                u128::MAX
            } else {
                u128::MAX >> len
            };
            let bits = u128::from(v6) & !host;
            (IpAddr::V6(bits.into()), IpAddr::V6((bits | host).into()))
        }
    })
}

/// A field of the packet or its connection that a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    CtState,
    NfProto,
    L4Proto,
    /// `ip saddr`, `ip6 daddr`, …: present only in packets of that family.
    Addr {
        v4: bool,
        source: bool,
    },
    /// `tcp dport` (only TCP packets), `th dport` (`protocol` None: any transport).
    Dport {
        protocol: Option<Protocol>,
    },
    /// `icmpv6 type`: podwall's packets here are TCP, UDP or SCTP, so never present.
    Icmpv6Type,
    /// `tcp flags & (…)`, a mask that keeps SYN: a first packet is a bare SYN, so the
    /// masked flags are `syn` (only TCP packets have them).
    TcpFlagsSyn,
}

impl Field {
    fn parse(v: &Value) -> Result<Field> {
        if let Some(Value::Array(and)) = v.get("&") {
            let keeps_syn = and
                .get(1)
                .and_then(Value::as_array)
                .is_some_and(|mask| mask.iter().any(|f| f == "syn"));
            let flags = and.first().and_then(|f| f.get("payload"));
            if keeps_syn && flags.is_some_and(|p| p["protocol"] == "tcp" && p["field"] == "flags") {
                return Ok(Field::TcpFlagsSyn);
            }
            bail!("unknown bitwise expression {v}")
        }
        if let Some(ct) = v.get("ct") {
            if ct["key"] == "state" {
                return Ok(Field::CtState);
            }
        }
        if let Some(meta) = v.get("meta") {
            match meta["key"].as_str() {
                Some("nfproto") => return Ok(Field::NfProto),
                Some("l4proto") => return Ok(Field::L4Proto),
                _ => {}
            }
        }
        if let Some(p) = v.get("payload") {
            let (protocol, field) = (p["protocol"].as_str(), p["field"].as_str());
            return Ok(match (protocol, field) {
                (Some("ip"), Some("saddr")) => Field::Addr {
                    v4: true,
                    source: true,
                },
                (Some("ip"), Some("daddr")) => Field::Addr {
                    v4: true,
                    source: false,
                },
                (Some("ip6"), Some("saddr")) => Field::Addr {
                    v4: false,
                    source: true,
                },
                (Some("ip6"), Some("daddr")) => Field::Addr {
                    v4: false,
                    source: false,
                },
                (Some("th"), Some("dport")) => Field::Dport { protocol: None },
                (Some("tcp"), Some("dport")) => Field::Dport {
                    protocol: Some(Protocol::Tcp),
                },
                (Some("udp"), Some("dport")) => Field::Dport {
                    protocol: Some(Protocol::Udp),
                },
                (Some("sctp"), Some("dport")) => Field::Dport {
                    protocol: Some(Protocol::Sctp),
                },
                (Some("icmpv6"), Some("type")) => Field::Icmpv6Type,
                _ => bail!("unknown payload field {v}"),
            });
        }
        bail!("unknown expression {v}")
    }

    /// The field's value in `packet`; `None` when the packet has no such field (an IPv4
    /// address of an IPv6 packet), which makes the whole rule not match, as nftables' implicit
    /// protocol dependencies do.
    fn value(&self, packet: &Packet) -> Option<Datum> {
        match self {
            Field::CtState => Some(Datum::Word("new".into())),
            Field::NfProto => Some(Datum::Word(
                if packet.src.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
            )),
            Field::L4Proto => Some(Datum::Word(proto_name(packet.protocol).into())),
            Field::Addr { v4, source } => {
                let ip = if *source { packet.src } else { packet.dst };
                (ip.is_ipv4() == *v4).then_some(Datum::Addr(ip))
            }
            Field::Dport { protocol } => protocol
                .is_none_or(|p| p == packet.protocol)
                .then_some(Datum::Num(u64::from(packet.port))),
            Field::Icmpv6Type => None,
            Field::TcpFlagsSyn => {
                (packet.protocol == Protocol::Tcp).then(|| Datum::Word("syn".into()))
            }
        }
    }

    /// A literal compared with this field, in the form `value` gives: protocol numbers as
    /// names.
    fn normalise(&self, d: Datum) -> Datum {
        match (self, &d) {
            (Field::L4Proto, Datum::Num(n)) => match n {
                6 => Datum::Word("tcp".into()),
                17 => Datum::Word("udp".into()),
                132 => Datum::Word("sctp".into()),
                _ => d,
            },
            (Field::NfProto, Datum::Num(2)) => Datum::Word("ipv4".into()),
            (Field::NfProto, Datum::Num(10)) => Datum::Word("ipv6".into()),
            _ => d,
        }
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// What a match compares with.
#[derive(Debug, Clone)]
enum Right {
    /// `@name`: a named set.
    Set(String),
    /// A literal, range, prefix or anonymous set: any of these elements.
    Elements(Vec<Element>),
}

#[derive(Debug, Clone)]
enum Verdict {
    Accept,
    Drop,
    Return,
    Continue,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn parse(v: &Value) -> Result<Verdict> {
        let o = v
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| anyhow!("not a verdict: {v}"))?;
        let (kind, arg) = o.iter().next().expect("one entry");
        let target = || {
            arg["target"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{kind} without a target: {v}"))
        };
        Ok(match kind.as_str() {
            "accept" => Verdict::Accept,
            "drop" => Verdict::Drop,
            "return" => Verdict::Return,
            "continue" => Verdict::Continue,
            "jump" => Verdict::Jump(target()?),
            "goto" => Verdict::Goto(target()?),
            _ => bail!("unknown verdict {v}"),
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Return => f.write_str("return"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Match {
        negate: bool,
        left: Vec<Field>,
        right: Right,
    },
    Vmap {
        key: Vec<Field>,
        map: String,
    },
    Verdict(Verdict),
    /// Counters and the like: no effect on the verdict.
    Inert,
}

impl Expr {
    fn parse(v: &Value) -> Result<Expr> {
        if let Some(m) = v.get("match") {
            let negate = match m["op"].as_str() {
                Some("==") | Some("in") => false,
                Some("!=") => true,
                other => bail!("unknown match operator {other:?} in {v}"),
            };
            let left = fields(&m["left"])?;
            let right = match &m["right"] {
                Value::String(s) if s.starts_with('@') => Right::Set(s[1..].to_string()),
                Value::Object(o) if o.contains_key("set") => Right::Elements(
                    o["set"]
                        .as_array()
                        .ok_or_else(|| anyhow!("an anonymous set is a list: {v}"))?
                        .iter()
                        .map(|e| element_for(&left, e))
                        .collect::<Result<_>>()?,
                ),
                // `ct state established,related` lists its flags.
                Value::Array(items) => Right::Elements(
                    items
                        .iter()
                        .map(|e| element_for(&left, e))
                        .collect::<Result<_>>()?,
                ),
                other => Right::Elements(vec![element_for(&left, other)?]),
            };
            return Ok(Expr::Match {
                negate,
                left,
                right,
            });
        }
        if let Some(vmap) = v.get("vmap") {
            let map = vmap["data"]
                .as_str()
                .and_then(|d| d.strip_prefix('@'))
                .ok_or_else(|| anyhow!("a verdict map must be named: {v}"))?;
            return Ok(Expr::Vmap {
                key: fields(&vmap["key"])?,
                map: map.to_string(),
            });
        }
        // A `limit` decides only whether the `log` after it runs: podwall's log rules have
        // no verdict, so the packet goes on either way.
        if ["counter", "log", "limit"]
            .iter()
            .any(|k| v.get(k).is_some())
        {
            return Ok(Expr::Inert);
        }
        Verdict::parse(v)
            .map(Expr::Verdict)
            .with_context(|| format!("unknown expression {v}"))
    }
}

/// The fields of a match's left side: one, or the parts of a concatenation.
fn fields(v: &Value) -> Result<Vec<Field>> {
    match v.get("concat") {
        Some(Value::Array(parts)) => parts.iter().map(Field::parse).collect(),
        _ => Ok(vec![Field::parse(v)?]),
    }
}

/// A literal on the right of a match, as an element of the left side's shape.
fn element_for(left: &[Field], v: &Value) -> Result<Element> {
    let mut e = Element::parse(v)?;
    if e.0.len() == left.len() {
        for ((lo, hi), field) in e.0.iter_mut().zip(left) {
            *lo = field.normalise(lo.clone());
            *hi = field.normalise(hi.clone());
        }
    }
    Ok(e)
}

#[derive(Debug, Clone)]
struct Rule {
    exprs: Vec<Expr>,
    comment: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Chain {
    /// `(hook, priority, policy accepts)` of a base chain.
    base: Option<(String, i64, bool)>,
    rules: Vec<Rule>,
}

/// The table as read back.
#[derive(Debug, Clone, Default)]
pub struct Table {
    chains: BTreeMap<String, Chain>,
    sets: BTreeMap<String, Elements>,
    maps: BTreeMap<String, Vec<(Element, Verdict)>>,
}

/// How deep `jump`s may nest before the kernel refuses the ruleset (it checks for loops
/// when loading; this only keeps a broken reading from spinning).
const MAX_DEPTH: usize = 16;

impl Table {
    /// `inet podwall` of the namespace, or `None` when there is none.
    pub fn read(ns: &TestNetns) -> Result<Option<Table>> {
        if !table_exists(ns)? {
            return Ok(None);
        }
        let out = ns
            .exec(&["nft", "-j", "list", "table", FAMILY, TABLE])
            .and_then(Output::ok)?;
        Table::from_json(&out.stdout).map(Some)
    }

    /// Parse `nft -j list table …`.
    pub fn from_json(text: &str) -> Result<Table> {
        let doc: Value = serde_json::from_str(text).context("nft -j output is not JSON")?;
        let mut table = Table::default();
        let items = doc["nftables"]
            .as_array()
            .ok_or_else(|| anyhow!("no nftables list in nft's output"))?;
        for item in items {
            if let Some(chain) = item.get("chain") {
                let name = name_of(chain)?;
                let base = chain["hook"].as_str().map(|hook| {
                    (
                        hook.to_string(),
                        chain["prio"].as_i64().unwrap_or(0),
                        chain["policy"].as_str() != Some("drop"),
                    )
                });
                table.chains.entry(name).or_default().base = base;
            } else if let Some(rule) = item.get("rule") {
                let chain = rule["chain"]
                    .as_str()
                    .ok_or_else(|| anyhow!("a rule without a chain: {rule}"))?;
                // Only the forward hook is modelled (see `judge`); nft lists a chain before
                // its rules, so a base chain on another hook is known by now.
                let other_hook = table.chains.get(chain).and_then(|c| c.base.as_ref());
                if other_hook.is_some_and(|(hook, ..)| hook != "forward") {
                    continue;
                }
                let exprs = rule["expr"]
                    .as_array()
                    .ok_or_else(|| anyhow!("a rule without expressions: {rule}"))?
                    .iter()
                    .map(Expr::parse)
                    .collect::<Result<Vec<_>>>()
                    .with_context(|| format!("reading a rule of chain {chain}"))?;
                table
                    .chains
                    .entry(chain.to_string())
                    .or_default()
                    .rules
                    .push(Rule {
                        exprs,
                        comment: rule["comment"].as_str().map(str::to_string),
                    });
            } else if let Some(set) = item.get("set") {
                let elems = set["elem"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(Element::parse)
                    .collect::<Result<Vec<_>>>()
                    .with_context(|| format!("reading set {}", set["name"]))?;
                table.sets.insert(name_of(set)?, Elements::new(elems));
            } else if let Some(map) = item.get("map") {
                let mut elems = Vec::new();
                for pair in map["elem"].as_array().into_iter().flatten() {
                    let pair = pair
                        .as_array()
                        .filter(|p| p.len() == 2)
                        .ok_or_else(|| anyhow!("a map element is a pair: {pair}"))?;
                    elems.push((Element::parse(&pair[0])?, Verdict::parse(&pair[1])?));
                }
                table.maps.insert(name_of(map)?, elems);
            }
        }
        Ok(table)
    }

    /// Run `packet` through the base chains on the `forward` hook, lowest priority first;
    /// every one must accept. A table without one accepts everything.
    pub fn judge(&self, packet: &Packet) -> Result<Decision> {
        let mut bases: Vec<(&String, i64)> = self
            .chains
            .iter()
            .filter_map(|(name, c)| match &c.base {
                Some((hook, prio, _)) if hook == "forward" => Some((name, *prio)),
                _ => None,
            })
            .collect();
        bases.sort_by_key(|(_, prio)| *prio);
        let mut trace = Vec::new();
        for (base, _) in bases {
            if !self.run_base(base, packet, &mut trace)? {
                return Ok(Decision {
                    accepted: false,
                    trace,
                });
            }
        }
        Ok(Decision {
            accepted: true,
            trace,
        })
    }

    /// One base chain: true when it accepts.
    fn run_base(&self, base: &str, packet: &Packet, trace: &mut Vec<String>) -> Result<bool> {
        // Frames of (chain, next rule); the base chain at the bottom.
        let mut stack: Vec<(&str, usize)> = vec![(base, 0)];
        loop {
            let (name, index) = *stack.last().expect("the base chain is on the stack");
            let chain = self.chain(name)?;
            let Some(rule) = chain.rules.get(index) else {
                // Off the end: back to the caller, or the base chain's policy.
                stack.pop();
                if stack.is_empty() {
                    let accept = chain.base.as_ref().is_none_or(|(_, _, accept)| *accept);
                    trace.push(format!("{name}: end, policy {}", word(accept)));
                    return Ok(accept);
                }
                trace.push(format!("{name}: end, back"));
                continue;
            };
            stack.last_mut().expect("a frame").1 += 1;
            let Some(verdict) = self
                .run_rule(rule, packet)
                .with_context(|| format!("rule {index} of chain {name}"))?
            else {
                continue;
            };
            let at = match &rule.comment {
                Some(c) => format!("{name} #{index} \"{c}\""),
                None => format!("{name} #{index}"),
            };
            trace.push(format!("{at}: {verdict}"));
            match verdict {
                Verdict::Accept => return Ok(true),
                Verdict::Drop => return Ok(false),
                Verdict::Continue => {}
                Verdict::Return => {
                    stack.pop();
                    if stack.is_empty() {
                        let chain = self.chain(base)?;
                        return Ok(chain.base.as_ref().is_none_or(|(_, _, accept)| *accept));
                    }
                }
                Verdict::Jump(target) => stack.push((self.chain_name(&target)?, 0)),
                Verdict::Goto(target) => {
                    *stack.last_mut().expect("a frame") = (self.chain_name(&target)?, 0);
                }
            }
            if stack.len() > MAX_DEPTH {
                bail!("jumps nest deeper than {MAX_DEPTH}: {trace:?}");
            }
        }
    }

    /// The verdict a rule gives the packet, or `None` when it does not match.
    fn run_rule(&self, rule: &Rule, packet: &Packet) -> Result<Option<Verdict>> {
        for expr in &rule.exprs {
            match expr {
                Expr::Inert => {}
                Expr::Verdict(v) => return Ok(Some(v.clone())),
                Expr::Match {
                    negate,
                    left,
                    right,
                } => {
                    let Some(key) = key_of(left, packet) else {
                        return Ok(None);
                    };
                    let found = match right {
                        Right::Set(name) => self
                            .sets
                            .get(name)
                            .ok_or_else(|| anyhow!("a rule refers to missing set {name}"))?
                            .contains(&key),
                        Right::Elements(elems) => elems.iter().any(|e| e.contains(&key)),
                    };
                    if found == *negate {
                        return Ok(None);
                    }
                }
                Expr::Vmap { key, map } => {
                    let Some(key) = key_of(key, packet) else {
                        return Ok(None);
                    };
                    let elems = self
                        .maps
                        .get(map)
                        .ok_or_else(|| anyhow!("a rule refers to missing map {map}"))?;
                    return Ok(elems
                        .iter()
                        .find(|(e, _)| e.contains(&key))
                        .map(|(_, v)| v.clone()));
                }
            }
        }
        Ok(None)
    }

    /// The table's own copy of a chain's name, to keep on the stack.
    fn chain_name(&self, name: &str) -> Result<&str> {
        self.chains
            .get_key_value(name)
            .map(|(k, _)| k.as_str())
            .ok_or_else(|| anyhow!("a verdict names missing chain {name}"))
    }

    fn chain(&self, name: &str) -> Result<&Chain> {
        self.chains
            .get(name)
            .ok_or_else(|| anyhow!("a verdict names missing chain {name}"))
    }
}

fn key_of(fields: &[Field], packet: &Packet) -> Option<Vec<Datum>> {
    fields.iter().map(|f| f.value(packet)).collect()
}

fn name_of(object: &Value) -> Result<String> {
    object["name"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("an object without a name: {object}"))
}

fn word(accept: bool) -> &'static str {
    if accept {
        "accept"
    } else {
        "drop"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nft -j` printed for a table loaded from the renderer's shapes (the golden
    /// world of `dataplane/render.rs` plus an egress chain with the other port shapes).
    const TABLE_JSON: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "podwall", "handle": 2}},
      {"set": {"family": "inet", "name": "cidr4_a", "table": "podwall", "type": "ipv4_addr", "handle": 4, "flags": ["interval"],
               "elem": [{"prefix": {"addr": "192.0.2.0", "len": 25}}, {"range": ["203.0.113.0", "203.0.113.9"]}, "198.51.100.7"]}},
      {"set": {"family": "inet", "name": "pods4_b", "table": "podwall", "type": "ipv4_addr", "handle": 5, "elem": ["10.1.0.5"]}},
      {"set": {"family": "inet", "name": "pods6_b", "table": "podwall", "type": "ipv6_addr", "handle": 6}},
      {"set": {"family": "inet", "name": "port4_c", "table": "podwall", "type": ["ipv4_addr", "inet_service"], "handle": 7,
               "elem": [{"concat": ["10.1.0.7", 5432]}]}},
      {"map": {"family": "inet", "name": "ingress4", "table": "podwall", "type": "ipv4_addr", "handle": 9, "map": "verdict",
               "elem": [["10.1.0.7", {"jump": {"target": "in_d"}}], ["10.1.0.8", {"jump": {"target": "open"}}]]}},
      {"map": {"family": "inet", "name": "egress4", "table": "podwall", "type": "ipv4_addr", "handle": 10, "map": "verdict",
               "elem": [["10.1.0.7", {"jump": {"target": "open"}}], ["10.1.0.8", {"jump": {"target": "eg_x"}}]]}},
      {"map": {"family": "inet", "name": "ingress6", "table": "podwall", "type": "ipv6_addr", "handle": 11, "map": "verdict"}},
      {"map": {"family": "inet", "name": "egress6", "table": "podwall", "type": "ipv6_addr", "handle": 12, "map": "verdict"}},
      {"chain": {"family": "inet", "table": "podwall", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"chain": {"family": "inet", "table": "podwall", "name": "open", "handle": 2}},
      {"chain": {"family": "inet", "table": "podwall", "name": "in_d", "handle": 3}},
      {"chain": {"family": "inet", "table": "podwall", "name": "eg_x", "handle": 26}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "forward", "handle": 13, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "forward", "handle": 15, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}}, "right": {"set": ["nd-router-solicit", "nd-neighbor-advert"]}}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "forward", "handle": 16, "expr": [{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@egress4"}}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "forward", "handle": 17, "expr": [{"vmap": {"key": {"payload": {"protocol": "ip6", "field": "saddr"}}, "data": "@egress6"}}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "forward", "handle": 18, "expr": [{"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}}, "data": "@ingress4"}}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "forward", "handle": 19, "expr": [{"vmap": {"key": {"payload": {"protocol": "ip6", "field": "daddr"}}, "data": "@ingress6"}}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "in_d", "handle": 20, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"drop": null}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "in_d", "handle": 21, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@pods4_b"}}, {"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"payload": {"protocol": "tcp", "field": "dport"}}]}, "right": "@port4_c"}}, {"return": null}], "comment": "shop/db#0"}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "in_d", "handle": 22, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@cidr4_a"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"range": [80, 90]}}}, {"return": null}], "comment": "shop/db#1"}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "in_d", "handle": 23, "expr": [{"drop": null}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 27, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "sctp"}}, {"return": null}], "comment": "a/b#1"}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 28, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"set": [53, {"range": [1000, 2000]}]}}}, {"return": null}], "comment": "a/b#2"}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 29, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}, {"return": null}], "comment": "a/b#3"}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 30, "expr": [{"drop": null}]}}
    ]}"#;

    fn packet(src: &str, dst: &str, protocol: Protocol, port: u16) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            port,
        }
    }

    fn accepted(src: &str, dst: &str, protocol: Protocol, port: u16) -> bool {
        Table::from_json(TABLE_JSON)
            .unwrap()
            .judge(&packet(src, dst, protocol, port))
            .unwrap()
            .accepted
    }

    #[test]
    fn unlisted_addresses_pass_the_forward_chain() {
        assert!(accepted("192.0.2.1", "198.51.100.1", Protocol::Tcp, 80));
        assert!(accepted("2001:db8::1", "2001:db8::2", Protocol::Udp, 53));
    }

    #[test]
    fn named_port_set_is_matched_on_destination_and_port() {
        assert!(accepted("10.1.0.5", "10.1.0.7", Protocol::Tcp, 5432));
        assert!(!accepted("10.1.0.5", "10.1.0.7", Protocol::Tcp, 5433));
        assert!(!accepted("10.1.0.5", "10.1.0.7", Protocol::Udp, 5432));
        assert!(!accepted("10.1.0.6", "10.1.0.7", Protocol::Tcp, 5432));
    }

    #[test]
    fn interval_sets_match_prefixes_ranges_and_single_addresses() {
        for src in ["192.0.2.0", "192.0.2.127", "203.0.113.9", "198.51.100.7"] {
            assert!(accepted(src, "10.1.0.7", Protocol::Udp, 85), "{src}");
        }
        for src in ["192.0.2.128", "203.0.113.10", "198.51.100.8"] {
            assert!(!accepted(src, "10.1.0.7", Protocol::Udp, 85), "{src}");
        }
        assert!(!accepted("192.0.2.1", "10.1.0.7", Protocol::Udp, 91));
        assert!(!accepted("192.0.2.1", "10.1.0.7", Protocol::Tcp, 85));
    }

    #[test]
    fn open_chain_returns_and_egress_chain_is_checked_before_ingress() {
        assert!(accepted("10.1.0.7", "10.1.0.8", Protocol::Tcp, 1));
        assert!(accepted("10.1.0.8", "192.0.2.1", Protocol::Sctp, 1));
        assert!(accepted("10.1.0.8", "192.0.2.1", Protocol::Udp, 1500));
        assert!(accepted("10.1.0.8", "192.0.2.1", Protocol::Udp, 53));
        assert!(!accepted("10.1.0.8", "192.0.2.1", Protocol::Udp, 54));
        assert!(!accepted("10.1.0.8", "192.0.2.1", Protocol::Tcp, 53));
        // Egress allows SCTP, then the destination's ingress chain drops it.
        assert!(!accepted("10.1.0.8", "10.1.0.7", Protocol::Sctp, 5432));
    }

    #[test]
    fn a_trace_names_the_rules_that_decided() {
        let table = Table::from_json(TABLE_JSON).unwrap();
        let d = table
            .judge(&packet("10.1.0.5", "10.1.0.7", Protocol::Tcp, 5432))
            .unwrap();
        assert!(
            d.trace.iter().any(|t| t.contains("\"shop/db#0\": return")),
            "{:?}",
            d.trace
        );
    }

    #[test]
    fn falling_off_a_regular_chain_returns_to_the_caller() {
        let flushed = TABLE_JSON.replace(
            r#"{"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 30, "expr": [{"drop": null}]}}"#,
            r#"{"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 30, "expr": [{"counter": {"packets": 0, "bytes": 0}}]}}"#,
        );
        let table = Table::from_json(&flushed).unwrap();
        let p = packet("10.1.0.8", "192.0.2.1", Protocol::Tcp, 53);
        assert!(table.judge(&p).unwrap().accepted);
    }

    #[test]
    fn a_log_rule_under_a_limit_changes_no_verdict() {
        let logged = TABLE_JSON.replace(
            r#"{"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 30, "expr": [{"drop": null}]}}"#,
            r#"{"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 31, "expr": [{"limit": {"rate": 1000, "burst": 1000, "per": "second"}}, {"log": {"prefix": "eg_x", "group": 1027}}]}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "eg_x", "handle": 30, "expr": [{"drop": null}]}}"#,
        );
        assert_ne!(logged, TABLE_JSON);
        let (plain, logged) = (
            Table::from_json(TABLE_JSON).unwrap(),
            Table::from_json(&logged).unwrap(),
        );
        let p = packet("10.1.0.8", "192.0.2.1", Protocol::Tcp, 53);
        let verdict = |t: &Table| t.judge(&p).unwrap().accepted;
        assert!(!verdict(&plain));
        assert_eq!(verdict(&logged), verdict(&plain));
    }

    #[test]
    fn unknown_expressions_are_errors() {
        let odd = TABLE_JSON.replace(r#"{"drop": null}]}}"#, r#"{"xt": {"name": "x"}}]}}"#);
        assert!(Table::from_json(&odd).is_err());
    }

    #[test]
    fn missing_sets_and_chains_are_errors() {
        let odd = TABLE_JSON.replace("\"@pods4_b\"", "\"@nope\"");
        let table = Table::from_json(&odd).unwrap();
        assert!(table
            .judge(&packet("10.1.0.5", "10.1.0.7", Protocol::Tcp, 5432))
            .is_err());
    }
}
