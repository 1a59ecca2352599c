//! `podwall install` and `podwall uninstall`: chain podwall into the node's CNI configuration
//! and take it out again. The install-cni init container (`install/install-cni.sh`) runs them
//! against the host's `/etc/cni/net.d`.
//!
//! The runtime (containerd, CRI-O, through libcni) uses the first file of the directory, by
//! byte order of the names, that ends in `.conf`, `.conflist` or `.json`. That file is the one
//! podwall is chained into:
//! - a `.conflist` gets `{"type": "podwall"}` appended to its `plugins`, every other plugin and
//!   key kept in order; its original bytes are kept as `<name>.podwall-orig`;
//! - a single-plugin `.conf`/`.json` (kube-router's `10-kuberouter.conf`) becomes
//!   `<stem>.conflist` with podwall appended, and the original is renamed to
//!   `<name>.podwall-orig`, out of the runtime's way (it reads no such extension);
//! - no config at all: the default conflist (the ConfigMap's) is installed;
//! - podwall already chained: nothing is written at all, so restarts change no byte.
//!
//! Uninstall reverses it: a conflist that still equals what install made from its backup is
//! replaced by the backup (the original bytes); one edited since keeps the edits and loses
//! only podwall. A default conflist podwall installed keeps its network without podwall, so
//! the node keeps a pod network. A config podwall cannot read is left untouched and named in
//! the error.
//!
//! Planning is pure (`plan_install`, `plan_uninstall` over the directory's files as values);
//! `read_dir` and `apply` are the only I/O. Every write goes to a temp file in the same
//! directory (an extension the runtime ignores) and is renamed into place.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::cni::SUPPORTED_VERSIONS;

/// Suffix of the original a config file had before podwall was chained into it.
pub const BACKUP_SUFFIX: &str = ".podwall-orig";

/// Suffix of temp files; the runtime ignores it, so a half-written file is never read.
const TEMP_SUFFIX: &str = ".podwall-tmp";

/// Extensions libcni loads from the config directory.
const CONFIG_EXTENSIONS: [&str; 3] = [".conf", ".conflist", ".json"];

/// The version a single-plugin config without a usable `cniVersion` gets when it becomes a
/// conflist: the oldest with chaining (`prevResult`), which every `bridge` that chains speaks.
pub const CONVERTED_VERSION: &str = "0.3.1";

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

fn parse_object(file: &str, bytes: &[u8]) -> Result<Map<String, Value>, InstallError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(file, "not a JSON object")),
        Err(e) => Err(malformed(file, format!("not JSON: {e}"))),
    }
}

fn string_field<'a>(
    file: &str,
    map: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, InstallError> {
    match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None => Err(malformed(file, format!("no \"{key}\""))),
        Some(_) => Err(malformed(file, format!("\"{key}\" is not a string"))),
    }
}

