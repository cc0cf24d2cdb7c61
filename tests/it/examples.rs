//! The client examples (`examples/python`, `examples/node`) run against the
//! real binary (`keybroker serve --dev`), so they cannot rot: each must print
//! an Elastic Transcoder `Encryption` block with a 16-byte IV and KeyMd5, and
//! a validate-only CreateJob body with a fresh key in the protected output and
//! in the HLS playlist.
//!
//! Python: `$KEYBROKER_TEST_PYTHON`, else `.venv/bin/python`, else `python3`,
//! with grpcio and grpcio-tools (tests/requirements.txt). Node: `node`, with
//! the example's packages installed by `npm ci` if they are not yet.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::support::process::{Served, serve};
use crate::support::tools::python;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DEV_KEY_ARN: &str = "arn:aws:kms:local:000000000000:alias/keybroker-dev";

/// Installs the Node example's locked packages unless they are there.
fn ensure_node_modules() {
    let example = Path::new(ROOT).join("examples/node");
    let installed = ["@grpc/grpc-js", "@grpc/proto-loader"]
        .iter()
        .all(|package| example.join("node_modules").join(package).join("package.json").exists());
    if installed {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&example)
        .output()
        .unwrap_or_else(|e| panic!("npm is needed to install the Node example's packages (Node 20 with npm): {e}"));
    assert!(
        out.status.success(),
        "npm ci --prefix examples/node failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an example against `broker` and answers the JSON it printed.
fn run_example(broker: &Served, program: &str, script: &str) -> Value {
    let out: Output = Command::new(program)
        .arg(Path::new(ROOT).join(script))
        .args(["--addr", &broker.addr])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}\nbroker log:\n{}",
        out.status,
        broker.log_text()
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{script} printed no JSON object ({e}):\n{stdout}"))
}

fn decoded(block: &Value, field: &str, what: &str) -> Vec<u8> {
    let text = block[field].as_str().unwrap_or_else(|| panic!("{what}: no {field} in {block}"));
    B64.decode(text).unwrap_or_else(|e| panic!("{what}: {field} is not base64 ({e}): {text}"))
}

/// An AES block the broker made: a wrapped key, its 16-byte MD5 and IV.
fn assert_keyed(block: &Value, what: &str) {
    assert!(!decoded(block, "Key", what).is_empty(), "{what}: an empty Key");
    assert_eq!(decoded(block, "KeyMd5", what).len(), 16, "{what}: KeyMd5");
    assert_eq!(decoded(block, "InitializationVector", what).len(), 16, "{what}: InitializationVector");
}

fn assert_example_output(output: &Value, example: &str) {
    let issued = &output["issue_data_key"]["Encryption"];
    assert_eq!(issued["Mode"], "aes-cbc-pkcs7", "{example}: {output}");
    assert_keyed(issued, &format!("{example}: IssueDataKey"));
    assert_eq!(output["issue_data_key"]["kms_key_arn"], DEV_KEY_ARN, "{example}");

    let job = &output["submit_encrypted_job"];
    assert_eq!(job["job_id"], "", "{example}: validate_only submits nothing");
    assert_eq!(job["kms_key_arn"], DEV_KEY_ARN, "{example}");
    let body = &job["create_job_request"];
    assert_eq!(body["PipelineId"], "0000000000000-keydev", "{example}: {body}");

    let outputs = body["Outputs"].as_array().unwrap_or_else(|| panic!("{example}: no Outputs in {body}"));
    assert_eq!(outputs.len(), 3, "{example}: {body}");
    let output_block = &outputs[0]["Encryption"];
    assert_eq!(output_block["Mode"], "aes-cbc-pkcs7", "{example}: {body}");
    assert_keyed(output_block, &format!("{example}: Outputs[0].Encryption"));
    assert!(outputs[1].get("Encryption").is_none() && outputs[2].get("Encryption").is_none(), "{example}: {body}");

    let hls = &body["Playlists"][0]["HlsContentProtection"];
    assert_eq!(hls["Method"], "aes-128", "{example}: {body}");
    assert_eq!(hls["KeyStoragePolicy"], "WithVariantPlaylists", "{example}: {body}");
    assert_keyed(hls, &format!("{example}: Playlists[0].HlsContentProtection"));
    assert_eq!(body["Playlists"][0]["OutputKeys"], serde_json::json!(["hls/2m", "hls/1m"]), "{example}");

    // Three keys, each fresh: no key or IV repeats.
    let blocks = [issued, output_block, hls];
    for field in ["Key", "InitializationVector"] {
        let mut values: Vec<&str> = blocks.iter().map(|b| b[field].as_str().unwrap()).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), 3, "{example}: a repeated {field}: {output}");
    }

    let paths: Vec<&str> =
        job["protected_files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["Outputs[0].Encryption", "Playlists[0].HlsContentProtection"], "{example}");

    // The MediaConvert job: validated, its HLS group given a static key.
    let mc = &output["submit_mediaconvert_job"];
    assert_eq!(mc["job_id"], "", "{example}: validate_only submits nothing");
    let place = "Settings.OutputGroups[0].OutputGroupSettings.HlsGroupSettings.Encryption.StaticKeyProvider";
    assert_eq!(mc["keys"][0]["place"], place, "{example}: {mc}");
    let provider = &mc["create_job"]["Settings"]["OutputGroups"][0]["OutputGroupSettings"]["HlsGroupSettings"]["Encryption"]
        ["StaticKeyProvider"];
    let key = provider["StaticKeyValue"].as_str().unwrap_or_default();
    if mc["static_keys_redacted"] == true {
        assert!(key.starts_with("(redacted"), "{example}: {provider}");
    } else {
        assert!(key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()), "{example}: {provider}");
    }
}

#[test]
fn python_example_issues_a_key_and_validates_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let broker = serve(dir.path(), &["--dev"], &[]);
    let output = run_example(&broker, &python(), "examples/python/client.py");
    assert_example_output(&output, "examples/python");
}

#[test]
fn node_example_issues_a_key_and_validates_a_job() {
    ensure_node_modules();
    let dir = tempfile::tempdir().unwrap();
    let broker = serve(dir.path(), &["--dev"], &[]);
    let output = run_example(&broker, "node", "examples/node/client.js");
    assert_example_output(&output, "examples/node");
}
