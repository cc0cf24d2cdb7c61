//! The `keybroker` binary as a child process: `serve` on a free loopback
//! port, its output captured to a file, and the CLI pointed at it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_keybroker");

/// A running `keybroker serve`; killed when dropped.
pub struct Served {
    pub child: Child,
    pub addr: String,
    pub log: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (until someone binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `127.0.0.1:PORT` for a [`free_port`].
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Starts `keybroker serve --listen ADDR ARGS…` in `cwd` with `env`, and
/// waits until it listens.
pub fn serve(cwd: &Path, args: &[&str], env: &[(&str, String)]) -> Served {
    serve_without(cwd, args, env, &[])
}

/// [`serve`], with the variables `unset` removed from the server's
/// environment.
pub fn serve_without(cwd: &Path, args: &[&str], env: &[(&str, String)], unset: &[&str]) -> Served {
    let addr = free_addr();
    let log = cwd.join("server.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut command = Command::new(BIN);
    for name in unset {
        command.env_remove(name);
    }
    let mut child = command
        .current_dir(cwd)
        .arg("serve")
        .args(["--listen", &addr])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited ({status}): {}", std::fs::read_to_string(&log).unwrap());
        }
        assert!(Instant::now() < deadline, "the server did not listen: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    Served { child, addr, log }
}

impl Served {
    /// Runs a client subcommand against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).args(["--addr", &self.addr]).output().unwrap()
    }

    /// Everything the server has printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Sends SIGTERM and answers the exit status and everything logged.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        (status, self.log_text())
    }
}

/// Runs a client subcommand against the broker at `addr` without blocking
/// the runtime; asserts it succeeded and answers its stdout as JSON.
pub async fn cli_json(addr: &str, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(BIN).args(args).args(["--addr", addr]).output().await.unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
