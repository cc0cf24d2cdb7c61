//! Shared AWS SDK configuration: region, credential chain, endpoint
//! variables, timeouts and retries, loaded once and handed to every client.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::config::KmsConfig;

/// Loads the SDK configuration the way the AWS CLI does (environment,
/// profile, IMDS; `AWS_ENDPOINT_URL*` honoured), with the broker's deadlines.
pub async fn load_sdk_config(kms: &KmsConfig) -> aws_config::SdkConfig {
    sdk_config_loader(kms).load().await
}

/// The loader behind [`load_sdk_config`], for callers (tests, tools) that
/// add an endpoint or credentials of their own before loading.
pub fn sdk_config_loader(kms: &KmsConfig) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(kms.connect_timeout_ms))
                .operation_attempt_timeout(Duration::from_millis(kms.attempt_timeout_ms))
                .operation_timeout(kms.call_timeout())
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(kms.max_attempts)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_secs(1)),
        );
    if let Some(region) = &kms.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    loader
}

/// An error and its causes on one line, for server logs and messages.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
