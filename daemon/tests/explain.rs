//! `podwalld explain` as a process, on the manifest fixtures in `fixtures/explain/`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/explain")
        .join(name)
}

fn explain(dir: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podwalld"))
        .arg("explain")
        .arg("--manifests")
        .arg(fixture(dir))
        .args(args)
        .output()
        .expect("podwalld runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 output")
}

#[test]
fn pair_verdict_names_isolating_policies_and_the_allowing_rule() {
    let out = explain(
        "shop",
        &[
            "--port",
            "5432",
            "--protocol",
            "TCP",
            "--from",
            "shop/front",
            "--to",
            "shop/db",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("shop/front -> shop/db TCP/5432: allowed\n"),
        "{text}"
    );
    assert!(
        text.contains("isolated by shop/db-from-front, shop/default-deny"),
        "{text}"
    );
    assert!(
        text.contains("allowed by shop/db-from-front spec.ingress[0]"),
        "{text}"
    );
}

#[test]
fn pair_verdict_says_when_no_rule_allows() {
    // The named port "postgres" is 5432 on shop/db; 80 is not it.
    let out = explain(
        "shop",
        &[
            "--port",
            "80",
            "--protocol",
            "TCP",
            "--from",
            "shop/front",
            "--to",
            "shop/db",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.starts_with("shop/front -> shop/db TCP/80: denied\n"),
        "{text}"
    );
    assert!(text.contains("no rule allows it"), "{text}");
}

#[test]
fn pair_verdict_as_json_resolves_addresses_to_pods() {
    let out = explain(
        "shop",
        &[
            "--port",
            "5432",
            "--protocol",
            "tcp",
            "--from",
            "10.244.2.9",
            "--to",
            "10.244.1.7",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["protocol"], "TCP");
    assert_eq!(v["ingress"]["state"], "denied");
    assert_eq!(
        v["ingress"]["isolated_by"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn matrix_table_has_pods_in_order_then_externals() {
    let out = explain(
        "shop",
        &[
            "--port",
            "80",
            "--protocol",
            "TCP",
            "--external",
            "203.0.113.9",
            "--external",
            "198.51.100.1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "TCP/80",
            "ops/probe",
            "shop/db",
            "shop/front",
            "203.0.113.9",
            "198.51.100.1"
        ]
    );
    // shop/front admits 203.0.113.0/24 on 80 only; nothing else gets into shop.
    assert_eq!(rows[4], ["203.0.113.9", ".", "X", ".", ".", "."]);
    assert_eq!(rows[5], ["198.51.100.1", ".", "X", "X", ".", "."]);
    assert_eq!(rows[1], ["ops/probe", ".", "X", "X", ".", "."]);
    assert_eq!(rows[3], ["shop/front", ".", "X", ".", ".", "."]);
    assert_eq!(rows.len(), 6);
}

#[test]
fn matrix_json_follows_the_contract_shape() {
    let out = explain(
        "shop",
        &[
            "--port",
            "5432",
            "--protocol",
            "TCP",
            "--external",
            "203.0.113.9",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["port"], 5432);
    assert_eq!(v["protocol"], "TCP");
    let names = serde_json::json!(["ops/probe", "shop/db", "shop/front", "203.0.113.9"]);
    assert_eq!(v["sources"], names);
    assert_eq!(v["destinations"], names);
    let allowed = v["allowed"].as_array().expect("rows");
    assert_eq!(allowed.len(), 4);
    // Row shop/front: it reaches shop/db on the named port; the diagonal is always allowed.
    assert_eq!(allowed[2], serde_json::json!([true, true, true, true]));
    assert_eq!(allowed[0], serde_json::json!([true, false, false, true]));
    for (i, row) in allowed.iter().enumerate() {
        assert_eq!(row[i], true);
    }
}

#[test]
fn broken_policy_is_reported_and_evaluated_fail_closed() {
    let out = explain(
        "broken",
        &["--port", "80", "--protocol", "TCP", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        ["podwalld explain: policies.yaml: networkpolicy shop/db-broken: spec.ingress[0].from[0].ipBlock.except[0]: 10.99.0.0/24 is not inside cidr 10.244.0.0/16"]
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        v["sources"],
        serde_json::json!(["ops/probe", "shop/db", "shop/front"])
    );
    // shop/db stays isolated with nothing allowed; the valid ops policy still applies.
    assert_eq!(v["allowed"][2][1], false);
    assert_eq!(v["allowed"][0][1], false);
    assert_eq!(v["allowed"][1][0], false);
    assert_eq!(v["allowed"][1][2], true);
}

#[test]
fn unreadable_manifest_stops_evaluation() {
    let out = explain("unreadable", &["--port", "80", "--protocol", "TCP"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(
        err.lines()
            .next()
            .unwrap_or("")
            .starts_with("podwalld explain: policies.yaml: document 1: not valid YAML"),
        "{err}"
    );
    assert!(err.contains("not evaluating"), "{err}");
}

#[test]
fn usage_errors_exit_with_status_two() {
    let cases: [&[&str]; 4] = [
        &["--port", "80", "--protocol", "TCP", "--from", "shop/front"],
        &["--port", "80", "--protocol", "ICMP"],
        &["--port", "0", "--protocol", "TCP"],
        &[
            "--port",
            "80",
            "--protocol",
            "TCP",
            "--from",
            "shop/nope",
            "--to",
            "shop/db",
        ],
    ];
    for args in cases {
        let out = explain("shop", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn missing_directory_is_one_clear_error() {
    let out = explain("does-not-exist", &["--port", "80", "--protocol", "TCP"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("podwalld: reading manifests directory "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}
