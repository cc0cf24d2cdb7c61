//! The programs the suite checks the broker against: the OpenSSL CLI,
//! Python (grpcio for the client tests, `cryptography` for the cipher
//! tests), and tools `scripts/test` installs into the project's `.venv`.
//!
//! A missing program fails the test that needs it, saying what to install;
//! nothing is skipped.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use keybroker::custody::keys::EncryptionMode;

const OPENSSL: &str = "/usr/bin/openssl";

/// `name` in the project's `.venv/bin`, if `scripts/test` has made one.
pub fn venv_tool(name: &str) -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(name);
    path.exists().then(|| path.to_string_lossy().into_owned())
}

/// The Python interpreter with the suite's packages (tests/requirements.txt):
/// `$KEYBROKER_TEST_PYTHON`, else `.venv/bin/python`, else `python3`.
pub fn python() -> String {
    if let Ok(python) = std::env::var("KEYBROKER_TEST_PYTHON") {
        return python;
    }
    venv_tool("python").unwrap_or_else(|| "python3".to_owned())
}

/// [`python`] once it has shown it can import `cryptography`, or a failure
/// that says how to get one.
pub fn python_with_cryptography() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = python();
        let probe = Command::new(&python).args(["-c", "import cryptography; print(cryptography.__version__)"]).output();
        match probe {
            Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => python,
            Ok(out) => panic!(
                "{python} has no usable `cryptography` package ({}): run ./scripts/test once (it makes .venv), \
                 or set KEYBROKER_TEST_PYTHON to an interpreter that has it",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(err) => panic!(
                "cannot run {python} ({err}): install Python 3 with `pip install cryptography`, \
                 or set KEYBROKER_TEST_PYTHON to such an interpreter"
            ),
        }
    })
}

/// The openssl binary, or a failure that says what to install.
pub fn openssl() -> &'static str {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let ok = Command::new(OPENSSL).arg("version").output().is_ok_and(|out| out.status.success());
        assert!(
            ok,
            "{OPENSSL} is missing or broken: the interop tests need the OpenSSL CLI \
             (Debian/Ubuntu: apt-get install openssl)"
        );
    });
    OPENSSL
}

/// The OpenSSL cipher name for a mode and key length, e.g. `aes-192-ctr`.
pub fn openssl_cipher(mode: EncryptionMode, key_len: usize) -> String {
    let suffix = match mode {
        EncryptionMode::AesCbcPkcs7 => "cbc",
        EncryptionMode::AesCtr => "ctr",
        other => panic!("openssl enc has no {} format", other.as_str()),
    };
    format!("aes-{}-{suffix}", key_len * 8)
}

/// `openssl enc` (`-d` when `decrypt`) of the file `input` under this key
/// and IV, no salt: the command, for the caller to run or stream.
pub fn openssl_enc(mode: EncryptionMode, key: &[u8], iv: &[u8], decrypt: bool, input: &Path) -> Command {
    let mut cmd = Command::new(openssl());
    cmd.args(["enc", if decrypt { "-d" } else { "-e" }])
        .arg(format!("-{}", openssl_cipher(mode, key.len())))
        .args(["-nosalt", "-K", &hex::encode(key), "-iv", &hex::encode(iv), "-in"])
        .arg(input);
    cmd
}
