//! The cluster policies of the tier comparison (`tiers`): guardrails a platform team would
//! keep on a cluster, as ClusterNetworkPolicies, added to a world of the peer benchmark
//! without changing any verdict the benchmark probes, so that the figures with and without
//! them are comparable.
//!
//! Of `n` policies, nine in ten are Admin (priorities spread over 0–899) and the rest
//! Baseline. Admin policy `i` has one of ten subjects, `i % 10`, with `k = i / 10`:
//! 0. every local namespace (`env=prod`): Deny from `quarantine`, Pass from the team
//!    namespaces (the NetworkPolicies decide, as before), Deny egress to the documentation
//!    networks 192.0.2.0/24 and 2001:db8::/32;
//! 1. the local namespaces of shard `k % 5`: Accept from `monitoring` on TCP 9100, Deny
//!    from `quarantine` on the named port `http`;
//! 2. the local pods of group `k`: Deny from `quarantine`'s pods on TCP and UDP
//!    30000–32767, and egress to them;
//! 3. namespaces `env=staging` (none here): as 0;
//! 4. the remote team namespaces: Deny from `quarantine`, egress to the documentation networks;
//! 5. `quarantine` itself: Deny every namespace both ways, and egress to every network;
//! 6. `monitoring`: Deny from `quarantine`, Accept egress to `env=prod` on TCP 9100;
//! 7. `kube-system`: Accept from `monitoring` on TCP 9153, Deny from `quarantine`;
//! 8. remote pods `app=a{k}`: Deny from `quarantine` on `http`, egress to the documentation
//!    networks;
//! 9. `iso`: Deny from `quarantine`.
//!
//! Every local pod is thus a subject of about a dozen Admin policies, the target included,
//! and of the even Baseline policies (`env=prod`: Deny from `quarantine`, Accept from
//! `monitoring` on TCP 9100, Deny egress to the documentation networks); the odd ones deny
//! all ingress to `env=staging`. `quarantine` and `monitoring` each hold one remote pod,
//! so their peer sets are not empty; neither ever probes. [`compare`] asks the evaluator,
//! with and without them, for every verdict the benchmark's sections probe.

use std::net::IpAddr;

use anyhow::{anyhow, Result};
use podwall_policy::{evaluate, Endpoint, PodKey, Protocol, Query, Snapshot};
use podwall_tests::manifests::{cluster_policy, namespace, PodManifest};

use super::change::cycles;
use super::packet::CLIENT;
use super::pair::apply_to;
use super::world::{Spec, PROBER_ADDR, SHARDS, TARGET, TARGET_PORT};

/// The quarantined pod's and the monitoring pod's addresses: in the remote range, above
/// any remote pod of the worlds.
pub const QUARANTINE_ADDR: &str = "10.127.255.1";
pub const MONITORING_ADDR: &str = "10.127.255.2";

const PROD: &str = "{namespaces: {matchLabels: {env: prod}}}";
const STAGING: &str = "{namespaces: {matchLabels: {env: staging}}}";
const QUARANTINE: &str = "{namespaces: {matchLabels: {quarantine: \"true\"}}}";
const QUARANTINE_PODS: &str =
    "{pods: {namespaceSelector: {matchLabels: {quarantine: \"true\"}}, podSelector: {}}}";
const TEAMS: &str = "{namespaces: {matchExpressions: [{key: team, operator: Exists}]}}";
const MONITORING: &str = "{namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}";
const DOCUMENTATION: &str = "{networks: [192.0.2.0/24, \"2001:db8::/32\"]}";
const SCRAPE: &str = "[{tcp: {destinationPort: {number: 9100}}}]";
const NODE_PORTS: &str = "[{tcp: {destinationPort: {range: {start: 30000, end: 32767}}}}, \
                          {udp: {destinationPort: {range: {start: 30000, end: 32767}}}}]";

/// Admin policies of `n`; the rest are Baseline.
pub fn admin_count(n: usize) -> usize {
    n - n / 10
}

