//! One CNI config document, as JSON in and JSON out: check a conflist the way libcni and
//! podwall will read it, add or drop the podwall entry, turn a single-plugin config into a
//! conflist. Pure: no file names, no I/O. A problem is returned as text, and the plan names
//! the file it came from (`InstallError::Malformed`).

use serde_json::{Map, Value};

use crate::cni::SUPPORTED_VERSIONS;

/// The version a single-plugin config without a usable `cniVersion` gets when it becomes a
/// conflist: the oldest with chaining (`prevResult`), which every `bridge` that chains speaks.
pub const CONVERTED_VERSION: &str = "0.3.1";

/// A config document: a JSON object, keys in file order.
pub type Object = Map<String, Value>;

/// The default podwall entry of a conflist.
pub fn default_entry() -> Value {
    serde_json::json!({ "type": "podwall" })
}

/// A podwall entry given as JSON text: an object whose `type` is `podwall`.
pub fn entry_from_text(text: &str) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("--entry is not JSON: {e}"))?;
    if value.get("type").and_then(Value::as_str) != Some("podwall") {
        return Err("--entry must be a JSON object with \"type\": \"podwall\"".into());
    }
    Ok(value)
}

/// A config file as podwall writes it: two-space JSON and a final newline.
pub fn to_bytes(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("a JSON value serialises");
    bytes.push(b'\n');
    bytes
}

fn is_podwall(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some("podwall")
}

/// A config file's content as a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Object, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn string_field<'a>(map: &'a Object, key: &str) -> Result<&'a str, String> {
    match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None => Err(format!("no \"{key}\"")),
        Some(_) => Err(format!("\"{key}\" is not a string")),
    }
}

/// Check a conflist the way libcni and podwall will read it.
pub fn check_list(list: &Object) -> Result<(), String> {
    string_field(list, "name")?;
    let version = string_field(list, "cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(format!(
            "cniVersion {version:?} cannot chain podwall (podwall speaks {})",
            SUPPORTED_VERSIONS.join(", ")
        ));
    }
    let plugins = match list.get("plugins") {
        Some(Value::Array(plugins)) if !plugins.is_empty() => plugins,
        Some(Value::Array(_)) => return Err("\"plugins\" is empty".into()),
        Some(_) => return Err("\"plugins\" is not a list".into()),
        None => return Err("no \"plugins\" list".into()),
    };
    for (i, plugin) in plugins.iter().enumerate() {
        let obj = plugin
            .as_object()
            .ok_or_else(|| format!("plugins[{i}] is not an object"))?;
        string_field(obj, "type").map_err(|_| format!("plugins[{i}] has no \"type\""))?;
    }
    Ok(())
}

/// Whether podwall is already one of the list's plugins.
pub fn has_podwall(list: &Object) -> bool {
    list.get("plugins")
        .and_then(Value::as_array)
        .is_some_and(|plugins| plugins.iter().any(is_podwall))
}

/// Whether the list has no plugins left (after podwall was taken out of it).
pub fn has_no_plugins(list: &Object) -> bool {
    list.get("plugins")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
}

/// The list with `entry` after its other plugins.
pub fn append(mut list: Object, entry: &Value) -> Object {
    if let Some(Value::Array(plugins)) = list.get_mut("plugins") {
        plugins.push(entry.clone());
    }
    list
}

/// The list with every podwall entry taken out, everything else in order.
pub fn without_podwall(mut list: Object) -> Object {
    if let Some(Value::Array(plugins)) = list.get_mut("plugins") {
        plugins.retain(|p| !is_podwall(p));
    }
    list
}

