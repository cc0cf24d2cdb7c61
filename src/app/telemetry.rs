//! Structured logs with `tracing`: text or JSON lines on stderr.
//!
//! Log fields carry ARNs, fingerprints and outcomes, never key material.

use tracing_subscriber::EnvFilter;

use crate::app::config::LogFormat;

/// The AWS SDK's and HTTP stack's wire-level tracing can print request
/// bodies, and a KMS `Encrypt` body carries the plaintext key: these targets
/// are capped at DEBUG whatever the configured filter says.
const WIRE_CAPS: &[&str] = &[
    "aws_smithy_runtime=debug",
    "aws_smithy_runtime_api=debug",
    "aws_smithy_http=debug",
    "aws_smithy_http_client=debug",
    "aws_smithy_types=debug",
    "aws_sigv4=debug",
    "aws_sdk_kms=debug",
    "aws_sdk_elastictranscoder=debug",
    "aws_sdk_s3=debug",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "rustls=info",
    "tonic=debug",
    "tower=debug",
];

/// The filter for `directives` (`RUST_LOG` wins when set). When anything is
/// at TRACE, the wire caps are appended so the SDK and HTTP stack stay at
/// DEBUG or below (they only ever lower a level here, never raise one).
pub fn filter(directives: &str) -> EnvFilter {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| directives.to_owned());
    let mut filter = EnvFilter::builder().parse_lossy(base);
    if filter.max_level_hint().is_some_and(|max| max < tracing::level_filters::LevelFilter::DEBUG) {
        return filter;
    }
    for cap in WIRE_CAPS {
        if let Ok(directive) = cap.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global subscriber. `RUST_LOG` overrides `filter`.
/// A second call (as in tests) leaves the first subscriber in place.
pub fn init(format: LogFormat, filter: &str) {
    let filter = self::filter(filter);
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
