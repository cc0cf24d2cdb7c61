//! `deploy/grafana/keybroker.json` shows what the broker really exports:
//! every metric a panel or variable queries is in the scrape of a running
//! broker (`serve --dev` with an audit log, so the audit and ledger series
//! exist), and every label a panel groups by is on that metric.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::binary::scrape;
use crate::support::process::{free_addr, serve};

/// Every PromQL text in the dashboard: panel targets and variable queries.
fn queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr" | "definition", Value::String(text)) => out.push(text.clone()),
                    ("query", Value::Object(query)) => {
                        if let Some(Value::String(text)) = query.get("query") {
                            out.push(text.clone());
                        }
                    }
                    _ => queries(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| queries(item, out)),
        _ => {}
    }
}

/// The `keybroker_*` names in a query.
fn metric_names(query: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(start) = rest.find("keybroker_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// `(labels, metric)` for every `by (labels) (...metric...)` in a query.
fn groupings(query: &str) -> Vec<(Vec<&str>, &str)> {
    let mut out = Vec::new();
    let mut rest = query;
    while let Some(start) = rest.find("by (") {
        let tail = &rest[start + 4..];
        let Some(close) = tail.find(')') else { break };
        let labels = tail[..close].split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
        let metric =
            metric_names(&tail[close..]).first().copied().unwrap_or_else(|| panic!("no metric after by: {query}"));
        out.push((labels, metric));
        rest = &tail[close..];
    }
    out
}

/// The label names on the samples of `series` in the scrape.
fn labels_of(scrape: &str, series: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| line.starts_with(&format!("{series}{{")))
        .flat_map(|line| {
            let inside = &line[series.len() + 1..line.find('}').unwrap()];
            inside
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(name, _)| name.to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_dashboard_query_names_a_metric_the_broker_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/keybroker.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "keybroker");
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("no targets: {}", panel["title"]));
        assert!(!targets.is_empty(), "{} queries nothing", panel["title"]);
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
    }
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    assert!(all.len() >= 20, "too few queries found to prove anything: {all:?}");

    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr();
    let audit = dir.path().join("audit.jsonl");
    // Checkpoints soon after records, so the checkpoint gauge exists.
    let env = [("KEYBROKER_AUDIT__CHECKPOINT_INTERVAL_MS", "50".to_owned())];
    let server =
        serve(dir.path(), &["--dev", "--metrics-listen", &metrics_addr, "--audit-log", audit.to_str().unwrap()], &env);
    for args in [&["issue-key"][..], &["issue-key", "--key-bits", "128"], &["issue-key", "--mode", "aes-ecb"]] {
        server.cli(args);
    }
    assert!(server.cli(&["health"]).status.success());
    let mut scraped = scrape(&metrics_addr);
    for _ in 0..100 {
        if scraped.contains("keybroker_audit_checkpoint_sequence ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        scraped = scrape(&metrics_addr);
    }

    let mut checked = BTreeSet::new();
    for query in &all {
        let names = metric_names(query);
        assert!(!names.is_empty(), "a query that names no keybroker metric: {query}");
        for name in names {
            let exported =
                scraped.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
            assert!(exported, "the dashboard queries {name}, which the broker does not export:\n{query}\n{scraped}");
            checked.insert(name.to_owned());
        }
        for (labels, metric) in groupings(query) {
            let present = labels_of(&scraped, metric);
            for label in labels.into_iter().filter(|l| *l != "instance") {
                assert!(present.contains(label), "{query}: {metric} has no label {label} (it has {present:?})");
            }
        }
    }
    for family in [
        "keybroker_requests_total",
        "keybroker_request_duration_seconds_bucket",
        "keybroker_kms_calls_total",
        "keybroker_kms_call_duration_seconds_bucket",
        "keybroker_rate_limited_total",
        "keybroker_load_shed_total",
        "keybroker_audit_commit_seconds_bucket",
        "keybroker_ledger_commit_seconds_bucket",
        "keybroker_ledger_commit_failures_total",
    ] {
        assert!(checked.contains(family), "the dashboard shows no {family}");
    }
    let (status, _) = server.terminate();
    assert!(status.success());
}
