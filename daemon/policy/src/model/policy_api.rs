//! A NetworkPolicy API object into a [`Policy`]: the API server's defaulting (policyTypes,
//! protocols, namespaces) and validation, field by field.
//!
//! A policy that fails validation is not dropped: [`Policy::from_api`] returns a fail-closed
//! stand-in together with the errors, so that a typo never opens a hole.

use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    NamespaceScope, ObjectKey, Peer, Peers, Policy, PolicyFields, PortMatch, PortSpec, Protocol,
    Rule,
};
use crate::error::{Errors, ModelError, Problem};
use crate::ipblock::IpBlock;
use crate::selector::Selector;

impl Policy {
    /// Converts an API object. With errors, the policy returned is the fail-closed stand-in:
    /// it selects what the spec's podSelector selects (every pod of the namespace if the
    /// selector itself is broken), isolates the directions the policyTypes give (both if
    /// they are broken) and has no rules.
    pub fn from_api(np: &net::NetworkPolicy) -> (Policy, Vec<ModelError>) {
        let (key, mut errs) = ObjectKey::of_api(&np.metadata, "networkpolicy");
        let (annotation, value) = super::policy::LOG_ANNOTATION;
        let log_allowed = (np.metadata.annotations.as_ref())
            .and_then(|a| a.get(annotation))
            .is_some_and(|v| v == value);
        let default_spec = net::NetworkPolicySpec::default();
        let spec = np.spec.as_ref().unwrap_or(&default_spec);

        let pod_selector = match &spec.pod_selector {
            None => Some(Selector::everything()),
            Some(s) => Selector::from_api(s, "spec.podSelector", &mut errs),
        };

        // policyTypes defaulting as the API server does it: an empty or missing list means
        // Ingress, plus Egress when there is at least one egress rule (`egress: []` adds nothing).
        let (mut ingress_type, mut egress_type) = (false, false);
        let mut types_ok = true;
        match spec.policy_types.as_deref() {
            None | Some([]) => {
                ingress_type = true;
                egress_type = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
            Some(types) => {
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => ingress_type = true,
                        "Egress" => egress_type = true,
                        other => {
                            types_ok = false;
                            errs.push(
                                format!("spec.policyTypes[{i}]"),
                                Problem::UnknownPolicyType(other.to_string()),
                            );
                        }
                    }
                }
            }
        }

        // Rules of both directions are validated even when their type is not in effect, as
        // the API server would reject them too.
        let ingress: Vec<RuleParts> = (spec.ingress.iter().flatten())
            .map(|r| (r.from.as_deref(), r.ports.as_deref()))
            .collect();
        let egress: Vec<RuleParts> = (spec.egress.iter().flatten())
            .map(|r| (r.to.as_deref(), r.ports.as_deref()))
            .collect();
        let [ingress, egress] = [
            (ingress, "spec.ingress", "from"),
            (egress, "spec.egress", "to"),
        ]
        .map(|(rules, list, peers)| convert_rules(rules, (list, peers), &key.namespace, &mut errs));

        if let (true, Some(pod_selector)) = (errs.is_empty(), &pod_selector) {
            let policy = Policy::from(PolicyFields {
                key,
                pod_selector: pod_selector.clone(),
                isolates_ingress: ingress_type,
                isolates_egress: egress_type,
                ingress: if ingress_type { ingress } else { Vec::new() },
                egress: if egress_type { egress } else { Vec::new() },
                broken: false,
                log_allowed,
            });
            return (policy, Vec::new());
        }
        let policy = Policy::from(PolicyFields {
            pod_selector: pod_selector.unwrap_or_else(Selector::everything),
            isolates_ingress: ingress_type || !types_ok,
            isolates_egress: egress_type || !types_ok,
            ingress: Vec::new(),
            egress: Vec::new(),
            broken: true,
            log_allowed,
            key,
        });
        (policy, errs.into_vec())
    }
}

impl TryFrom<&net::NetworkPolicy> for Policy {
    type Error = Vec<ModelError>;

    /// Strict conversion: any error rejects the policy (see [`Policy::from_api`] for the
    /// fail-closed one enforcement uses).
    fn try_from(np: &net::NetworkPolicy) -> Result<Self, Self::Error> {
        match Policy::from_api(np) {
            (policy, errors) if errors.is_empty() => Ok(policy),
            (_, errors) => Err(errors),
        }
    }
}

/// A rule's peers (`from` or `to`) and ports, whichever direction it is for.
type RuleParts<'a> = (
    Option<&'a [net::NetworkPolicyPeer]>,
    Option<&'a [net::NetworkPolicyPort]>,
);

