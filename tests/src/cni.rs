//! Attaching pods to a node through the CNI chain, two ways:
//! - through the real libcni (`tests/cnitool/main.go`), as a container runtime does, with
//!   the node's conflist file;
//! - by invoking plugin binaries directly (`CNI_COMMAND` and friends, config on stdin),
//!   including chaining by hand: bridge ADD, its result injected as `prevResult`, podwall ADD.
//!
//! Both run inside the node namespace (`ip netns exec`), where the bridge lives, and return
//! a `CniOutcome`: the JSON the program printed, or a `CniFailure` with the CNI error code.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::bins;
use crate::cmd::{self, Output};
use crate::netns::TestNetns;
use crate::node::{Node, NETWORK};

/// A pod: a network namespace plus the identity the runtime gives the attachment.
#[derive(Debug)]
pub struct Pod {
    pub netns: TestNetns,
    /// `CNI_CONTAINERID`; the netns name, so it is unique and says which test made it.
    pub container_id: String,
    pub ifname: String,
    /// `CNI_ARGS` (`K8S_POD_NAMESPACE=…;K8S_POD_NAME=…`), as kubelet's runtimes pass it.
    pub cni_args: Option<String>,
}

impl Pod {
    /// A pod without Kubernetes identity: the daemon sees it as `default/<container id>`.
    pub fn new(label: &str) -> Self {
        let netns = TestNetns::new(&format!("pod-{label}"));
        Pod {
            container_id: netns.name().to_string(),
            ifname: "eth0".into(),
            cni_args: None,
            netns,
        }
    }

    /// A pod named `namespace/name` through `CNI_ARGS`.
    pub fn named(label: &str, namespace: &str, name: &str) -> Self {
        let mut pod = Self::new(label);
        pod.cni_args = Some(format!(
            "K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID=uid-{}",
            pod.container_id
        ));
        pod
    }

    /// Pods `namespace/name` for each of `names`, labelled `{prefix}-{name}`.
    pub fn all_named(prefix: &str, namespace: &str, names: &[&str]) -> Vec<Self> {
        (names.iter())
            .map(|name| Self::named(&format!("{prefix}-{name}"), namespace, name))
            .collect()
    }

    /// The addresses on the pod's interface, read from the kernel (link-local excluded);
    /// empty when the interface does not exist.
    pub fn ips(&self) -> Vec<IpAddr> {
        let out = self
            .netns
            .exec(&["ip", "-j", "addr", "show"])
            .and_then(Output::ok)
            .unwrap_or_else(|e| panic!("reading the addresses of {}: {e:#}", self.container_id));
        let links: Value = serde_json::from_str(&out.stdout).expect("ip -j prints JSON");
        links
            .as_array()
            .into_iter()
            .flatten()
            .filter(|link| link["ifname"] == self.ifname.as_str())
            .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["scope"] == "global")
            .filter_map(|a| a["local"].as_str().and_then(|ip| ip.parse().ok()))
            .collect()
    }

    /// The pod's IPv4 address; panics when it has none (not attached).
    pub fn ip4(&self) -> IpAddr {
        self.ips()
            .into_iter()
            .find(IpAddr::is_ipv4)
            .unwrap_or_else(|| panic!("pod {} has no IPv4 address", self.container_id))
    }
}

/// What a CNI program answered: its JSON on success (`Value::Null` when it printed nothing).
/// The failure is boxed: it carries the whole output, and results are moved around a lot.
pub type CniOutcome = Result<Value, Box<CniFailure>>;

/// A failed CNI call: the error object's fields, and everything the program printed.
#[derive(Debug, Clone)]
pub struct CniFailure {
    /// The CNI error code, when stdout carried an error object.
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
    /// The error object exactly as printed, when stdout was JSON.
    pub object: Option<Value>,
    pub output: Output,
}

impl fmt::Display for CniFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CNI error {:?}: {} ({})\n{}",
            self.code, self.msg, self.details, self.output
        )
    }
}

impl std::error::Error for CniFailure {}

