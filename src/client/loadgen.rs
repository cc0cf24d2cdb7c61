//! A closed-loop gRPC load generator, like redis-benchmark: N concurrent
//! callers over M connections, each sending its next call as soon as the
//! last one answers, for a fixed time. Reports requests per second, latency
//! percentiles and errors; `keybroker bench` runs the chosen RPC and, in the
//! same run, the bare health Check as a baseline.
//!
//! Sends only to the address it is given; bounded in time and count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::client::args::ClientArgs;
use crate::client::connect::channel;
use crate::client::error::CliError;
use crate::edge::pb;

/// The call to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadRpc {
    /// `IssueDataKey` (256-bit, aes-cbc-pkcs7, the server's default key).
    IssueDataKey,
    /// `grpc.health.v1.Health/Check`: a call that does no work, the baseline.
    HealthCheck,
    /// `SubmitEncryptedJob` of a one-output AES job on `--pipeline-id`, each
    /// call under a request token of its own: first submissions (keys made,
    /// recorded, the job POSTed).
    SubmitJob,
    /// The same job under one request token for the whole run: after the
    /// first call, every call is a replay of its recorded answer.
    SubmitJobReplay,
}

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The call.
    pub rpc: LoadRpc,
    /// Callers in flight.
    pub concurrency: usize,
    /// How long to measure.
    pub duration: Duration,
    /// How long to run before measuring.
    pub warmup: Duration,
    /// The pipeline of the jobs `SubmitJob` and `SubmitJobReplay` submit.
    pub pipeline_id: String,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The call.
    pub rpc: LoadRpc,
    /// Calls answered OK.
    pub ok: u64,
    /// Calls that failed, by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// The measured time.
    pub elapsed: Duration,
    /// Latency percentiles of OK calls: p50, p90, p99, max.
    pub p50: Duration,
    /// p90.
    pub p90: Duration,
    /// p99.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

impl LoadReport {
    /// OK calls per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// All failed calls.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The errors by code, ` (Unavailable 3, ...)`, or nothing when there
    /// were none.
    fn error_codes(&self) -> String {
        if self.errors.is_empty() {
            return String::new();
        }
        let codes: Vec<String> = self.errors.iter().map(|(code, n)| format!("{code} {n}")).collect();
        format!(" ({})", codes.join(", "))
    }

