//! [`CliError`]: every way a `keybroker` command fails, one variant per
//! kind of failure, each with the message `main` prints on stderr before
//! exiting with status 1.
//!
//! Owns the wording users read. Must never carry key material, and is never
//! used by the server, whose errors become gRPC statuses at the edge.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A command-line failure, printed on stderr with exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server failed.
    #[error(transparent)]
    Server(#[from] crate::app::server::ServerError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::app::config::ConfigError),
    /// The broker answered with an error.
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    /// The broker could not be reached.
    #[error("cannot reach the broker: {0}")]
    Connect(String),
    /// A local file (or stdin) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file, as the user named it.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Flags that do not parse or do not fit together.
    #[error("{0}")]
    Usage(String),
    /// A local input whose content is unusable: key material, ET JSON, a
    /// job spec, an audit log.
    #[error("{0}")]
    Input(String),
    /// The audit log files given are not one intact chain.
    #[error(transparent)]
    AuditChain(#[from] crate::audit::ChainFault),
    /// The broker's answer broke the protocol; nothing was written.
    #[error("{0}")]
    Answer(String),
    /// Ctrl-C stopped a command that writes output.
    #[error("interrupted; no output was written")]
    Interrupted,
    /// The Prometheus exporter could not start.
    #[error("metrics on {addr}: {message}")]
    Metrics {
        /// Its listen address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The gRPC listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `health`: the broker answered, but not SERVING.
    #[error("not serving: {0}")]
    NotServing(&'static str),
    /// `bench`: every call failed (counts by gRPC code).
    #[error("no call succeeded: {0:?}")]
    NoCallSucceeded(BTreeMap<String, u64>),
    /// `pipeline check`/`connect`: the check found requirements not met.
    #[error("pipeline {pipeline_id}: {failed} requirement(s) not met")]
    PipelineNotReady {
        /// The pipeline.
        pipeline_id: String,
        /// How many failed.
        failed: usize,
    },
    /// `mediaconvert check-role`/`connect-role`: the check found
    /// requirements not met.
    #[error("MediaConvert role {role_arn}: {failed} requirement(s) not met")]
    RoleNotReady {
        /// The role.
        role_arn: String,
        /// How many failed.
        failed: usize,
    },
    /// An answer could not be printed as JSON.
    #[error(transparent)]
    Json(serde_json::Error),
}
