//! Prometheus metrics: requests by RPC and gRPC code with latency, KMS calls
//! by operation with latency and errors, calls in flight, rate-limit and
//! load-shed rejections, connections open and dropped by a limit, audit
//! write failures and commit times, key ledger commit times and failures,
//! and the key pools (depth, target, hits, misses, refill time, discards).
//!
//! Recording goes through the `metrics` facade and costs nothing until
//! [`install`] sets the Prometheus recorder, which serves the text format at
//! `/metrics` on its own listen address (`metrics_listen`). Labels carry RPC
//! names, codes and operations, never identities or keys.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Latency buckets, in seconds: 0.5 ms to 10 s.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Sets the Prometheus recorder and binds its listener on `addr`. Recording
/// starts now, so what the broker does while it starts (its key pools'
/// first fill) is counted; `/metrics` is served once [`Exporter::serve`]
/// is called.
///
/// # Errors
/// When the recorder is already installed or the listener cannot bind.
pub fn install(addr: SocketAddr) -> Result<Exporter, String> {
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    describe();
    register_counters();
    Ok(Exporter { addr, exporter })
}

/// The `/metrics` listener [`install`] bound, not yet answering.
pub struct Exporter {
    addr: SocketAddr,
    exporter: metrics_exporter_prometheus::ExporterFuture,
}

impl Exporter {
    /// Answers `/metrics` from now on, on the current runtime.
    pub fn serve(self) {
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = self.exporter.await {
                tracing::error!(%addr, error = ?e, "the Prometheus metrics listener stopped");
            }
        });
        tracing::info!(%addr, "Prometheus metrics at /metrics");
    }
}

fn describe() {
    metrics::describe_counter!("keybroker_requests_total", "RPCs answered, by rpc and gRPC code");
    metrics::describe_histogram!("keybroker_request_duration_seconds", "RPC latency, by rpc");
    metrics::describe_gauge!("keybroker_requests_in_flight", "RPCs being served");
    metrics::describe_counter!("keybroker_kms_calls_total", "KMS calls, by operation and outcome");
    metrics::describe_histogram!("keybroker_kms_call_duration_seconds", "KMS call latency, by operation");
    metrics::describe_counter!("keybroker_rate_limited_total", "calls refused by a per-identity rate limit");
    metrics::describe_counter!(
        "keybroker_load_shed_total",
        "calls shed at a concurrency limit, by limit (server, identity)"
    );
    metrics::describe_gauge!("keybroker_connections_open", "client connections open");
    metrics::describe_counter!(
        "keybroker_connections_dropped_total",
        "connections refused or closed by a connection limit, by reason"
    );
    metrics::describe_counter!("keybroker_audit_write_failures_total", "audit records that could not be written");
    metrics::describe_histogram!("keybroker_audit_commit_records", "audit records per group commit");
    metrics::describe_histogram!("keybroker_audit_commit_seconds", "time of one audit write and fdatasync");
    metrics::describe_gauge!("keybroker_audit_checkpoint_sequence", "the seq of the last audit checkpoint");
    metrics::describe_counter!(
        "keybroker_audit_checkpoint_failures_total",
        "audit checkpoints not written to audit.checkpoint_path"
    );
    metrics::describe_histogram!("keybroker_ledger_commit_rows", "key ledger rows per group commit");
    metrics::describe_histogram!("keybroker_ledger_commit_seconds", "time of one key ledger commit (one transaction)");
    metrics::describe_counter!(
        "keybroker_ledger_commit_failures_total",
        "key ledger commits that failed (each failed its calls UNAVAILABLE)"
    );
    metrics::describe_gauge!("keybroker_pool_keys", "wrapped keys held in a key pool");
    metrics::describe_gauge!("keybroker_pool_target_keys", "the size a key pool aims for, from the observed demand");
    metrics::describe_counter!("keybroker_pool_hits_total", "keys handed out from a key pool");
    metrics::describe_counter!("keybroker_pool_misses_total", "keys asked of an empty key pool (minted on demand)");
    metrics::describe_histogram!("keybroker_pool_refill_seconds", "time of one refill of a key pool to its target");
    metrics::describe_counter!(
        "keybroker_pool_discards_total",
        "pooled keys discarded: past their time to live (expired) or taken by a job that failed (unused)"
    );
}

/// Exports the counters of rare events at 0 from the start, so a
/// dashboard's `rate()` and an alert on them see a series before the first
/// refusal or failure, not a gap.
fn register_counters() {
    counter!("keybroker_rate_limited_total").increment(0);
    for limit in ["server", "identity"] {
        counter!("keybroker_load_shed_total", "limit" => limit).increment(0);
    }
    for reason in ["connection_limit", "peer_limit", "handshakes", "handshake_timeout", "idle"] {
        counter!("keybroker_connections_dropped_total", "reason" => reason).increment(0);
    }
    counter!("keybroker_audit_write_failures_total").increment(0);
    counter!("keybroker_audit_checkpoint_failures_total").increment(0);
    counter!("keybroker_ledger_commit_failures_total").increment(0);
}

