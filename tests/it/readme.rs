//! README's walk-through, run as written: every fenced block README marks
//! with `<!-- walkthrough: KIND -->` is taken from README.md itself, in
//! order, and fails the test when it stops being true.
//!
//! - `serve`: the one-line `keybroker serve ...` command, started in the
//!   background; every later block talks to it.
//! - `run`: a shell block, run with `bash -euo pipefail` in one scratch
//!   directory shared by all blocks (files one block makes, the next uses).
//! - `output`: a sample of what the previous `run` block printed: the same
//!   JSON fields in the same order, equal text values, base64 values of
//!   the same decoded length, and a value cut with `…` a prefix of the real
//!   one.
//!
//! What is substituted, and nothing else: `keybroker` is the binary under
//! test (a symlink first on `PATH`); the broker listens on a free port
//! instead of 50051 (`KEYBROKER_LISTEN` for `serve`, `KEYBROKER_ADDR` for
//! the CLI, and the literal `127.0.0.1:50051` rewritten in the blocks,
//! for grpcurl); `examples/` in the scratch directory is a symlink to the
//! repository's. grpcurl comes from the suite's Python environment.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::support::logs::assert_no_key_in;
use crate::support::process::{BIN, free_addr};
use crate::support::tools::python;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const README_ADDR: &str = "127.0.0.1:50051";

/// A marked block: its kind and its text.
struct Block {
    kind: String,
    text: String,
    line: usize,
}

/// The marked blocks of README, in order.
fn marked_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((at, line)) = lines.next() {
        let Some(kind) = line.trim().strip_prefix("<!-- walkthrough: ").and_then(|k| k.strip_suffix(" -->")) else {
            continue;
        };
        let (_, fence) = lines.next().unwrap_or_else(|| panic!("README line {}: a marker with no block", at + 1));
        assert!(fence.starts_with("```"), "README line {}: the marker must stand right above a fenced block", at + 1);
        let text: Vec<&str> = lines.by_ref().map(|(_, l)| l).take_while(|l| !l.starts_with("```")).collect();
        blocks.push(Block { kind: kind.to_owned(), text: text.join("\n"), line: at + 1 });
    }
    blocks
}

/// Compares what a command printed with README's sample of it.
fn matches_sample(sample: &Value, actual: &Value, block: &Block) {
    let (Value::Object(sample), Value::Object(actual)) = (sample, actual) else {
        panic!("README line {}: expected JSON objects, got {actual}", block.line);
    };
    let order = |map: &serde_json::Map<String, Value>| map.keys().cloned().collect::<Vec<_>>();
    assert_eq!(order(actual), order(sample), "README line {}: the fields or their order differ", block.line);
    for (field, expected) in sample {
        let (Some(expected), Some(got)) = (expected.as_str(), actual[field].as_str()) else {
            panic!("README line {}: {field} is not text", block.line);
        };
        if let Some(prefix) = expected.strip_suffix('…') {
            assert!(got.starts_with(prefix), "README line {}: {field} {got} does not start {prefix}", block.line);
        } else if let (Ok(sample_bytes), Ok(got_bytes)) = (B64.decode(expected), B64.decode(got)) {
            assert_eq!(got_bytes.len(), sample_bytes.len(), "README line {}: {field} length", block.line);
        } else {
            assert_eq!(got, expected, "README line {}: {field}", block.line);
        }
    }
}

/// The walk-through's broker, killed if the test fails before it stops it.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on `addr`, or the server exits.
fn wait_listening(server: &mut Child, addr: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("README's serve command exited ({status}): {}", std::fs::read_to_string(log).unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "README's serve command did not listen: {}",
            std::fs::read_to_string(log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let blocks = marked_blocks(&readme);
    let count = |kind: &str| blocks.iter().filter(|b| b.kind == kind).count();
    assert_eq!(count("serve"), 1, "README must mark exactly one serve block");
    assert!(count("run") >= 7 && count("output") >= 1, "README lost its walk-through markers");
    assert_eq!(blocks[0].kind, "serve", "the serve block comes first");
    assert!(
        blocks.iter().any(|b| b.kind == "run" && b.text.contains("keybroker mediaconvert submit")),
        "README's MediaConvert block lost its walk-through marker"
    );

    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("keybroker")).unwrap();
    std::os::unix::fs::symlink(Path::new(ROOT).join("examples"), work.join("examples")).unwrap();
    let mut path: Vec<PathBuf> = vec![bin];
    path.extend(Path::new(&python()).parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf));
    path.push(Path::new(ROOT).join(".venv/bin"));
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let path = std::env::join_paths(path).unwrap();
    let addr = free_addr();
    let shell = |text: &str| {
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", text])
            .current_dir(&work)
            .env("PATH", &path)
            .env("KEYBROKER_ADDR", &addr)
            .env("KEYBROKER_LISTEN", &addr)
            .stdin(Stdio::null());
        command
    };

    let serve = &blocks[0];
    assert!(serve.text.starts_with("keybroker serve ") && !serve.text.contains('\n'), "{}", serve.text);
    let log = scratch.path().join("server.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut server =
        Broker(shell(&format!("exec {}", serve.text)).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap());
    wait_listening(&mut server.0, &addr, &log);

    let mut last: Option<(usize, Vec<u8>)> = None;
    for block in &blocks[1..] {
        match block.kind.as_str() {
            "run" => {
                let text = block.text.replace(README_ADDR, &addr);
                let out = shell(&text).output().unwrap();
                assert!(
                    out.status.success(),
                    "README line {}: the block failed ({}):\n{}\nstdout:\n{}\nstderr:\n{}\nserver:\n{}",
                    block.line,
                    out.status,
                    block.text,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(&log).unwrap()
                );
                last = Some((block.line, out.stdout));
            }
            "output" => {
                let (ran, stdout) =
                    last.take().unwrap_or_else(|| panic!("README line {}: no block ran before", block.line));
                let sample: Value = serde_json::from_str(&block.text)
                    .unwrap_or_else(|e| panic!("README line {}: the sample is not JSON: {e}", block.line));
                let actual: Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
                    panic!("README line {ran} printed no JSON ({e}): {}", String::from_utf8_lossy(&stdout))
                });
                matches_sample(&sample, &actual, block);
            }
            other => panic!("README line {}: unknown walk-through kind {other:?}", block.line),
        }
    }

    // The keys the walk-through took out went only to their files.
    let keys: Vec<Vec<u8>> = ["clip.key", "content.key"]
        .iter()
        .map(|name| hex::decode(std::fs::read_to_string(work.join(name)).unwrap().trim()).unwrap())
        .collect();
    assert!(Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap().success());
    let status = server.0.wait().unwrap();
    let server_log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{server_log}");
    assert_no_key_in(&server_log, &keys, "the walk-through broker's output");
}
