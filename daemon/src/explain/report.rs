//! What `podwalld explain` prints, computed and formatted without I/O: a pair verdict with its
//! reasons (text or JSON), or the reachability matrix (table or JSON).
//!
//! The verdicts come from `podwall_policy`'s evaluator; this module only arranges them for a
//! reader. The root tests print their expected and observed matrices with it too.

use std::net::IpAddr;

use podwall_policy::evaluate::{
    evaluate, Endpoint, EvaluateError, Isolation, Path, Query, Side, Verdict,
};
use podwall_policy::model::{Phase, Protocol, Snapshot};
use serde::Serialize;

/// The reachability matrix: `allowed[i][j]` is whether `sources[i]` may open a connection
/// to `destinations[j]`. Serialises to the contract's JSON form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub port: u16,
    pub protocol: Protocol,
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
    pub allowed: Vec<Vec<bool>>,
}

/// Builds the matrix over every pod that has not finished, in namespace/name order, then
/// each of `externals`, as sources and as destinations alike.
pub fn matrix(snap: &Snapshot, externals: &[IpAddr], protocol: Protocol, port: u16) -> Matrix {
    let mut endpoints: Vec<(String, Endpoint)> = snap
        .pods
        .values()
        .filter(|p| p.phase != Phase::Finished)
        .map(|p| (p.key.to_string(), Endpoint::Pod(p.key.clone())))
        .collect();
    for ip in externals {
        endpoints.push((ip.to_string(), Endpoint::Ip(*ip)));
    }
    let allowed = endpoints
        .iter()
        .map(|(_, from)| {
            endpoints
                .iter()
                .map(|(_, to)| {
                    let query = Query {
                        from: from.clone(),
                        to: to.clone(),
                        protocol,
                        port,
                    };
                    evaluate(snap, &query)
                        .expect("matrix endpoints are pods of the snapshot or addresses")
                        .allowed
                })
                .collect()
        })
        .collect();
    let names: Vec<String> = endpoints.into_iter().map(|(n, _)| n).collect();
    Matrix {
        port,
        protocol,
        sources: names.clone(),
        destinations: names,
        allowed,
    }
}