/// Check a conflist the way libcni and podwall will read it.
fn check_list(file: &str, list: &Map<String, Value>) -> Result<(), InstallError> {
    string_field(file, list, "name")?;
    let version = string_field(file, list, "cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(malformed(
            file,
            format!(
                "cniVersion {version:?} cannot chain podwall (podwall speaks {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let plugins = match list.get("plugins") {
        Some(Value::Array(plugins)) if !plugins.is_empty() => plugins,
        Some(Value::Array(_)) => return Err(malformed(file, "\"plugins\" is empty")),
        Some(_) => return Err(malformed(file, "\"plugins\" is not a list")),
        None => return Err(malformed(file, "no \"plugins\" list")),
    };
    for (i, plugin) in plugins.iter().enumerate() {
        let obj = plugin
            .as_object()
            .ok_or_else(|| malformed(file, format!("plugins[{i}] is not an object")))?;
        string_field(file, obj, "type")
            .map_err(|_| malformed(file, format!("plugins[{i}] has no \"type\"")))?;
    }
    Ok(())
}

fn has_podwall(list: &Map<String, Value>) -> bool {
    list.get("plugins")
        .and_then(Value::as_array)
        .is_some_and(|plugins| plugins.iter().any(is_podwall))
}

fn append(mut list: Map<String, Value>, entry: &Value) -> Map<String, Value> {
    if let Some(Value::Array(plugins)) = list.get_mut("plugins") {
        plugins.push(entry.clone());
    }
    list
}

fn without_podwall(mut list: Map<String, Value>) -> Map<String, Value> {
    if let Some(Value::Array(plugins)) = list.get_mut("plugins") {
        plugins.retain(|p| !is_podwall(p));
    }
    list
}

/// A single-plugin config as a conflist of that plugin (its `name` and `cniVersion` moved to
/// the list, as libcni does), without podwall yet.
fn conf_to_list(file: &str, conf: &Map<String, Value>) -> Result<Map<String, Value>, InstallError> {
    if conf.contains_key("plugins") && !conf.contains_key("type") {
        return Err(malformed(
            file,
            "has a \"plugins\" list, which only a .conflist may have: rename it",
        ));
    }
    string_field(file, conf, "type")?;
    let name = string_field(file, conf, "name")?;
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
            return Err(malformed(
                file,
                format!(
                    "cniVersion {v} cannot chain podwall (podwall speaks {})",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ))
        }
    };
    let mut plugin = conf.clone();
    plugin.shift_remove("cniVersion");
    plugin.shift_remove("name");
    let mut list = Map::new();
    list.insert("cniVersion".into(), version.into());
    list.insert("name".into(), name.into());
    list.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
    Ok(list)
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
    let ops = match primary(dir) {
        None => {
            let (name, bytes) = default.ok_or(InstallError::NoConfig)?;
            let list = parse_object(name, bytes)?;
            check_list(name, &list)?;
            if !name.ends_with(".conflist") {
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
            vec![Op::Write {
                name: name.to_string(),
                bytes,
            }]
        }
        Some(file) if file.ends_with(".conflist") => {
            let bytes = &dir[file];
            let list = parse_object(file, bytes)?;
            check_list(file, &list)?;
            if has_podwall(&list) {
                return Ok(Vec::new());
            }
            vec![
                Op::Write {
                    name: format!("{file}{BACKUP_SUFFIX}"),
                    bytes: bytes.clone(),
                },
                Op::Write {
                    name: file.to_string(),
                    bytes: to_bytes(&Value::Object(append(list, entry))),
                },
            ]
        }
        Some(file) => {
            let conf = parse_object(file, &dir[file])?;
            let list = append(conf_to_list(file, &conf)?, entry);
            // The conflist goes in first: until the original is renamed away the runtime
            // keeps using it, so there is no moment without a config.
            vec![
                Op::Write {
                    name: list_name(file),
                    bytes: to_bytes(&Value::Object(list)),
                },
                Op::Rename {
                    from: file.to_string(),
                    to: format!("{file}{BACKUP_SUFFIX}"),
                },
            ]
        }
    };
    let after = simulate(dir, &ops);
    let written = ops
        .iter()
        .find_map(|op| match op {
            Op::Write { name, .. } if is_config(name) => Some(name.clone()),
            _ => None,
        })
        .expect("every install plan writes a config");
    match primary(&after) {
        Some(first) if first == written => Ok(ops),
        Some(first) => Err(InstallError::Shadowed {
            written,
            first: first.to_string(),
        }),
        None => unreachable!("the plan just wrote {written}"),
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
        let Ok(list) = parse_object(file, bytes) else {
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
            .map(|ext| format!("{stem}{ext}{BACKUP_SUFFIX}"))
            .find(|b| dir.contains_key(b));
        let rewrite = |ops: &mut Vec<Op>| {
            if stripped["plugins"].as_array().is_some_and(Vec::is_empty) {
                ops.push(Op::Remove { name: file.clone() });
            } else {
                ops.push(Op::Write {
                    name: file.clone(),
                    bytes: to_bytes(&Value::Object(stripped.clone())),
                });
            }
        };
        if let Some(backup) = dir.get(&same_backup) {
            match parse_object(&same_backup, backup) {
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
        } else if let Some(backup) = converted_backup {
            let original = backup.trim_end_matches(BACKUP_SUFFIX).to_string();
            let unchanged = parse_object(&backup, &dir[&backup])
                .and_then(|conf| conf_to_list(&backup, &conf))
                .is_ok_and(|list| list == stripped);
            if unchanged {
                // The original comes back first: it sorts before the conflist, so the runtime
                // switches to it at once and never sees the directory empty.
                ops.push(Op::Rename {
                    from: backup,
                    to: original,
                });
                ops.push(Op::Remove { name: file.clone() });
            } else {
                rewrite(&mut ops);
                ops.push(Op::Remove { name: backup });
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

// ---- the thin I/O ----

/// The config files and backups of `path` (other files are never read).
pub fn read_dir(path: &Path) -> std::io::Result<Dir> {
    let mut dir = Dir::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !(is_config(&name) || name.ends_with(BACKUP_SUFFIX)) {
            continue;
        }
        // Follows symlinks: a linked config is read like the runtime reads it.
        if !std::fs::metadata(entry.path())?.is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        dir.insert(name, bytes);
    }
    Ok(dir)
}

/// Carry out `ops` in `path`, in order.
pub fn apply(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    for op in ops {
        match op {
            Op::Write { name, bytes } => write_atomic(&path.join(name), bytes)?,
            Op::Rename { from, to } => std::fs::rename(path.join(from), path.join(to))?,
            Op::Remove { name } => std::fs::remove_file(path.join(name))?,
        }
    }
    // The renames are durable once the directory is.
    std::fs::File::open(path)?.sync_all()
}

/// Write to `<name>.<pid>.podwall-tmp` beside the target, flush it, rename it over the target.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let temp = target.with_file_name(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

// ---- the command line ----

/// `podwall install|uninstall …`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Install {
        net_dir: PathBuf,
        default: Option<PathBuf>,
        entry: Value,
    },
    Uninstall {
        net_dir: PathBuf,
    },
    Help,
}

pub const USAGE: &str = "usage: podwall install --net-dir DIR [--default FILE.conflist] [--entry JSON]\n       podwall uninstall --net-dir DIR";

/// Parse the arguments after the program name.
pub fn parse_args(args: &[OsString]) -> Result<Command, String> {
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    let verb = args.next().unwrap_or_default();
    if matches!(verb.as_str(), "help" | "--help" | "-h") {
        return Ok(Command::Help);
    }
    if verb != "install" && verb != "uninstall" {
        return Err(format!(
            "unknown command {verb:?} (CNI invocations take no arguments)"
        ));
    }
    let (mut net_dir, mut default, mut entry) = (None, None, None);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--net-dir" => net_dir = Some(PathBuf::from(value()?)),
            "--default" if verb == "install" => default = Some(PathBuf::from(value()?)),
            "--entry" if verb == "install" => entry = Some(entry_from_text(&value()?)?),
            "--help" | "-h" => return Ok(Command::Help),
            other => return Err(format!("unexpected argument {other:?} for {verb}")),
        }
    }
    let net_dir = net_dir.ok_or_else(|| format!("{verb} needs --net-dir DIR"))?;
    Ok(if verb == "install" {
        Command::Install {
            net_dir,
            default,
            entry: entry.unwrap_or_else(default_entry),
        }
    } else {
        Command::Uninstall { net_dir }
    })
}

/// What a run did, one line per change, for the init container's log.
pub fn describe(dir: &Path, ops: &[Op]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            Op::Write { name, .. } => format!("wrote {}", dir.join(name).display()),
            Op::Rename { from, to } => format!("renamed {from} to {to} in {}", dir.display()),
            Op::Remove { name } => format!("removed {}", dir.join(name).display()),
        })
        .collect()
}

