//! `keybroker health`: one grpc.health.v1 Check, for scripts and probes.
//!
//! Owns the exit status (0 only when SERVING) and the time bound. Must
//! never retry or wait past `--timeout-secs`.

use std::time::Duration;

use crate::client::args::HealthArgs;
use crate::client::connect::channel;
use crate::client::error::CliError;

/// `keybroker health`: prints the serving status.
pub(super) async fn health(args: HealthArgs) -> Result<(), CliError> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let check = async {
        let mut client = HealthClient::new(channel(&args.client).await?);
        let answer = client.check(HealthCheckRequest { service: args.service.clone() }).await?.into_inner();
        Ok::<_, CliError>(answer.status)
    };
    let status = tokio::time::timeout(Duration::from_secs(args.timeout_secs), check)
        .await
        .map_err(|_| CliError::Connect(format!("no answer within {} s", args.timeout_secs)))??;
    let name = ServingStatus::try_from(status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
    println!("{name}");
    if status == ServingStatus::Serving as i32 { Ok(()) } else { Err(CliError::NotServing(name)) }
}
