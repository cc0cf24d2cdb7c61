//! The application: configuration, start-up and shutdown, the shared AWS
//! SDK settings, logs, metrics and process hygiene.

pub mod aws;
pub mod config;
pub mod hygiene;
pub mod metrics;
pub mod server;
pub mod signals;
pub mod telemetry;