/// A single-plugin config as a conflist of that plugin (its `name` and `cniVersion` moved to
/// the list, as libcni does), without podwall yet.
pub fn conf_to_list(conf: &Object) -> Result<Object, String> {
    if conf.contains_key("plugins") && !conf.contains_key("type") {
        return Err("has a \"plugins\" list, which only a .conflist may have: rename it".into());
    }
    string_field(conf, "type")?;
    let name = string_field(conf, "name")?;
    let version = match conf.get("cniVersion") {
        None => CONVERTED_VERSION,
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => v.as_str(),
        // 0.1.0 and 0.2.0 have no chaining: the oldest version that has it.
        Some(Value::String(v))
            if v.is_empty() || v.starts_with("0.1.") || v.starts_with("0.2.") =>
        {
            CONVERTED_VERSION
        }
        Some(v) => {
            return Err(format!(
                "cniVersion {v} cannot chain podwall (podwall speaks {})",
                SUPPORTED_VERSIONS.join(", ")
            ))
        }
    };
    let mut plugin = conf.clone();
    plugin.shift_remove("cniVersion");
    plugin.shift_remove("name");
    let mut list = Object::new();
    list.insert("cniVersion".into(), version.into());
    list.insert("name".into(), name.into());
    list.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Object {
        parse_object(text.as_bytes()).unwrap()
    }

    fn types(list: &Object) -> Vec<&str> {
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn only_a_json_object_parses() {
        assert!(parse_object(br#"{"a":1}"#).is_ok());
        assert_eq!(parse_object(b"[1]"), Err("not a JSON object".into()));
        assert!(parse_object(b"{not json")
            .unwrap_err()
            .starts_with("not JSON: "));
    }

    #[test]
    fn check_list_names_each_problem() {
        let cases = [
            (r#"{"cniVersion":"1.0.0","plugins":[{"type":"b"}]}"#, "no \"name\""),
            (r#"{"name":"n","plugins":[{"type":"b"}]}"#, "no \"cniVersion\""),
            (
                r#"{"name":1,"cniVersion":"1.0.0","plugins":[{"type":"b"}]}"#,
                "\"name\" is not a string",
            ),
            (
                r#"{"name":"","cniVersion":"1.0.0","plugins":[{"type":"b"}]}"#,
                "no \"name\"",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","plugins":[]}"#,
                "\"plugins\" is empty",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","plugins":{}}"#,
                "\"plugins\" is not a list",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"b"},3]}"#,
                "plugins[1] is not an object",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":""}]}"#,
                "plugins[0] has no \"type\"",
            ),
            (
                r#"{"name":"n","cniVersion":"9.9.9","plugins":[{"type":"b"}]}"#,
                "cniVersion \"9.9.9\" cannot chain podwall (podwall speaks 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)",
            ),
        ];
        for (text, problem) in cases {
            assert_eq!(
                check_list(&object(text)),
                Err(problem.to_string()),
                "{text}"
            );
        }
        let good = object(r#"{"name":"n","cniVersion":"0.3.0","plugins":[{"type":"b"}]}"#);
        assert_eq!(check_list(&good), Ok(()));
    }

    #[test]
    fn append_and_without_podwall_keep_the_other_plugins_in_order() {
        let list = object(r#"{"plugins":[{"type":"b"},{"type":"podwall"},{"type":"p"}],"z":1}"#);
        assert!(has_podwall(&list));
        let stripped = without_podwall(list);
        assert!(!has_podwall(&stripped));
        assert_eq!(types(&stripped), ["b", "p"]);
        let again = append(stripped, &default_entry());
        assert_eq!(types(&again), ["b", "p", "podwall"]);
        let keys: Vec<&String> = again.keys().collect();
        assert_eq!(keys, ["plugins", "z"]);
    }

    #[test]
    fn a_list_of_only_podwall_has_no_plugins_once_stripped() {
        let list = without_podwall(object(r#"{"plugins":[{"type":"podwall"}]}"#));
        assert!(has_no_plugins(&list));
        assert!(!has_no_plugins(&object(r#"{"plugins":[{"type":"b"}]}"#)));
        assert!(!has_no_plugins(&object(r#"{"name":"n"}"#)));
    }

    #[test]
    fn conf_version_becomes_one_that_chains() {
        let version = |v: &str| -> Result<Value, String> {
            let conf = object(&format!(r#"{{"name":"n","type":"b"{v}}}"#));
            conf_to_list(&conf).map(|list| list["cniVersion"].clone())
        };
        assert_eq!(version(""), Ok(CONVERTED_VERSION.into()));
        assert_eq!(version(r#","cniVersion":"""#), Ok(CONVERTED_VERSION.into()));
        assert_eq!(
            version(r#","cniVersion":"0.1.0""#),
            Ok(CONVERTED_VERSION.into())
        );
        assert_eq!(
            version(r#","cniVersion":"0.2.0""#),
            Ok(CONVERTED_VERSION.into())
        );
        assert_eq!(version(r#","cniVersion":"1.1.0""#), Ok("1.1.0".into()));
        assert!(version(r#","cniVersion":"9.9.9""#)
            .unwrap_err()
            .starts_with("cniVersion \"9.9.9\" cannot chain podwall"));
        assert!(version(r#","cniVersion":5"#)
            .unwrap_err()
            .starts_with("cniVersion 5 cannot chain podwall"));
    }

    #[test]
    fn conf_moves_name_and_version_to_the_list() {
        let conf = object(r#"{"cniVersion":"0.4.0","name":"n","type":"b","x":[1]}"#);
        let list = conf_to_list(&conf).unwrap();
        assert_eq!(
            Value::Object(list),
            serde_json::json!({"cniVersion":"0.4.0","name":"n","plugins":[{"type":"b","x":[1]}]})
        );
        assert_eq!(
            conf_to_list(&object(r#"{"name":"n"}"#)),
            Err("no \"type\"".into())
        );
    }

    #[test]
    fn entry_must_be_a_podwall_object() {
        assert_eq!(
            entry_from_text(r#"{"type":"podwall","x":1}"#),
            Ok(serde_json::json!({"type":"podwall","x":1}))
        );
        assert!(entry_from_text("{")
            .unwrap_err()
            .starts_with("--entry is not JSON: "));
        assert_eq!(
            entry_from_text(r#"["podwall"]"#),
            Err("--entry must be a JSON object with \"type\": \"podwall\"".into())
        );
    }

    #[test]
    fn written_configs_are_pretty_with_a_final_newline() {
        assert_eq!(
            to_bytes(&serde_json::json!({"a":[1]})),
            b"{\n  \"a\": [\n    1\n  ]\n}\n"
        );
    }
}
