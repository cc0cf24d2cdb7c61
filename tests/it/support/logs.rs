//! Captures every log line the in-process servers write (at TRACE, SDKs
//! included), so tests can prove no key material reaches the logs.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once per test binary. The filter is
/// the broker's own, at its most verbose.
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let filter = keybroker::app::telemetry::filter("trace");
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| Sink).with_ansi(false).try_init();
    });
}

/// Everything logged so far.
pub fn text() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// Every text form a key could leak in: hex (both cases), base64, and the
/// raw bytes read as text.
pub fn encodings(key: &[u8]) -> Vec<String> {
    let mut forms = vec![
        hex::encode(key),
        hex::encode_upper(key),
        base64::engine::general_purpose::STANDARD.encode(key),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        format!("{key:?}"),
    ];
    forms.retain(|f| f.len() >= 16);
    forms
}

/// Panics if any form of any key appears in `haystack`.
pub fn assert_no_key_in(haystack: &str, keys: &[Vec<u8>], what: &str) {
    assert!(!keys.is_empty(), "no keys to look for: the test proves nothing");
    for key in keys {
        for form in encodings(key) {
            assert!(!haystack.contains(&form), "a plaintext key ({form}) appears in {what}");
        }
    }
}

/// Panics if any form of any key appears in the captured logs.
pub fn assert_no_key_logged(keys: &[Vec<u8>]) {
    let logs = text();
    assert!(!logs.is_empty(), "nothing was logged: the scan proves nothing");
    assert_no_key_in(&logs, keys, "the server logs");
}
