//! Fuzzing of the plugin's input surfaces: the socket protocol in both directions, the network
//! config with its prevResult on stdin, and the CNI_* environment. Every case only has to
//! return without a panic; the driver and the environment variables that run it longer are
//! in `fuzz/driver.rs`, the corpus in `fuzz/corpus/`.

#[path = "../../fuzz/driver.rs"]
mod driver;

use std::collections::BTreeMap;

use podwall::cni::{self, Env, NetConf};
use podwall::wire::{self, AttachmentId, Outcome, ReplyFrame};
use serde_json::Value;

#[test]
fn wire_request_decoding_never_panics() {
    driver::run("wire_request", 12_000, |line| {
        let _ = wire::decode_request(line);
    });
}

#[test]
fn wire_reply_decoding_never_panics() {
    driver::run("wire_reply", 12_000, |bytes| {
        let _ = decode_reply(bytes);
    });
}

#[test]
fn cni_config_and_prev_result_parsing_never_panics() {
    let env = add_env();
    driver::run("cni_config", 8_000, |stdin| {
        // VERSION reads only `cniVersion`, from any JSON.
        let requested = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string));
        let _ = cni::version_reply(requested.as_deref());
        let Ok(conf) = NetConf::parse(stdin) else {
            return;
        };
        let _ = (conf.timeout(), conf.supports_check());
        let _ = cni::attachment_from_add(&conf, &env);
        let _ = gc_valid(&conf);
    });
}

#[test]
fn cni_env_parsing_never_panics() {
    let conf = NetConf::parse(include_bytes!(
        "../../fuzz/corpus/cni_config/add-1.0.0-dual-stack.json"
    ))
    .expect("the corpus config parses");
    driver::run("cni_env", 10_000, |text| {
        let _ = cni::parse_cni_args(&String::from_utf8_lossy(text));
        let vars = variables(text);
        let Ok(env) = Env::from_lookup(|k| vars.get(k).cloned()) else {
            return;
        };
        if let Ok(id) = env.attachment_id() {
            let _ = env.pod(&id.container_id);
        }
        let _ = cni::attachment_from_add(&conf, &env);
    });
}

/// What `wire::call` does with the daemon's answer: the first line, as a reply frame.
fn decode_reply(bytes: &[u8]) -> Result<wire::Reply, String> {
    let line = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => bytes,
    };
    let frame: ReplyFrame = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    match frame.outcome {
        Outcome::Reply(reply) => Ok(reply),
        Outcome::Error(err) => Err(format!("{:?}: {err}", err.kind)),
    }
}

/// What the plugin's GC sends the daemon.
fn gc_valid(conf: &NetConf) -> Vec<AttachmentId> {
    conf.valid_attachments
        .iter()
        .flatten()
        .map(|a| AttachmentId {
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
        })
        .collect()
}

/// `KEY=VALUE` lines as the process environment; like `std::env::var`, a value that is not
/// UTF-8 reads as unset.
fn variables(text: &[u8]) -> BTreeMap<String, String> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let eq = line.iter().position(|&b| b == b'=')?;
            let key = std::str::from_utf8(&line[..eq]).ok()?;
            let value = std::str::from_utf8(&line[eq + 1..]).ok()?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

fn add_env() -> Env {
    let vars = variables(include_bytes!("../../fuzz/corpus/cni_env/add-kubelet.env"));
    Env::from_lookup(|k| vars.get(k).cloned()).expect("the corpus environment parses")
}