/// What both sides of the comparison hold besides the world: the `quarantine` and
/// `monitoring` namespaces, with a remote pod each.
pub fn fixture() -> Vec<String> {
    let pod = |ns: &str, name: &str, app: &str, addr: &str| {
        let ip: IpAddr = addr.parse().expect("a valid address");
        PodManifest::new(ns, name)
            .labels(&[("app", app)])
            .remote("pwt-remote-1", &[ip])
            .yaml()
    };
    vec![
        namespace("quarantine", &[("quarantine", "true")]),
        pod("quarantine", "suspect", "suspect", QUARANTINE_ADDR),
        namespace("monitoring", &[]),
        pod("monitoring", "prometheus", "prometheus", MONITORING_ADDR),
    ]
}

/// The `n` ClusterNetworkPolicies for `spec`'s world.
pub fn policies(spec: &Spec, n: usize) -> Vec<String> {
    let admin = admin_count(n);
    let baseline = n - admin;
    let mut out: Vec<String> = (0..admin)
        .map(|i| {
            let priority = u16::try_from(i * 900 / admin.max(1)).expect("under 900");
            cluster_policy(
                &format!("guard-{i}"),
                "Admin",
                priority,
                &admin_body(spec, i),
            )
        })
        .collect();
    out.extend((0..baseline).map(|j| {
        let priority = u16::try_from(j * 1000 / baseline.max(1)).expect("under 1000");
        cluster_policy(
            &format!("baseline-{j}"),
            "Baseline",
            priority,
            &baseline_body(j),
        )
    }));
    out
}

fn admin_body(spec: &Spec, i: usize) -> String {
    let k = i / 10;
    let platform = |subject: &str| {
        format!(
            "subject: {subject}\ningress:\n\
             - {{name: no-quarantine, action: Deny, from: [{QUARANTINE}]}}\n\
             - {{name: teams-decide, action: Pass, from: [{TEAMS}]}}\n\
             egress:\n- {{name: no-documentation-nets, action: Deny, to: [{DOCUMENTATION}]}}"
        )
    };
    match i % 10 {
        0 => platform(PROD),
        1 => format!(
            "subject: {{namespaces: {{matchLabels: {{shard: s{}}}}}}}\ningress:\n\
             - {{name: scrape, action: Accept, from: [{MONITORING}], protocols: {SCRAPE}}}\n\
             - {{name: no-quarantine-http, action: Deny, from: [{QUARANTINE}], protocols: [{{destinationNamedPort: http}}]}}",
            k % SHARDS
        ),
        2 => format!(
            "subject: {{pods: {{namespaceSelector: {{matchLabels: {{env: prod}}}}, podSelector: {{matchLabels: {{grp: g{}}}}}}}}}\n\
             ingress:\n- {{name: no-quarantine-node-ports, action: Deny, from: [{QUARANTINE_PODS}], protocols: {NODE_PORTS}}}\n\
             egress:\n- {{name: no-quarantine, action: Deny, to: [{QUARANTINE_PODS}]}}",
            k % spec.groups()
        ),
        3 => platform(STAGING),
        4 => format!(
            "subject: {TEAMS}\ningress:\n- {{name: no-quarantine, action: Deny, from: [{QUARANTINE}]}}\n\
             egress:\n- {{name: no-documentation-nets, action: Deny, to: [{DOCUMENTATION}]}}"
        ),
        5 => format!(
            "subject: {QUARANTINE}\ningress:\n- {{name: isolate-in, action: Deny, from: [{{namespaces: {{}}}}]}}\n\
             egress:\n- {{name: isolate-out, action: Deny, to: [{{namespaces: {{}}}}, {{networks: [0.0.0.0/0, \"::/0\"]}}]}}"
        ),
        6 => format!(
            "subject: {MONITORING}\ningress:\n- {{name: no-quarantine, action: Deny, from: [{QUARANTINE}]}}\n\
             egress:\n- {{name: scrape, action: Accept, to: [{PROD}], protocols: {SCRAPE}}}"
        ),
        7 => format!(
            "subject: {{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: kube-system}}}}}}\ningress:\n\
             - {{name: scrape-dns, action: Accept, from: [{MONITORING}], protocols: [{{tcp: {{destinationPort: {{number: 9153}}}}}}]}}\n\
             - {{name: no-quarantine, action: Deny, from: [{QUARANTINE}]}}"
        ),
        8 => format!(
            "subject: {{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: a{k}}}}}}}}}\ningress:\n\
             - {{name: no-quarantine-http, action: Deny, from: [{QUARANTINE}], protocols: [{{destinationNamedPort: http}}]}}\n\
             egress:\n- {{name: no-documentation-nets, action: Deny, to: [{DOCUMENTATION}]}}"
        ),
        _ => format!(
            "subject: {{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: iso}}}}}}\n\
             ingress:\n- {{name: no-quarantine, action: Deny, from: [{QUARANTINE}]}}"
        ),
    }
}

