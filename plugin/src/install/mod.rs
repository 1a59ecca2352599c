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
//! `conflist` edits one config document and `plan` decides what happens to the directory
//! (`plan_install`, `plan_uninstall` over its files as values); both are pure. This module is
//! the thin edge: the command line, `read_dir` and `apply`, the only I/O. Every write goes to
//! a temp file in the same directory (an extension the runtime ignores) and is renamed into
//! place.

mod conflist;
mod plan;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use conflist::{default_entry, entry_from_text, to_bytes, CONVERTED_VERSION};
pub use plan::{
    is_config, plan_install, plan_uninstall, primary, simulate, Dir, InstallError, Op,
    BACKUP_SUFFIX,
};

/// Suffix of temp files; the runtime ignores it, so a half-written file is never read.
const TEMP_SUFFIX: &str = ".podwall-tmp";

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
    /// `--version`: printed by the binary itself.
    Version,
}

pub const USAGE: &str = "usage: podwall install --net-dir DIR [--default FILE.conflist] [--entry JSON]\n       podwall uninstall --net-dir DIR\n       podwall --version";

/// Parse the arguments after the program name.
pub fn parse_args(args: &[OsString]) -> Result<Command, String> {
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    let verb = args.next().unwrap_or_default();
    if matches!(verb.as_str(), "help" | "--help" | "-h") {
        return Ok(Command::Help);
    }
    if matches!(verb.as_str(), "--version" | "-V") {
        return Ok(Command::Version);
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
        Command::Version => return Ok(vec![format!("podwall {}", env!("CARGO_PKG_VERSION"))]),
        Command::Install {
            net_dir,
            default,
            entry,
        } => {
            let dir =
                read_dir(net_dir).map_err(|e| format!("reading {}: {e}", net_dir.display()))?;
            let default = default.as_deref().map(read_default).transpose()?;
            let ops = plan_install(
                &dir,
                default.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())),
                entry,
            )
            .map_err(|e| install_error_line(net_dir, &dir, e))?;
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

/// The `--default` conflist: its file name (the name it gets in the directory) and content.
fn read_default(path: &Path) -> Result<(String, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| format!("--default {} is not a file", path.display()))?
        .to_string_lossy()
        .into_owned();
    Ok((name, bytes))
}

/// Why install changed nothing, as one line: a file of the directory by its full path (the
/// operator fixes that file), anything else under the directory's.
fn install_error_line(net_dir: &Path, dir: &Dir, err: InstallError) -> String {
    match err {
        InstallError::Malformed { file, problem } if dir.contains_key(&file) => {
            format!(
                "{}: {problem}; left untouched",
                net_dir.join(file).display()
            )
        }
        other => format!("{}: {other}", net_dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE_LIST: &str = r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}},{"type":"portmap","capabilities":{"portMappings":true}}],"zzz":1}"#;

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

    #[test]
    fn help_is_asked_for_before_or_among_the_flags() {
        let args = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
        for a in [
            &["help"][..],
            &["--help"],
            &["-h"],
            &["install", "--help"],
            &["uninstall", "-h"],
        ] {
            assert_eq!(parse_args(&args(a)), Ok(Command::Help), "{a:?}");
        }
        for a in ["--version", "-V"] {
            assert_eq!(parse_args(&args(&[a])), Ok(Command::Version), "{a}");
        }
        assert_eq!(
            parse_args(&args(&[])),
            Err("unknown command \"\" (CNI invocations take no arguments)".into())
        );
        assert_eq!(
            parse_args(&args(&["install", "--net-dir", "/n", "--default", ""])),
            Err("--default needs a value".into())
        );
        assert_eq!(
            parse_args(&args(&["uninstall", "--net-dir", "/n", "--entry", "{}"])),
            Err("unexpected argument \"--entry\" for uninstall".into())
        );
    }

    #[test]
    fn each_change_is_one_line_naming_its_path() {
        let ops = [
            Op::Write {
                name: "a.conflist".into(),
                bytes: Vec::new(),
            },
            Op::Rename {
                from: "a.conf".into(),
                to: "a.conf.podwall-orig".into(),
            },
            Op::Remove {
                name: "b.conflist".into(),
            },
        ];
        assert_eq!(
            describe(Path::new("/n"), &ops),
            [
                "wrote /n/a.conflist",
                "renamed a.conf to a.conf.podwall-orig in /n",
                "removed /n/b.conflist"
            ]
        );
    }

    #[test]
    fn an_install_error_names_the_file_to_fix() {
        let files: Dir = [("10-a.conflist".to_string(), b"{".to_vec())].into();
        let net_dir = Path::new("/n");
        let bad = |file: &str| InstallError::Malformed {
            file: file.into(),
            problem: "not JSON".into(),
        };
        assert_eq!(
            install_error_line(net_dir, &files, bad("10-a.conflist")),
            "/n/10-a.conflist: not JSON; left untouched"
        );
        // A default conflist is not in the directory: the directory is named.
        assert_eq!(
            install_error_line(net_dir, &files, bad("10-podwall.conflist")),
            "/n: 10-podwall.conflist: not JSON"
        );
        assert_eq!(
            install_error_line(net_dir, &Dir::new(), InstallError::NoConfig),
            "/n: no CNI config (*.conf, *.conflist, *.json) and no default conflist given"
        );
    }

    #[test]
    fn run_installs_once_then_has_nothing_to_change() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("10-bridge.conflist"), BRIDGE_LIST).unwrap();
        let install = Command::Install {
            net_dir: tmp.path().into(),
            default: None,
            entry: default_entry(),
        };
        let shown = tmp.path().display();
        assert_eq!(
            run(&install),
            Ok(vec![
                format!("wrote {shown}/10-bridge.conflist.podwall-orig"),
                format!("wrote {shown}/10-bridge.conflist"),
            ])
        );
        assert_eq!(
            run(&install),
            Ok(vec![format!("{shown}: nothing to change")])
        );
        let uninstall = Command::Uninstall {
            net_dir: tmp.path().into(),
        };
        assert_eq!(
            run(&uninstall),
            Ok(vec![format!(
                "renamed 10-bridge.conflist.podwall-orig to 10-bridge.conflist in {shown}"
            )])
        );
        assert_eq!(
            std::fs::read(tmp.path().join("10-bridge.conflist")).unwrap(),
            BRIDGE_LIST.as_bytes()
        );
    }

    #[test]
    fn run_reads_the_default_by_its_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let net_dir = tmp.path().join("net.d");
        std::fs::create_dir(&net_dir).unwrap();
        let default = tmp.path().join("10-podwall.conflist");
        std::fs::write(&default, BRIDGE_LIST).unwrap();
        let install = |default: PathBuf| Command::Install {
            net_dir: net_dir.clone(),
            default: Some(default),
            entry: default_entry(),
        };
        assert!(run(&install(default)).is_ok());
        assert!(net_dir.join("10-podwall.conflist").is_file());
        let missing = tmp.path().join("missing.conflist");
        assert!(run(&install(missing.clone()))
            .unwrap_err()
            .starts_with(&format!("reading {}: ", missing.display())));
    }
}
