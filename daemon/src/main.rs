//! `podwalld`: flags → `Config`, start the tasks, map the exit status. Nothing else.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use podwalld::config::{Cli, Command, Config, Source};
use podwalld::core::{lock, Core, Options};
use podwalld::dataplane::nft::NftKernel;
use podwalld::dataplane::Conntrack;
use podwalld::droplog::DropLog;
use podwalld::health::Health;
use podwalld::metrics::Metrics;
use podwalld::sources::{kube, manifests};
use podwalld::store::Store;
use podwalld::{explain, http, server, sync};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("podwalld: {}", usage_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Explain(args)) => explain::run(&args),
        Some(Command::Cleanup) => cleanup(),
        Some(Command::Pods(args)) => pods(&args),
        Some(Command::Status(args)) => status(&args),
        None => run(cli.daemon).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("podwalld: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message up to its first blank line, as one line: "the following required
/// arguments were not provided: --to <TO>".
fn usage_line(message: &str) -> String {
    let head: Vec<&str> = message
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    head.join(" ").trim_start_matches("error: ").to_string()
}

/// `podwalld pods`: the daemon's answer, one pod a line (or as JSON).
fn pods(args: &podwalld::config::QueryArgs) -> anyhow::Result<ExitCode> {
    let reply = podwall::wire::call(
        &args.socket,
        &podwall::wire::Request::Pods,
        std::time::Duration::from_secs(5),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let podwall::wire::Reply::Pods { pods, .. } = reply else {
        anyhow::bail!("the daemon answered {reply:?}, not the pods it enforces");
    };
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&pods)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |names: &[String]| {
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    };
    println!("POD\tADDRESSES\tHOW\tINGRESS\tEGRESS");
    for pod in &pods {
        let ips: Vec<String> = pod.ips.iter().map(ToString::to_string).collect();
        println!(
            "{}/{}\t{}\t{}\t{}\t{}",
            pod.namespace,
            pod.name,
            ips.join(","),
            pod.how,
            list(&pod.ingress),
            list(&pod.egress)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `podwalld status`: the first thing a cutover runbook checks on a node.
fn status(args: &podwalld::config::QueryArgs) -> anyhow::Result<ExitCode> {
    let ask = |request: &podwall::wire::Request| {
        podwall::wire::call(&args.socket, request, std::time::Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let podwall::wire::Reply::Status {
        ready,
        attachments,
        reason,
        serving,
    } = ask(&podwall::wire::Request::Status)?
    else {
        anyhow::bail!("the daemon did not answer with its status");
    };
    let podwall::wire::Reply::Pods { pods, policies } = ask(&podwall::wire::Request::Pods)? else {
        anyhow::bail!("the daemon did not answer with the pods it enforces");
    };
    let code = if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if args.output == "json" {
        let doc = serde_json::json!({
            "ready": ready, "serving": serving.unwrap_or(ready), "reason": reason,
            "attachments": attachments, "pods": pods, "policies": policies,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(code);
    }
    match &reason {
        None => println!("ready: rules programmed and in sync; {attachments} attachments"),
        Some(reason) => println!("not ready: {reason}"),
    }
    if !serving.unwrap_or(ready) {
        println!("ADDs cannot be served: a change waits for the kernel");
    }
    let counted = |direction: &str, policy: &String| {
        let count = policies.iter().find(|c| {
            c.direction == direction
                && c.policy == *policy
                && matches!(c.tier.as_str(), "" | "NetworkPolicy")
        });
        match count {
            Some(c) => format!("{policy} (allowed {}, denied {})", c.allowed, c.denied),
            None => format!("{policy} (allowed 0, denied 0)"),
        }
    };
    let list = |direction: &str, names: &[String]| {
        if names.is_empty() {
            return "-".to_string();
        }
        let items: Vec<String> = names.iter().map(|p| counted(direction, p)).collect();
        items.join(", ")
    };
    println!("POD\tHOW\tINGRESS\tEGRESS");
    for pod in &pods {
        println!(
            "{}/{}\t{}\t{}\t{}",
            pod.namespace,
            pod.name,
            pod.how,
            list("ingress", &pod.ingress),
            list("egress", &pod.egress)
        );
    }
    let cluster: Vec<_> = (policies.iter())
        .filter(|c| matches!(c.tier.as_str(), "Admin" | "Baseline"))
        .collect();
    if !cluster.is_empty() {
        println!("CLUSTER POLICY\tTIER\tDIRECTION\tALLOWED\tDENIED");
        for c in cluster {
            let (tier, direction) = (&c.tier, &c.direction);
            println!(
                "{}\t{tier}\t{direction}\t{}\t{}",
                c.policy, c.allowed, c.denied
            );
        }
    }
    Ok(code)
}

fn cleanup() -> anyhow::Result<ExitCode> {
    let removed = NftKernel::default()
        .remove_table()
        .context("removing the podwall table")?;
    println!(
        "{}",
        if removed {
            "removed the podwall tables (inet, bridge)"
        } else {
            "no podwall table to remove"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn run(args: podwalld::config::DaemonArgs) -> anyhow::Result<()> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string());
    let config = Config::from_args(args, hostname)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if config.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = podwalld::COMMIT,
        "podwalld starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon(config))
}

/// Start every part of the daemon and serve until a shutdown signal.
async fn daemon(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let store = Store::open(&config.state_dir)
        .with_context(|| format!("opening state store {}", config.state_dir.display()))?;
    let health_listener = tokio::net::TcpListener::bind(config.health_addr)
        .await
        .with_context(|| format!("binding health address {}", config.health_addr))?;
    let proc_bridge = std::path::PathBuf::from("/proc/sys/net/bridge");
    let switched = podwalld::sysctl::ensure_bridge_netfilter(&proc_bridge)?;
    if switched.is_empty() {
        info!("br_netfilter on: bridged pod traffic passes the forward hook");
    } else {
        info!(switched = ?switched, "turned br_netfilter on: bridged pod traffic passes the forward hook");
    }
    let shutdown = CancellationToken::new();
    let mut tasks = vec![tokio::spawn(http::serve_http(
        health_listener,
        health.clone(),
        metrics.clone(),
        config.health_addr.ip().is_loopback(),
        shutdown.clone(),
    ))];

    // The cluster comes from a manifests directory, or from the API server's watchers.
    // Watchers of a start from the stored state begin once the socket serves: the lists
    // would otherwise compete with the start's compile for the node's CPU.
    let mut deferred = None;
    let (source, cluster, updates, lookup) = match &config.source {
        Source::Manifests(dir) => {
            // Watched before the first read, so that a change during it is seen.
            let watch = manifests::start_watching(dir);
            let mut reader = manifests::Reader::new(dir.clone(), metrics.clone());
            let cluster = reader.load()?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tasks.push(tokio::spawn(manifests::watch(
                reader,
                watch,
                tx,
                shutdown.clone(),
            )));
            ("manifests", cluster, rx, None)
        }
        Source::Kubernetes {
            kubeconfig,
            cache_sync_timeout,
        } => {
            let client = kube::client(kubeconfig.as_deref()).await?;
            tasks.push(tokio::spawn(kube::podcidr::keep_filling(
                client.clone(),
                config.node_name.clone(),
                config.cni_net_dir.clone(),
                health.clone(),
                shutdown.clone(),
            )));
            let stored = match store.cluster_interned() {
                Ok(stored) => stored,
                // A cache, not the truth: relist rather than refuse to start.
                Err(err @ podwalld::store::StoreError::CorruptCluster(_)) => {
                    warn!(
                        error = format!("{:#}", anyhow::Error::from(err)),
                        "discarding the unreadable stored cluster state; relisting"
                    );
                    metrics.count_store_discard();
                    store
                        .discard_cluster()
                        .context("discarding the stored cluster state")?;
                    None
                }
                Err(err) => return Err(err).context("reading the stored cluster state"),
            };
            let from_store = stored.is_some();
            let cache = match stored {
                Some((snapshot, interner)) => kube::Cache::from_interned(snapshot, interner),
                None => kube::Cache::default(),
            };
            // The core's copy shares the cache's names and label sets.
            let stored = from_store.then(|| cache.snapshot().clone());
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let watch = kube::run(
                client.clone(),
                cache,
                tx,
                health.clone(),
                metrics.clone(),
                config.node_name.clone(),
                shutdown.clone(),
            );
            let cluster = match stored {
                // Serve attachments and keep the rules right from the last-known state while
                // the API server is (maybe) unreachable; health stays red until it syncs.
                Some(stored) => {
                    info!(
                        pods = stored.pods.len(),
                        policies = stored.policies.len(),
                        "starting from the stored cluster state"
                    );
                    deferred = Some(watch);
                    stored
                }
                None => {
                    tasks.push(tokio::spawn(watch));
                    kube::wait_synced(&mut rx, &health, *cache_sync_timeout).await?
                }
            };
            ("api", cluster, rx, Some(kube::PodLookup::new(client)))
        }
    };

    // Bound before the start's table is rendered: its chains log only when someone reads.
    let drop_log = DropLog::open(config.drop_log.clone())?;
    let socket = server::bind(&config.socket)?;
    let core = Core::start(
        config.node_name.clone(),
        cluster,
        store,
        Box::new(NftKernel::default()),
        Options {
            // The API server knows every pod's labels, we may just not have them yet; a
            // manifests directory describes every pod there is.
            quarantine_unknown: matches!(config.source, Source::Kubernetes { .. }),
            cni_cache: Some(config.cni_cache_dir.clone()),
            logging: drop_log.as_ref().map(DropLog::logging),
        },
        metrics.clone(),
        health.clone(),
    )?;
    let read_back_first = core.read_back_due();
    let core = Arc::new(Mutex::new(core));
    let socket =
        tokio::net::UnixListener::from_std(socket).context("registering the plugin socket")?;
    tasks.push(tokio::spawn(server::serve_socket(
        socket,
        core.clone(),
        lookup,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(sync::retry_pending(
        core.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(sync::revoke_flows(
        core.clone(),
        Box::new(Conntrack::default()),
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(sync::keep_bridge_netfilter(
        proc_bridge,
        sync::BRIDGE_CHECK,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(sync::count_policies(
        core.clone(),
        shutdown.clone(),
    )));
    if let Some(drop_log) = drop_log {
        let (core, node) = (core.clone(), config.node_name.clone());
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            drop_log.run(core, node, metrics, shutdown)
        }));
    }
    tasks.push(tokio::spawn(sync::watchdog(
        core.clone(),
        health.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(sync::reconcile_every(
        config.sync_period,
        read_back_first,
        core.clone(),
        shutdown.clone(),
    )));
    let persist = matches!(config.source, Source::Kubernetes { .. });
    tasks.push(tokio::spawn(sync::follow_source(
        source,
        updates,
        core.clone(),
        persist,
        shutdown.clone(),
    )));
    tasks.extend(deferred.map(tokio::spawn));
    info!(node = %config.node_name, source, socket = %config.socket.display(), health = %config.health_addr, "podwalld serving");
    wait_for_signal().await?;
    // Rules stay in the kernel: pods keep their enforcement while the daemon is away.
    info!("shutting down; rules stay in place");
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    tokio::task::spawn_blocking(move || hand_over(&core, persist))
        .await
        .context("handing the kernel over")?;
    Ok(())
}

/// With every task ended: record how the kernel is left (see `Core::hand_over`), so that
/// the next start can keep the table instead of swapping it in again.
fn hand_over(core: &Mutex<Core>, persist_cluster: bool) {
    match lock(core).hand_over(persist_cluster) {
        Ok(true) => info!("recorded how the kernel is left: the next start can keep the table"),
        Ok(false) => {}
        Err(err) => {
            warn!(error = %err, "cannot record how the kernel is left: the next start swaps the whole table in")
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
    }
    Ok(())
}