    /// A redis-benchmark-like summary.
    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{:?}: {:.0} requests/s, {} ok, {} errors{}, latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
            self.rpc,
            self.rps(),
            self.ok,
            self.error_count(),
            self.error_codes(),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// A one-output AES job on `pipeline_id` under `token`.
fn job_request(pipeline_id: &str, token: String) -> pb::SubmitEncryptedJobRequest {
    pb::SubmitEncryptedJobRequest {
        pipeline_id: pipeline_id.to_owned(),
        input: Some(pb::JobInput { key: "bench/in.mov".to_owned(), ..Default::default() }),
        outputs: vec![pb::JobOutput {
            key: "bench/out.mp4".to_owned(),
            preset_id: "1351620000001-000010".to_owned(),
            encryption: Some(pb::Protection {
                encryption: Some(pb::Encryption { mode: "aes-cbc-pkcs7".to_owned(), ..Default::default() }),
                key_bits: 256,
            }),
            ..Default::default()
        }],
        request_token: token,
        ..Default::default()
    }
}

/// One call; `run` names the run and `caller`/`seq` the call within it,
/// so `SubmitJob` tokens never repeat and `SubmitJobReplay` shares one.
async fn one_call(
    rpc: LoadRpc,
    channel: Channel,
    options: &LoadOptions,
    run: &str,
    caller: usize,
    seq: u64,
) -> Result<(), tonic::Status> {
    let client = || pb::key_broker_client::KeyBrokerClient::new(channel.clone());
    match rpc {
        LoadRpc::IssueDataKey => client().issue_data_key(pb::IssueDataKeyRequest::default()).await.map(|_| ()),
        LoadRpc::HealthCheck => {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.map(|_| ())
        }
        LoadRpc::SubmitJob => {
            let token = format!("bench-{run}-{caller}-{seq}");
            client().submit_encrypted_job(job_request(&options.pipeline_id, token)).await.map(|_| ())
        }
        LoadRpc::SubmitJobReplay => {
            let token = format!("bench-{run}-replay");
            client().submit_encrypted_job(job_request(&options.pipeline_id, token)).await.map(|_| ())
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the load over `channels` (callers are spread across them).
pub async fn run(channels: &[Channel], options: &LoadOptions) -> LoadReport {
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let stop_at = measure_from + options.duration;
    let mut callers = Vec::with_capacity(options.concurrency);
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..options.concurrency.max(1) {
        let channel = channels[i % channels.len().max(1)].clone();
        let (rpc, options, run_id) = (options.rpc, options.clone(), run_id.clone());
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 14);
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            for seq in 0.. {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let result = one_call(rpc, channel.clone(), &options, &run_id, i, seq).await;
                if sent < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for caller in callers {
        if let Ok((l, e)) = caller.await {
            latencies.extend(l);
            for (code, n) in e {
                *errors.entry(code).or_default() += n;
            }
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from).min(options.duration + Duration::from_secs(1));
    latencies.sort_unstable();
    LoadReport {
        rpc: options.rpc,
        ok: latencies.len() as u64,
        errors,
        elapsed,
        p50: percentile(&latencies, 0.50),
        p90: percentile(&latencies, 0.90),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

/// `keybroker bench`: load a running broker.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The call to load.
    #[arg(long, value_enum, default_value = "issue-data-key")]
    pub rpc: LoadRpc,
    /// Callers in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// How long to measure, e.g. `30s`, `10m`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Skip the health-check baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// The pipeline `submit-job` and `submit-job-replay` submit to.
    #[arg(long, default_value = crate::app::config::DEV_PIPELINE_ID)]
    pub pipeline_id: String,
}

/// Runs `keybroker bench`: the baseline (health Check) and then the chosen
/// RPC, each for `duration`, and prints both and their ratio.
///
/// # Errors
/// When the broker cannot be reached or every call failed.
pub async fn bench_command(args: BenchArgs) -> Result<(), CliError> {
    let mut channels = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        channels.push(channel(&args.client).await?);
    }
    let options = |rpc| LoadOptions {
        rpc,
        concurrency: args.concurrency,
        duration: args.duration,
        warmup: args.warmup,
        pipeline_id: args.pipeline_id.clone(),
    };
    println!(
        "{} callers over {} connections to {}, {:?} after {:?} warm-up",
        args.concurrency,
        channels.len(),
        args.client.addr,
        args.duration,
        args.warmup
    );
    let baseline = if args.no_baseline || args.rpc == LoadRpc::HealthCheck {
        None
    } else {
        let report = run(&channels, &options(LoadRpc::HealthCheck)).await;
        println!("baseline  {}", report.summary());
        Some(report)
    };
    let report = run(&channels, &options(args.rpc)).await;
    println!("measured  {}", report.summary());
    if let Some(baseline) = baseline {
        println!(
            "{:?} throughput = {:.2} of the bare gRPC baseline ({:.0} / {:.0} requests/s)",
            args.rpc,
            report.rps() / baseline.rps().max(f64::EPSILON),
            report.rps(),
            baseline.rps()
        );
    }
    if report.ok == 0 {
        return Err(CliError::NoCallSucceeded(report.errors));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(errors: &[(&str, u64)]) -> LoadReport {
        LoadReport {
            rpc: LoadRpc::HealthCheck,
            ok: 10,
            errors: errors.iter().map(|(code, n)| ((*code).to_owned(), *n)).collect(),
            elapsed: Duration::from_secs(1),
            p50: Duration::ZERO,
            p90: Duration::ZERO,
            p99: Duration::ZERO,
            max: Duration::ZERO,
        }
    }

    #[test]
    fn the_summary_names_error_codes_only_when_there_are_errors() {
        assert!(report(&[]).summary().contains("10 ok, 0 errors, latency"), "{}", report(&[]).summary());
        let failing = report(&[("Unavailable", 3), ("Internal", 1)]).summary();
        assert!(failing.contains("4 errors (Internal 1, Unavailable 3), latency"), "{failing}");
    }
}
