//! A throw-away Kubernetes node: a network namespace with its own bridge, host-local address
//! pool, conflist, CNI plugin directory and, when started, its own `podwalld`.
//!
//! Each node gets a /24 of 10.200.0.0/16 (and a /64 of fd00:200::/48 when dual-stack) that
//! exists only inside its namespace, so nodes never see each other and no packet leaves
//! the namespaces the rig created. The daemon's stderr goes to a log file in the node's temp
//! dir; it is printed when the node is dropped during a panic, so a failing test shows what
//! the daemon said.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use podwall::wire::{self, ClientError, Reply, Request};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::manifests::ManifestDir;
use crate::metrics::Metrics;
use crate::netns::{self, next_id, TestNetns};
use crate::{bins, cmd, nft};

/// The CNI network name of every node's conflist; host-local keys its pool by it.
pub const NETWORK: &str = "pwt";

/// Where the daemon serves `/healthz` by default (the rig passes no `--health-addr`): the
/// node namespace's own loopback.
pub const HEALTH_ADDR: &str = "127.0.0.1:20244";

/// How long a daemon gets to become healthy or to stop.
pub const DAEMON_DEADLINE: Duration = Duration::from_secs(20);

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Give pods an IPv6 address too (host-local with a second range).
    pub dual_stack: bool,
    /// `net.bridge.bridge-nf-call-ip{,6}tables` in the node: pod↔pod traffic on the bridge
    /// reaches the `inet` forward hook only with it on. `None` leaves the kernel's default,
    /// for tests that check the daemon turns it on.
    pub bridge_nf_call: Option<bool>,
    /// Standalone mode: start the daemon with `--manifests <node dir>/manifests`, a
    /// directory the test writes Namespace, Pod and NetworkPolicy manifests into.
    pub manifests: bool,
    /// `--sync-period` (e.g. `1s` for drift tests); `None` leaves the daemon's default.
    pub sync_period: Option<String>,
    /// Kubernetes mode: start the daemon with `--kubeconfig <file>` (and no `--manifests`),
    /// watching the API server the file names. Wins over `manifests`.
    pub kubeconfig: Option<PathBuf>,
    /// `--cache-sync-timeout` (e.g. `2s`); `None` leaves the daemon's default.
    pub cache_sync_timeout: Option<String>,
    /// What to run as the daemon (a confining wrapper, say); `None` runs `bins::daemon()`.
    pub daemon: Option<PathBuf>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            dual_stack: false,
            bridge_nf_call: Some(true),
            manifests: false,
            sync_period: None,
            kubeconfig: None,
            cache_sync_timeout: None,
            daemon: None,
        }
    }
}

/// One node: its namespace, files and daemon.
pub struct Node {
    daemon: Option<Child>,
    /// Extra daemon flags, appended to the ones the rig always passes.
    pub daemon_args: Vec<String>,
    /// The daemon's environment, changed after the rig's defaults: a value sets the
    /// variable, `None` removes it.
    pub daemon_env: Vec<(String, Option<String>)>,
    name: String,
    octet: u8,
    options: NodeOptions,
    bridge: String,
    conflist: PathBuf,
    pub netns: TestNetns,
    dir: TempDir,
}

impl Node {
    /// A node with the default options: IPv4 pods, br_netfilter on.
    pub fn new(label: &str) -> Self {
        Self::with_options(label, NodeOptions::default())
    }

    /// A default node with its daemon started and healthy.
    pub fn started(label: &str) -> Self {
        let mut node = Self::new(label);
        node.start_daemon();
        node
    }

    /// A standalone node (`--manifests`) with `options`: `files` are written into its
    /// manifests directory before the daemon starts (so its first load has them), then the
    /// daemon is started and waited for until healthy.
    pub fn standalone(label: &str, options: NodeOptions, files: &[(&str, String)]) -> Self {
        let mut node = Self::with_options(
            label,
            NodeOptions {
                manifests: true,
                ..options
            },
        );
        let dir = node.manifests();
        for (file, text) in files {
            dir.write(file, text);
        }
        node.start_daemon();
        node
    }