impl Matrix {
    /// The matrix as an aligned table: sources down, destinations across, `.` allowed, `X`
    /// denied.
    pub fn to_table(&self) -> String {
        let corner = format!("{}/{}", self.protocol, self.port);
        let first = self
            .sources
            .iter()
            .map(String::len)
            .chain([corner.len()])
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = self.destinations.iter().map(String::len).collect();
        let mut out = String::new();
        let mut header = String::new();
        pad(&mut header, &corner, first);
        for (d, w) in self.destinations.iter().zip(&widths) {
            header.push_str("  ");
            pad(&mut header, d, *w);
        }
        out.push_str(header.trim_end());
        out.push('\n');
        for (source, row) in self.sources.iter().zip(&self.allowed) {
            let mut line = String::new();
            pad(&mut line, source, first);
            for (ok, w) in row.iter().zip(&widths) {
                let mark = if *ok { "." } else { "X" };
                line.push_str("  ");
                pad(&mut line, mark, *w);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Appends `text` left-aligned in `width` characters, as `{text:<width$}` does. The format
/// macros panic on a width above `u16::MAX`, which a manifest's names can reach.
fn pad(line: &mut String, text: &str, width: usize) {
    line.push_str(text);
    let fill = width.saturating_sub(text.chars().count());
    line.extend(std::iter::repeat_n(' ', fill));
}

/// The verdict of one connection, for `--from`/`--to`.
pub fn pair(snap: &Snapshot, query: &Query) -> Result<Verdict, EvaluateError> {
    evaluate(snap, query)
}

/// A verdict as JSON: the query, `allowed`, and the reasons.
pub fn pair_json(query: &Query, verdict: &Verdict) -> serde_json::Value {
    #[derive(Serialize)]
    struct Out<'a> {
        from: String,
        to: String,
        port: u16,
        protocol: Protocol,
        #[serde(flatten)]
        verdict: &'a Verdict,
    }
    serde_json::to_value(Out {
        from: query.from.to_string(),
        to: query.to.to_string(),
        port: query.port,
        protocol: query.protocol,
        verdict,
    })
    .expect("verdicts serialise")
}

/// A verdict as lines of text: the answer, then one line per side with its reasons.
pub fn pair_text(query: &Query, verdict: &Verdict) -> String {
    let mut out = format!(
        "{} -> {} {}/{}: {}\n",
        query.from,
        query.to,
        query.protocol,
        query.port,
        if verdict.allowed { "allowed" } else { "denied" }
    );
    match &verdict.path {
        Path::SamePod => out.push_str("  a pod may always reach itself\n"),
        Path::FromNode => out.push_str("  traffic from the node itself is always allowed\n"),
        Path::Policies { egress, ingress } => {
            side_text(&mut out, "egress from", &query.from, egress);
            side_text(&mut out, "ingress to", &query.to, ingress);
        }
    }
    out
}

fn side_text(out: &mut String, what: &str, who: &Endpoint, side: &Side) {
    let isolated = |by: &[Isolation]| {
        by.iter()
            .map(|i| {
                if i.broken {
                    format!("{} (broken: allows nothing)", i.policy)
                } else {
                    i.policy.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let line = match side {
        Side::NotAPod => format!("  {what} {who}: not a pod, no policy applies"),
        Side::NotIsolated => format!("  {what} {who}: open, no policy isolates it"),
        Side::Allowed {
            isolated_by,
            allowed_by,
        } => format!(
            "  {what} {who}: isolated by {}; allowed by {}",
            isolated(isolated_by),
            allowed_by
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Side::Denied { isolated_by } => format!(
            "  {what} {who}: isolated by {}; no rule allows it",
            isolated(isolated_by)
        ),
        Side::Decided(decision) => match &decision.fails_closed {
            None => format!("  {what} {who}: {decision}"),
            Some(why) => format!("  {what} {who}: {decision} (fails closed: {why})"),
        },
    };
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::model::{ObjectKey, Protocol::Tcp};
    use podwall_policy::testworld::world;

    const DENY_X: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
";

    #[test]
    fn matrix_lists_pods_then_externals_and_follows_the_evaluator() {
        let snap = world(DENY_X);
        let ext: IpAddr = "192.0.2.1".parse().unwrap();
        let m = matrix(&snap, &[ext], Tcp, 80);
        assert_eq!(m.sources.len(), 10);
        assert_eq!(m.sources[0], "x/a");
        assert_eq!(m.sources[9], "192.0.2.1");
        assert_eq!(m.sources, m.destinations);
        let at = |from: &str, to: &str| {
            let i = m.sources.iter().position(|s| s == from).unwrap();
            let j = m.destinations.iter().position(|s| s == to).unwrap();
            m.allowed[i][j]
        };
        assert!(at("y/b", "x/a"));
        assert!(!at("y/b", "x/b"));
        assert!(!at("192.0.2.1", "x/a"));
        assert!(at("x/a", "192.0.2.1"));
        assert!(at("x/b", "x/b"));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["protocol"], "TCP");
        assert_eq!(json["port"], 80);
        assert_eq!(json["allowed"][3][0], true);
    }

    #[test]
    fn table_marks_allowed_with_dots_and_denied_with_x() {
        let m = Matrix {
            port: 80,
            protocol: Tcp,
            sources: vec!["x/a".into(), "10.0.0.1".into()],
            destinations: vec!["x/a".into(), "10.0.0.1".into()],
            allowed: vec![vec![true, false], vec![false, true]],
        };
        assert_eq!(
            m.to_table(),
            "TCP/80    x/a  10.0.0.1\nx/a       .    X\n10.0.0.1  X    .\n"
        );
    }

    #[test]
    fn pair_text_names_the_isolating_policies_and_the_allowing_rule() {
        let snap = world(DENY_X);
        let query = Query {
            from: Endpoint::Pod(ObjectKey::new("y", "b")),
            to: Endpoint::Pod(ObjectKey::new("x", "a")),
            protocol: Tcp,
            port: 80,
        };
        let verdict = pair(&snap, &query).unwrap();
        assert_eq!(
            pair_text(&query, &verdict),
            "y/b -> x/a TCP/80: allowed\n  egress from y/b: open, no policy isolates it\n  ingress to x/a: isolated by x/deny, x/from-y; allowed by x/from-y spec.ingress[0]\n"
        );
        let json = pair_json(&query, &verdict);
        assert_eq!(json["allowed"], true);
        assert_eq!(json["reason"], "policies");
        assert_eq!(json["ingress"]["state"], "allowed");
        assert_eq!(json["ingress"]["allowed_by"][0]["policy"]["name"], "from-y");
        assert_eq!(json["egress"]["state"], "not_isolated");
    }
}
