//! The local AWS (moto's server) over HTTP: a real KMS and S3 for tests.
//!
//! `scripts/test` starts one and exports `KEYBROKER_TEST_MOTO_URL`. Without
//! it, the first test to ask starts `moto_server` from `PATH` (or the
//! project's `.venv`) and it lives as long as the test binary. A test that
//! needs moto and finds none fails loudly.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec, KeyUsageType};

use super::process::free_port;

/// A running moto server.
pub struct Moto {
    pub url: String,
    child: Option<Child>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn moto_binary() -> String {
    super::tools::venv_tool("moto_server").unwrap_or_else(|| "moto_server".to_owned())
}

fn wait_until_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = url.trim_start_matches("http://");
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not come up at {url} within 30 s");
}

impl Moto {
    /// The suite's shared server.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(|| {
            if let Ok(url) = std::env::var("KEYBROKER_TEST_MOTO_URL") {
                return Moto { url, child: None };
            }
            // Lives as long as this test binary: the shell kills moto when
            // its stdin (our pipe) closes at exit.
            let port = free_port();
            let script =
                format!("{} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; read _; kill $pid", moto_binary());
            let child = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start moto_server (pip install 'moto[server]'): {e}"));
            std::mem::forget(child);
            let url = format!("http://127.0.0.1:{port}");
            wait_until_up(&url);
            Moto { url, child: None }
        })
    }

    /// A server of the test's own, killed when dropped (or by [`Moto::kill`]).
    pub fn private() -> Moto {
        let port = free_port();
        let mut child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server (pip install 'moto[server]'): {e}"));
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
        }
        let url = format!("http://127.0.0.1:{port}");
        wait_until_up(&url);
        Moto { url, child: Some(child) }
    }

    /// A handle on something at `url` that is not a moto this suite runs
    /// (for pointing clients at a dead or silent peer).
    pub fn at(url: &str) -> Moto {
        Moto { url: url.to_owned(), child: None }
    }

    /// Stops a private server now.
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An SDK configuration pointed at this server, test credentials, us-east-1.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(
                aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "keybroker-tests"),
            ))
            .build()
    }

    /// A KMS client that talks to moto directly (not through the broker).
    pub fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config())
    }

    /// Creates a symmetric KMS key; answers its ARN.
    pub async fn create_key(&self) -> String {
        let out = self
            .kms()
            .create_key()
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .description("keybroker test key")
            .send()
            .await
            .expect("moto CreateKey");
        out.key_metadata().expect("key metadata").arn().expect("arn").to_owned()
    }

    /// KMS Encrypt of `plaintext` under `kms_key` with the encryption
    /// context `{"service": service}`, straight to moto; answers the blob.
    pub async fn encrypt_under(&self, kms_key: &str, plaintext: &[u8], service: &str) -> Vec<u8> {
        let out = self
            .kms()
            .encrypt()
            .key_id(kms_key)
            .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext.to_vec()))
            .encryption_context("service", service)
            .send()
            .await
            .expect("moto Encrypt");
        out.ciphertext_blob().expect("ciphertext").as_ref().to_vec()
    }

    /// Creates an alias for `key_arn`.
    pub async fn create_alias(&self, alias: &str, key_arn: &str) {
        self.kms().create_alias().alias_name(alias).target_key_id(key_arn).send().await.expect("moto CreateAlias");
    }

    /// Environment variables that point an AWS SDK process at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }
}
