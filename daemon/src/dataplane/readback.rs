//! `nft -j list table` read into a [`Fingerprint`] while it is parsed: the few fields a
//! fingerprint keeps are borrowed from the text, everything else is skipped, never built.
//! A JSON tree of the whole table took about 12 bytes of heap per byte of text (12 MiB for
//! world L with 100 ClusterNetworkPolicies) at every start's read-back, the daemon's peak.
//!
//! The shapes are nft's: a dump of another shape is an error. Only a `vmap`'s data may be a
//! map's name or, in a rule written by hand, the map itself: that reads as drift, to be
//! repaired, not as an unreadable table.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{DataplaneError, Fingerprint};

/// The fingerprint of the table as `nft -j list table …` prints it.
pub fn fingerprint_from_json(text: &str) -> Result<Fingerprint, DataplaneError> {
    let dump: Dump = serde_json::from_str(text)
        .map_err(|e| DataplaneError::Dump(format!("nft printed unexpected JSON: {e}")))?;
    Ok(dump.nftables.0)
}

#[derive(Deserialize)]
struct Dump {
    #[serde(default)]
    nftables: Objects,
}

/// The dump's objects, folded into the fingerprint one at a time.
#[derive(Default)]
struct Objects(Fingerprint);

impl<'de> Deserialize<'de> for Objects {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fold;
        impl<'de> Visitor<'de> for Fold {
            type Value = Objects;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of nftables objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Objects, A::Error> {
                let mut fp = Fingerprint::default();
                while let Some(object) = seq.next_element::<Object>()? {
                    object.fold_into(&mut fp).map_err(de::Error::custom)?;
                }
                Ok(Objects(fp))
            }
        }
        deserializer.deserialize_seq(Fold)
    }
}

/// One object of the dump, `{"<kind>": {…}}`; kinds a fingerprint does not read are skipped.
enum Object<'a> {
    Chain(ChainObject<'a>),
    Map(MapObject<'a>),
    Set(SetObject<'a>),
    Rule(RuleObject<'a>),
    Other,
}

#[derive(Deserialize)]
struct ChainObject<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct MapObject<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// `["10.0.0.2", {"jump": {"target": "in_…"}}]` each.
    #[serde(borrow, default)]
    elem: Vec<(Cow<'a, str>, Jump<'a>)>,
}

#[derive(Deserialize)]
struct Jump<'a> {
    #[serde(borrow)]
    jump: Target<'a>,
}

#[derive(Deserialize)]
struct Target<'a> {
    #[serde(borrow)]
    target: Cow<'a, str>,
}

#[derive(Deserialize)]
struct SetObject<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    flags: Vec<Cow<'a, str>>,
    #[serde(default)]
    elem: Count,
}

#[derive(Deserialize)]
struct RuleObject<'a> {
    #[serde(borrow)]
    chain: Cow<'a, str>,
    #[serde(borrow, default)]
    comment: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    expr: LastExpression<'a>,
}

impl Object<'_> {
    fn fold_into(self, fp: &mut Fingerprint) -> Result<(), String> {
        match self {
            Object::Chain(chain) => {
                fp.chains.entry(chain.name.into_owned()).or_default();
            }
            Object::Map(map) => {
                let entries = fp.maps.entry(map.name.into_owned()).or_default();
                for (addr, jump) in map.elem {
                    let addr: IpAddr = addr
                        .parse()
                        .map_err(|_| format!("a map element keyed {addr:?}, not an address"))?;
                    entries.insert(addr, jump.jump.target.into_owned());
                }
            }
            Object::Set(set) => {
                let interval = set.flags.iter().any(|flag| flag == "interval");
                let count = (!interval).then_some(set.elem.0);
                fp.sets.insert(set.name.into_owned(), count);
            }
            Object::Rule(rule) => {
                // A rule's comment if it has one, else its final verdict (`vmap @map` for
                // dispatch).
                let print = match (rule.comment, rule.expr.0) {
                    (Some(comment), _) => comment.into_owned(),
                    (None, Some(Expression::Vmap(data))) => {
                        format!("vmap {}", data.as_deref().unwrap_or("?"))
                    }
                    (None, Some(Expression::Other(kind))) => kind.into_owned(),
                    (None, None) => "?".to_string(),
                };
                fp.chains
                    .entry(rule.chain.into_owned())
                    .or_default()
                    .push(print);
            }
            Object::Other => {}
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Kind;
        impl<'de> Visitor<'de> for Kind {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an nftables object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let object = match map.next_key::<Cow<str>>()?.as_deref() {
                    Some("chain") => Object::Chain(map.next_value()?),
                    Some("map") => Object::Map(map.next_value()?),
                    Some("set") => Object::Set(map.next_value()?),
                    Some("rule") => Object::Rule(map.next_value()?),
                    Some(_) => {
                        map.next_value::<IgnoredAny>()?;
                        Object::Other
                    }
                    None => Object::Other,
                };
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(object)
            }
        }
        deserializer.deserialize_map(Kind)
    }
}

/// How many elements a set's `elem` lists.
#[derive(Default)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Counting;
        impl<'de> Visitor<'de> for Counting {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of set elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        deserializer.deserialize_seq(Counting)
    }
}

