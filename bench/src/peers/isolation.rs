//! Isolation before the first packet: pods start into namespace `iso`, whose policy denies
//! all ingress, while the denied prober (a remote pod behind the node) connects to each new
//! pod's address from the moment its ADD returns, for a fixed window. Each new pod listens
//! before its ADD, so any connection that opens got through: a leak.
//!
//! - podwall: the pod's rules are in the kernel before its ADD returns.
//! - kube-router shape: the pod is up when bridge returns; the controller learns of it then
//!   (as from the API server, but with no watch delay) and runs a full resync, coalescing
//!   the starts that queue up meanwhile, as kube-router's sync loop does. Until the resync
//!   that includes the pod is applied, nothing filters its traffic.
//!
//! [`PARALLEL`] pods start at once on each node; the nodes take turns over the rounds.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use podwall_policy::selector::Labels;
use podwall_policy::{Pod as PolicyPod, PodKey, Snapshot};
use podwall_tests::cni::{result_ips, Pod};
use podwall_tests::external::ExternalHost;
use podwall_tests::manifests::PodManifest;
use podwall_tests::node::Node;

use super::pair::{first_v4, resync, Pair};
use super::podstart::PARALLEL;
use super::world::{ISOLATED_NAMESPACE, TARGET_PORT};
use crate::stats::{order, Samples};

/// Each probe's connect timeout.
const ATTEMPT: Duration = Duration::from_millis(2);

/// What the denied peer got through on one node.
#[derive(Debug, Clone, Default)]
pub struct Leaks {
    pub starts: usize,
    /// Connections the new pods accepted.
    pub connections: usize,
    /// Pods that accepted at least one.
    pub pods: usize,
    /// Connection attempts made.
    pub probes: usize,
    /// ADD return → the pod's rules applied (kube-router shape only: podwall's are applied
    /// before the ADD returns).
    pub exposed: Samples,
    /// The ADDs themselves.
    pub add: Samples,
}

impl Leaks {
    fn merge(&mut self, other: &Leaks) {
        self.starts += other.starts;
        self.connections += other.connections;
        self.pods += other.pods;
        self.probes += other.probes;
        self.exposed.extend(&other.exposed);
        self.add.extend(&other.add);
    }
}

/// `starts` pod starts on each node of `pair`, probing each for `window`, in `rounds`
/// rounds that alternate the nodes.
pub fn measure(
    pair: &Pair,
    starts: usize,
    window: Duration,
    rounds: usize,
) -> Result<(Leaks, Leaks)> {
    let pw_name = pair.pw.node().name().to_string();
    for k in 0..PARALLEL {
        let yaml = PodManifest::new(ISOLATED_NAMESPACE, &slot(k))
            .remote(&pw_name, &[])
            .yaml();
        pair.pw
            .cluster
            .api
            .apply_yaml(&yaml)
            .map_err(|e| anyhow!("creating pod {}: {e:?}", slot(k)))?;
    }
    let (mut podwall, mut kuberouter) = (Leaks::default(), Leaks::default());
    let rounds = rounds.max(1);
    for round in 0..rounds {
        // The last round takes what does not divide evenly.
        let n = starts / rounds
            + if round == rounds - 1 {
                starts % rounds
            } else {
                0
            };
        for side in order(2, round) {
            if side == 0 {
                podwall.merge(&run_podwall(pair, n, window).context("podwall")?);
            } else {
                kuberouter.merge(&run_kuberouter(pair, n, window).context("kube-router shape")?);
            }
        }
    }
    Ok((podwall, kuberouter))
}

fn run_podwall(pair: &Pair, starts: usize, window: Duration) -> Result<Leaks> {
    run(
        pair.pw.node(),
        pair.pw.node().conflist(),
        &pair.pw.prober,
        starts,
        window,
        None,
    )
}

fn run_kuberouter(pair: &Pair, starts: usize, window: Duration) -> Result<Leaks> {
    let (tx, rx) = mpsc::channel();
    let snapshot = pair.kr_snapshot.clone();
    let (leaks, exposed) = std::thread::scope(|s| {
        let controller = s.spawn(|| controller_loop(&pair.kr, snapshot, rx));
        // `run` drops the last sender when it returns, which ends the controller's loop.
        let leaks = run(
            &pair.kr,
            &pair.kr_conflist,
            &pair.kr_prober,
            starts,
            window,
            Some(tx),
        );
        let exposed = controller
            .join()
            .map_err(|_| anyhow!("the kube-router-shaped controller panicked"));
        (leaks, exposed)
    });
    let mut leaks = leaks?;
    leaks.exposed = exposed??;
    Ok(leaks)
}

fn slot(k: usize) -> String {
    format!("iso-{k}")
}

