//! A key pool answers to every name of its KMS key: a caller naming the
//! configured key by its alias, key id, key ARN or alias ARN takes from the
//! same pool (KMS described the key when the pools were set up), and a key
//! the configuration does not name never gets a pool. Against moto's KMS,
//! through the real `keybroker serve` binary and its metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::pb;
use md5::{Digest as _, Md5};

use crate::binary::{sample, scrape};
use crate::support::moto::Moto;
use crate::support::process::{free_addr, serve};

/// KMS (moto, directly) opens `block.key` under `service`'s context.
async fn opens_under(block: &pb::Encryption, service: &str) -> Result<Vec<u8>, String> {
    let context = HashMap::from([("service".to_owned(), service.to_owned())]);
    Moto::shared()
        .kms()
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(B64.decode(&block.key).unwrap()))
        .set_encryption_context(Some(context))
        .send()
        .await
        .map(|out| out.plaintext.unwrap().into_inner())
        .map_err(|e| format!("{:?}", e.into_service_error()))
}

#[test]
fn a_pool_answers_to_the_alias_key_id_and_arns_of_its_key_and_no_other_key() {
    let moto = Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key_arn = runtime.block_on(moto.create_key());
    let other_arn = runtime.block_on(moto.create_key());
    let key_id = key_arn.rsplit_once("key/").unwrap().1.to_owned();
    let alias = format!("alias/pool-names-{key_id}");
    runtime.block_on(moto.create_alias(&alias, &key_arn));
    let alias_arn = format!("{}{alias}", key_arn.split_once("key/").unwrap().0);

    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr();
    let env = [
        moto.env().as_slice(),
        &[
            ("KEYBROKER_POLICY__ALLOW_ALL", "true".to_owned()),
            ("KEYBROKER_POOL__ENABLED", "true".to_owned()),
            ("KEYBROKER_POOL__MIN_SIZE", "8".to_owned()),
            ("KEYBROKER_POOL__MAX_SIZE", "8".to_owned()),
        ],
    ]
    .concat();
    let server = serve(
        dir.path(),
        &["--kms", "aws", "--kms-key-id", &alias, "--tls-mode", "plaintext", "--metrics-listen", &metrics_addr],
        &env,
    );
    // The pool is configured by its alias, so its series carry the alias.
    let labels = format!(r#"{{kms_key="{alias}",context="elastictranscoder.amazonaws.com",bits="256"}}"#);
    let depth = format!("keybroker_pool_keys{labels}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample(&scrape(&metrics_addr), &depth) < 8.0 {
        assert!(Instant::now() < deadline, "the pool did not fill: {}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }

    let addr = format!("http://{}", server.addr);
    let issue = |name: String| {
        let addr = addr.clone();
        runtime.block_on(async move {
            let mut client = pb::key_broker_client::KeyBrokerClient::connect(addr).await.unwrap();
            let request = pb::IssueDataKeyRequest { kms_key_id: name, ..Default::default() };
            client.issue_data_key(request).await.unwrap().into_inner()
        })
    };
    let names = [alias.clone(), key_id.clone(), key_arn.clone(), alias_arn.clone()];
    for name in &names {
        let answer = issue(name.clone());
        assert_eq!(answer.kms_key_arn, key_arn, "named {name}");
        let block = answer.encryption.unwrap();
        let plaintext = runtime
            .block_on(opens_under(&block, "elastictranscoder.amazonaws.com"))
            .unwrap_or_else(|e| panic!("a key issued for {name} does not open under the ET context: {e}"));
        assert_eq!(B64.decode(&block.key_md5).unwrap(), Md5::digest(&plaintext).to_vec());
        assert!(runtime.block_on(opens_under(&block, "mediaconvert.amazonaws.com")).is_err());
    }
    // Another KMS key, named by its ARN: minted for the call, no pool.
    let other = issue(other_arn.clone());
    assert_eq!(other.kms_key_arn, other_arn);

    let text = scrape(&metrics_addr);
    assert_eq!(sample(&text, &format!("keybroker_pool_hits_total{labels}")), 4.0, "{text}");
    assert_eq!(sample(&text, &format!("keybroker_pool_misses_total{labels}")), 0.0, "{text}");
    assert!(!text.contains(&format!("kms_key=\"{other_arn}\"")), "a pool for an unconfigured key: {text}");
    assert!(!text.contains(&format!("kms_key=\"{key_arn}\"")), "a second pool for the configured key: {text}");
    let (status, _) = server.terminate();
    assert!(status.success());
}
