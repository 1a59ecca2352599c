//! Label selectors: matchLabels and matchExpressions, in one canonical form, and the
//! [`Labels`] they match.
//!
//! matchLabels entries become `In` requirements with one value, and the requirements are
//! kept sorted and deduplicated, so two selectors that mean the same thing compare (and
//! hash) equal. That is what lets the compiler share one set between identical peers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

use crate::error::{Errors, Problem};

/// Labels of a pod or namespace: a map that its copies share. A clone is a reference count,
/// so the daemon's copies of the cluster hold each pod's labels once, and an interned set
/// (`model::Interner`) once for all the pods that carry it (the replicas of a workload).
/// Read it as the map it derefs to; [`insert`](Labels::insert) copies it first if shared.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<BTreeMap<String, String>>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels::default()
    }

    /// Sets label `key`, returning its old value. Other copies keep the labels they had.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        Arc::make_mut(&mut self.0).insert(key, value)
    }

    /// Whether no copy but this one exists (an interner's entry nobody uses any more).
    pub(crate) fn is_unique(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

impl Deref for Labels {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Labels(Arc::new(map))
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Labels {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Labels(Arc::new(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Labels::from)
    }
}

/// One requirement; a selector matches when all of them do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Requirement {
    /// The label is present with one of the values.
    In {
        key: String,
        values: BTreeSet<String>,
    },
    /// The label is absent or has none of the values.
    NotIn {
        key: String,
        values: BTreeSet<String>,
    },
    /// The label is present, with any value.
    Exists { key: String },
    /// The label is absent.
    DoesNotExist { key: String },
}

impl Requirement {
    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn { key, values } => {
                labels.get(key).is_none_or(|v| !values.contains(v))
            }
            Requirement::Exists { key } => labels.contains_key(key),
            Requirement::DoesNotExist { key } => !labels.contains_key(key),
        }
    }
}

/// A label selector; the empty one matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Selector {
    requirements: BTreeSet<Requirement>,
}

impl Selector {
    /// The empty selector, which matches every object.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// A selector from requirements.
    pub fn new(requirements: impl IntoIterator<Item = Requirement>) -> Self {
        Selector {
            requirements: requirements.into_iter().collect(),
        }
    }

