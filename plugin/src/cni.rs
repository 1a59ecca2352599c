//! The CNI spec as far as podwall needs it: the conflist entry, the runtime's environment,
//! the prevResult, and error objects. Pure: the caller reads stdin and the environment.
//!
//! The `cni-plugin` crate is not used: it speaks only 0.4.0 and 1.0.x (not 0.3.1, not 1.1's
//! STATUS and GC), exits the process on its own errors, and re-serialises the prevResult
//! through its own types, which can drop fields other plugins in the chain put there.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wire::{Attachment, AttachmentId, PodRef};

/// Spec versions this plugin accepts in `cniVersion`, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// CNI error codes (SPEC.md "Error" section), plus podwall's own from 100.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// CNI 1.1 STATUS: the plugin cannot serve ADD now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The daemon could not commit the change (kernel or store).
    pub const DAEMON_FAILED: u32 = 100;
    /// CHECK: the pod's rules are not (all) in the kernel.
    pub const RULES_MISSING: u32 = 101;
    /// The daemon and plugin do not understand each other (version skew).
    pub const PROTOCOL: u32 = 102;
    /// The daemon refused this caller.
    pub const REFUSED: u32 = 103;
}

/// A CNI error object, printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{msg} ({details})")]
pub struct CniError {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: "1.1.0".into(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }
    /// Errors carry the version the runtime asked for, so it can decode them.
    pub fn in_version(mut self, version: &str) -> Self {
        self.cni_version = version.to_string();
        self
    }
}

/// What the daemon being unreachable on ADD means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Fail the ADD with "try again later": no pod ever runs unenforced.
    #[default]
    Closed,
    /// Let the pod start; the daemon attaches it when it comes back.
    Open,
}

/// The `podwall` entry of a conflist, as the runtime hands it on stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// CNI 1.1 GC: the attachments the runtime still knows.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_socket() -> PathBuf {
    PathBuf::from(crate::DEFAULT_SOCKET)
}

fn default_timeout_ms() -> u64 {
    5000
}

impl NetConf {
    /// Parse and validate the config; every problem is error 7 naming the key.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                "invalid network config",
                e.to_string(),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {:?} is not one of {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if conf.timeout_ms == 0 {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network config",
                "timeoutMs must be above 0",
            )
            .in_version(&conf.cni_version));
        }
        Ok(conf)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// CHECK exists from 0.4.0 on; older runtimes must not send it.
    pub fn supports_check(&self) -> bool {
        !self.cni_version.starts_with("0.3.")
    }

    pub fn error(&self, code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError::new(code, msg, details).in_version(&self.cni_version)
    }
}

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: BTreeMap<String, String>,
}

impl Env {
    /// Read from a lookup function (std::env::var in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let non_empty = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let command = non_empty("CNI_COMMAND").ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                "invalid environment",
                "CNI_COMMAND is not set",
            )
        })?;
        let args = match non_empty("CNI_ARGS") {
            Some(raw) => parse_cni_args(&raw)?,
            None => BTreeMap::new(),
        };
        Ok(Env {
            command,
            container_id: non_empty("CNI_CONTAINERID"),
            netns: non_empty("CNI_NETNS"),
            ifname: non_empty("CNI_IFNAME"),
            args,
        })
    }

    /// The attachment key; both parts are required for ADD, DEL and CHECK.
    pub fn attachment_id(&self) -> Result<AttachmentId, CniError> {
        Ok(AttachmentId {
            container_id: self.require("CNI_CONTAINERID", &self.container_id)?,
            ifname: self.require("CNI_IFNAME", &self.ifname)?,
        })
    }

    pub fn require(&self, name: &str, value: &Option<String>) -> Result<String, CniError> {
        value.clone().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                "invalid environment",
                format!("{name} is required for {}", self.command),
            )
        })
    }

    /// The pod, from kubelet's CNI_ARGS; by hand it is `default/<container id>`.
    pub fn pod(&self, container_id: &str) -> PodRef {
        let namespace = self
            .args
            .get("K8S_POD_NAMESPACE")
            .cloned()
            .unwrap_or_else(|| "default".into());
        let name = self
            .args
            .get("K8S_POD_NAME")
            .cloned()
            .unwrap_or_else(|| container_id.to_string());
        PodRef {
            namespace,
            name,
            uid: self.args.get("K8S_POD_UID").cloned(),
        }
    }
}

