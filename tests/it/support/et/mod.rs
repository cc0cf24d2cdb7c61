//! An Elastic Transcoder endpoint that lives in the test suite.
//!
//! AWS ended Elastic Transcoder on 2025-11-13, so nothing in AWS answers the
//! broker's CreateJob any more. This server speaks ET's rest-json (API
//! 2012-09-25) for ReadPipeline, UpdatePipeline, CreateJob and ReadJob, and
//! judges a job the
//! way ET did: the model constraints of the ET API (botocore 1.42.10), the
//! cross-field rules of the developer guide, and, for every AES block, a real
//! KMS Decrypt of `Key` (against moto) under the ET encryption context,
//! followed by key-length, `KeyMd5` and IV checks. A rejected job answers
//! 400 `ValidationException` whose message starts with the JSON path of the
//! first violation, e.g. `Outputs[3].ThumbnailEncryption.KeyMd5: ...`.
//!
//! It never transcodes anything, never moves a job past `Submitted`, and
//! never enforces that keys or IVs are distinct across blocks (ET did not):
//! tests read [`EtEndpoint::verified_keys`] and assert that themselves.
//!
//! The server runs on the tokio runtime of the test that spawned it and
//! stops when its [`EtEndpoint`] is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_kms::error::ProvideErrorMetadata as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};
use serde_json::{Map, Value, json};

mod api;
mod check;
mod verify;

use api::*;
use check::*;
pub use verify::is_et_id;
use verify::*;

/// The account every fixture ARN is in.
pub const ACCOUNT_ID: &str = "111122223333";
/// The encryption context ET decrypts every wrapped key under.
pub const ET_CONTEXT_KEY: &str = "service";
/// See [`ET_CONTEXT_KEY`].
pub const ET_CONTEXT_VALUE: &str = "elastictranscoder.amazonaws.com";
/// The role [`PipelineFixture::new`] gives a pipeline.
pub const DEFAULT_ROLE: &str = "arn:aws:iam::111122223333:role/Elastic_Transcoder_Default_Role";

const API_PREFIX: &str = "/2012-09-25";
const MAX_OUTPUTS: usize = 30;
const MAX_PLAYLISTS: usize = 30;
const MAX_INPUTS: usize = 200;
const MAX_CAPTION_SOURCES: usize = 20;
const MAX_CAPTION_FORMATS: usize = 4;
const MAX_USER_METADATA: usize = 10;
const ENCRYPTION_MODES: &[&str] = &["s3", "s3-aws-kms", "aes-cbc-pkcs7", "aes-ctr", "aes-gcm"];

/// Which bytes `KeyMd5` is the digest of. The ET API reference says the
/// plaintext key; ET's encryption tutorial hashes the KMS ciphertext blob.
/// The broker supports both per deployment, so the endpoint checks either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMd5Reading {
    /// MD5 of the plaintext AES key (the API reference; the default reading).
    Plaintext,
    /// MD5 of the KMS ciphertext blob (the worked tutorial).
    Ciphertext,
}

/// A pipeline the endpoint knows. ET reads keys with the pipeline's KMS key,
/// so `kms_key_arn` is what every wrapped key of its jobs must decrypt under.
/// `id` should match `^\d{13}-\w{6}$`, or no CreateJob can name it.
#[derive(Clone, Debug)]
pub struct PipelineFixture {
    pub id: String,
    pub region: String,
    pub kms_key_arn: Option<String>,
    pub role: String,
    pub input_bucket: String,
    pub output_bucket: String,
    /// `ThumbnailConfig.Bucket`; the output bucket when `None`.
    pub thumbnail_bucket: Option<String>,
}

impl PipelineFixture {
    /// A pipeline in us-east-1 with ET's default role and test buckets.
    pub fn new(id: &str, kms_key_arn: Option<&str>) -> Self {
        Self {
            id: id.to_owned(),
            region: "us-east-1".to_owned(),
            kms_key_arn: kms_key_arn.map(str::to_owned),
            role: DEFAULT_ROLE.to_owned(),
            input_bucket: "keybroker-test-input".to_owned(),
            output_bucket: "keybroker-test-output".to_owned(),
            thumbnail_bucket: None,
        }
    }

    /// The pipeline's ARN, as ReadPipeline reports it.
    pub fn arn(&self) -> String {
        format!("arn:aws:elastictranscoder:{}:{ACCOUNT_ID}:pipeline/{}", self.region, self.id)
    }
}