fn baseline_body(j: usize) -> String {
    if j % 2 == 0 {
        format!(
            "subject: {PROD}\ningress:\n- {{name: no-quarantine, action: Deny, from: [{QUARANTINE}]}}\n\
             - {{name: scrape, action: Accept, from: [{MONITORING}], protocols: {SCRAPE}}}\n\
             egress:\n- {{name: no-documentation-nets, action: Deny, to: [{DOCUMENTATION}]}}"
        )
    } else {
        format!(
            "subject: {STAGING}\ningress:\n- {{name: default-deny, action: Deny, from: [{{namespaces: {{}}}}]}}"
        )
    }
}

/// One verdict a section of the benchmark probes, as the evaluator gives it without and
/// with the cluster policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub what: String,
    /// What the section waits for, where it expects a verdict.
    pub expected: Option<bool>,
    pub without: bool,
    pub with: bool,
}

impl Agreement {
    /// Both sides give the verdict the section expects.
    pub fn holds(&self) -> bool {
        self.without == self.with && self.expected.is_none_or(|e| e == self.with)
    }
}

/// [`probed`] over the world without and with the cluster policies, side by side.
pub fn compare(without: &Snapshot, with: &Snapshot) -> Result<Vec<Agreement>> {
    let (a, b) = (probed(without)?, probed(with)?);
    if a.len() != b.len() {
        return Err(anyhow!(
            "{} probed verdicts without, {} with",
            a.len(),
            b.len()
        ));
    }
    Ok(a.into_iter()
        .zip(b)
        .map(|((what, expected, without), (_, _, with))| Agreement {
            what,
            expected,
            without,
            with,
        })
        .collect())
}

/// The evaluator's verdicts, over `snap`, for what the sections probe, with what each
/// section expects: the prober to the target on its port at the start and after every
/// timed step of the change cycles (applied to a copy), and the client pod to the target
/// when the client is in `snap`.
pub fn probed(snap: &Snapshot) -> Result<Vec<(String, Option<bool>, bool)>> {
    let target = Endpoint::Pod(PodKey::new(TARGET.0, TARGET.1));
    let prober = Endpoint::Ip(PROBER_ADDR.parse().expect("a valid address"));
    let verdict = |snap: &Snapshot, from: &Endpoint| -> Result<bool> {
        let query = Query {
            from: from.clone(),
            to: target.clone(),
            protocol: Protocol::Tcp,
            port: TARGET_PORT,
        };
        evaluate(snap, &query)
            .map(|v| v.allowed)
            .map_err(|e| anyhow!("evaluating {from} -> {}: {e}", query.to))
    };
    let mut out = vec![(
        "prober → target, at the start".to_string(),
        Some(false),
        verdict(snap, &prober)?,
    )];
    let mut changed = snap.clone();
    for cycle in cycles() {
        for step in cycle {
            apply_to(&mut changed, &step.op);
            if let Some((kind, allow)) = step.timed {
                let what = format!("prober → target, after {} ({})", kind.name(), verb(allow));
                out.push((what, Some(allow), verdict(&changed, &prober)?));
            }
        }
    }
    let client = PodKey::new(CLIENT.0, CLIENT.1);
    if snap.pods.contains_key(&client) {
        let allowed = verdict(snap, &Endpoint::Pod(client))?;
        out.push(("client → target (per packet)".into(), Some(true), allowed));
    }
    Ok(out)
}

