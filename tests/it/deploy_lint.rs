//! The deployment files: `scripts/lint-deploy` (hadolint, yamllint,
//! kubernetes-validate, checkov, systemd-analyze) passes, the configuration
//! and policy the Kubernetes manifests ship parse as TOML with the keys the
//! server reads, and the files agree with each other on paths, ports, user
//! and shutdown timing.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(relative: &str) -> String {
    let path = Path::new(ROOT).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse_toml(relative: &str) -> toml::Table {
    read(relative).parse::<toml::Table>().unwrap_or_else(|e| panic!("{relative} is not TOML: {e}"))
}

/// The value at a dotted path, e.g. `tls.cert_file`.
fn lookup<'a>(table: &'a toml::Table, dotted: &str, file: &str) -> &'a toml::Value {
    let mut parts = dotted.split('.');
    let first = parts.next().unwrap();
    let mut value = table.get(first).unwrap_or_else(|| panic!("{file}: no key {dotted}"));
    for part in parts {
        value = value.get(part).unwrap_or_else(|| panic!("{file}: no key {dotted}"));
    }
    value
}

fn str_at<'a>(table: &'a toml::Table, dotted: &str, file: &str) -> &'a str {
    lookup(table, dotted, file).as_str().unwrap_or_else(|| panic!("{file}: {dotted} is not a string"))
}

fn int_at(table: &toml::Table, dotted: &str, file: &str) -> i64 {
    lookup(table, dotted, file).as_integer().unwrap_or_else(|| panic!("{file}: {dotted} is not an integer"))
}

/// The integer after `key:` on the first line of a YAML file that has it.
fn yaml_int(yaml: &str, key: &str) -> i64 {
    yaml.lines()
        .find_map(|line| line.trim().strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {key} in the manifest"))
        .trim()
        .parse()
        .unwrap()
}

/// Every value of `key:` lines in a YAML file (text parsing: serde_yaml is not a dependency).
fn yaml_values(yaml: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    yaml.lines()
        .filter_map(|line| line.trim().trim_start_matches("- ").strip_prefix(prefix.as_str()))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .collect()
}

/// The whole lint, as CI runs it. The first run installs the tools into
/// `.venv/deploy-lint` (about a minute); later runs take about 10 seconds.
#[test]
fn lint_deploy_passes() {
    let out = Command::new(Path::new(ROOT).join("scripts/lint-deploy"))
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/lint-deploy: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/lint-deploy failed ({}):\n{stdout}\n{stderr}", out.status);
    // Shown with --nocapture: the timings.
    println!("{stdout}{stderr}");
    assert!(stdout.contains("lint-deploy: all checks passed"), "{stdout}");
}

/// The server configuration the ConfigMap ships (kustomize generates the
/// ConfigMap from `deploy/kubernetes/config/`), with every key the manifests
/// rely on.
#[test]
fn kubernetes_server_config_parses_with_the_expected_keys() {
    let file = "deploy/kubernetes/config/keybroker.toml";
    let config = parse_toml(file);
    assert_eq!(str_at(&config, "listen", file), "0.0.0.0:50051");
    assert_eq!(str_at(&config, "health_listen", file), "0.0.0.0:50052");
    assert_eq!(str_at(&config, "metrics_listen", file), "0.0.0.0:9090");
    assert_eq!(str_at(&config, "log.format", file), "json");
    assert_eq!(str_at(&config, "kms.backend", file), "aws");
    assert!(!str_at(&config, "kms.default_key_id", file).is_empty());
    for key in ["tls.cert_file", "tls.key_file", "tls.client_ca_file", "policy.file", "audit.file"] {
        assert!(str_at(&config, key, file).starts_with('/'), "{file}: {key} must be an absolute path");
    }
    assert!(str_at(&config, "audit.fingerprint_key_file", file).starts_with('/'));
    for key in ["memory.lock_keys", "transcoder.submit"] {
        assert_eq!(lookup(&config, key, file).as_bool(), Some(true), "{file}: {key}");
    }
    for key in ["shutdown_grace_secs", "limits.max_concurrent_requests", "limits.request_timeout_ms"] {
        assert!(int_at(&config, key, file) > 0, "{file}: {key}");
    }
    assert_eq!(int_at(&config, "limits.max_message_bytes", file), 4 * 1024 * 1024);
    let mut tables: Vec<&str> = config.iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k.as_str()).collect();
    tables.sort_unstable();
    assert_eq!(tables, ["audit", "kms", "limits", "log", "memory", "policy", "tls", "transcoder"]);
}

