//! A private image registry for the rig: Debian's `docker-registry` (the CNCF distribution
//! registry), serving plain HTTP inside a test network namespace and asking for a login
//! (htpasswd, bcrypt), so pushing needs `podman login` and pulling needs the pull secret.
//! Clients mark it insecure (plain HTTP) through the `registries.conf` it writes
//! ([`Registry::registries_conf`], for `CONTAINERS_REGISTRIES_CONF`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::TestNetns;
use crate::wait::eventually;

/// The login the registry asks for.
pub const USER: &str = "pwt-operator";
pub const PASSWORD: &str = "pwt-registry-password";

/// A running registry; stopped and its storage removed on drop.
pub struct Registry {
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Registry {
    /// Serve on `addr` inside `netns`; panics when it does not answer within 20 s.
    pub fn start_in(netns: &TestNetns, addr: SocketAddr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pwt-registry-")
            .tempdir()
            .expect("a temp dir for the registry");
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("running htpasswd (apache2-utils)");
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("writing htpasswd");
        let config = format!(
            "version: 0.1\n\
             log: {{level: info, accesslog: {{disabled: true}}}}\n\
             storage: {{filesystem: {{rootdirectory: {root}}}}}\n\
             http: {{addr: '{addr}'}}\n\
             auth: {{htpasswd: {{realm: pwt, path: {htpasswd}}}}}\n",
            root = dir.path().join("storage").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing the registry's config");
        let conf = format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n");
        std::fs::write(dir.path().join("registries.conf"), conf).expect("writing registries.conf");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("a log file");
        let child = netns
            .command("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let registry = Registry { addr, child, dir };
        // Up: `/v2/` answers, and asks for the login.
        let up = eventually(Duration::from_secs(20), || {
            matches!(crate::probe::http_get(netns, addr, "/v2/"), Ok((401, _)))
        });
        assert!(up, "the registry did not answer:\n{}", registry.log());
        registry
    }

    /// On the first node of `cluster`, at its link address, port 5000, where both nodes
    /// reach it (as they reach the API server).
    pub fn start_for(cluster: &crate::Cluster) -> Self {
        let addr = format!("{}:5000", crate::cluster::LINK_A);
        Self::start_in(
            &cluster.nodes[0].netns,
            addr.parse().expect("a valid address"),
        )
    }

    /// The `registries.conf` that marks this registry as plain HTTP.
    pub fn registries_conf(&self) -> PathBuf {
        self.dir.path().join("registries.conf")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
