//! Issue 4: enforcement at attach time. A pod attached into a namespace whose policies deny
//! all ingress never accepts a connection, not even in the first milliseconds after its ADD
//! returns: the ADD returns only once the pod's full rules are committed.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use podwall_tests::manifests::{documents, namespace};
use podwall_tests::probe::EchoServer;
use podwall_tests::{Node, NodeOptions, Pod, TestNetns};

/// How long the prober keeps connecting after the ADD returned.
const HAMMER: Duration = Duration::from_millis(1500);
/// Each attempt's connect timeout: a dropped SYN costs this, so attempts come every few ms.
const ATTEMPT: Duration = Duration::from_millis(5);

/// What a prober saw: attempts made, connections accepted (it stops at the first), and how
/// long after the ADD returned that one was accepted.
#[derive(Debug)]
struct Hammered {
    attempts: usize,
    accepted: usize,
    first_accepted: Option<Duration>,
}

/// Start a prober in `from` (before the ADD), give it the pod's address the moment the ADD
/// returns, and let it connect to `port` in a tight loop for `HAMMER` or until accepted.
fn hammer_while_attaching(node: &Node, from: &TestNetns, pod: &Pod, port: u16) -> Hammered {
    let (tx, rx) = mpsc::channel::<(IpAddr, Instant)>();
    let stop = &AtomicBool::new(false);
    std::thread::scope(|s| {
        let prober = s.spawn(move || {
            from.run_in(move || {
                let Ok((ip, returned)) = rx.recv() else {
                    return None;
                };
                let target = SocketAddr::new(ip, port);
                let mut seen = Hammered {
                    attempts: 0,
                    accepted: 0,
                    first_accepted: None,
                };
                while returned.elapsed() < HAMMER && !stop.load(Ordering::Relaxed) {
                    seen.attempts += 1;
                    if TcpStream::connect_timeout(&target, ATTEMPT).is_ok() {
                        // One accepted connection settles the question.
                        seen.accepted += 1;
                        seen.first_accepted = Some(returned.elapsed());
                        break;
                    }
                }
                Some(seen)
            })
        });
        let added = node.add(pod);
        let returned = Instant::now();
        match &added {
            Ok(result) => {
                let ip = podwall_tests::cni::result_ips(result)
                    .into_iter()
                    .find(IpAddr::is_ipv4)
                    .expect("the ADD result names an IPv4 address");
                tx.send((ip, returned)).expect("the prober waits");
            }
            Err(_) => stop.store(true, Ordering::Relaxed),
        }
        drop(tx);
        let seen = prober.join().expect("prober thread");
        if let Err(e) = added {
            panic!("ADD {}: {e}", pod.container_id);
        }
        seen.expect("the prober ran")
    })
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pod_attached_into_a_deny_all_namespace_never_accepts_a_connection() {
    let deny = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: locked}
spec: {podSelector: {}}
";
    // The policy is in the daemon's first load: it is in force before any ADD.
    let node = Node::standalone(
        "attach",
        NodeOptions::default(),
        &[
            (
                "world.yaml",
                documents(&[namespace("locked", &[]), namespace("free", &[])]),
            ),
            ("deny.yaml", deny.into()),
        ],
    );
    let prober = Pod::named("att-prober", "free", "prober");
    node.add_all(&[&prober]);

    // The pods' servers listen before their ADD: a rule committed late would show at once.
    let locked = Pod::named("att-locked", "locked", "target");
    let _locked_server = EchoServer::start(&locked.netns, 80);
    let seen = hammer_while_attaching(&node, &prober.netns, &locked, 80);

    // The control: the same prober against a pod of an open namespace gets in at once.
    let open = Pod::named("att-open", "free", "target");
    let _open_server = EchoServer::start(&open.netns, 80);
    let control = hammer_while_attaching(&node, &prober.netns, &open, 80);

    eprintln!("deny-all pod: {seen:?}\nopen pod: {control:?}");
    assert!(
        control.accepted > 0 && control.first_accepted < Some(Duration::from_millis(500)),
        "the prober works: an open pod accepts it at once: {control:?}"
    );
    assert!(
        seen.attempts >= 50,
        "the prober kept trying every few ms: {seen:?}"
    );
    assert_eq!(
        seen.accepted,
        0,
        "the deny-all pod accepted connections after its ADD returned: {seen:?}\n{}",
        node.ruleset_text()
    );
}