/// Turn a program's output into an outcome: exit 0 with JSON or nothing is success; anything
/// else is a failure, with the error object parsed when there is one.
pub fn outcome(output: Output) -> CniOutcome {
    let parsed: Option<Value> = serde_json::from_str(output.stdout.trim()).ok();
    if output.success() {
        if output.stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        if let Some(value) = parsed {
            return Ok(value);
        }
    }
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    Err(Box::new(CniFailure {
        code: parsed.as_ref().and_then(|v| v["code"].as_u64()),
        msg: if output.success() {
            "exit status 0 but stdout is not JSON".into()
        } else {
            field("msg")
        },
        details: field("details"),
        object: parsed.clone(),
        output,
    }))
}

/// The addresses in a CNI result's `ips` list.
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next().and_then(|a| a.parse().ok()))
        .collect()
}

/// A plugin's stdin: a conflist entry with the list's `cniVersion` and `name` added, as
/// libcni builds it.
pub fn entry_config(entry: &Value, cni_version: &str) -> Value {
    let mut conf = entry.clone();
    conf["cniVersion"] = cni_version.into();
    conf["name"] = NETWORK.into();
    conf
}

impl Node {
    /// Run the libcni runner: `op` is `add`, `check` or `del`.
    pub fn libcni(&self, op: &str, conflist: &Path, pod: &Pod) -> CniOutcome {
        let mut cmd = self.netns.command(bins::cnitool());
        cmd.arg(op)
            .arg(conflist)
            .arg(pod.netns.path())
            .arg(&pod.container_id)
            .arg(&pod.ifname)
            .env("CNI_PATH", self.cni_path())
            .env("CNI_CACHE_DIR", self.cni_cache_dir());
        match &pod.cni_args {
            Some(args) => cmd.env("CNI_ARGS", args),
            None => cmd.env_remove("CNI_ARGS"),
        };
        run_cni(&mut cmd, None)
    }

    /// ADD through libcni with the node's default conflist.
    pub fn add(&self, pod: &Pod) -> CniOutcome {
        self.libcni("add", self.conflist(), pod)
    }

    /// ADD every pod through libcni, one after the other; panics on the first failure.
    pub fn add_all(&self, pods: &[&Pod]) {
        for pod in pods {
            self.add(pod)
                .unwrap_or_else(|e| panic!("ADD {}: {e}", pod.container_id));
        }
    }

    /// CHECK through libcni with the node's default conflist.
    pub fn check(&self, pod: &Pod) -> CniOutcome {
        self.libcni("check", self.conflist(), pod)
    }

    /// DEL through libcni with the node's default conflist.
    pub fn del(&self, pod: &Pod) -> CniOutcome {
        self.libcni("del", self.conflist(), pod)
    }

    /// libcni's VERSION query of a plugin in the node's CNI_PATH.
    pub fn libcni_version(&self, plugin_type: &str) -> CniOutcome {
        let mut cmd = self.netns.command(bins::cnitool());
        cmd.arg("version")
            .arg(plugin_type)
            .env("CNI_PATH", self.cni_path());
        run_cni(&mut cmd, None)
    }

    /// Invoke a plugin binary directly, with `pod`'s identity in the environment (when
    /// given) and `config` on stdin.
    pub fn invoke(
        &self,
        plugin: &Path,
        command: &str,
        pod: Option<&Pod>,
        config: &Value,
    ) -> CniOutcome {
        let mut cmd = self.netns.command(plugin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_PATH", self.cni_path());
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
            cmd.env_remove(var);
        }
        if let Some(pod) = pod {
            cmd.env("CNI_CONTAINERID", &pod.container_id)
                .env("CNI_NETNS", pod.netns.path())
                .env("CNI_IFNAME", &pod.ifname);
            if let Some(args) = &pod.cni_args {
                cmd.env("CNI_ARGS", format!("IgnoreUnknown=1;{args}"));
            }
        }
        let stdin = serde_json::to_vec(config).expect("json serialises");
        run_cni(&mut cmd, Some(&stdin))
    }