/// A rule's last expression: a `vmap` with its data, or the kind of any other.
enum Expression<'a> {
    Vmap(Option<Cow<'a, str>>),
    Other(Cow<'a, str>),
}

#[derive(Default)]
struct LastExpression<'a>(Option<Expression<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for LastExpression<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Last;
        impl<'de> Visitor<'de> for Last {
            type Value = LastExpression<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rule's expressions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut last = None;
                while let Some(expression) = seq.next_element::<OneExpression>()? {
                    last = expression.0;
                }
                Ok(LastExpression(last))
            }
        }
        deserializer.deserialize_seq(Last)
    }
}

/// One expression, `{"<kind>": …}`, summarised.
struct OneExpression<'a>(Option<Expression<'a>>);

#[derive(Deserialize)]
struct VmapBody<'a> {
    #[serde(borrow, default)]
    data: Lenient<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for OneExpression<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Summary;
        impl<'de> Visitor<'de> for Summary {
            type Value = OneExpression<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an expression")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let expression = match map.next_key::<Cow<str>>()? {
                    Some(kind) if kind == "vmap" => {
                        Some(Expression::Vmap(map.next_value::<VmapBody>()?.data.0))
                    }
                    Some(kind) => {
                        map.next_value::<IgnoredAny>()?;
                        Some(Expression::Other(kind))
                    }
                    None => None,
                };
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(OneExpression(expression))
            }
        }
        deserializer.deserialize_map(Summary)
    }
}

/// A string, or `None` for a value of another shape (skipped): a `vmap`'s data is a map's
/// name, or the map itself when a rule was written by hand.
#[derive(Default)]
struct Lenient<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyShape;
        impl<'de> Visitor<'de> for AnyShape {
            type Value = Lenient<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Borrowed(text))))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Owned(text.to_string()))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
        }
        deserializer.deserialize_any(AnyShape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(objects: &str) -> Result<Fingerprint, DataplaneError> {
        fingerprint_from_json(&format!(
            r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6"}}}}, {objects}]}}"#
        ))
    }

    #[test]
    fn a_drifted_table_reads_back_as_different() {
        for (applied, drifted) in [
            (
                include_str!("../../../fuzz/corpus/nft/inet.json"),
                include_str!("../../../fuzz/corpus/nft/inet-drifted.json"),
            ),
            (
                include_str!("../../../fuzz/corpus/nft/bridge.json"),
                include_str!("../../../fuzz/corpus/nft/bridge-drifted.json"),
            ),
        ] {
            let applied = fingerprint_from_json(applied).unwrap();
            let drifted = fingerprint_from_json(drifted).unwrap();
            assert!(!applied.differences(&drifted).is_empty());
        }
    }

    #[test]
    fn a_rule_reads_as_its_comment_or_its_last_expression() {
        let fp = dump(
            r##"{"chain": {"name": "forward"}},
            {"rule": {"chain": "forward", "comment": "x/\"a\"#0", "expr": [{"accept": null}]}},
            {"rule": {"chain": "forward", "expr": [{"match": {}}, {"vmap": {"key": {}, "data": "@egress4"}}]}},
            {"rule": {"chain": "forward", "expr": [{"vmap": {"key": {}, "data": {"set": [["10.0.0.1", {"accept": null}]]}}}]}},
            {"rule": {"chain": "in_a", "expr": [{"counter": {"packets": 0}}, {"drop": null}]}},
            {"rule": {"chain": "in_a", "expr": []}}"##,
        )
        .unwrap();
        assert_eq!(
            fp.chains["forward"],
            ["x/\"a\"#0", "vmap @egress4", "vmap ?"],
            "a hand-written anonymous map reads as unknown data, not as an error"
        );
        assert_eq!(fp.chains["in_a"], ["drop", "?"]);
    }

    #[test]
    fn sets_read_as_their_element_counts_and_maps_as_their_entries() {
        let fp = dump(
            r#"{"set": {"name": "pods4_a", "elem": ["10.0.0.1", "10.0.0.2"]}},
            {"set": {"name": "cidr4_b", "flags": ["interval"], "elem": [{"prefix": {}}]}},
            {"set": {"name": "port4_c"}},
            {"map": {"name": "ingress4", "elem": [["10.0.0.1", {"jump": {"target": "open"}}]]}}"#,
        )
        .unwrap();
        let sets: Vec<(&str, Option<usize>)> =
            fp.sets.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            sets,
            [
                ("cidr4_b", None),
                ("pods4_a", Some(2)),
                ("port4_c", Some(0))
            ]
        );
        assert_eq!(
            fp.maps["ingress4"][&"10.0.0.1".parse::<IpAddr>().unwrap()],
            "open"
        );
    }

    #[test]
    fn a_dump_of_another_shape_is_one_error_naming_it() {
        let bad_key = dump(
            r#"{"map": {"name": "ingress4", "elem": [["nope", {"jump": {"target": "open"}}]]}}"#,
        );
        assert!(
            matches!(&bad_key, Err(DataplaneError::Dump(why)) if why.contains("\"nope\"")),
            "{bad_key:?}"
        );
        let nameless = dump(r#"{"set": {"elem": []}}"#);
        assert!(
            matches!(&nameless, Err(DataplaneError::Dump(why)) if why.contains("name")),
            "{nameless:?}"
        );
        assert!(fingerprint_from_json("not json").is_err());
    }
}
