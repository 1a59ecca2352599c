//! Label and field selectors as the API server parses them from `labelSelector` and
//! `fieldSelector` query parameters, matched against objects held as JSON.
//!
//! Label selectors take the full string syntax (`k=v`, `k==v`, `k!=v`, `k in (a,b)`,
//! `k notin (a,b)`, `k`, `!k`). Field selectors take `=`, `==` and `!=` on the fields the real
//! server supports for each kind; any other field is refused like the real server does, so a
//! daemon asking for an unsupported field fails here as it would in a cluster.

use serde_json::Value;

use super::kind::Kind;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    /// Parse the query-string form; the error is the message the API server returns (400).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_label_req(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object whose `metadata.labels` are `obj`'s matches.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            // `!=` also matches objects without the label, as in Kubernetes.
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Split on commas that are not inside `( … )`, since set values are comma separated too.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_label_req(part: &str) -> Result<LabelReq, String> {
    let bad = || format!("unable to parse requirement: {part:?}");
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelReq::NotExists(valid_key(key.trim()).ok_or_else(bad)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelReq::NotEq(
            valid_key(k.trim()).ok_or_else(bad)?,
            v.trim().to_string(),
        ));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(LabelReq::Eq(
            valid_key(k.trim()).ok_or_else(bad)?,
            v.trim().to_string(),
        ));
    }
    // Set-based: `key in (a, b)` / `key notin (a, b)`; the key is the first word.
    let mut words = part.splitn(2, char::is_whitespace);
    let key = valid_key(words.next().unwrap_or("").trim()).ok_or_else(bad)?;
    let rest = words.next().unwrap_or("").trim();
    if rest.is_empty() {
        return Ok(LabelReq::Exists(key));
    }
    let (op, values) = if let Some(v) = rest.strip_prefix("notin") {
        ("notin", v)
    } else if let Some(v) = rest.strip_prefix("in") {
        ("in", v)
    } else {
        return Err(bad());
    };
    let values = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(bad)?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(format!(
            "for 'in', 'notin' operators, values set can't be empty: {part:?}"
        ));
    }
    Ok(if op == "in" {
        LabelReq::In(key, values)
    } else {
        LabelReq::NotIn(key, values)
    })
}

fn valid_key(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| key.to_string())
}

/// A parsed `fieldSelector`: every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse for `kind`; fields the real server does not index for that kind are refused with
    /// its message (`field label not supported: …`).
    pub fn parse(text: &str, kind: Kind) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !kind.field_labels().contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(field, equal, value)| (&field_value(obj, field) == value) == *equal)
    }
}

/// The value the server compares: a missing field is the empty string (an unscheduled pod has
/// `spec.nodeName=""`), booleans are `true`/`false`.
fn field_value(obj: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // spec.hostNetwork defaults to false when absent.
        None if field == "spec.hostNetwork" => "false".to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "shop", "labels": labels},
               "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn every_label_operator_matches_like_kubernetes() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app in (web, db)",
            "app notin (db)",
            "missing notin (db)",
            "app",
            "!missing",
            "app=web,tier in (front),!missing",
        ];
        for sel in yes {
            assert!(LabelSelector::parse(sel).unwrap().matches(&p), "{sel}");
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web,db)",
            "missing",
            "!app",
        ];
        for sel in no {
            assert!(!LabelSelector::parse(sel).unwrap().matches(&p), "{sel}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for sel in ["app in web", "a b c", "app in ()", "=x"] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn field_selector_compares_supported_fields_and_refuses_others() {
        let p = pod(json!({}));
        let sel = |s| FieldSelector::parse(s, Kind::Pod).unwrap().matches(&p);
        assert!(sel("spec.nodeName=n1"));
        assert!(sel("spec.nodeName==n1,metadata.namespace=shop"));
        assert!(!sel("spec.nodeName=n2"));
        assert!(sel("metadata.name!=b"));
        assert!(sel("spec.hostNetwork=false"));
        assert!(
            sel("status.phase="),
            "absent fields compare as the empty string"
        );
        let err = FieldSelector::parse("metadata.labels=x", Kind::Pod).unwrap_err();
        assert_eq!(err, "field label not supported: metadata.labels");
        assert!(FieldSelector::parse("spec.nodeName=n1", Kind::NetworkPolicy).is_err());
    }
}