/// The rules of one direction; `fields` names the rule list and its peer field (`from`,
/// `to`) for errors.
fn convert_rules(
    rules: Vec<RuleParts>,
    (list, peers_field): (&str, &str),
    namespace: &str,
    errs: &mut Errors,
) -> Vec<Rule> {
    rules
        .into_iter()
        .enumerate()
        .filter_map(|(i, (peers, ports))| {
            let field = format!("{list}[{i}]");
            convert_rule(peers, ports, namespace, &field, peers_field, errs)
        })
        .collect()
}

fn convert_rule(
    peers: Option<&[net::NetworkPolicyPeer]>,
    ports: Option<&[net::NetworkPolicyPort]>,
    namespace: &str,
    field: &str,
    peers_field: &str,
    errs: &mut Errors,
) -> Option<Rule> {
    let before = errs.len();
    let peers = match peers {
        None | Some([]) => Peers::Any,
        Some(list) => Peers::Only(
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    convert_peer(p, namespace, &format!("{field}.{peers_field}[{i}]"), errs)
                })
                .collect(),
        ),
    };
    let ports = ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, p)| convert_port(p, &format!("{field}.ports[{i}]"), errs))
        .collect();
    (errs.len() == before).then_some(Rule { peers, ports })
}

fn convert_peer(
    peer: &net::NetworkPolicyPeer,
    namespace: &str,
    field: &str,
    errs: &mut Errors,
) -> Option<Peer> {
    match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            errs.push(field, Problem::IpBlockWithSelector);
            None
        }
        (Some(block), None, None) => {
            IpBlock::from_api(block, &format!("{field}.ipBlock"), errs).map(Peer::Block)
        }
        (None, None, None) => {
            errs.push(field, Problem::EmptyPeer);
            None
        }
        (None, pods, namespaces) => {
            let pods = match pods {
                None => Some(Selector::everything()),
                Some(s) => Selector::from_api(s, &format!("{field}.podSelector"), errs),
            };
            let namespaces = match namespaces {
                None => Some(NamespaceScope::Named(namespace.to_string())),
                Some(s) => Selector::from_api(s, &format!("{field}.namespaceSelector"), errs)
                    .map(NamespaceScope::Matching),
            };
            Some(Peer::Pods {
                namespaces: namespaces?,
                pods: pods?,
            })
        }
    }
}

fn convert_port(
    port: &net::NetworkPolicyPort,
    field: &str,
    errs: &mut Errors,
) -> Option<PortMatch> {
    let protocol = match port.protocol.as_deref() {
        None => Some(Protocol::Tcp),
        Some(p) => match p.parse() {
            Ok(p) => Some(p),
            Err(problem) => {
                errs.push(format!("{field}.protocol"), problem);
                None
            }
        },
    };
    let spec = match (&port.port, port.end_port) {
        (None, None) => Some(PortSpec::Any),
        (None, Some(_)) => {
            errs.push(format!("{field}.endPort"), Problem::EndPortWithoutPort);
            None
        }
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                errs.push(
                    format!("{field}.endPort"),
                    Problem::EndPortWithNamedPort(name.clone()),
                );
                None
            } else if !is_port_name(name) {
                errs.push(
                    format!("{field}.port"),
                    Problem::InvalidPortName(name.clone()),
                );
                None
            } else {
                Some(PortSpec::Named(name.clone()))
            }
        }
        (Some(IntOrString::Int(n)), end) => {
            let first = port_number(*n, &format!("{field}.port"), errs);
            let last = match end {
                None => first,
                Some(e) => port_number(e, &format!("{field}.endPort"), errs),
            };
            match (first, last) {
                (Some(first), Some(last)) if last < first => {
                    errs.push(
                        format!("{field}.endPort"),
                        Problem::EndPortBelowPort {
                            port: first,
                            end_port: last,
                        },
                    );
                    None
                }
                (Some(first), Some(last)) => Some(PortSpec::Range { first, last }),
                _ => None,
            }
        }
    };
    Some(PortMatch {
        protocol: protocol?,
        port: spec?,
    })
}

/// A port number (policy port, endPort or containerPort) as the API server accepts it:
/// 1-65535.
pub(super) fn port_number(n: i32, field: &str, errs: &mut Errors) -> Option<u16> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Some(p),
        _ => {
            errs.push(field, Problem::PortOutOfRange(n));
            None
        }
    }
}

