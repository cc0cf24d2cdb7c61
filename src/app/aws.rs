//! Shared AWS SDK configuration: region, credential chain, endpoint
//! variables, timeouts and retries, loaded once and handed to every client.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::app::config::AwsConfig;

/// Loads the SDK configuration the way the AWS CLI does (environment,
/// profile, IMDS; `AWS_ENDPOINT_URL*` honoured), with the broker's deadlines.
pub async fn load_sdk_config(aws: &AwsConfig) -> aws_config::SdkConfig {
    sdk_config_loader(aws).load().await
}

/// As [`load_sdk_config`], but the region comes only from `aws.region`,
/// `AWS_REGION` or the profile, never from the EC2 instance metadata
/// service: for a broker on the local keyring, which is mostly run on
/// machines that are not EC2 instances, where asking IMDS costs start-up
/// time and two long warnings. Credentials are still resolved lazily, on
/// the first AWS call.
pub async fn load_sdk_config_without_imds_region(aws: &AwsConfig) -> aws_config::SdkConfig {
    use aws_config::default_provider::credentials::DefaultCredentialsChain;
    use aws_config::meta::region::RegionProviderChain;
    let off_instance = || {
        RegionProviderChain::first_try(aws_config::environment::EnvironmentVariableRegionProvider::new())
            .or_else(aws_config::profile::ProfileFileRegionProvider::new())
    };
    let mut loader = sdk_config_loader(aws);
    if aws.region.is_none() {
        // The default credentials chain looks the region up once more when
        // none was found, IMDS included: it gets the same chain.
        let credentials = DefaultCredentialsChain::builder().region(off_instance()).build().await;
        loader = loader.region(off_instance()).credentials_provider(credentials);
    }
    loader.load().await
}

/// The loader behind [`load_sdk_config`], for callers (tests, tools) that
/// add an endpoint or credentials of their own before loading.
pub fn sdk_config_loader(aws: &AwsConfig) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(aws.connect_timeout_ms))
                .operation_attempt_timeout(Duration::from_millis(aws.attempt_timeout_ms))
                .operation_timeout(aws.call_timeout())
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(aws.max_attempts)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_secs(1)),
        );
    if let Some(region) = &aws.region {
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

/// What an AWS SDK call's failure was, independent of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkFailure {
    /// The service's error code (`ThrottlingException`, …), when it answered.
    pub code: Option<String>,
    /// The service's or the transport's words.
    pub message: String,
    /// Whether the request never got an answer (timeout, connection refused, unreadable answer).
    pub transport: bool,
}

/// Reads an SDK error into a [`SdkFailure`].
pub fn sdk_failure<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> SdkFailure
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            SdkFailure {
                code: Some(code.to_owned()),
                message: format!("{code}: {}", e.message().unwrap_or("no message")),
                transport: false,
            }
        }
        SdkError::TimeoutError(_) => SdkFailure { code: None, message: "timed out".to_owned(), transport: true },
        SdkError::DispatchFailure(failure) => {
            let what = if failure.is_timeout() {
                "timed out connecting"
            } else if failure.is_io() {
                "could not connect"
            } else {
                "could not send the request"
            };
            SdkFailure { code: None, message: format!("{what}: {}", error_chain(err)), transport: true }
        }
        SdkError::ResponseError(_) => {
            SdkFailure { code: None, message: format!("unreadable answer: {}", error_chain(err)), transport: true }
        }
        _ => SdkFailure { code: None, message: error_chain(err), transport: false },
    }
}