fn verb(allow: bool) -> &'static str {
    if allow {
        "allows"
    } else {
        "denies"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::world::{load, L, M, S, TINY};
    use podwall_policy::model::Tier;
    use podwall_tests::manifests::documents;

    /// `spec`'s world with its local pods and the client on node `n1`, and `extra`.
    fn world(spec: &Spec, extra: &[String]) -> Snapshot {
        let ips: Vec<IpAddr> = (0..spec.size.local)
            .map(|i| {
                format!("10.200.{}.{}", i / 200, i % 200 + 2)
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut docs = extra.to_vec();
        docs.push(
            PodManifest::new(CLIENT.0, CLIENT.1)
                .labels(&[("role", "client")])
                .remote("n1", &["10.200.9.9".parse().unwrap()])
                .yaml(),
        );
        spec.snapshot_with("n1", &ips, &docs)
    }

    fn with_guardrails(spec: &Spec, n: usize) -> Vec<String> {
        let mut docs = fixture();
        docs.extend(policies(spec, n));
        docs
    }

    #[test]
    fn the_guardrails_load_as_written() {
        let spec = Spec::new(L, 1_000);
        let snap = load(&documents(&policies(&spec, 100)));
        let all: Vec<_> = snap.cluster_policies.values().collect();
        assert_eq!(all.len(), 100);
        let admin: Vec<_> = all.iter().filter(|p| p.tier == Tier::Admin).collect();
        assert_eq!(admin.len(), 90);
        assert!(admin.iter().all(|p| p.priority < 900));
        for p in &all {
            assert!(!p.broken, "{}", p.name);
            for rule in p.ingress.iter().chain(&p.egress) {
                assert_eq!(rule.fails_closed, None, "{} {}", p.name, rule.name);
            }
        }
    }

    #[test]
    fn every_local_pod_is_a_subject_of_about_a_dozen_admin_policies() {
        for size in [S, M, L, TINY] {
            let spec = Spec::new(size, 1_000);
            let snap = world(&spec, &with_guardrails(&spec, 100));
            let selecting = |i: usize, tier: Tier| {
                let (ns, name, _) = spec.local_pod(i);
                let pod = &snap.pods[&PodKey::new(ns.clone(), name)];
                (snap.cluster_policies.values())
                    .filter(|p| p.tier == tier)
                    .filter(|p| p.subject.namespaces.matches(&snap.namespace_labels(&ns)))
                    .filter(|p| p.subject.pods.matches(&pod.labels))
                    .count()
            };
            for i in 0..size.local {
                assert!(selecting(i, Tier::Admin) >= 10, "{} pod {i}", size.name);
                assert_eq!(selecting(i, Tier::Baseline), 5, "{} pod {i}", size.name);
            }
            assert!(selecting(0, Tier::Admin) >= 12, "{}: the target", size.name);
        }
    }

    #[test]
    fn the_probed_verdicts_are_the_same_with_and_without_them() {
        for size in [S, M, L, TINY] {
            let spec = Spec::new(size, 1_000);
            let without = world(&spec, &fixture());
            let with = world(&spec, &with_guardrails(&spec, 100));
            let agreed = compare(&without, &with).unwrap();
            assert_eq!(
                agreed.len(),
                1 + 8 + 1,
                "start, eight timed steps, the client"
            );
            for a in &agreed {
                assert!(a.holds(), "{}: {a:?}", size.name);
            }
        }
    }

    #[test]
    fn the_guardrails_decide_what_nothing_probes() {
        let spec = Spec::new(M, 1_000);
        let without = world(&spec, &fixture());
        let with = world(&spec, &with_guardrails(&spec, 100));
        let scrape = |snap: &Snapshot| {
            let query = Query {
                from: Endpoint::Ip(MONITORING_ADDR.parse().unwrap()),
                to: Endpoint::Pod(PodKey::new(TARGET.0, TARGET.1)),
                protocol: Protocol::Tcp,
                port: 9100,
            };
            evaluate(snap, &query).unwrap().allowed
        };
        assert!(!scrape(&without), "the target's NetworkPolicies isolate it");
        assert!(scrape(&with), "an Admin Accept lets monitoring scrape it");
    }
}