/// The labels of one key pool's series: the KMS key as configured, the
/// context's service or purpose, and the key length. None is secret.
#[derive(Debug, Clone)]
pub struct PoolLabels {
    kms_key: String,
    context: &'static str,
    bits: &'static str,
}

impl PoolLabels {
    /// The labels of the pool for `kms_key`, `context` and `bits`.
    pub fn new(kms_key: &str, context: &'static str, bits: u32) -> Self {
        let bits = match bits {
            128 => "128",
            192 => "192",
            _ => "256",
        };
        PoolLabels { kms_key: kms_key.to_owned(), context, bits }
    }

    fn series(&self) -> [(&'static str, String); 3] {
        [("kms_key", self.kms_key.clone()), ("context", self.context.to_owned()), ("bits", self.bits.to_owned())]
    }

    fn discard_series(&self, reason: &'static str) -> [(&'static str, String); 4] {
        let [key, context, bits] = self.series();
        [key, context, bits, ("reason", reason.to_owned())]
    }
}

/// A key pool holds `depth` keys now.
pub fn record_pool_depth(pool: &PoolLabels, depth: usize) {
    gauge!("keybroker_pool_keys", &pool.series()).set(depth as f64);
}

/// A key pool aims for `target` keys now.
pub fn record_pool_target(pool: &PoolLabels, target: usize) {
    gauge!("keybroker_pool_target_keys", &pool.series()).set(target as f64);
}

/// A take of `keys` keys from a key pool: a hit leaving `depth` keys, or a
/// miss (each key asked for counts).
pub fn record_pool_take(pool: &PoolLabels, hit: bool, keys: usize, depth: usize) {
    if hit {
        counter!("keybroker_pool_hits_total", &pool.series()).increment(keys as u64);
    } else {
        counter!("keybroker_pool_misses_total", &pool.series()).increment(keys as u64);
    }
    record_pool_depth(pool, depth);
}

/// A new key pool's series, at zero, so they are scraped before the
/// first take or discard.
pub fn register_pool(pool: &PoolLabels) {
    counter!("keybroker_pool_hits_total", &pool.series()).increment(0);
    counter!("keybroker_pool_misses_total", &pool.series()).increment(0);
    for reason in ["expired", "unused"] {
        counter!("keybroker_pool_discards_total", &pool.discard_series(reason)).increment(0);
    }
    record_pool_depth(pool, 0);
}

/// One refill of a key pool to its target took `took`.
pub fn record_pool_refill(pool: &PoolLabels, took: Duration) {
    histogram!("keybroker_pool_refill_seconds", &pool.series()).record(took.as_secs_f64());
}

/// `count` pooled keys discarded, never handed out again: `expired` (past
/// their time to live) or `unused` (taken for a job that then failed).
pub fn record_pool_discards(pool: &PoolLabels, reason: &'static str, count: usize) {
    if count > 0 {
        counter!("keybroker_pool_discards_total", &pool.discard_series(reason)).increment(count as u64);
    }
}

/// One RPC answered.
pub fn record_request(rpc: &'static str, code: tonic::Code, took: Duration) {
    counter!("keybroker_requests_total", "rpc" => rpc, "code" => code_name(code)).increment(1);
    histogram!("keybroker_request_duration_seconds", "rpc" => rpc).record(took.as_secs_f64());
}

/// The code's name (its variant name, as `{code:?}` prints it) as a static
/// label or audit field, with no allocation per call.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// An RPC started (`+1`) or finished (`-1`).
pub fn in_flight(delta: f64) {
    gauge!("keybroker_requests_in_flight").increment(delta);
}

/// One KMS call.
pub fn record_kms(operation: &'static str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("keybroker_kms_calls_total", "operation" => operation, "outcome" => outcome).increment(1);
    histogram!("keybroker_kms_call_duration_seconds", "operation" => operation).record(took.as_secs_f64());
}

/// A call refused by its rate limit.
pub fn record_rate_limited() {
    counter!("keybroker_rate_limited_total").increment(1);
}

/// A call shed at a concurrency limit: the server's (`server`) or its
/// caller's (`identity`).
pub fn record_shed(limit: &'static str) {
    counter!("keybroker_load_shed_total", "limit" => limit).increment(1);
}

/// A connection opened (`+1`) or closed (`-1`).
pub fn connections_open(delta: f64) {
    gauge!("keybroker_connections_open").increment(delta);
}

/// A connection refused or closed by a limit: `idle`, `handshake_timeout`,
/// `handshakes`, `peer_limit`, `connection_limit`.
pub fn record_connection_dropped(reason: &'static str) {
    counter!("keybroker_connections_dropped_total", "reason" => reason).increment(1);
}

/// An audit record that could not be written.
pub fn record_audit_failure() {
    counter!("keybroker_audit_write_failures_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_debug_names_labels_and_records_have_always_carried() {
        for value in 0..=16 {
            let code = tonic::Code::from_i32(value);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }
}