/// `K=V;K2=V2`, as runtimes pass CNI_ARGS.
pub fn parse_cni_args(raw: &str) -> Result<BTreeMap<String, String>, CniError> {
    raw.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "invalid environment",
                format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

#[derive(Deserialize)]
struct PrevResult {
    #[serde(default)]
    interfaces: Vec<PrevInterface>,
    #[serde(default)]
    ips: Vec<PrevIp>,
}

#[derive(Deserialize)]
struct PrevInterface {
    name: String,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct PrevIp {
    address: String,
}

/// The attachment an ADD describes: pod identity from the environment, addresses from the
/// prevResult (which must have at least one).
pub fn attachment_from_add(conf: &NetConf, env: &Env) -> Result<Attachment, CniError> {
    let id = env.attachment_id()?;
    let netns = env.require("CNI_NETNS", &env.netns)?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        conf.error(
            code::INVALID_CONFIG,
            "missing prevResult",
            "podwall is a chained plugin: put it after bridge in a conflist so it receives the pod's addresses",
        )
    })?;
    let pod = env.pod(&id.container_id);
    attachment_from_result(id, pod, netns, prev).map_err(|err| match err {
        ResultError::Decode(detail) => {
            conf.error(code::DECODE_FAILURE, "cannot decode prevResult", detail)
        }
        ResultError::NoAddresses => conf.error(
            code::INVALID_CONFIG,
            "prevResult has no IP addresses",
            "the plugin before podwall (bridge with host-local IPAM) must assign the pod an address",
        ),
    })
}

/// Why a CNI result does not describe an attachment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error("cannot decode the result: {0}")]
    Decode(String),
    #[error("the result has no IP addresses")]
    NoAddresses,
}

/// The attachment a CNI result (an ADD's prevResult, or the runtime's cached result of it)
/// describes for pod `pod`: its addresses and the host side of its veth.
pub fn attachment_from_result(
    id: AttachmentId,
    pod: PodRef,
    netns: String,
    result: &Value,
) -> Result<Attachment, ResultError> {
    let prev: PrevResult =
        serde_json::from_value(result.clone()).map_err(|e| ResultError::Decode(e.to_string()))?;
    let ips = prev
        .ips
        .iter()
        .map(|ip| parse_address(&ip.address).map_err(ResultError::Decode))
        .collect::<Result<Vec<_>, _>>()?;
    if ips.is_empty() {
        return Err(ResultError::NoAddresses);
    }
    // bridge lists the bridge first, then the host veth, then the pod's interface: the host
    // side of the veth is the last interface that is not in the pod's sandbox.
    let host_interface = prev
        .interfaces
        .iter()
        .rev()
        .find(|i| i.sandbox.as_deref().unwrap_or("").is_empty())
        .map(|i| i.name.clone());
    Ok(Attachment {
        id,
        pod,
        netns,
        ips,
        host_interface,
    })
}

/// What libcni (the runtime's CNI library) keeps of a successful ADD in
/// `<cache dir>/results/<network>-<container id>-<ifname>`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedAdd {
    container_id: String,
    if_name: String,
    #[serde(default)]
    cni_args: Vec<(String, String)>,
    #[serde(default)]
    result: Option<Value>,
}