/// IANA service name rules, as the API server checks named ports: 1 to 15 lower-case
/// letters, digits and inner single hyphens, with at least one letter.
fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(spec: serde_json::Value) -> net::NetworkPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn bad_fields_are_reported_with_object_and_field() {
        use serde_json::json;
        let cases = [
            (
                json!({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "endPort 80 is below port 90",
            ),
            (
                json!({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "endPort cannot be used with named port \"http\"",
            ),
            (
                json!({"egress": [{"ports": [{"endPort": 80}]}]}),
                "spec.egress[0].ports[0].endPort",
                "endPort needs a numeric port",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
                "spec.ingress[0].ports[0].protocol",
                "unknown protocol \"ICMP\", expected TCP, UDP or SCTP",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 80, "protocol": "tcp"}]}]}),
                "spec.ingress[0].ports[0].protocol",
                "unknown protocol \"tcp\", expected TCP, UDP or SCTP",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 0}]}]}),
                "spec.ingress[0].ports[0].port",
                "port 0 is outside 1-65535",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 80, "endPort": 70000}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "port 70000 is outside 1-65535",
            ),
            (
                json!({"ingress": [{"ports": [{"port": "HTTP"}]}]}),
                "spec.ingress[0].ports[0].port",
                "invalid port name \"HTTP\"",
            ),
            (
                json!({"ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
                "spec.ingress[0].from[0]",
                "a peer needs podSelector, namespaceSelector or ipBlock",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}]}]}),
                "spec.ingress[0].from[0]",
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            ),
            (
                json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "11.0.0.0/16"]}}]}]}),
                "spec.egress[0].to[0].ipBlock.except[1]",
                "11.0.0.0/16 is not inside cidr 10.0.0.0/8",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "300.0.0.0/8"}}]}]}),
                "spec.ingress[0].from[0].ipBlock.cidr",
                "invalid cidr \"300.0.0.0/8\"",
            ),
            (
                json!({"ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}}]}]}),
                "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator",
                "unknown operator \"Has\", expected In, NotIn, Exists or DoesNotExist",
            ),
            (
                json!({"policyTypes": ["Ingress", "Sideways"]}),
                "spec.policyTypes[1]",
                "unknown policy type \"Sideways\", expected Ingress or Egress",
            ),
        ];
        for (spec, field, message) in cases {
            let (policy, errors) = Policy::from_api(&np(spec.clone()));
            assert!(policy.broken, "{spec}");
            assert!(
                policy.ingress.is_empty() && policy.egress.is_empty(),
                "{spec}"
            );
            let first = errors
                .first()
                .unwrap_or_else(|| panic!("no error for {spec}"));
            assert_eq!(first.field, field, "{spec}");
            assert_eq!(
                first.to_string(),
                format!("networkpolicy x/p: {field}: {message}"),
                "{spec}"
            );
        }
    }

    #[test]
    fn broken_policy_isolates_the_directions_its_types_give() {
        let (p, _) = Policy::from_api(&np(serde_json::json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "ICMP"}]}],
        })));
        assert!(p.broken && p.isolates_egress && !p.isolates_ingress);
        assert_eq!(p.pod_selector, Selector::from_labels([("app", "db")]));
        let (p, _) = Policy::from_api(&np(serde_json::json!({"policyTypes": ["Sideways"]})));
        assert!(
            p.isolates_egress && p.isolates_ingress,
            "unknown types isolate both ways"
        );
    }

    #[test]
    fn only_the_log_annotation_with_allow_logs_what_a_policy_allows() {
        let annotated = |annotations: serde_json::Value| {
            let mut policy = np(serde_json::json!({"podSelector": {}}));
            policy.metadata.annotations = serde_json::from_value(annotations).unwrap();
            Policy::from_api(&policy).0.log_allowed
        };
        assert!(annotated(serde_json::json!({"podwall.io/log": "allow"})));
        assert!(!annotated(serde_json::json!({"podwall.io/log": "deny"})));
        assert!(!annotated(serde_json::json!({"other.io/log": "allow"})));
        assert!(!annotated(serde_json::Value::Null));
        // A broken policy keeps it: it allows nothing, but says so.
        let mut broken = np(serde_json::json!({"podSelector": {}, "policyTypes": ["Sideways"]}));
        broken.metadata.annotations = Some([("podwall.io/log".into(), "allow".into())].into());
        assert!(Policy::from_api(&broken).0.log_allowed);
    }

    #[test]
    fn valid_policy_converts_strictly() {
        let policy = Policy::try_from(&np(serde_json::json!({
            "podSelector": {},
            "ingress": [{"ports": [{"port": 80, "endPort": 90, "protocol": "UDP"}, {"port": "http"}]}],
        })))
        .unwrap();
        assert_eq!(
            policy.ingress[0].ports,
            vec![
                PortMatch {
                    protocol: Protocol::Udp,
                    port: PortSpec::Range {
                        first: 80,
                        last: 90
                    }
                },
                PortMatch {
                    protocol: Protocol::Tcp,
                    port: PortSpec::Named("http".into())
                },
            ]
        );
        assert_eq!(policy.ingress[0].peers, Peers::Any);
        assert!(!policy.broken && policy.isolates_ingress && !policy.isolates_egress);
    }
}
