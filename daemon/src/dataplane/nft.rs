//! `NftKernel`: swaps both tables, changes elements and structure, and reads the tables back
//! (`listing`), all over netlink; runs `nft -f -` (one script = one transaction) only for
//! the drop log's probe, `cleanup`, and the benchmarks' old paths. `nft` is a separate GPL
//! program, run, not linked.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::batch::Batch;
use super::elements::{push_elements, ElementOp, Key};
use super::exact::{self, Exact};
use super::listing;
use super::names::{FAMILY, GUARD_FAMILY, GUARD_TARGETS6, TABLE};
use super::netlink::{NftSocket, NFPROTO_BRIDGE, NFPROTO_INET};
use super::render::raw_address;
use super::render::{log_text, render};
use super::structure::{self, Structure};
use super::table;
use super::{DataplaneError, Desired, Fingerprint, Kernel, Logging, TablesId};

/// The production kernel, acting in the calling thread's network namespace.
pub struct NftKernel {
    program: PathBuf,
    socket: Option<NftSocket>,
    conntrack: super::Conntrack,
}

impl Default for NftKernel {
    fn default() -> Self {
        Self::new("nft")
    }
}

impl NftKernel {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            socket: None,
            conntrack: super::Conntrack::default(),
        }
    }

    /// Element changes through `nft -f` instead of netlink: the slow path, kept so that
    /// benchmarks can put the two side by side.
    pub fn apply_elements_with_nft(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        self.commit(&render_elements(ops), ops.len())
    }

    /// The whole-table swap through `nft -f` instead of netlink: the path before `table`,
    /// kept so that benchmarks can put the two side by side.
    pub fn replace_with_nft(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        self.commit(&render(desired), 1)
    }

    /// Whether the kernel takes the chains' log rule (`limit`, `log group`: expressions a
    /// kernel may lack): a scratch table holding one, created and deleted in one transaction,
    /// so that nothing of it is ever seen. Asked before logging is turned on, so that a
    /// kernel refusing it leaves the drop log off rather than every table refused.
    pub fn takes_log_rule(&self, logging: Logging) -> Result<(), DataplaneError> {
        let table = format!("{FAMILY} {TABLE}_log_probe");
        let script = format!(
            "add table {table}
add chain {table} c
add rule {table} c {}
delete table {table}
",
            log_text(logging, "probe")
        );
        self.commit(&script, 1)
    }

    /// Remove everything podwall put in the kernel: its two tables. Returns whether there
    /// was anything to remove.
    pub fn remove_table(&mut self) -> Result<bool, DataplaneError> {
        let mut script = String::new();
        for family in [FAMILY, GUARD_FAMILY] {
            if self.table_exists(family)? {
                script.push_str(&format!("delete table {family} {TABLE}\n"));
            }
        }
        if script.is_empty() {
            return Ok(false);
        }
        self.commit(&script, 1)?;
        Ok(true)
    }

    fn netlink(&mut self, batch: &Batch) -> Result<(), DataplaneError> {
        self.socket()?.commit(batch)
    }

    fn run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(bool, String, String), DataplaneError> {
        let exec_err = |source| DataplaneError::Exec {
            program: self.program.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(exec_err)?;
        // Piped above whenever there is text; dropping the pipe closes nft's input.
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(exec_err)?;
        }
        let out = child.wait_with_output().map_err(exec_err)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }

    fn commit(&self, script: &str, ops: usize) -> Result<(), DataplaneError> {
        let (ok, _, stderr) = self.run(&["-f", "-"], Some(script))?;
        if ok {
            Ok(())
        } else {
            Err(DataplaneError::Rejected {
                ops,
                detail: stderr,
            })
        }
    }

    fn socket(&mut self) -> Result<&mut NftSocket, DataplaneError> {
        if self.socket.is_none() {
            self.socket = Some(NftSocket::open()?);
        }
        self.socket
            .as_mut()
            .ok_or_else(|| DataplaneError::Dump("no netlink socket".into()))
    }

    // Listing a missing table is an error whose text we would have to parse; listing the
    // tables first tells absence apart from failure.
    fn table_exists(&mut self, family: &str) -> Result<bool, DataplaneError> {
        Ok(self.table_handles()?.iter().any(|(f, _)| *f == family))
    }

    /// The handle of each of podwall's tables, by family, asked over netlink: cheap.
    fn table_handles(&mut self) -> Result<Vec<(String, u64)>, DataplaneError> {
        let tables = self.socket()?.tables()?;
        Ok((tables.into_iter())
            .filter(|t| t.name == TABLE)
            .filter_map(|t| {
                let family = match t.family {
                    NFPROTO_INET => FAMILY,
                    NFPROTO_BRIDGE => GUARD_FAMILY,
                    _ => return None,
                };
                Some((family.to_string(), t.handle))
            })
            .collect())
    }
}

impl Kernel for NftKernel {
    fn replace(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        self.netlink(&table::batch(desired))
    }

    fn apply_elements(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        let mut batch = Batch::default();
        push_elements(&mut batch, ops);
        self.netlink(&batch)
    }