/// Run a parsed command; the error is one line for stderr.
pub fn run(command: &Command) -> Result<Vec<String>, String> {
    let (net_dir, ops) = match command {
        Command::Help => return Ok(vec![USAGE.to_string()]),
        Command::Install {
            net_dir,
            default,
            entry,
        } => {
            let dir =
                read_dir(net_dir).map_err(|e| format!("reading {}: {e}", net_dir.display()))?;
            let default = match default {
                Some(path) => {
                    let bytes = std::fs::read(path)
                        .map_err(|e| format!("reading {}: {e}", path.display()))?;
                    let name = path
                        .file_name()
                        .ok_or_else(|| format!("--default {} is not a file", path.display()))?
                        .to_string_lossy()
                        .into_owned();
                    Some((name, bytes))
                }
                None => None,
            };
            let ops = plan_install(
                &dir,
                default.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())),
                entry,
            )
            .map_err(|e| match e {
                InstallError::Malformed { file, problem } if dir.contains_key(&file) => {
                    format!(
                        "{}: {problem}; left untouched",
                        net_dir.join(file).display()
                    )
                }
                other => format!("{}: {other}", net_dir.display()),
            })?;
            (net_dir, ops)
        }
        Command::Uninstall { net_dir } => {
            let dir =
                read_dir(net_dir).map_err(|e| format!("reading {}: {e}", net_dir.display()))?;
            (net_dir, plan_uninstall(&dir))
        }
    };
    apply(net_dir, &ops).map_err(|e| format!("changing {}: {e}", net_dir.display()))?;
    if ops.is_empty() {
        return Ok(vec![format!("{}: nothing to change", net_dir.display())]);
    }
    Ok(describe(net_dir, &ops))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn args_parse_with_clear_errors() {
        let args = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
        assert_eq!(
            parse_args(&args(&[
                "install",
                "--net-dir",
                "/n",
                "--default",
                "/d.conflist"
            ])),
            Ok(Command::Install {
                net_dir: "/n".into(),
                default: Some("/d.conflist".into()),
                entry: default_entry()
            })
        );
        assert_eq!(
            parse_args(&args(&["uninstall", "--net-dir", "/n"])),
            Ok(Command::Uninstall {
                net_dir: "/n".into()
            })
        );
        assert_eq!(
            parse_args(&args(&["install"])),
            Err("install needs --net-dir DIR".into())
        );
        assert_eq!(
            parse_args(&args(&["install", "--net-dir"])),
            Err("--net-dir needs a value".into())
        );
        assert!(parse_args(&args(&["uninstall", "--net-dir", "/n", "--default", "x"])).is_err());
        assert!(parse_args(&args(&[
            "install",
            "--net-dir",
            "/n",
            "--entry",
            r#"{"type":"x"}"#
        ]))
        .unwrap_err()
        .contains("\"type\": \"podwall\""));
        assert!(parse_args(&args(&["frobnicate"])).is_err());
    }

    #[test]
    fn apply_writes_atomically_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("10-bridge.conflist"), BRIDGE_LIST).unwrap();
        let before = read_dir(tmp.path()).unwrap();
        let ops = plan_install(&before, None, &default_entry()).unwrap();
        apply(tmp.path(), &ops).unwrap();
        assert_eq!(read_dir(tmp.path()).unwrap(), simulate(&before, &ops));
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