    pub fn with_options(label: &str, options: NodeOptions) -> Self {
        netns::require_root();
        ensure_br_netfilter();
        let netns = TestNetns::new(&format!("node-{label}"));
        let n = next_id();
        let pid = std::process::id() as usize;
        // Spread nodes over the /16 so parallel tests and processes rarely pick the same
        // /24 — they could share one safely (each node is its own namespace), but distinct
        // subnets make captures and logs unambiguous.
        let octet = (1 + (pid * 31 + n) % 250) as u8;
        let bridge = format!("pwb{}{}", pid % 10000, n % 1000);
        assert!(
            bridge.len() <= 15,
            "interface names are at most 15 bytes: {bridge}"
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", netns.name()))
            .tempdir()
            .expect("creating the node's temp dir");
        for sub in ["state", "ipam", "cni-cache", "bin", "manifests"] {
            fs::create_dir_all(dir.path().join(sub)).expect("creating the node's dirs");
        }
        std::os::unix::fs::symlink(bins::plugin(), dir.path().join("bin/podwall"))
            .expect("linking the plugin into the node's CNI_PATH");
        let mut node = Node {
            daemon: None,
            daemon_args: Vec::new(),
            daemon_env: Vec::new(),
            name: format!("pwt-node-{label}"),
            octet,
            options,
            bridge,
            conflist: PathBuf::new(),
            netns,
            dir,
        };
        node.conflist = node.write_conflist(
            "default",
            &node.conflist_json("1.0.0", Some(node.podwall_entry())),
        );
        node.configure_kernel();
        node
    }

    fn configure_kernel(&self) {
        // Pods reach each other over the bridge; forwarding matters for routed traffic only,
        // but a real node has it on.
        self.netns
            .set_sysctl("net.ipv4.ip_forward", "1")
            .expect("ip_forward");
        if let Some(on) = self.options.bridge_nf_call {
            let v = if on { "1" } else { "0" };
            self.netns
                .set_sysctl("net.bridge.bridge-nf-call-iptables", v)
                .expect("bridge-nf-call-iptables");
            self.netns
                .set_sysctl("net.bridge.bridge-nf-call-ip6tables", v)
                .expect("bridge-nf-call-ip6tables");
        }
    }

    /// Switch the node to Kubernetes mode for the daemon's next start: `--kubeconfig <path>`.
    pub fn set_kubeconfig(&mut self, path: PathBuf) {
        self.options.kubeconfig = Some(path);
    }

    /// The node's options, as its daemon will be started with them.
    pub fn options(&self) -> &NodeOptions {
        &self.options
    }

    /// The node name given to the daemon (`--node-name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("podwall.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// The node's `--manifests` directory (it exists on every node; the daemon reads it only
    /// when the node is standalone).
    pub fn manifests(&self) -> ManifestDir {
        ManifestDir::new(self.dir().join("manifests"))
    }

    pub fn cni_cache_dir(&self) -> PathBuf {
        self.dir().join("cni-cache")
    }

    /// `CNI_PATH`: the node's own dir (holding `podwall`) first, then Debian's plugins.
    pub fn cni_path(&self) -> String {
        format!(
            "{}:{}",
            self.dir().join("bin").display(),
            bins::DEBIAN_CNI_DIR
        )
    }

    /// The bridge's name inside the node namespace.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The pods' IPv4 subnet.
    pub fn subnet4(&self) -> String {
        format!("10.200.{}.0/24", self.octet)
    }

    /// The pods' IPv6 subnet (used only when dual-stack).
    pub fn subnet6(&self) -> String {
        format!("fd00:200:{:x}::/64", self.octet)
    }

    /// The bridge's IPv4 address, the pods' gateway (host-local gives the gateway `.1`).
    pub fn gateway4(&self) -> std::net::IpAddr {
        format!("10.200.{}.1", self.octet)
            .parse()
            .expect("a valid address")
    }

    /// Pods as a node without podwall left them (before the migration, or with the daemon
    /// down and `failurePolicy: open`): each of `pods`, `(pod, name)`, is attached by the
    /// bridge alone and described in the manifests directory's `world.yaml` as pod `name` of
    /// `namespace`, labelled `role: name`, running on this node at the addresses it got.
    /// Returns the bridge's results, in order.
    pub fn pods_without_podwall(
        &self,
        namespace: &str,
        pods: &[(&crate::Pod, &str)],
    ) -> Vec<Value> {
        let bare = self.write_conflist("bare", &self.conflist_json("1.0.0", None));
        let results = pods
            .iter()
            .map(|(pod, name)| {
                self.libcni("add", &bare, pod)
                    .unwrap_or_else(|e| panic!("ADD {name} without podwall: {e}"))
            })
            .collect();
        let mut docs = vec![crate::manifests::namespace(namespace, &[])];
        docs.extend(pods.iter().map(|(pod, name)| {
            crate::manifests::PodManifest::new(namespace, name)
                .labels(&[("role", name)])
                .remote(self.name(), &pod.ips())
                .yaml()
        }));
        self.manifests()
            .write("world.yaml", &crate::manifests::documents(&docs));
        results
    }

    /// The default conflist: cniVersion 1.0.0, bridge + host-local, then podwall (closed).
    pub fn conflist(&self) -> &Path {
        &self.conflist
    }

    /// The `bridge` entry every conflist of this node shares. `isDefaultGateway` (which
    /// implies `isGateway`, as in the production conflist) gives pods a default route via
    /// the bridge address, so they reach external hosts through the node.
    pub fn bridge_entry(&self) -> Value {
        let mut ranges = vec![json!([{ "subnet": self.subnet4() }])];
        if self.options.dual_stack {
            ranges.push(json!([{ "subnet": self.subnet6() }]));
        }
        json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isDefaultGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "dataDir": self.dir().join("ipam"),
            },
        })
    }

    /// The `podwall` entry pointing at this node's socket, failing closed.
    pub fn podwall_entry(&self) -> Value {
        json!({
            "type": "podwall",
            "socket": self.socket(),
            "failurePolicy": "closed",
            "timeoutMs": 5000,
        })
    }

    /// A conflist of bridge (+ host-local) followed by `podwall` when given.
    pub fn conflist_json(&self, cni_version: &str, podwall: Option<Value>) -> Value {
        let mut plugins = vec![self.bridge_entry()];
        plugins.extend(podwall);
        json!({ "cniVersion": cni_version, "name": NETWORK, "plugins": plugins })
    }

    /// Write a conflist into the node's dir and return its path.
    pub fn write_conflist(&self, label: &str, list: &Value) -> PathBuf {
        let path = self.dir().join(format!("{label}.conflist"));
        fs::write(
            &path,
            serde_json::to_vec_pretty(list).expect("json serialises"),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    // ---- the daemon ----

    pub fn daemon_log_path(&self) -> PathBuf {
        self.dir().join("podwalld.log")
    }

    /// Everything the daemon printed so far (all its runs on this node).
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.daemon_log_path()).unwrap_or_default()
    }

    /// The node's CNI config directory as the daemon sees it (`--cni-net-dir`): empty unless
    /// a test puts a config there.
    pub fn cni_net_dir(&self) -> PathBuf {
        self.dir().join("net.d")
    }

    /// Where the daemon writes its drop log (`--drop-log`).
    pub fn drop_log_path(&self) -> PathBuf {
        self.dir().join("drops.jsonl")
    }

    /// The drop log's lines so far, each parsed; panics on a line that is not JSON (the
    /// log is a contract: one object a line).
    pub fn drop_log(&self) -> Vec<Value> {
        let text = fs::read_to_string(self.drop_log_path()).unwrap_or_default();
        text.lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("drop log line {line:?} is not JSON: {e}"))
            })
            .collect()
    }

    /// Start `podwalld` inside the node namespace and wait until `/healthz` says 200.
    /// Panics, showing the daemon's log, when it does not get there.
    pub fn start_daemon(&mut self) {
        self.spawn_daemon()
            .unwrap_or_else(|e| panic!("starting podwalld: {e:#}"));
        if let Err(e) = self.wait_healthy(DAEMON_DEADLINE) {
            panic!(
                "podwalld did not become healthy: {e:#}\n--- podwalld log ---\n{}",
                self.daemon_log()
            );
        }
    }

    /// Start `podwalld` without waiting for it.
    pub fn spawn_daemon(&mut self) -> Result<()> {
        if self.daemon.is_some() {
            bail!("podwalld is already running on {}", self.name);
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log_path())
            .context("opening the daemon log")?;
        let daemon = self.options.daemon.clone().unwrap_or_else(bins::daemon);
        let mut cmd = self.netns.command(daemon);
        cmd.arg("--node-name")
            .arg(&self.name)
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(self.mode_args())
            .args(self.drop_log_args())
            .args(&self.daemon_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the daemon log")?)
            .stderr(log.try_clone().context("sharing the daemon log")?);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,podwalld=debug");
        }
        for (key, value) in &self.daemon_env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        writeln!(log, "=== pwt: {}", cmd::display(&cmd)).context("writing the daemon log")?;
        // `ip netns exec` execs the program, so the child's pid is podwalld's own.
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", cmd::display(&cmd)))?;
        self.daemon = Some(child);
        Ok(())
    }

    /// The drop log goes to `drop_log_path` unless the test says where (`daemon_args`) or
    /// runs another build (which may not know the flag).
    fn drop_log_args(&self) -> Vec<String> {
        let chosen = self.daemon_args.iter().any(|a| a == "--drop-log");
        if chosen || self.options.daemon.is_some() {
            return Vec::new();
        }
        vec![
            "--drop-log".into(),
            self.drop_log_path().display().to_string(),
        ]
    }

    /// The flags that follow from the node's options.
    fn mode_args(&self) -> Vec<String> {
        // Without a source the daemon would look for an API server; a node with no policies
        // and no kubeconfig is a standalone node whose manifests directory is empty.
        let mut args = match &self.options.kubeconfig {
            // The node's own CNI config directory, never the host's: in Kubernetes mode
            // the daemon fills podwall's default conflist there.
            Some(kubeconfig) => vec![
                "--kubeconfig".to_string(),
                kubeconfig.display().to_string(),
                "--cni-net-dir".to_string(),
                self.cni_net_dir().display().to_string(),
            ],
            None => vec![
                "--manifests".to_string(),
                self.manifests().path().display().to_string(),
            ],
        };
        if let Some(timeout) = &self.options.cache_sync_timeout {
            args.push("--cache-sync-timeout".to_string());
            args.push(timeout.clone());
        }
        if let Some(period) = &self.options.sync_period {
            args.push("--sync-period".to_string());
            args.push(period.clone());
        }
        args
    }

    /// Poll `/healthz` until it answers 200; fail early when the daemon exits.
    pub fn wait_healthy(&mut self, deadline: Duration) -> Result<()> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.daemon_exit_status()? {
                bail!("podwalld exited with {status}");
            }
            match self.healthz() {
                Ok(200) => return Ok(()),
                Ok(code) if Instant::now() >= end => {
                    bail!("/healthz still answers {code} after {deadline:?}")
                }
                Err(e) if Instant::now() >= end => {
                    return Err(e.context(format!("/healthz not answering after {deadline:?}")))
                }
                // Often enough that a benchmark timing a start is not measuring this poll.
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// The status code of `GET /healthz`, asked inside the node namespace.
    pub fn healthz(&self) -> Result<u16> {
        Ok(self.http_get("/healthz")?.0)
    }

    /// `GET /metrics`, parsed. Panics when the daemon does not answer 200.
    pub fn metrics(&self) -> Metrics {
        match self.http_get("/metrics") {
            Ok((200, body)) => Metrics::parse(&body),
            other => panic!(
                "GET /metrics: {other:?}\n--- podwalld log ---\n{}",
                self.daemon_log()
            ),
        }
    }

    /// `GET <path>` on the daemon's health address, inside the node namespace: the status
    /// code and the body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        let addr: SocketAddr = HEALTH_ADDR.parse().expect("a valid address");
        crate::probe::http_get(&self.netns, addr, path)
    }

    /// The daemon's pid while the rig has one running.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// `Some(status)` when the daemon the rig started has exited (it is then forgotten).
    pub fn daemon_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        let Some(child) = self.daemon.as_mut() else {
            bail!("podwalld is not running on {}", self.name);
        };
        let status = child.try_wait().context("waiting for podwalld")?;
        if status.is_some() {
            self.daemon = None;
        }
        Ok(status)
    }

    /// Is the daemon the rig started still running?
    pub fn daemon_running(&mut self) -> bool {
        matches!(self.daemon_exit_status(), Ok(None))
    }

    /// Send a signal to the daemon.
    pub fn signal_daemon(&self, sig: Signal) {
        let pid = self.daemon_pid().expect("podwalld is running");
        signal::kill(Pid::from_raw(pid as i32), sig)
            .unwrap_or_else(|e| panic!("sending {sig} to podwalld: {e}"));
    }

    /// SIGTERM and wait for the exit; panics if the daemon does not stop in time.
    pub fn stop_daemon(&mut self) -> ExitStatus {
        self.signal_daemon(Signal::SIGTERM);
        self.reap_daemon("SIGTERM")
    }

    /// SIGKILL: the daemon gets no chance to clean up, as after a crash or OOM kill.
    pub fn kill_daemon(&mut self) -> ExitStatus {
        self.signal_daemon(Signal::SIGKILL);
        self.reap_daemon("SIGKILL")
    }

    fn reap_daemon(&mut self, what: &str) -> ExitStatus {
        let mut child = self.daemon.take().expect("podwalld is running");
        match cmd::wait_timeout(&mut child, DAEMON_DEADLINE) {
            Ok(Some(status)) => status,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "podwalld did not exit within {DAEMON_DEADLINE:?} after {what} ({other:?})\n--- podwalld log ---\n{}",
                    self.daemon_log()
                );
            }
        }
    }

    /// One request on the daemon's socket, with a short timeout.
    pub fn call(&self, request: &Request) -> Result<Reply, ClientError> {
        wire::call(&self.socket(), request, Duration::from_secs(5))
    }

    /// The daemon's status reply: (ready, number of attachments). Panics on any error.
    pub fn status(&self) -> (bool, usize) {
        match self.call(&Request::Status) {
            Ok(Reply::Status {
                ready, attachments, ..
            }) => (ready, attachments),
            other => panic!("status request: {other:?}"),
        }
    }

    /// What `podwalld status` prints for this node (over its socket); panics unless it exits 0.
    pub fn status_text(&self) -> String {
        let out = std::process::Command::new(crate::bins::daemon())
            .args(["status", "--socket"])
            .arg(self.socket())
            .output()
            .expect("running podwalld status");
        assert!(out.status.success(), "podwalld status: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `inet podwall` table in the node namespace, `None` when absent.
    pub fn ruleset(&self) -> Option<nft::Ruleset> {
        nft::read_table(&self.netns).unwrap_or_else(|e| panic!("reading the node's ruleset: {e:#}"))
    }

    /// Check that `ip` is attached in the kernel: the table exists, the ingress and egress
    /// maps of its family send `ip` to a chain (the `in_…`/`out_…` chain of the policies that
    /// select it, shared with the pods they also select, or `open` when none isolates it), and
    /// those chains exist.
    /// Returns the chains. Panics with the whole table when not.
    pub fn expect_attached(&self, ip: std::net::IpAddr) -> Vec<String> {
        let rules = self
            .ruleset()
            .unwrap_or_else(|| panic!("no table inet podwall in the node after attaching {ip}"));
        let family = if ip.is_ipv4() { "4" } else { "6" };
        let mut chains = Vec::new();
        for dir in ["ingress", "egress"] {
            let map = format!("{dir}{family}");
            let chain = rules.target(&map, ip).unwrap_or_else(|| {
                panic!("map {map} has no jump for {ip}:\n{}", self.ruleset_text())
            });
            assert!(
                rules.has_chain(chain),
                "{map} sends {ip} to {chain:?}, which is not an existing chain:\n{}",
                self.ruleset_text()
            );
            chains.push(chain.to_string());
        }
        chains
    }

    /// Check that nothing of `ip` is left: no map element for it, and none of its policy
    /// chains (`in_…`/`out_…` among `chains`) that no other pod's element still jumps to;
    /// shared chains, `open` and `quarantine` may stay.
    pub fn expect_detached(&self, ip: std::net::IpAddr, chains: &[String]) {
        let Some(rules) = self.ruleset() else { return };
        assert!(
            !rules.mentions(ip),
            "{ip} is still in a pod map:\n{}",
            self.ruleset_text()
        );
        for chain in chains.iter().filter(|c| nft::is_pod_chain(c)) {
            assert!(
                !rules.has_chain(chain) || rules.is_target(chain),
                "chain {chain} of {ip} is still there, and no pod jumps to it:\n{}",
                self.ruleset_text()
            );
        }
    }

    /// `nft list table inet podwall` as text, for people.
    pub fn ruleset_text(&self) -> String {
        nft::table_text(&self.netns).unwrap_or_else(|e| panic!("listing the node's ruleset: {e:#}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if !matches!(
                cmd::wait_timeout(&mut child, Duration::from_secs(5)),
                Ok(Some(_))
            ) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            let log = self.daemon_log();
            if !log.is_empty() {
                eprintln!(
                    "--- podwalld log of {} ---\n{log}--- end of podwalld log ---",
                    self.name
                );
            }
        }
        // The netns and the temp dir go with the fields.
    }
}

/// Pod↔pod traffic on a bridge reaches the `inet` hooks only through br_netfilter; load it
/// when missing (the only thing the rig ever changes outside its own namespaces).
fn ensure_br_netfilter() {
    if Path::new("/proc/sys/net/bridge").is_dir() {
        return;
    }
    let loaded = cmd::run(
        Command::new("modprobe").arg("br_netfilter"),
        None,
        cmd::SHORT,
    );
    if !Path::new("/proc/sys/net/bridge").is_dir() {
        panic!("br_netfilter is not available (modprobe br_netfilter: {loaded:?})");
    }
}

/// The permission bits of the Unix socket at `path` (an error if it is not a socket).
pub fn socket_mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if !meta.file_type().is_socket() {
        bail!("{} is not a socket", path.display());
    }
    Ok(meta.permissions().mode() & 0o7777)
}