    fn apply_structure(&mut self, structure: &Structure) -> Result<(), DataplaneError> {
        self.netlink(&structure::batch(structure))
    }

    fn forget_flows_of(&mut self, ips: &[std::net::IpAddr]) -> Result<usize, DataplaneError> {
        self.conntrack.forget_involving(ips)
    }

    fn host_ports(
        &mut self,
        ips: &std::collections::BTreeSet<std::net::IpAddr>,
    ) -> Result<std::collections::BTreeMap<std::net::IpAddr, String>, DataplaneError> {
        super::ports::host_ports(ips)
    }

    fn tables_id(&mut self) -> Result<Option<TablesId>, DataplaneError> {
        let handles = self.table_handles()?;
        if !handles.iter().any(|(family, _)| family == FAMILY) {
            return Ok(None);
        }
        use std::os::unix::fs::MetadataExt;
        fn unreadable(what: &'static str) -> impl Fn(std::io::Error) -> DataplaneError {
            move |e| DataplaneError::Dump(format!("cannot read {what}: {e}"))
        }
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map_err(unreadable("the boot id"))?;
        // The calling thread's namespace: the one the tables were listed in.
        let netns = std::fs::metadata("/proc/thread-self/ns/net")
            .map_err(unreadable("the network namespace"))?;
        Ok(Some(TablesId {
            boot: boot.trim().to_string(),
            netns: netns.ino(),
            handles,
        }))
    }

    /// Both tables, read back over netlink exactly; `None` when the policy table is gone.
    fn exact(&mut self) -> Result<Option<Exact>, DataplaneError> {
        let mut fold = exact::Fold::default();
        let families = [NFPROTO_INET, NFPROTO_BRIDGE];
        let found = listing::read_exact(self.socket()?, &families, TABLE, &mut fold)?;
        Ok(found.contains(&NFPROTO_INET).then(|| fold.finish()))
    }

    /// Both tables, read back over netlink into one fingerprint; `None` when the policy
    /// table is gone.
    fn dump(&mut self) -> Result<Option<Fingerprint>, DataplaneError> {
        let tables = self.table_handles()?;
        if !tables.iter().any(|(name, _)| name == FAMILY) {
            return Ok(None);
        }
        let mut fingerprint = Fingerprint::default();
        for (name, family) in [(FAMILY, NFPROTO_INET), (GUARD_FAMILY, NFPROTO_BRIDGE)] {
            if tables.iter().any(|(table, _)| table == name) {
                listing::read_table(self.socket()?, family, TABLE, &mut fingerprint)?;
            }
        }
        Ok(Some(fingerprint))
    }
}

/// Element ops as an `nft -f` script.
pub fn render_elements(ops: &[ElementOp]) -> String {
    let mut out = String::new();
    for op in ops {
        let (ElementOp::Add { set, key, .. } | ElementOp::Delete { set, key }) = op;
        let family = match key {
            Key::IfName(_) | Key::IfNameAddr(..) => GUARD_FAMILY,
            Key::Addr(_) | Key::AddrPair(_) | Key::AddrPort(..) => FAMILY,
        };
        let key = if set == GUARD_TARGETS6 {
            // A raw header field: nft reads the address as an integer.
            match key {
                Key::IfNameAddr(name, ip) => format!("\"{name}\" . {}", raw_address(ip)),
                other => key_text(other),
            }
        } else {
            key_text(key)
        };
        let _ = match op {
            ElementOp::Add {
                jump: Some(chain), ..
            } => {
                writeln!(
                    out,
                    "add element {family} {TABLE} {set} {{ {key} : jump {chain} }}"
                )
            }
            ElementOp::Add { jump: None, .. } => {
                writeln!(out, "add element {family} {TABLE} {set} {{ {key} }}")
            }
            ElementOp::Delete { .. } => {
                writeln!(out, "delete element {family} {TABLE} {set} {{ {key} }}")
            }
        };
    }
    out
}

fn key_text(key: &Key) -> String {
    match key {
        Key::Addr(ip) => ip.to_string(),
        Key::AddrPair(ip) => format!("{ip} . {ip}"),
        Key::AddrPort(ip, port) => format!("{ip} . {port}"),
        Key::IfName(name) => format!("\"{name}\""),
        Key::IfNameAddr(name, ip) => format!("\"{name}\" . {ip}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_script_names_set_key_and_verdict() {
        let ops = [
            ElementOp::Add {
                set: "ingress4".into(),
                key: Key::Addr("10.0.0.2".parse().unwrap()),
                jump: Some("in_a".into()),
            },
            ElementOp::Delete {
                set: "port4_x".into(),
                key: Key::AddrPort("10.0.0.3".parse().unwrap(), 80),
            },
        ];
        assert_eq!(
            render_elements(&ops),
            "add element inet podwall ingress4 { 10.0.0.2 : jump in_a }\n\
             delete element inet podwall port4_x { 10.0.0.3 . 80 }\n"
        );
    }
}