/// One AES block of an accepted job, as the endpoint decrypted and checked
/// it. Holds the plaintext key so tests can assert that keys and IVs are
/// fresh per block; never do this outside tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKey {
    /// The Id the endpoint gave the job.
    pub job_id: String,
    /// JSON path of the block, e.g. `Outputs[0].ThumbnailEncryption`,
    /// `Playlists[1].HlsContentProtection`, `Playlists[0].PlayReadyDrm`.
    pub path: String,
    /// `Mode` of an `Encryption` block, `aes-128` for HLS content
    /// protection, the `Format` (`microsoft`, `discretix-3.0`) for PlayReady.
    pub mode: String,
    /// The KMS ciphertext blob from `Key`, decoded.
    pub wrapped_key: Vec<u8>,
    /// The plaintext AES key KMS answered.
    pub key: Vec<u8>,
    /// The decoded IV; `None` only for a PlayReady block without one.
    pub iv: Option<Vec<u8>>,
    /// The decoded `KeyMd5` (16 bytes).
    pub key_md5: Vec<u8>,
    /// The KMS key ARN Decrypt reported.
    pub kms_key_id: String,
}

#[derive(Default)]
struct Record {
    request_count: usize,
    created_jobs: Vec<Value>,
    rejections: Vec<String>,
    verified_keys: Vec<VerifiedKey>,
    jobs: HashMap<String, Value>,
    /// Job ids in creation order, for ListJobsByPipeline.
    job_order: Vec<String>,
    /// Accepted UpdatePipeline calls: the pipeline id and the body.
    pipeline_updates: Vec<(String, Value)>,
    injected_failures: VecDeque<(u16, String)>,
    /// CreateJob answers to lose: the job is created, then the answer is
    /// held back past any attempt timeout, as a lost response looks.
    lost_answers: usize,
}