/// The files of the deployment agree: every file the configuration names is
/// under a directory the Deployment mounts, the ports match, the image's user
/// is the pod's, and the pod waits long enough for the broker to drain.
#[test]
fn deployment_files_agree_with_the_configuration() {
    let file = "deploy/kubernetes/config/keybroker.toml";
    let config = parse_toml(file);
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let mounts = yaml_values(&deployment, "mountPath");
    for key in ["tls.cert_file", "tls.key_file", "tls.client_ca_file", "policy.file", "audit.file"] {
        let path = Path::new(str_at(&config, key, file));
        assert!(
            mounts.iter().any(|m| path.parent() == Some(Path::new(m))),
            "{key} = {} is in no directory deployment.yaml mounts ({mounts:?})",
            path.display()
        );
    }
    let fingerprint = Path::new(str_at(&config, "audit.fingerprint_key_file", file));
    assert!(mounts.iter().any(|m| fingerprint.parent() == Some(Path::new(m))), "{mounts:?}");
    // The policy file is the generator's policy.toml, mounted under its own name.
    assert!(str_at(&config, "policy.file", file).ends_with("/policy.toml"));
    assert!(mounts.contains(&"/etc/keybroker/keybroker.toml".to_owned()), "{mounts:?}");

    let ports: Vec<String> = yaml_values(&deployment, "containerPort");
    for key in ["listen", "health_listen", "metrics_listen"] {
        let port = str_at(&config, key, file).rsplit(':').next().unwrap().to_owned();
        assert!(ports.contains(&port), "{key}: port {port} is not a containerPort ({ports:?})");
    }
    let health_port = str_at(&config, "health_listen", file).rsplit(':').next().unwrap().to_owned();
    let probe_ports = yaml_values(&deployment, "port");
    assert_eq!(probe_ports, [health_port.clone(), health_port.clone(), health_port], "the gRPC probes");

    let grace = int_at(&config, "shutdown_grace_secs", file);
    let pre_stop = yaml_int(&deployment, "seconds");
    let termination = yaml_int(&deployment, "terminationGracePeriodSeconds");
    assert!(termination > grace + pre_stop, "terminationGracePeriodSeconds {termination} <= {grace} + {pre_stop}");
    let unit = read("deploy/systemd/keybroker.service");
    let stop = unit.lines().find_map(|l| l.strip_prefix("TimeoutStopSec=")).unwrap();
    assert!(stop.parse::<i64>().unwrap() > grace, "TimeoutStopSec={stop}");

    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("USER 65532:65532"));
    assert_eq!(yaml_values(&deployment, "runAsUser"), ["65532", "65532"]);
    let command = r#"["serve", "--config", "/etc/keybroker/keybroker.toml"]"#;
    assert!(dockerfile.contains(&format!("CMD {command}")), "the image's CMD");
    assert!(deployment.contains(&format!("args: {command}")), "the Deployment's args");
    assert!(unit.contains("ExecStart=/usr/local/bin/keybroker serve --config /etc/keybroker/keybroker.toml"));
    assert!(dockerfile.contains("COPY --from=build /out/keybroker /usr/local/bin/keybroker"));
}

const RULE_KEYS: [&str; 8] =
    ["burst", "identity", "kms_keys", "max_key_bits", "pipelines", "plaintext_export", "rate_per_second", "rpcs"];

fn strings(rule: &toml::Table, key: &str) -> Vec<String> {
    rule[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("{key}: {v} is not a string")).to_owned())
        .collect()
}

