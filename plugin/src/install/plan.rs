//! What install and uninstall do to a CNI config directory, decided over its files as values:
//! which file the runtime uses, which files to write, rename or remove, and why nothing may
//! change. Pure: the caller reads the directory and carries out the `Op`s.

use std::collections::BTreeMap;

use serde_json::Value;

use super::conflist::{
    append, check_list, conf_to_list, has_no_plugins, has_podwall, parse_object, to_bytes,
    without_podwall,
};

/// Suffix of the original a config file had before podwall was chained into it.
pub const BACKUP_SUFFIX: &str = ".podwall-orig";

/// Extensions libcni loads from the config directory.
const CONFIG_EXTENSIONS: [&str; 3] = [".conf", ".conflist", ".json"];

/// The regular files of a CNI config directory that matter here: name → content.
pub type Dir = BTreeMap<String, Vec<u8>>;

/// One change to the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `bytes` to `name` atomically (temp file in the same directory, then rename).
    Write { name: String, bytes: Vec<u8> },
    /// Rename `from` to `to` within the directory.
    Rename { from: String, to: String },
    /// Remove `name`.
    Remove { name: String },
}

/// Why nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// A config file podwall would have to change cannot be read as a CNI config.
    #[error("{file}: {problem}")]
    Malformed { file: String, problem: String },
    /// The directory has no config and no default was given.
    #[error("no CNI config (*.conf, *.conflist, *.json) and no default conflist given")]
    NoConfig,
    /// The result would not be the config the runtime uses.
    #[error("{written} would not be the runtime's config: {first} sorts before it")]
    Shadowed { written: String, first: String },
}

/// A problem the conflist checks found, with the file it is in.
fn malformed(file: &str, problem: impl Into<String>) -> InstallError {
    InstallError::Malformed {
        file: file.to_string(),
        problem: problem.into(),
    }
}