    /// Invoke the podwall plugin directly.
    pub fn invoke_podwall(&self, command: &str, pod: Option<&Pod>, config: &Value) -> CniOutcome {
        self.invoke(&bins::plugin(), command, pod, config)
    }

    /// The chain by hand: bridge ADD, then podwall ADD with bridge's result as `prevResult`.
    /// Returns bridge's result and podwall's outcome. Panics when bridge fails.
    pub fn add_by_hand(
        &self,
        pod: &Pod,
        cni_version: &str,
        podwall: &Value,
    ) -> (Value, CniOutcome) {
        let bridge = self
            .invoke(
                &bins::debian_plugin("bridge"),
                "ADD",
                Some(pod),
                &entry_config(&self.bridge_entry(), cni_version),
            )
            .unwrap_or_else(|e| panic!("bridge ADD of {}: {e}", pod.container_id));
        let mut conf = entry_config(podwall, cni_version);
        conf["prevResult"] = bridge.clone();
        (bridge, self.invoke_podwall("ADD", Some(pod), &conf))
    }

    /// DEL by hand, in the reverse order of ADD: podwall, then bridge. Returns podwall's
    /// outcome; panics when bridge fails.
    pub fn del_by_hand(&self, pod: &Pod, cni_version: &str, podwall: &Value) -> CniOutcome {
        let ours = self.invoke_podwall("DEL", Some(pod), &entry_config(podwall, cni_version));
        self.invoke(
            &bins::debian_plugin("bridge"),
            "DEL",
            Some(pod),
            &entry_config(&self.bridge_entry(), cni_version),
        )
        .unwrap_or_else(|e| panic!("bridge DEL of {}: {e}", pod.container_id));
        ours
    }
}

/// Run a CNI program with the usual timeout; a timeout is a test failure, not an outcome.
pub(crate) fn run_cni(cmd: &mut Command, stdin: Option<&[u8]>) -> CniOutcome {
    let output = cmd::run(cmd, stdin, cmd::SHORT).unwrap_or_else(|e| panic!("{e:#}"));
    outcome(output)
}

/// The conflist install-cni writes on a node without a CNI config of its own: the
/// ConfigMap's, from `install/base/10-configmap.yaml`.
pub fn default_conflist() -> String {
    let path = bins::workspace_root().join("install/base/10-configmap.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let map: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    map["data"]["10-podwall.conflist"]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no 10-podwall.conflist", path.display()))
        .to_string()
}

/// A Node object named `name` with the pod ranges `cidrs` (none: no `podCIDR` at all).
pub fn node_yaml(name: &str, cidrs: &[&str]) -> String {
    let spec = match cidrs {
        [] => "{}".to_string(),
        [first, ..] => format!(
            "{{podCIDR: '{first}', podCIDRs: ['{}']}}",
            cidrs.join("', '")
        ),
    };
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn output(code: i32, stdout: &str) -> Output {
        Output {
            command: "plugin".into(),
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn error_object_on_stdout_gives_its_code() {
        let err = outcome(output(
            1,
            r#"{"cniVersion":"1.0.0","code":7,"msg":"missing prevResult","details":"d"}"#,
        ))
        .unwrap_err();
        assert_eq!(err.code, Some(7));
        assert_eq!(err.msg, "missing prevResult");
        assert_eq!(err.details, "d");
    }

    #[test]
    fn failure_without_json_has_no_code() {
        let err = outcome(output(2, "panic!")).unwrap_err();
        assert_eq!(err.code, None);
    }

    #[test]
    fn success_is_json_or_nothing() {
        assert_eq!(outcome(output(0, "")).unwrap(), Value::Null);
        assert_eq!(outcome(output(0, r#"{"a":1}"#)).unwrap()["a"], 1);
        assert!(outcome(output(0, "not json")).is_err());
    }

    #[test]
    fn result_ips_drop_the_prefix() {
        let ips = result_ips(
            &serde_json::json!({"ips":[{"address":"10.1.0.5/24"},{"address":"fd00::5/64"}]}),
        );
        assert_eq!(
            ips,
            vec![
                "10.1.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
    }
}