    /// The equivalent of `matchLabels` alone.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Selector::new(labels.into_iter().map(|(k, v)| Requirement::In {
            key: k.to_string(),
            values: BTreeSet::from([v.to_string()]),
        }))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this is the empty selector.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted.
    pub fn requirements(&self) -> impl Iterator<Item = &Requirement> {
        self.requirements.iter()
    }

    /// Converts an API selector; problems are pushed to `errs` under `field` and the
    /// selector is then `None`.
    pub(crate) fn from_api(sel: &LabelSelector, field: &str, errs: &mut Errors) -> Option<Self> {
        let before = errs.len();
        let mut requirements: BTreeSet<Requirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In {
                key: k.clone(),
                values: BTreeSet::from([v.clone()]),
            })
            .collect();
        for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
            let field = format!("{field}.matchExpressions[{i}]");
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let key = expr.key.clone();
            if key.is_empty() {
                errs.push(format!("{field}.key"), Problem::Missing);
                continue;
            }
            let op = expr.operator.as_str();
            let requirement = match op {
                "In" | "NotIn" if values.is_empty() => {
                    errs.push(
                        format!("{field}.values"),
                        Problem::OperatorNeedsValues(op.to_string()),
                    );
                    continue;
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    errs.push(
                        format!("{field}.values"),
                        Problem::OperatorTakesNoValues(op.to_string()),
                    );
                    continue;
                }
                "In" => Requirement::In { key, values },
                "NotIn" => Requirement::NotIn { key, values },
                "Exists" => Requirement::Exists { key },
                "DoesNotExist" => Requirement::DoesNotExist { key },
                other => {
                    errs.push(
                        format!("{field}.operator"),
                        Problem::UnknownOperator(other.to_string()),
                    );
                    continue;
                }
            };
            requirements.insert(requirement);
        }
        (errs.len() == before).then_some(Selector { requirements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn values(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_label_set_to_a_shared_copy_leaves_the_other_copies_as_they_were() {
        let original = labels(&[("app", "web")]);
        let mut changed = original.clone();
        assert!(
            std::ptr::eq(&*original, &*changed),
            "a clone shares the map"
        );
        changed.insert("tier".to_string(), "front".to_string());
        assert_eq!(original, labels(&[("app", "web")]));
        assert_eq!(changed, labels(&[("app", "web"), ("tier", "front")]));
        assert_eq!(
            serde_json::to_string(&changed).unwrap(),
            r#"{"app":"web","tier":"front"}"#,
            "stored as the plain map it was"
        );
    }

    /// (requirement, labels, expected match, what it shows)
    type Case = (
        Requirement,
        &'static [(&'static str, &'static str)],
        bool,
        &'static str,
    );

    #[test]
    fn requirements_match_as_kubernetes_defines_them() {
        let key = || "app".to_string();
        let cases: Vec<Case> = vec![
            (
                Requirement::In {
                    key: key(),
                    values: values(&["a", "b"]),
                },
                &[("app", "b")],
                true,
                "In with a listed value",
            ),
            (
                Requirement::In {
                    key: key(),
                    values: values(&["a"]),
                },
                &[("app", "c")],
                false,
                "In with another value",
            ),
            (
                Requirement::In {
                    key: key(),
                    values: values(&["a"]),
                },
                &[],
                false,
                "In with the label absent",
            ),
            (
                Requirement::NotIn {
                    key: key(),
                    values: values(&["a"]),
                },
                &[("app", "c")],
                true,
                "NotIn with another value",
            ),
            (
                Requirement::NotIn {
                    key: key(),
                    values: values(&["a"]),
                },
                &[("app", "a")],
                false,
                "NotIn with a listed value",
            ),
            (
                Requirement::NotIn {
                    key: key(),
                    values: values(&["a"]),
                },
                &[],
                true,
                "NotIn with the label absent matches",
            ),
            (
                Requirement::Exists { key: key() },
                &[("app", "")],
                true,
                "Exists with an empty value",
            ),
            (
                Requirement::Exists { key: key() },
                &[("other", "x")],
                false,
                "Exists with the label absent",
            ),
            (
                Requirement::DoesNotExist { key: key() },
                &[],
                true,
                "DoesNotExist with the label absent",
            ),
            (
                Requirement::DoesNotExist { key: key() },
                &[("app", "x")],
                false,
                "DoesNotExist with the label present",
            ),
        ];
        for (req, l, expected, what) in cases {
            assert_eq!(req.matches(&labels(l)), expected, "{what}");
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::everything().matches(&labels(&[])));
        assert!(Selector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn all_requirements_must_hold() {
        let sel = Selector::new([
            Requirement::In {
                key: "app".into(),
                values: values(&["web"]),
            },
            Requirement::DoesNotExist {
                key: "canary".into(),
            },
        ]);
        assert!(sel.matches(&labels(&[("app", "web")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("canary", "1")])));
        assert!(!sel.matches(&labels(&[("app", "db")])));
    }

    #[test]
    fn match_labels_and_equivalent_expression_are_the_same_selector() {
        let api_labels = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: None,
        };
        let api_expr: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]
        }))
        .unwrap();
        let mut errs = Errors::new("networkpolicy", "x/p".into());
        let a = Selector::from_api(&api_labels, "spec.podSelector", &mut errs).unwrap();
        let b = Selector::from_api(&api_expr, "spec.podSelector", &mut errs).unwrap();
        assert_eq!(a, b);
        assert!(errs.is_empty());
    }

    #[test]
    fn malformed_expressions_are_reported_with_their_field() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [
                {"key": "app", "operator": "Equals", "values": ["web"]},
                {"key": "app", "operator": "In"},
                {"key": "app", "operator": "Exists", "values": ["x"]}
            ]
        }))
        .unwrap();
        let mut errs = Errors::new("networkpolicy", "x/p".into());
        assert!(Selector::from_api(&sel, "spec.podSelector", &mut errs).is_none());
        let errs = errs.into_vec();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.podSelector.matchExpressions[0].operator",
                "spec.podSelector.matchExpressions[1].values",
                "spec.podSelector.matchExpressions[2].values"
            ]
        );
        assert_eq!(
            errs[0].to_string(),
            "networkpolicy x/p: spec.podSelector.matchExpressions[0].operator: unknown operator \"Equals\", expected In, NotIn, Exists or DoesNotExist"
        );
    }
}