/// Whether libcni would load `name` as a network config.
pub fn is_config(name: &str) -> bool {
    CONFIG_EXTENSIONS
        .iter()
        .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// The config the runtime uses: the first config file by byte order of the names.
pub fn primary(dir: &Dir) -> Option<&str> {
    dir.keys().map(String::as_str).find(|n| is_config(n))
}

/// `10-kuberouter.conf` → `10-kuberouter.conflist`.
fn list_name(conf_name: &str) -> String {
    let stem = conf_name
        .rsplit_once('.')
        .map_or(conf_name, |(stem, _)| stem);
    format!("{stem}.conflist")
}

/// What `podwall install` does to `dir`. `default` is the conflist to install when the
/// directory has no config (its file name and content); `entry` is the podwall entry.
pub fn plan_install(
    dir: &Dir,
    default: Option<(&str, &[u8])>,
    entry: &Value,
) -> Result<Vec<Op>, InstallError> {
    // `written` is the config the runtime must use afterwards; it is a config file, so the
    // shadowing check below always finds a first one.
    let (written, ops) = match primary(dir) {
        None => {
            let (name, bytes) = default.ok_or(InstallError::NoConfig)?;
            let list = parse_object(bytes).map_err(|p| malformed(name, p))?;
            check_list(&list).map_err(|p| malformed(name, p))?;
            // `is_config` too: libcni skips a bare `.conflist`, so nothing would be chained.
            if !(name.ends_with(".conflist") && is_config(name)) {
                return Err(malformed(
                    name,
                    "a default conflist must be named *.conflist",
                ));
            }
            let bytes = if has_podwall(&list) {
                bytes.to_vec()
            } else {
                to_bytes(&Value::Object(append(list, entry)))
            };
            let name = name.to_string();
            (name.clone(), vec![Op::Write { name, bytes }])
        }
        Some(file) if file.ends_with(".conflist") => {
            let bytes = &dir[file];
            let list = parse_object(bytes).map_err(|p| malformed(file, p))?;
            check_list(&list).map_err(|p| malformed(file, p))?;
            if has_podwall(&list) {
                return Ok(Vec::new());
            }
            let ops = vec![
                Op::Write {
                    name: format!("{file}{BACKUP_SUFFIX}"),
                    bytes: bytes.clone(),
                },
                Op::Write {
                    name: file.to_string(),
                    bytes: to_bytes(&Value::Object(append(list, entry))),
                },
            ];
            (file.to_string(), ops)
        }
        Some(file) => {
            let conf = parse_object(&dir[file]).map_err(|p| malformed(file, p))?;
            let list = append(conf_to_list(&conf).map_err(|p| malformed(file, p))?, entry);
            let name = list_name(file);
            // The conflist goes in first: until the original is renamed away the runtime
            // keeps using it, so there is no moment without a config.
            let ops = vec![
                Op::Write {
                    name: name.clone(),
                    bytes: to_bytes(&Value::Object(list)),
                },
                Op::Rename {
                    from: file.to_string(),
                    to: format!("{file}{BACKUP_SUFFIX}"),
                },
            ];
            (name, ops)
        }
    };
    match primary(&simulate(dir, &ops)) {
        Some(first) if first != written => Err(InstallError::Shadowed {
            written,
            first: first.to_string(),
        }),
        _ => Ok(ops),
    }
}

/// What `podwall uninstall` does to `dir`: every conflist with podwall in it loses it, and
/// goes back to its original bytes where it has not changed since install. Files that are
/// not readable configs are none of podwall's business and are skipped.
pub fn plan_uninstall(dir: &Dir) -> Vec<Op> {
    let mut ops = Vec::new();
    for (file, bytes) in dir {
        if !file.ends_with(".conflist") {
            continue;
        }
        let Ok(list) = parse_object(bytes) else {
            continue;
        };
        if !has_podwall(&list) {
            continue;
        }
        let stripped = without_podwall(list);
        let same_backup = format!("{file}{BACKUP_SUFFIX}");
        let stem = file.trim_end_matches(".conflist");
        let converted_backup = [".conf", ".json"]
            .iter()
            .find_map(|ext| dir.get_key_value(&format!("{stem}{ext}{BACKUP_SUFFIX}")));
        let rewrite = |ops: &mut Vec<Op>| {
            if has_no_plugins(&stripped) {
                ops.push(Op::Remove { name: file.clone() });
            } else {
                ops.push(Op::Write {
                    name: file.clone(),
                    bytes: to_bytes(&Value::Object(stripped.clone())),
                });
            }
        };
        if let Some(backup) = dir.get(&same_backup) {
            match parse_object(backup) {
                Ok(original) if original == stripped => ops.push(Op::Rename {
                    from: same_backup,
                    to: file.clone(),
                }),
                // Edited since install: keep the edits; the backup describes nothing now.
                _ => {
                    rewrite(&mut ops);
                    ops.push(Op::Remove { name: same_backup });
                }
            }
        } else if let Some((backup, original_bytes)) = converted_backup {
            let original = backup.trim_end_matches(BACKUP_SUFFIX).to_string();
            let unchanged = parse_object(original_bytes)
                .and_then(|conf| conf_to_list(&conf))
                .is_ok_and(|list| list == stripped);
            if unchanged {
                // The original comes back first: it sorts before the conflist, so the runtime
                // switches to it at once and never sees the directory empty.
                ops.push(Op::Rename {
                    from: backup.clone(),
                    to: original,
                });
                ops.push(Op::Remove { name: file.clone() });
            } else {
                rewrite(&mut ops);
                ops.push(Op::Remove {
                    name: backup.clone(),
                });
            }
        } else {
            rewrite(&mut ops);
        }
    }
    ops
}

/// `dir` after `ops`, for checking a plan before it touches anything.
pub fn simulate(dir: &Dir, ops: &[Op]) -> Dir {
    let mut dir = dir.clone();
    for op in ops {
        match op {
            Op::Write { name, bytes } => {
                dir.insert(name.clone(), bytes.clone());
            }
            Op::Rename { from, to } => {
                if let Some(bytes) = dir.remove(from) {
                    dir.insert(to.clone(), bytes);
                }
            }
            Op::Remove { name } => {
                dir.remove(name);
            }
        }
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::conflist::{default_entry, CONVERTED_VERSION};

    fn dir(files: &[(&str, &str)]) -> Dir {
        files
            .iter()
            .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    fn text(dir: &Dir, name: &str) -> String {
        String::from_utf8(dir[name].clone()).unwrap()
    }

    const BRIDGE_LIST: &str = r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}},{"type":"portmap","capabilities":{"portMappings":true}}],"zzz":1}"#;
    const KUBE_ROUTER_CONF: &str = r#"{"name":"kubernetes","type":"bridge","bridge":"kube-bridge","isDefaultGateway":true,"ipam":{"type":"host-local"}}"#;

    #[test]
    fn conflist_gets_podwall_appended_with_order_kept() {
        let before = dir(&[("10-bridge.conflist", BRIDGE_LIST)]);
        let ops = plan_install(&before, None, &default_entry()).unwrap();
        let after = simulate(&before, &ops);
        assert_eq!(text(&after, "10-bridge.conflist.podwall-orig"), BRIDGE_LIST);
        let list: Value = serde_json::from_slice(&after["10-bridge.conflist"]).unwrap();
        let keys: Vec<&String> = list.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["cniVersion", "name", "plugins", "zzz"]);
        let types: Vec<&str> = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "podwall"]);
        assert!(text(&after, "10-bridge.conflist").ends_with("}\n"));
    }

    #[test]
    fn second_install_changes_nothing() {
        let before = dir(&[("10-bridge.conflist", BRIDGE_LIST)]);
        let once = simulate(
            &before,
            &plan_install(&before, None, &default_entry()).unwrap(),
        );
        assert_eq!(plan_install(&once, None, &default_entry()).unwrap(), []);
    }

    #[test]
    fn uninstall_puts_the_original_bytes_back() {
        let before = dir(&[("10-bridge.conflist", BRIDGE_LIST), ("99-other.conf", "x")]);
        let installed = simulate(
            &before,
            &plan_install(&before, None, &default_entry()).unwrap(),
        );
        assert_eq!(simulate(&installed, &plan_uninstall(&installed)), before);
    }

    #[test]
    fn uninstall_keeps_edits_made_after_install() {
        let before = dir(&[("10-bridge.conflist", BRIDGE_LIST)]);
        let mut installed = simulate(
            &before,
            &plan_install(&before, None, &default_entry()).unwrap(),
        );
        let edited = text(&installed, "10-bridge.conflist").replace("cni0", "cni1");
        installed.insert("10-bridge.conflist".into(), edited.into_bytes());
        let after = simulate(&installed, &plan_uninstall(&installed));
        assert_eq!(after.len(), 1, "the stale backup is gone: {after:?}");
        let list: Value = serde_json::from_slice(&after["10-bridge.conflist"]).unwrap();
        assert_eq!(list["plugins"][0]["bridge"], "cni1");
        assert_eq!(list["plugins"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn single_plugin_conf_becomes_a_conflist_and_the_original_steps_aside() {
        let before = dir(&[("10-kuberouter.conf", KUBE_ROUTER_CONF)]);
        let ops = plan_install(&before, None, &default_entry()).unwrap();
        let after = simulate(&before, &ops);
        assert_eq!(primary(&after), Some("10-kuberouter.conflist"));
        assert_eq!(
            text(&after, "10-kuberouter.conf.podwall-orig"),
            KUBE_ROUTER_CONF
        );
        let list: Value = serde_json::from_slice(&after["10-kuberouter.conflist"]).unwrap();
        assert_eq!(list["cniVersion"], CONVERTED_VERSION);
        assert_eq!(list["name"], "kubernetes");
        assert_eq!(
            list["plugins"][0],
            serde_json::json!({"type":"bridge","bridge":"kube-bridge","isDefaultGateway":true,"ipam":{"type":"host-local"}})
        );
        assert_eq!(list["plugins"][1], default_entry());
        assert_eq!(plan_install(&after, None, &default_entry()).unwrap(), []);
        assert_eq!(simulate(&after, &plan_uninstall(&after)), before);
    }

    #[test]
    fn conf_keeps_a_version_podwall_speaks() {
        let conf = r#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#;
        let before = dir(&[("10-a.conf", conf)]);
        let after = simulate(
            &before,
            &plan_install(&before, None, &default_entry()).unwrap(),
        );
        let list: Value = serde_json::from_slice(&after["10-a.conflist"]).unwrap();
        assert_eq!(list["cniVersion"], "0.4.0");
        let old = dir(&[(
            "10-a.conf",
            r#"{"cniVersion":"0.2.0","name":"n","type":"bridge"}"#,
        )]);
        let after = simulate(&old, &plan_install(&old, None, &default_entry()).unwrap());
        let list: Value = serde_json::from_slice(&after["10-a.conflist"]).unwrap();
        assert_eq!(list["cniVersion"], CONVERTED_VERSION);
    }

    #[test]
    fn empty_dir_gets_the_default() {
        let default =
            r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"bridge"},{"type":"podwall"}]}"#;
        let ops = plan_install(
            &Dir::new(),
            Some(("10-podwall.conflist", default.as_bytes())),
            &default_entry(),
        )
        .unwrap();
        assert_eq!(
            ops,
            [Op::Write {
                name: "10-podwall.conflist".into(),
                bytes: default.as_bytes().to_vec()
            }]
        );
        assert_eq!(
            plan_install(&Dir::new(), None, &default_entry()),
            Err(InstallError::NoConfig)
        );
    }

    #[test]
    fn the_first_config_by_name_is_the_one_chained() {
        let before = dir(&[
            ("20-b.conflist", BRIDGE_LIST),
            ("10-a.conflist", BRIDGE_LIST),
            ("05-notes.txt", "hi"),
        ]);
        let ops = plan_install(&before, None, &default_entry()).unwrap();
        let after = simulate(&before, &ops);
        assert_eq!(after["20-b.conflist"], before["20-b.conflist"]);
        assert_ne!(after["10-a.conflist"], before["10-a.conflist"]);
    }

    #[test]
    fn malformed_configs_are_named_and_nothing_is_planned() {
        let cases = [
            ("10-a.conflist", "{not json", "not JSON"),
            ("10-a.conflist", "[1]", "not a JSON object"),
            (
                "10-a.conflist",
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                "no \"plugins\" list",
            ),
            (
                "10-a.conflist",
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                "plugins[0] has no \"type\"",
            ),
            (
                "10-a.conflist",
                r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge"}]}"#,
                "cniVersion \"0.2.0\" cannot chain podwall",
            ),
            (
                "10-a.conf",
                r#"{"name":"n","plugins":[]}"#,
                "only a .conflist may have",
            ),
            ("10-a.conf", r#"{"type":"bridge"}"#, "no \"name\""),
        ];
        for (file, content, problem) in cases {
            match plan_install(&dir(&[(file, content)]), None, &default_entry()) {
                Err(InstallError::Malformed {
                    file: f,
                    problem: p,
                }) => {
                    assert_eq!(f, file);
                    assert!(p.contains(problem), "{content}: {p}");
                }
                other => panic!("{content}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_conflist_that_would_be_shadowed_is_refused() {
        let before = dir(&[
            ("10-a.conf", KUBE_ROUTER_CONF),
            ("10-a.conf2.conflist", "{broken"),
        ]);
        // 10-a.conf sorts first; its conflist would sort after 10-a.conf2.conflist.
        assert!(matches!(
            plan_install(&before, None, &default_entry()),
            Err(InstallError::Shadowed { .. })
        ));
    }

    #[test]
    fn uninstall_leaves_an_installed_default_without_podwall() {
        let default =
            r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"bridge"},{"type":"podwall"}]}"#;
        let installed = dir(&[("10-podwall.conflist", default)]);
        let after = simulate(&installed, &plan_uninstall(&installed));
        assert_eq!(
            text(&after, "10-podwall.conflist"),
            "{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"k\",\n  \"plugins\": [\n    {\n      \"type\": \"bridge\"\n    }\n  ]\n}\n"
        );
        assert_eq!(plan_uninstall(&after), []);
    }

    #[test]
    fn only_names_libcni_loads_are_configs() {
        for name in ["a.conf", "a.conflist", "a.json", ".x.conf"] {
            assert!(is_config(name), "{name}");
        }
        for name in [
            ".conf",
            ".conflist",
            ".json",
            "a.conf.podwall-orig",
            "a.txt",
            "conf",
        ] {
            assert!(!is_config(name), "{name}");
        }
    }

    #[test]
    fn primary_is_the_first_config_by_byte_order() {
        let files = dir(&[
            ("00-notes.txt", ""),
            ("05-a.conf.podwall-orig", ""),
            ("10-b.json", ""),
            ("10-a.conflist", ""),
            ("Z.conf", ""),
        ]);
        assert_eq!(primary(&files), Some("10-a.conflist"));
        assert_eq!(primary(&dir(&[("a.txt", "")])), None);
    }

    #[test]
    fn a_conf_or_json_becomes_the_conflist_of_its_stem() {
        assert_eq!(list_name("10-kuberouter.conf"), "10-kuberouter.conflist");
        assert_eq!(list_name("10-a.b.json"), "10-a.b.conflist");
    }

    #[test]
    fn the_conflist_is_written_before_the_conf_steps_aside() {
        let before = dir(&[("10-a.json", KUBE_ROUTER_CONF)]);
        let ops = plan_install(&before, None, &default_entry()).unwrap();
        assert!(matches!(
            &ops[..],
            [Op::Write { name, .. }, Op::Rename { from, to }]
                if name == "10-a.conflist" && from == "10-a.json" && to == "10-a.json.podwall-orig"
        ));
        let installed = simulate(&before, &ops);
        assert_eq!(simulate(&installed, &plan_uninstall(&installed)), before);
    }

    #[test]
    fn a_default_without_podwall_gets_the_entry_appended() {
        let default = r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"bridge"}]}"#;
        let entry = serde_json::json!({"type": "podwall", "failurePolicy": "open"});
        let ops = plan_install(
            &Dir::new(),
            Some(("10-podwall.conflist", default.as_bytes())),
            &entry,
        )
        .unwrap();
        let after = simulate(&Dir::new(), &ops);
        let list: Value = serde_json::from_slice(&after["10-podwall.conflist"]).unwrap();
        assert_eq!(list["plugins"][1], entry);
        assert_eq!(after.len(), 1, "no backup of a file that was not there");
    }

    #[test]
    fn a_default_must_be_a_valid_conflist_by_name() {
        let default = r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"bridge"}]}"#;
        for name in ["10-podwall.conf", ".conflist"] {
            assert_eq!(
                plan_install(
                    &Dir::new(),
                    Some((name, default.as_bytes())),
                    &default_entry()
                ),
                Err(malformed(
                    name,
                    "a default conflist must be named *.conflist"
                )),
            );
        }
        assert_eq!(
            plan_install(
                &Dir::new(),
                Some(("10-podwall.conflist", br#"{"name":"k"}"#)),
                &default_entry()
            ),
            Err(malformed("10-podwall.conflist", "no \"cniVersion\"")),
        );
    }

    #[test]
    fn a_conflist_that_becomes_empty_without_podwall_is_removed() {
        let only = r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"podwall"}]}"#;
        let installed = dir(&[("10-a.conflist", only), ("20-b.conflist", BRIDGE_LIST)]);
        assert_eq!(
            plan_uninstall(&installed),
            [Op::Remove {
                name: "10-a.conflist".into()
            }]
        );
    }

    #[test]
    fn uninstall_keeps_edits_to_a_converted_conf_and_drops_its_backup() {
        let before = dir(&[("10-kuberouter.conf", KUBE_ROUTER_CONF)]);
        let mut installed = simulate(
            &before,
            &plan_install(&before, None, &default_entry()).unwrap(),
        );
        let edited = text(&installed, "10-kuberouter.conflist").replace("kube-bridge", "kb1");
        installed.insert("10-kuberouter.conflist".into(), edited.into_bytes());
        let after = simulate(&installed, &plan_uninstall(&installed));
        assert_eq!(after.keys().collect::<Vec<_>>(), ["10-kuberouter.conflist"]);
        let list: Value = serde_json::from_slice(&after["10-kuberouter.conflist"]).unwrap();
        assert_eq!(list["plugins"][0]["bridge"], "kb1");
        assert_eq!(list["plugins"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn uninstall_skips_what_it_cannot_read_or_does_not_own() {
        let installed = dir(&[
            ("10-a.conflist", "{broken"),
            ("20-b.conflist", BRIDGE_LIST),
            ("30-c.conf", r#"{"type":"podwall"}"#),
        ]);
        assert_eq!(plan_uninstall(&installed), []);
    }
}