/// What the pod-start workers tell the kube-router-shaped controller.
enum Event {
    Up {
        key: PodKey,
        ip: IpAddr,
        at: Instant,
    },
    Gone {
        key: PodKey,
    },
}

fn run(
    node: &Node,
    conflist: &Path,
    prober: &ExternalHost,
    starts: usize,
    window: Duration,
    controller: Option<mpsc::Sender<Event>>,
) -> Result<Leaks> {
    let total = Arc::new(std::sync::Mutex::new(Leaks::default()));
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|k| {
                let total = total.clone();
                let controller = controller.clone();
                s.spawn(move || -> Result<()> {
                    let mut i = k;
                    while i < starts {
                        let one =
                            start_one(node, conflist, prober, k, i, window, controller.as_ref())?;
                        let mut t = total.lock().expect("leaks lock");
                        t.starts += 1;
                        t.connections += one.accepted;
                        t.pods += usize::from(one.accepted > 0);
                        t.probes += one.probes;
                        t.add.push(one.add);
                        drop(t);
                        i += PARALLEL;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a pod-start worker panicked")?;
        }
        Ok(())
    })?;
    let leaks = total.lock().expect("leaks lock").clone();
    Ok(leaks)
}

struct One {
    add: Duration,
    accepted: usize,
    probes: usize,
}

fn start_one(
    node: &Node,
    conflist: &Path,
    prober: &ExternalHost,
    k: usize,
    i: usize,
    window: Duration,
    controller: Option<&mpsc::Sender<Event>>,
) -> Result<One> {
    let pod = Pod::named(&format!("iso{i}"), ISOLATED_NAMESPACE, &slot(k));
    let listener = Listener::start(&pod)?;
    let t0 = Instant::now();
    let result = node
        .libcni("add", conflist, &pod)
        .map_err(|e| anyhow!("ADD {}: {e}", pod.container_id))?;
    let up = Instant::now();
    let add = up - t0;
    let ip = first_v4(&result_ips(&result)).context("no IPv4 address from the ADD")?;
    let key = PodKey::new(ISOLATED_NAMESPACE, slot(k));
    if let Some(c) = controller {
        let _ = c.send(Event::Up {
            key: key.clone(),
            ip,
            at: up,
        });
    }
    let target = SocketAddr::new(ip, TARGET_PORT);
    let probes = prober.netns.run_in(|| {
        let mut n = 0;
        while up.elapsed() < window {
            let _ = TcpStream::connect_timeout(&target, ATTEMPT);
            n += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        n
    });
    let accepted = listener.stop();
    node.libcni("del", conflist, &pod)
        .map_err(|e| anyhow!("DEL {}: {e}", pod.container_id))?;
    // host-local hands the address out again a few hundred starts later; a neighbour entry
    // left for it would send the next pod's first packets to this pod's gone MAC (for seconds
    // of ARP DELAY), which would look like enforcement on both nodes.
    node.netns
        .exec(&[
            "ip",
            "neigh",
            "flush",
            "to",
            &ip.to_string(),
            "dev",
            node.bridge(),
        ])
        .and_then(podwall_tests::cmd::Output::ok)
        .context("forgetting the pod's neighbour entry")?;
    if let Some(c) = controller {
        let _ = c.send(Event::Gone { key });
    }
    Ok(One {
        add,
        accepted,
        probes,
    })
}

/// A TCP listener in a new pod, bound before the pod has an address, counting accepts.
struct Listener {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Listener {
    fn start(pod: &Pod) -> Result<Self> {
        let listener = pod
            .netns
            .run_in(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, TARGET_PORT)))
            .context("binding the new pod's listener")?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            std::thread::spawn(move || loop {
                match listener.accept() {
                    Ok(_) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return,
                }
            })
        };
        Ok(Listener {
            stop,
            accepted,
            thread,
        })
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.accepted.load(Ordering::Relaxed)
    }
}

/// The kube-router-shaped controller: a full resync whenever pods came or went, taking
/// every event queued by then into the same resync.
fn controller_loop(node: &Node, mut snap: Snapshot, rx: mpsc::Receiver<Event>) -> Result<Samples> {
    let mut exposed = Samples::default();
    // The loop ends when every worker has dropped its sender.
    while let Ok(first) = rx.recv() {
        let mut pending = Vec::new();
        for event in std::iter::once(first).chain(rx.try_iter()) {
            match event {
                Event::Up { key, ip, at } => {
                    let mut pod = PolicyPod::new(key.clone(), Labels::new(), vec![ip]);
                    pod.node = Some(node.name().into());
                    snap.upsert_pod(pod);
                    pending.push(at);
                }
                Event::Gone { key } => {
                    snap.pods.remove(&key);
                }
            }
        }
        resync(node, &snap)?;
        let done = Instant::now();
        exposed.0.extend(pending.into_iter().map(|at| done - at));
    }
    Ok(exposed)
}