/// The example policy and the ConfigMap's are one file, and every rule has
/// every field with a value of the right kind; the three example roles are
/// there, and only the unwrapping one may export plaintext.
#[test]
fn example_policy_parses_and_matches_the_configmap() {
    let example = read("deploy/policy.example.toml");
    assert_eq!(example, read("deploy/kubernetes/config/policy.toml"), "the two policy files differ");
    for file in ["deploy/policy.example.toml", "deploy/kubernetes/config/policy.toml"] {
        let policy = parse_toml(file);
        assert_eq!(policy.keys().collect::<Vec<_>>(), ["rule"], "{file}: only [[rule]] tables");
        let rules: Vec<&toml::Table> =
            policy["rule"].as_array().unwrap().iter().map(|r| r.as_table().unwrap()).collect();
        assert!(rules.len() >= 3, "{file}: the encoder, packager and ops rules");
        for rule in &rules {
            let identity = rule["identity"].as_str().unwrap();
            let mut fields: Vec<&str> = rule.keys().map(String::as_str).collect();
            // The one optional field, a switch for MediaConvert submitters.
            fields.retain(|f| !(*f == "require_encrypted_outputs" && rule[*f].is_bool()));
            fields.sort_unstable();
            assert_eq!(fields, RULE_KEYS, "{file}: {identity}: the fields of a rule");
            assert!(identity.starts_with("spiffe://"), "{identity}");
            let rpcs = strings(rule, "rpcs");
            assert!(
                !rpcs.is_empty()
                    && rpcs.iter().all(|r| r == "*" || keybroker::custody::rpc::Rpc::from_name(r).is_some()),
                "{rpcs:?}"
            );
            strings(rule, "pipelines");
            assert!(!strings(rule, "kms_keys").is_empty(), "{identity}: kms_keys");
            assert!([128, 192, 256].contains(&rule["max_key_bits"].as_integer().unwrap()), "{identity}");
            let rate = rule["rate_per_second"].as_integer().unwrap();
            assert!(rate > 0 && rule["burst"].as_integer().unwrap() >= rate, "{identity}: rate and burst");
            let export = rule["plaintext_export"].as_bool().unwrap();
            let unwraps = rpcs.iter().any(|r| r == "UnwrapKey" || r == "DecryptObject" || r == "*");
            assert!(!export || unwraps, "{identity}: plaintext_export without an RPC that needs it");
        }
        let may = |rpc: &str, export: bool| {
            rules
                .iter()
                .any(|r| strings(r, "rpcs").iter().any(|x| x == rpc) && r["plaintext_export"].as_bool() == Some(export))
        };
        assert!(may("IssueDataKey", false) && may("SubmitEncryptedJob", false), "{file}: an encoder rule");
        assert!(may("WrapKey", false), "{file}: a packager rule");
        assert!(may("UnwrapKey", true), "{file}: an ops rule with plaintext export");
    }
}

/// The shipped configuration and policy load through the broker's own
/// loaders, and the policy decides as its comments say.
#[test]
fn shipped_config_and_policy_load_through_the_real_loaders() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["deploy/kubernetes/config/keybroker.toml", "deploy/keybroker.example.toml"] {
        let config =
            keybroker::app::config::Config::load(Some(&root.join(file))).unwrap_or_else(|e| panic!("{file}: {e}"));
        config.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config.tls.mode, keybroker::app::config::TlsMode::Mutual, "{file}");
        assert!(config.audit.file.is_some() && config.policy.file.is_some(), "{file}");
    }
    for file in ["deploy/kubernetes/config/policy.toml", "deploy/policy.example.toml"] {
        let policy = keybroker::custody::policy::Policy::load(&root.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let encoder = policy
            .authorize("spiffe://example.org/ns/media/sa/encoder", keybroker::custody::rpc::Rpc::SubmitEncryptedJob)
            .unwrap();
        assert!(encoder.check_kms_key("arn:aws:kms:us-east-1:111122223333:key/1234abcd").is_ok());
        assert!(encoder.check_plaintext_export("UnwrapKey").is_err());
        assert!(
            policy
                .authorize("spiffe://example.org/ns/media/sa/encoder", keybroker::custody::rpc::Rpc::UnwrapKey)
                .is_err()
        );
        assert!(!encoder.require_encrypted_outputs);
        let mediaconvert = policy
            .authorize(
                "spiffe://example.org/ns/media/sa/mediaconvert",
                keybroker::custody::rpc::Rpc::SubmitMediaConvertJob,
            )
            .unwrap();
        assert!(mediaconvert.require_encrypted_outputs, "{file}: the MediaConvert rule requires encrypted outputs");
        let ops = policy
            .authorize("spiffe://example.org/ns/ops/sa/key-recovery", keybroker::custody::rpc::Rpc::UnwrapKey)
            .unwrap();
        assert!(ops.check_plaintext_export("UnwrapKey").is_ok());
        assert!(
            policy.authorize("spiffe://example.org/ns/other/sa/x", keybroker::custody::rpc::Rpc::IssueDataKey).is_err(),
            "default deny"
        );
    }
}