struct Shared {
    kms: aws_sdk_kms::Client,
    /// UpdatePipeline changes them.
    pipelines: Mutex<HashMap<String, PipelineFixture>>,
    md5: KeyMd5Reading,
    record: Mutex<Record>,
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, Record> {
        // A test that panicked while holding the lock must not hide the
        // endpoint's state from the rest of it.
        self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pipelines as they are now.
    fn pipelines(&self) -> HashMap<String, PipelineFixture> {
        self.pipelines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A running ET endpoint. Dropping it closes the listener and asks open
/// connections to finish; it also dies with the test's runtime.
pub struct EtEndpoint {
    /// `http://127.0.0.1:PORT`, the value for an SDK's `endpoint_url` or
    /// `AWS_ENDPOINT_URL_ELASTIC_TRANSCODER`.
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for EtEndpoint {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl EtEndpoint {
    /// Starts an endpoint on 127.0.0.1:0 that decrypts keys with `kms`
    /// (a client of the suite's moto) and knows exactly `pipelines`.
    pub async fn spawn(kms: aws_sdk_kms::Client, pipelines: Vec<PipelineFixture>, md5: KeyMd5Reading) -> EtEndpoint {
        let shared = Arc::new(Shared {
            kms,
            pipelines: Mutex::new(pipelines.into_iter().map(|p| (p.id.clone(), p)).collect()),
            md5,
            record: Mutex::new(Record::default()),
        });
        let app = Router::new()
            .route("/2012-09-25/pipelines/{id}", get(read_pipeline).put(update_pipeline))
            .route("/2012-09-25/jobs", post(create_job))
            .route("/2012-09-25/jobs/{id}", get(read_job))
            .route("/2012-09-25/jobsByPipeline/{id}", get(list_jobs_by_pipeline))
            .fallback(unknown_operation)
            .layer(middleware::from_fn_with_state(shared.clone(), count_and_authenticate))
            .with_state(shared.clone());
        let (url, shutdown) = super::serve_on_loopback(app, "ET endpoint").await;
        EtEndpoint { url, shared, shutdown: Some(shutdown) }
    }

    /// The bodies of accepted CreateJob requests, in arrival order.
    pub fn created_jobs(&self) -> Vec<Value> {
        self.shared.record().created_jobs.clone()
    }

    /// The messages of every ValidationException this endpoint answered
    /// (CreateJob, ReadJob, ReadPipeline), in order. Injected failures
    /// ([`EtEndpoint::fail_next_create_job`]) are not listed.
    pub fn rejections(&self) -> Vec<String> {
        self.shared.record().rejections.clone()
    }

    /// The accepted UpdatePipeline calls, in order: pipeline id and body.
    pub fn pipeline_updates(&self) -> Vec<(String, Value)> {
        self.shared.record().pipeline_updates.clone()
    }

    /// The pipeline `id` as the endpoint holds it now.
    pub fn pipeline(&self, id: &str) -> Option<PipelineFixture> {
        self.shared.pipelines().get(id).cloned()
    }

    /// Every HTTP request received, whatever its fate (SDK retries count).
    pub fn request_count(&self) -> usize {
        self.shared.record().request_count
    }

    /// Each AES block of each accepted job, in job order and, within a job,
    /// in document order (inputs, outputs, playlists).
    pub fn verified_keys(&self) -> Vec<VerifiedKey> {
        self.shared.record().verified_keys.clone()
    }

    /// Makes the next CreateJob answer `status` with `x-amzn-ErrorType:
    /// error_type` before anything else happens: no validation, no KMS call,
    /// no job. Calls queue up. The SDK's standard retry policy retries 5xx
    /// and throttling codes, so a single injected 503 is usually invisible to
    /// the caller; use [`EtEndpoint::fail_next_create_jobs`] to outlast it.
    pub fn fail_next_create_job(&self, status: u16, error_type: &str) {
        self.fail_next_create_jobs(1, status, error_type);
    }

    /// Creates the next `times` jobs but loses their answers: each is held
    /// back for a minute, as a dropped response looks to the caller, whose
    /// attempt times out.
    pub fn lose_next_create_job_answers(&self, times: usize) {
        self.shared.record().lost_answers += times;
    }

    /// Queues `times` injected failures; see [`EtEndpoint::fail_next_create_job`].
    pub fn fail_next_create_jobs(&self, times: usize, status: u16, error_type: &str) {
        let mut record = self.shared.record();
        for _ in 0..times {
            record.injected_failures.push_back((status, error_type.to_owned()));
        }
    }

    /// An ET SDK client built from `base` (credentials, region, retry
    /// policy) with its endpoint pointed here.
    pub fn sdk_client(&self, base: &aws_config::SdkConfig) -> aws_sdk_elastictranscoder::Client {
        let config = aws_sdk_elastictranscoder::config::Builder::from(base).endpoint_url(&self.url).build();
        aws_sdk_elastictranscoder::Client::from_conf(config)
    }
}

// ---------------------------------------------------------------- HTTP layer

/// An ET error response in the rest-json shape the Rust SDK parses into a
/// typed error: the code in `x-amzn-ErrorType`, the text in `message`.
fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amzn-ErrorType",
        HeaderValue::from_str(error_type).unwrap_or(HeaderValue::from_static("InternalFailure")),
    );
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    request_id(&mut headers);
    (status, headers, json!({ "message": message }).to_string()).into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    request_id(&mut headers);
    (status, headers, body.to_string()).into_response()
}

fn request_id(headers: &mut HeaderMap) {
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-RequestId", id);
    }
}

fn validation_error(shared: &Shared, message: String) -> Response {
    let response = error_response(StatusCode::BAD_REQUEST, "ValidationException", &message);
    shared.record().rejections.push(message);
    response
}

/// Counts every request and, as AWS does, refuses unsigned ones: the broker
/// must sign with SigV4 for service `elastictranscoder`.
async fn count_and_authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.record().request_count += 1;
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if authorization.is_empty() {
        return error_response(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    }
    if !authorization.starts_with("AWS4-HMAC-SHA256 ") || !authorization.contains("/elastictranscoder/aws4_request") {
        return error_response(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            "The request signature is not a SigV4 signature for service elastictranscoder",
        );
    }
    next.run(request).await
}

async fn unknown_operation(request: Request) -> Response {
    let path = request.uri().path();
    let version = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let looks_like_version = version.len() == 10 && version.bytes().filter(u8::is_ascii_digit).count() == 8;
    if looks_like_version && version != &API_PREFIX[1..] {
        return error_response(
            StatusCode::BAD_REQUEST,
            "IncompatibleVersionException",
            &format!("API version {version} is not supported; use 2012-09-25"),
        );
    }
    error_response(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        &format!("no operation at {} {path}", request.method()),
    )
}
