//! `podwall`, the CNI plugin: reads the runtime's environment and stdin, asks `podwalld` to
//! attach, detach or check the pod, and prints the result or a CNI error object on stdout.
//! It logs to stderr only and has no async runtime.
//!
//! A runtime passes no arguments (the command is in `CNI_COMMAND`); `podwall install` and
//! `podwall uninstall` are for the install-cni init container (see `podwall::install`), and
//! `podwall --version` is for people.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::ExitCode;

use podwall::cni::{self, code, CniError, Env, FailurePolicy, NetConf};
use podwall::wire::{self, AttachmentId, ClientError, ErrorKind, Reply, Request};
use podwall::{error_chain, install};
use serde_json::Value;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args.is_empty() && std::env::var_os("CNI_COMMAND").is_none() {
        return install_command(&args);
    }
    let outcome =
        Env::from_lookup(|k| std::env::var(k).ok()).and_then(|env| run(&env, &read_stdin()?));
    let mut out = std::io::stdout().lock();
    let (text, status) = match outcome {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(value)) => (value.to_string(), ExitCode::SUCCESS),
        Err(err) => (
            serde_json::to_string(&err).expect("error objects serialise"),
            ExitCode::FAILURE,
        ),
    };
    // Nothing else can be reported if stdout is gone; the exit status still tells.
    let _ = writeln!(out, "{text}");
    status
}

/// `podwall install|uninstall …`: one line per change on stdout, one line on stderr and a
/// non-zero status on failure (2 for usage).
fn install_command(args: &[std::ffi::OsString]) -> ExitCode {
    let command = match install::parse_args(args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("podwall: {e}\n{}", install::USAGE);
            return ExitCode::from(2);
        }
    };
    if command == install::Command::Version {
        println!("podwall {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match install::run(&command) {
        Ok(lines) => {
            for line in lines {
                println!("podwall: {line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podwall: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            "cannot read network config from stdin",
            e.to_string(),
        )
    })?;
    Ok(buf)
}

/// One invocation: `Ok(Some(json))` is printed, `Ok(None)` prints nothing.
fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        let requested: Option<String> = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string));
        return Ok(Some(cni::version_reply(requested.as_deref())));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command.as_str() {
        "ADD" => add(&conf, env),
        "DEL" => del(&conf, env),
        "CHECK" => check(&conf, env),
        "STATUS" => status(&conf),
        "GC" => gc(&conf),
        other => Err(conf.error(
            code::INVALID_ENVIRONMENT,
            "invalid environment",
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
        )),
    }
}

fn add(conf: &NetConf, env: &Env) -> Result<Option<Value>, CniError> {
    let attachment = cni::attachment_from_add(conf, env)?;
    let pod = attachment.pod.to_string();
    match wire::call(
        &conf.socket,
        &Request::Attach { attachment },
        conf.timeout(),
    ) {
        Ok(_) => {}
        Err(ClientError::Unreachable { .. } | ClientError::NoAnswer { .. })
            if conf.failure_policy == FailurePolicy::Open =>
        {
            eprintln!(
                "podwall: daemon unreachable, starting pod {pod} unenforced (failurePolicy open)"
            );
        }
        Err(err) => return Err(daemon_error(conf, err, "cannot attach pod")),
    }
    // The chain's result is the bridge's, untouched: podwall adds no interfaces or addresses.
    Ok(conf.prev_result.clone())
}

fn del(conf: &NetConf, env: &Env) -> Result<Option<Value>, CniError> {
    let id = env.attachment_id()?;
    match wire::call(&conf.socket, &Request::Detach { id }, conf.timeout()) {
        Ok(_) => Ok(None),
        // The spec asks DEL to succeed when the pod is gone; with the daemon gone there is
        // nothing of ours to remove here, and its reconcile removes leftovers.
        Err(ClientError::Unreachable { .. }) => Ok(None),
        Err(err) => Err(daemon_error(conf, err, "cannot detach pod")),
    }
}

fn check(conf: &NetConf, env: &Env) -> Result<Option<Value>, CniError> {
    if !conf.supports_check() {
        return Err(conf.error(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "CHECK needs cniVersion 0.4.0 or later, the config says {}",
                conf.cni_version
            ),
        ));
    }
    let id: AttachmentId = env.attachment_id()?;
    wire::call(&conf.socket, &Request::Check { id }, conf.timeout())
        .map(|_| None)
        .map_err(|err| daemon_error(conf, err, "pod check failed"))
}

fn status(conf: &NetConf) -> Result<Option<Value>, CniError> {
    match wire::call(&conf.socket, &Request::Status, conf.timeout()) {
        // STATUS asks whether ADDs can be served, not whether every watch has synced.
        Ok(Reply::Status { ready, serving, .. }) if serving.unwrap_or(ready) => Ok(None),
        Ok(Reply::Status { reason, .. }) => Err(conf.error(
            code::NOT_AVAILABLE,
            "podwalld cannot serve ADDs",
            reason.unwrap_or_default(),
        )),
        Ok(other) => Err(conf.error(
            code::PROTOCOL,
            "unexpected reply from podwalld",
            format!("{other:?}"),
        )),
        Err(ClientError::Unreachable { .. } | ClientError::NoAnswer { .. })
            if conf.failure_policy == FailurePolicy::Open =>
        {
            Ok(None)
        }
        Err(err) => {
            let mut unavailable = daemon_error(conf, err, "podwalld is not available");
            unavailable.code = code::NOT_AVAILABLE;
            Err(unavailable)
        }
    }
}

fn gc(conf: &NetConf) -> Result<Option<Value>, CniError> {
    let valid = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| AttachmentId {
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
        })
        .collect();
    match wire::call(&conf.socket, &Request::Gc { valid }, conf.timeout()) {
        Ok(_) | Err(ClientError::Unreachable { .. }) => Ok(None),
        Err(err) => Err(daemon_error(conf, err, "garbage collection failed")),
    }
}

/// The one place that maps a failure to talk to the daemon onto a CNI error code.
fn daemon_error(conf: &NetConf, err: ClientError, what: &str) -> CniError {
    let code = match &err {
        ClientError::Unreachable { .. } | ClientError::NoAnswer { .. } => code::TRY_AGAIN_LATER,
        ClientError::Malformed(_) => code::PROTOCOL,
        ClientError::Daemon(e) => match e.kind {
            ErrorKind::BadRequest | ErrorKind::UnsupportedVersion => code::PROTOCOL,
            ErrorKind::Forbidden => code::REFUSED,
            ErrorKind::NotAttached | ErrorKind::RulesMissing => code::RULES_MISSING,
            ErrorKind::Kernel | ErrorKind::Store | ErrorKind::Internal => code::DAEMON_FAILED,
        },
    };
    conf.error(code, what, error_chain(&err))
}