/// The attachment a libcni cache entry records: the pod from its CNI_ARGS, the rest from the
/// result it cached (podwall returns the bridge's result unchanged, so it is the same one).
pub fn attachment_from_cache(bytes: &[u8]) -> Result<Attachment, ResultError> {
    let cached: CachedAdd =
        serde_json::from_slice(bytes).map_err(|e| ResultError::Decode(e.to_string()))?;
    let result = cached
        .result
        .ok_or_else(|| ResultError::Decode("no result cached".to_string()))?;
    let env = Env {
        args: cached.cni_args.into_iter().collect(),
        ..Env::default()
    };
    let pod = env.pod(&cached.container_id);
    // The pod's interface sits in its network namespace: the sandbox is that path.
    let netns = result
        .get("interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("sandbox").and_then(Value::as_str))
        .find(|sandbox| !sandbox.is_empty())
        .unwrap_or_default()
        .to_string();
    let id = AttachmentId {
        container_id: cached.container_id,
        ifname: cached.if_name,
    };
    attachment_from_result(id, pod, netns, &result)
}

/// `10.1.0.5/24` or a bare address.
fn parse_address(text: &str) -> Result<IpAddr, String> {
    let addr = text.split_once('/').map_or(text, |(a, _)| a);
    addr.parse()
        .map_err(|_| format!("ips[].address {text:?} is not an IP address"))
}

/// The VERSION reply.
pub fn version_reply(requested: Option<&str>) -> Value {
    let version = requested
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .unwrap_or("1.1.0");
    serde_json::json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    fn add_env() -> Env {
        env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/p"),
        ])
    }

    const BRIDGE_RESULT: &str = r#"{"cniVersion":"1.0.0","name":"k","type":"podwall","prevResult":{
        "cniVersion":"1.0.0",
        "interfaces":[{"name":"kube-bridge","mac":"aa"},{"name":"veth1234","mac":"bb"},{"name":"eth0","mac":"cc","sandbox":"/run/netns/p"}],
        "ips":[{"interface":2,"address":"10.244.1.5/24","gateway":"10.244.1.1"},{"interface":2,"address":"fd00::5/64"}]}}"#;

    #[test]
    fn defaults_follow_the_contract() {
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"k","type":"podwall"}"#).unwrap();
        assert_eq!(conf.socket, PathBuf::from("/run/podwall/podwall.sock"));
        assert_eq!(conf.failure_policy, FailurePolicy::Closed);
        assert_eq!(conf.timeout(), Duration::from_secs(5));
    }

    #[test]
    fn unknown_keys_are_ignored_because_runtimes_add_their_own() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","type":"podwall","runtimeConfig":{"x":1},"foo":2}"#,
        );
        assert!(conf.is_ok());
    }

    #[test]
    fn bad_failure_policy_is_invalid_config_naming_the_value() {
        let err =
            NetConf::parse(br#"{"cniVersion":"1.0.0","type":"podwall","failurePolicy":"maybe"}"#)
                .unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(err.details.contains("maybe"), "{}", err.details);
    }

    #[test]
    fn unsupported_version_is_error_1() {
        let err = NetConf::parse(br#"{"cniVersion":"0.2.0","type":"podwall"}"#).unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn zero_timeout_is_refused() {
        let err = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"podwall","timeoutMs":0}"#)
            .unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(err.details.contains("timeoutMs"));
    }

    #[test]
    fn a_libcni_cache_entry_gives_back_the_attachment() {
        // What libcni writes to <cache dir>/results/<network>-<container id>-<ifname> after
        // an ADD through bridge and podwall (config shortened).
        let cached = br#"{"kind":"cniCacheV1","containerId":"c1","config":"e30=","ifName":"eth0",
            "networkName":"kubernetes","cniArgs":[["IgnoreUnknown","1"],["K8S_POD_NAMESPACE","shop"],
            ["K8S_POD_NAME","front"],["K8S_POD_UID","u-1"]],
            "result":{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},
            {"name":"veth1234","mac":"aa:bb:cc:dd:ee:01"},
            {"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/var/run/netns/p1"}],
            "ips":[{"interface":2,"address":"10.244.1.5/24","gateway":"10.244.1.1"}]}}"#;
        let attachment = attachment_from_cache(cached).unwrap();
        assert_eq!(attachment.id.container_id, "c1");
        assert_eq!(attachment.id.ifname, "eth0");
        assert_eq!(
            (
                attachment.pod.namespace.as_str(),
                attachment.pod.name.as_str()
            ),
            ("shop", "front")
        );
        assert_eq!(attachment.pod.uid.as_deref(), Some("u-1"));
        assert_eq!(
            attachment.ips,
            vec!["10.244.1.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(attachment.host_interface.as_deref(), Some("veth1234"));
        assert_eq!(attachment.netns, "/var/run/netns/p1");
        assert!(attachment_from_cache(b"{\"containerId\":\"c1\",\"ifName\":\"eth0\"}").is_err());
        assert!(attachment_from_cache(b"not json").is_err());
    }

    #[test]
    fn attachment_takes_ips_and_host_veth_from_bridge_result() {
        let conf = NetConf::parse(BRIDGE_RESULT.as_bytes()).unwrap();
        let att = attachment_from_add(&conf, &add_env()).unwrap();
        assert_eq!(
            att.ips,
            vec![
                "10.244.1.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(att.host_interface.as_deref(), Some("veth1234"));
        assert_eq!(att.pod.to_string(), "default/c1");
    }

    #[test]
    fn pod_identity_comes_from_cni_args() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db-0;K8S_POD_UID=u1",
            ),
        ]);
        let pod = e.pod("c1");
        assert_eq!(
            (
                pod.namespace.as_str(),
                pod.name.as_str(),
                pod.uid.as_deref()
            ),
            ("shop", "db-0", Some("u1"))
        );
    }

    #[test]
    fn malformed_cni_args_is_an_environment_error() {
        let err = parse_cni_args("K8S_POD_NAME").unwrap_err();
        assert_eq!(err.code, code::INVALID_ENVIRONMENT);
        assert!(err.details.contains("K8S_POD_NAME"));
    }

    #[test]
    fn add_without_prev_result_is_a_clear_config_error() {
        let conf = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"podwall"}"#).unwrap();
        let err = attachment_from_add(&conf, &add_env()).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(err.msg.contains("prevResult"));
        assert_eq!(err.cni_version, "1.0.0");
    }

    #[test]
    fn add_with_no_ips_is_refused() {
        let conf =
            NetConf::parse(br#"{"cniVersion":"0.4.0","type":"podwall","prevResult":{"cniVersion":"0.4.0","ips":[]}}"#)
                .unwrap();
        let err = attachment_from_add(&conf, &add_env()).unwrap_err();
        assert!(err.msg.contains("no IP"), "{}", err.msg);
    }

    #[test]
    fn add_needs_netns_and_container_id() {
        let conf = NetConf::parse(BRIDGE_RESULT.as_bytes()).unwrap();
        let err = attachment_from_add(
            &conf,
            &env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.code, code::INVALID_ENVIRONMENT);
        assert!(err.details.contains("CNI_NETNS"));
    }

    #[test]
    fn bad_address_in_prev_result_names_it() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","type":"podwall","prevResult":{"ips":[{"address":"10.1.300.1/24"}]}}"#,
        )
        .unwrap();
        let err = attachment_from_add(&conf, &add_env()).unwrap_err();
        assert_eq!(err.code, code::DECODE_FAILURE);
        assert!(err.details.contains("10.1.300.1"));
    }

    #[test]
    fn version_reply_echoes_a_supported_request() {
        assert_eq!(version_reply(Some("0.3.1"))["cniVersion"], "0.3.1");
        assert_eq!(version_reply(Some("9.9.9"))["cniVersion"], "1.1.0");
        assert_eq!(
            version_reply(None)["supportedVersions"]
                .as_array()
                .unwrap()
                .len(),
            SUPPORTED_VERSIONS.len()
        );
    }

    #[test]
    fn error_object_has_the_spec_fields() {
        let json =
            serde_json::to_value(CniError::new(11, "try later", "").in_version("0.4.0")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion":"0.4.0","code":11,"msg":"try later"})
        );
    }
}
