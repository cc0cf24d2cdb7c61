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

async fn read_pipeline(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if !is_et_id(&id) {
        return validation_error(&shared, format!("Id: {id:?} does not match ^\\d{{13}}-\\w{{6}}$"));
    }
    let Some(pipeline) = shared.pipelines().get(&id).cloned() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("The specified pipeline was not found: account={ACCOUNT_ID}, pipelineId={id}."),
        );
    };
    json_response(StatusCode::OK, &json!({ "Pipeline": pipeline_json(&pipeline), "Warnings": [] }))
}

/// UpdatePipeline (`PUT /2012-09-25/pipelines/{Id}`), per ET's API model
/// (`UpdatePipelineRequest`): only the model's members, each within its
/// shape's constraints; the named fields change, the others stay.
async fn update_pipeline(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    if !is_et_id(&id) {
        return validation_error(&shared, format!("Id: {id:?} does not match ^\\d{{13}}-\\w{{6}}$"));
    }
    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) | Err(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "the request body is not a JSON object",
            );
        }
    };
    if let Err(message) = check_update_pipeline(&request) {
        return validation_error(&shared, message);
    }
    let updated = {
        let mut pipelines = shared.pipelines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(pipeline) = pipelines.get_mut(&id) else {
            return error_response(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("The specified pipeline was not found: account={ACCOUNT_ID}, pipelineId={id}."),
            );
        };
        let text = |field: &str| request.get(field).and_then(Value::as_str).map(str::to_owned);
        if let Some(arn) = text("AwsKmsKeyArn") {
            pipeline.kms_key_arn = Some(arn).filter(|a| !a.is_empty());
        }
        if let Some(role) = text("Role") {
            pipeline.role = role;
        }
        if let Some(bucket) = text("InputBucket") {
            pipeline.input_bucket = bucket;
        }
        let bucket_of = |field: &str| request.get(field).and_then(|c| c["Bucket"].as_str()).map(str::to_owned);
        if let Some(bucket) = bucket_of("ContentConfig") {
            pipeline.output_bucket = bucket;
        }
        if let Some(bucket) = bucket_of("ThumbnailConfig") {
            pipeline.thumbnail_bucket = Some(bucket);
        }
        pipeline.clone()
    };
    shared.record().pipeline_updates.push((id, Value::Object(request)));
    json_response(StatusCode::OK, &json!({ "Pipeline": pipeline_json(&updated), "Warnings": [] }))
}

/// The model's rules for an UpdatePipeline body (botocore 1.42.10,
/// `UpdatePipelineRequest`; `Id` travels in the URI, not the body).
fn check_update_pipeline(request: &Map<String, Value>) -> Result<(), Invalid> {
    const MEMBERS: &[&str] =
        &["Name", "InputBucket", "Role", "AwsKmsKeyArn", "Notifications", "ContentConfig", "ThumbnailConfig"];
    if let Some(unknown) = request.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
        return Err(format!("{unknown}: not a member of UpdatePipelineRequest"));
    }
    if let Some(name) = opt_str(request, "Name", "")? {
        check_len("Name", name, 1, 40)?;
    }
    if let Some(bucket) = opt_str(request, "InputBucket", "")? {
        check_bucket("InputBucket", bucket)?;
    }
    if let Some(role) = opt_str(request, "Role", "")? {
        let ok = role.strip_prefix("arn:aws:iam::").and_then(|rest| rest.split_once(":role/")).is_some_and(
            |(account, name)| {
                account.len() == 12
                    && account.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !name.is_empty()
            },
        );
        if !ok {
            return Err(format!("Role: {role:?} does not match ^arn:aws:iam::\\w{{12}}:role/.+$"));
        }
    }
    if let Some(arn) = opt_str(request, "AwsKmsKeyArn", "")? {
        check_len("AwsKmsKeyArn", arn, 0, 255)?;
    }
    if let Some(notifications) = opt_obj(request, "Notifications", "")? {
        for (topic, value) in notifications {
            if !["Progressing", "Completed", "Warning", "Error"].contains(&topic.as_str()) || !value.is_string() {
                return Err(format!("Notifications.{topic}: not a member of Notifications, or not a string"));
            }
        }
    }
    let content = opt_obj(request, "ContentConfig", "")?;
    let thumbnails = opt_obj(request, "ThumbnailConfig", "")?;
    if content.is_some() != thumbnails.is_some() {
        return Err("ContentConfig and ThumbnailConfig: give both or neither".to_owned());
    }
    for (path, config) in [("ContentConfig", content), ("ThumbnailConfig", thumbnails)] {
        let Some(config) = config else { continue };
        if let Some(unknown) = config.keys().find(|k| !["Bucket", "StorageClass", "Permissions"].contains(&k.as_str()))
        {
            return Err(format!("{path}.{unknown}: not a member of PipelineOutputConfig"));
        }
        if let Some(bucket) = opt_str(config, "Bucket", path)? {
            check_bucket(&format!("{path}.Bucket"), bucket)?;
        }
        if let Some(class) = opt_str(config, "StorageClass", path)?
            && !["Standard", "ReducedRedundancy"].contains(&class)
        {
            return Err(format!("{path}.StorageClass: {class:?} must be Standard or ReducedRedundancy"));
        }
        if let Some(permissions) = opt_list(config, "Permissions", path)?
            && permissions.len() > 30
        {
            return Err(format!("{path}.Permissions: at most 30, got {}", permissions.len()));
        }
    }
    Ok(())
}

/// `BucketName`: `^(\w|\.|-){1,255}$`.
fn check_bucket(path: &str, bucket: &str) -> Result<(), Invalid> {
    let ok = (1..=255).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok { Ok(()) } else { Err(format!("{path}: {bucket:?} does not match ^(\\w|\\.|-){{1,255}}$")) }
}

fn pipeline_json(p: &PipelineFixture) -> Value {
    let output_config = json!({
        "Bucket": p.output_bucket,
        "StorageClass": "Standard",
        "Permissions": [],
    });
    let mut pipeline = json!({
        "Id": p.id,
        "Arn": p.arn(),
        "Name": "keybroker-test",
        "Status": "Active",
        "InputBucket": p.input_bucket,
        "OutputBucket": p.output_bucket,
        "Role": p.role,
        "Notifications": { "Progressing": "", "Completed": "", "Warning": "", "Error": "" },
        "ContentConfig": output_config,
        "ThumbnailConfig": {
            "Bucket": p.thumbnail_bucket.as_ref().unwrap_or(&p.output_bucket),
            "StorageClass": "Standard",
            "Permissions": [],
        },
    });
    if let (Some(arn), Some(obj)) = (&p.kms_key_arn, pipeline.as_object_mut()) {
        obj.insert("AwsKmsKeyArn".to_owned(), Value::String(arn.clone()));
    }
    pipeline
}

async fn read_job(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if !is_et_id(&id) {
        return validation_error(&shared, format!("Id: {id:?} does not match ^\\d{{13}}-\\w{{6}}$"));
    }
    let job = shared.record().jobs.get(&id).cloned();
    match job {
        Some(job) => json_response(StatusCode::OK, &json!({ "Job": job })),
        None => error_response(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("The specified job was not found: account={ACCOUNT_ID}, jobId={id}."),
        ),
    }
}

/// The most jobs one ListJobsByPipeline page holds.
const JOBS_PAGE: usize = 50;

/// ListJobsByPipeline (`GET /2012-09-25/jobsByPipeline/{PipelineId}`), per
/// ET's API model: `PipelineId` `^\d{13}-\w{6}$`, `Ascending` `true` or
/// `false` (default newest first), `PageToken` a job id `^\d{13}-\w{6}$`
/// naming where the page starts; the answer is `Jobs` and, when more
/// remain, `NextPageToken`.
async fn list_jobs_by_pipeline(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !is_et_id(&id) {
        return validation_error(&shared, format!("PipelineId: {id:?} does not match ^\\d{{13}}-\\w{{6}}$"));
    }
    if let Some(unknown) = query.keys().find(|k| !["Ascending", "PageToken"].contains(&k.as_str())) {
        return validation_error(&shared, format!("unknown query parameter {unknown:?}"));
    }
    let ascending = match query.get("Ascending").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return validation_error(&shared, format!("Ascending: {other:?} must be true or false")),
    };
    if let Some(token) = query.get("PageToken")
        && !is_et_id(token)
    {
        return validation_error(&shared, format!("PageToken: {token:?} does not match ^\\d{{13}}-\\w{{6}}$"));
    }
    if !shared.pipelines().contains_key(&id) {
        return error_response(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("The specified pipeline was not found: account={ACCOUNT_ID}, pipelineId={id}."),
        );
    }
    let record = shared.record();
    let mut jobs: Vec<&Value> = record
        .job_order
        .iter()
        .filter_map(|job_id| record.jobs.get(job_id))
        .filter(|job| job["PipelineId"] == id.as_str())
        .collect();
    if !ascending {
        jobs.reverse();
    }
    let start = match query.get("PageToken") {
        Some(token) => match jobs.iter().position(|job| job["Id"] == token.as_str()) {
            Some(at) => at,
            None => return validation_error(&shared, format!("PageToken: {token:?} names no job of this pipeline")),
        },
        None => 0,
    };
    let page: Vec<Value> = jobs.iter().skip(start).take(JOBS_PAGE).map(|job| (*job).clone()).collect();
    let mut body = json!({ "Jobs": page });
    if let Some(next) = jobs.get(start + JOBS_PAGE) {
        body["NextPageToken"] = next["Id"].clone();
    }
    json_response(StatusCode::OK, &body)
}

async fn create_job(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let injected = shared.record().injected_failures.pop_front();
    if let Some((status, error_type)) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(status, &error_type, &format!("injected failure: {error_type}"));
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "the request body is not a JSON object",
            );
        }
    };
    let pipelines = shared.pipelines();
    let checked = match check_job(&request, &pipelines) {
        Ok(checked) => checked,
        Err(message) => return validation_error(&shared, message),
    };
    let pipeline = checked.pipeline;
    let mut verified = Vec::with_capacity(checked.blocks.len());
    for block in &checked.blocks {
        match verify_block(&shared, pipeline, block).await {
            Ok(key) => verified.push(key),
            Err(message) => return validation_error(&shared, message),
        }
    }
    let job = job_json(&request, pipeline);
    let job_id = job["Id"].as_str().unwrap_or_default().to_owned();
    let lose_answer = {
        let mut record = shared.record();
        record.created_jobs.push(request);
        record.verified_keys.extend(verified.into_iter().map(|mut key| {
            key.job_id.clone_from(&job_id);
            key
        }));
        record.job_order.push(job_id.clone());
        record.jobs.insert(job_id, job.clone());
        let lose = record.lost_answers > 0;
        record.lost_answers = record.lost_answers.saturating_sub(1);
        lose
    };
    if lose_answer {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
    json_response(StatusCode::CREATED, &json!({ "Job": job }))
}

/// The job as ET answers it: the request's fields echoed, outputs and
/// playlists `Submitted`, `Output`/`Input` duplicating the first entry.
fn job_json(request: &Value, pipeline: &PipelineFixture) -> Value {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let suffix: String = uuid::Uuid::new_v4().simple().to_string().chars().take(6).collect();
    let id = format!("{:013}-{suffix}", now_ms % 10_000_000_000_000);

    let inputs: Vec<Value> = request
        .get("Input")
        .into_iter()
        .chain(request.get("Inputs").and_then(Value::as_array).into_iter().flatten())
        .filter(|v| v.is_object())
        .cloned()
        .collect();
    let outputs: Vec<Value> = request
        .get("Output")
        .into_iter()
        .chain(request.get("Outputs").and_then(Value::as_array).into_iter().flatten())
        .filter(|v| v.is_object())
        .enumerate()
        .map(|(i, output)| {
            let mut output = output.clone();
            if let Some(obj) = output.as_object_mut() {
                obj.insert("Id".to_owned(), Value::String((i + 1).to_string()));
                obj.insert("Status".to_owned(), Value::String("Submitted".to_owned()));
            }
            output
        })
        .collect();
    let playlists: Vec<Value> = request
        .get("Playlists")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|playlist| {
            let mut playlist = playlist.clone();
            if let Some(obj) = playlist.as_object_mut() {
                obj.insert("Status".to_owned(), Value::String("Submitted".to_owned()));
            }
            playlist
        })
        .collect();

    let mut job = Map::new();
    job.insert("Id".to_owned(), Value::String(id.clone()));
    job.insert(
        "Arn".to_owned(),
        Value::String(format!("arn:aws:elastictranscoder:{}:{ACCOUNT_ID}:job/{id}", pipeline.region)),
    );
    job.insert("PipelineId".to_owned(), Value::String(pipeline.id.clone()));
    if let Some(first) = inputs.first() {
        job.insert("Input".to_owned(), first.clone());
    }
    job.insert("Inputs".to_owned(), Value::Array(inputs));
    if let Some(first) = outputs.first() {
        job.insert("Output".to_owned(), first.clone());
    }
    job.insert("Outputs".to_owned(), Value::Array(outputs));
    if let Some(prefix) = request.get("OutputKeyPrefix").filter(|v| v.is_string()) {
        job.insert("OutputKeyPrefix".to_owned(), prefix.clone());
    }
    job.insert("Playlists".to_owned(), Value::Array(playlists));
    if let Some(metadata) = request.get("UserMetadata").filter(|v| v.is_object()) {
        job.insert("UserMetadata".to_owned(), metadata.clone());
    }
    job.insert("Status".to_owned(), Value::String("Submitted".to_owned()));
    job.insert("Timing".to_owned(), json!({ "SubmitTimeMillis": u64::try_from(now_ms).unwrap_or(u64::MAX) }));
    Value::Object(job)
}

// ---------------------------------------------------------------- validation
//
// Phases, each stopping at its first violation:
// 1. model constraints, walking the request in document order
//    (PipelineId, Input, Inputs, Output, Outputs, OutputKeyPrefix,
//    Playlists, UserMetadata);
// 2. the pipeline exists;
// 3. playlist rules (OutputKeys name outputs; protections exclude each other);
// 4. every AES block in document order: KMS Decrypt, key length, KeyMd5, IV.

/// A message naming the JSON path of the violation.
type Invalid = String;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKind {
    /// `Encryption`/`ThumbnailEncryption` with an `aes-*` mode.
    File,
    /// `HlsContentProtection` with a `Key`.
    Hls,
    /// `PlayReadyDrm`.
    PlayReady,
}

struct AesBlock {
    path: String,
    kind: BlockKind,
    mode: String,
    key: String,
    key_md5: String,
    iv: String,
}

struct OutputInfo {
    key: String,
    aes_encrypted: bool,
}

struct PlaylistInfo {
    path: String,
    output_keys: Vec<String>,
    hls: bool,
    play_ready: bool,
}

struct CheckedJob<'p> {
    pipeline: &'p PipelineFixture,
    blocks: Vec<AesBlock>,
}

#[derive(Default)]
struct Walk {
    blocks: Vec<AesBlock>,
    outputs: Vec<OutputInfo>,
    playlists: Vec<PlaylistInfo>,
}

fn check_job<'p>(request: &Value, pipelines: &'p HashMap<String, PipelineFixture>) -> Result<CheckedJob<'p>, Invalid> {
    let job = request.as_object().ok_or_else(|| "request body: must be a JSON object".to_owned())?;
    let mut walk = Walk::default();

    // Phase 1: model constraints.
    let pipeline_id = req_str(job, "PipelineId", "")?;
    if !is_et_id(pipeline_id) {
        return Err(format!("PipelineId: {pipeline_id:?} does not match ^\\d{{13}}-\\w{{6}}$"));
    }
    let input = opt_obj(job, "Input", "")?;
    let inputs = opt_list(job, "Inputs", "")?.unwrap_or_default();
    let input_count = usize::from(input.is_some()) + inputs.len();
    if input_count == 0 {
        return Err("Inputs: a job needs an Input or at least one entry in Inputs".to_owned());
    }
    if input_count > MAX_INPUTS {
        return Err(format!("Inputs: a job has at most {MAX_INPUTS} inputs (Input + Inputs), got {input_count}"));
    }
    if let Some(input) = input {
        check_input(input, "Input", &mut walk)?;
    }
    for (i, input) in inputs.iter().enumerate() {
        let path = format!("Inputs[{i}]");
        check_input(as_obj(input, &path)?, &path, &mut walk)?;
    }

    let output = opt_obj(job, "Output", "")?;
    let outputs = opt_list(job, "Outputs", "")?.unwrap_or_default();
    let output_count = usize::from(output.is_some()) + outputs.len();
    if output_count == 0 {
        return Err("Outputs: a job needs an Output or at least one entry in Outputs".to_owned());
    }
    if output_count > MAX_OUTPUTS {
        return Err(format!("Outputs: a job has at most {MAX_OUTPUTS} outputs (Output + Outputs), got {output_count}"));
    }
    if let Some(output) = output {
        check_output(output, "Output", &mut walk)?;
    }
    for (i, output) in outputs.iter().enumerate() {
        let path = format!("Outputs[{i}]");
        check_output(as_obj(output, &path)?, &path, &mut walk)?;
    }

    if let Some(prefix) = opt_str(job, "OutputKeyPrefix", "")? {
        check_len("OutputKeyPrefix", prefix, 1, 255)?;
    }

    let playlists = opt_list(job, "Playlists", "")?.unwrap_or_default();
    if playlists.len() > MAX_PLAYLISTS {
        return Err(format!("Playlists: a job has at most {MAX_PLAYLISTS} playlists, got {}", playlists.len()));
    }
    for (i, playlist) in playlists.iter().enumerate() {
        let path = format!("Playlists[{i}]");
        check_playlist(as_obj(playlist, &path)?, &path, &mut walk)?;
    }

    if let Some(metadata) = opt_obj(job, "UserMetadata", "")? {
        check_user_metadata(metadata)?;
    }

    // Phase 2: the pipeline.
    let pipeline = pipelines.get(pipeline_id).ok_or_else(|| {
        format!("PipelineId: The specified pipeline was not found: account={ACCOUNT_ID}, pipelineId={pipeline_id}.")
    })?;

    // Phase 3: playlists against outputs.
    for playlist in &walk.playlists {
        if playlist.hls && playlist.play_ready {
            return Err(format!(
                "{}.PlayReadyDrm: cannot be combined with HlsContentProtection in one playlist",
                playlist.path
            ));
        }
        for (j, key) in playlist.output_keys.iter().enumerate() {
            let path = format!("{}.OutputKeys[{j}]", playlist.path);
            let Some(output) = walk.outputs.iter().find(|o| &o.key == key) else {
                return Err(format!("{path}: {key:?} names no output of this job"));
            };
            if output.aes_encrypted && (playlist.hls || playlist.play_ready) {
                let protection = if playlist.hls { "HlsContentProtection" } else { "PlayReadyDrm" };
                return Err(format!(
                    "{path}: output {key:?} has file-level AES Encryption, which excludes the playlist's {protection}"
                ));
            }
            if let Some(other) = walk.playlists.iter().find(|other| {
                other.output_keys.contains(key)
                    && ((playlist.hls && other.play_ready) || (playlist.play_ready && other.hls))
            }) {
                return Err(format!(
                    "{path}: output {key:?} is also in {}, and HLS content protection and PlayReady DRM exclude each other",
                    other.path
                ));
            }
        }
    }

    Ok(CheckedJob { pipeline, blocks: walk.blocks })
}

fn check_input(input: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let key = req_str(input, "Key", path)?;
    check_len(&at(path, "Key"), key, 1, 1024)?;
    check_enum_opt(input, "FrameRate", path, &["auto", "10", "15", "23.97", "24", "25", "29.97", "30", "50", "60"])?;
    if let Some(resolution) = opt_str(input, "Resolution", path)?
        && resolution != "auto"
        && !is_resolution(resolution)
    {
        return Err(format!("{}: must be auto or WIDTHxHEIGHT", at(path, "Resolution")));
    }
    check_enum_opt(input, "AspectRatio", path, &["auto", "1:1", "4:3", "3:2", "16:9"])?;
    check_enum_opt(input, "Interlaced", path, &["auto", "true", "false"])?;
    check_enum_opt(
        input,
        "Container",
        path,
        &[
            "auto", "3gp", "asf", "avi", "divx", "flv", "mkv", "mov", "mp4", "mpeg", "mpeg-ps", "mpeg-ts", "mxf",
            "ogg", "ts", "vob", "wav", "webm", "mp3", "m4a", "aac",
        ],
    )?;
    if let Some(encryption) = opt_obj(input, "Encryption", path)? {
        check_encryption(encryption, &at(path, "Encryption"), walk)?;
    }
    if let Some(captions) = opt_obj(input, "InputCaptions", path)? {
        let captions_path = at(path, "InputCaptions");
        check_enum_opt(captions, "MergePolicy", &captions_path, &["MergeOverride", "MergeRetain", "Override"])?;
        check_caption_sources(captions, &captions_path, walk)?;
    }
    Ok(())
}

fn check_caption_sources(captions: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let sources = opt_list(captions, "CaptionSources", path)?.unwrap_or_default();
    if sources.len() > MAX_CAPTION_SOURCES {
        return Err(format!(
            "{}: at most {MAX_CAPTION_SOURCES} caption sources, got {}",
            at(path, "CaptionSources"),
            sources.len()
        ));
    }
    for (k, source) in sources.iter().enumerate() {
        let source_path = format!("{path}.CaptionSources[{k}]");
        let source = as_obj(source, &source_path)?;
        let key = req_str(source, "Key", &source_path)?;
        check_len(&at(&source_path, "Key"), key, 1, 1024)?;
        if let Some(encryption) = opt_obj(source, "Encryption", &source_path)? {
            check_encryption(encryption, &at(&source_path, "Encryption"), walk)?;
        }
    }
    Ok(())
}

fn check_output(output: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let key = req_str(output, "Key", path)?;
    check_len(&at(path, "Key"), key, 1, 255)?;
    if let Some(pattern) = opt_str(output, "ThumbnailPattern", path)?
        && !pattern.is_empty()
        && !pattern.contains("{count}")
    {
        return Err(format!("{}: must be empty or contain {{count}}", at(path, "ThumbnailPattern")));
    }
    if let Some(encryption) = opt_obj(output, "ThumbnailEncryption", path)? {
        check_encryption(encryption, &at(path, "ThumbnailEncryption"), walk)?;
    }
    check_enum_opt(output, "Rotate", path, &["auto", "0", "90", "180", "270"])?;
    if let Some(preset) = opt_str(output, "PresetId", path)?
        && !is_et_id(preset)
    {
        return Err(format!("{}: {preset:?} does not match ^\\d{{13}}-\\w{{6}}$", at(path, "PresetId")));
    }
    for (j, watermark) in opt_list(output, "Watermarks", path)?.unwrap_or_default().iter().enumerate() {
        let wm_path = format!("{path}.Watermarks[{j}]");
        let watermark = as_obj(watermark, &wm_path)?;
        if let Some(id) = opt_str(watermark, "PresetWatermarkId", &wm_path)? {
            check_len(&at(&wm_path, "PresetWatermarkId"), id, 1, 40)?;
        }
        check_image_key(watermark, &wm_path)?;
        if let Some(encryption) = opt_obj(watermark, "Encryption", &wm_path)? {
            check_encryption(encryption, &at(&wm_path, "Encryption"), walk)?;
        }
    }
    if let Some(album_art) = opt_obj(output, "AlbumArt", path)? {
        let art_path = at(path, "AlbumArt");
        check_enum_opt(album_art, "MergePolicy", &art_path, &["Replace", "Prepend", "Append", "Fallback"])?;
        for (j, artwork) in opt_list(album_art, "Artwork", &art_path)?.unwrap_or_default().iter().enumerate() {
            let artwork_path = format!("{art_path}.Artwork[{j}]");
            let artwork = as_obj(artwork, &artwork_path)?;
            check_image_key(artwork, &artwork_path)?;
            check_enum_opt(artwork, "AlbumArtFormat", &artwork_path, &["jpg", "png"])?;
            if let Some(encryption) = opt_obj(artwork, "Encryption", &artwork_path)? {
                check_encryption(encryption, &at(&artwork_path, "Encryption"), walk)?;
            }
        }
    }
    if let Some(captions) = opt_obj(output, "Captions", path)? {
        let captions_path = at(path, "Captions");
        // Deprecated in the model, but it still carries Encryption blocks.
        check_caption_sources(captions, &captions_path, walk)?;
        let formats = opt_list(captions, "CaptionFormats", &captions_path)?.unwrap_or_default();
        if formats.len() > MAX_CAPTION_FORMATS {
            return Err(format!(
                "{captions_path}.CaptionFormats: at most {MAX_CAPTION_FORMATS} caption formats, got {}",
                formats.len()
            ));
        }
        for (j, format) in formats.iter().enumerate() {
            let format_path = format!("{captions_path}.CaptionFormats[{j}]");
            let format = as_obj(format, &format_path)?;
            check_enum_opt(format, "Format", &format_path, &["mov-text", "srt", "scc", "webvtt", "dfxp", "cea-708"])?;
            if let Some(pattern) = opt_str(format, "Pattern", &format_path)?
                && !pattern.is_empty()
                && !pattern.contains("{language}")
            {
                return Err(format!("{format_path}.Pattern: must be empty or contain {{language}}"));
            }
            if let Some(encryption) = opt_obj(format, "Encryption", &format_path)? {
                check_encryption(encryption, &at(&format_path, "Encryption"), walk)?;
            }
        }
    }
    let aes_encrypted = match opt_obj(output, "Encryption", path)? {
        Some(encryption) => check_encryption(encryption, &at(path, "Encryption"), walk)?,
        None => false,
    };
    walk.outputs.push(OutputInfo { key: key.to_owned(), aes_encrypted });
    Ok(())
}

/// Watermark and album-art `InputKey`: 1 to 1024 characters, a JPEG or PNG.
fn check_image_key(obj: &Map<String, Value>, path: &str) -> Result<(), Invalid> {
    let key_path = at(path, "InputKey");
    let key = req_str(obj, "InputKey", path)?;
    check_len(&key_path, key, 1, 1024)?;
    let image = [".jpg", ".jpeg", ".png"].iter().any(|ext| key.len() > ext.len() && key.ends_with(ext));
    if !image {
        return Err(format!("{key_path}: {key:?} must end in .jpg, .jpeg or .png"));
    }
    Ok(())
}

/// Checks an `Encryption` block; records it when its mode is AES. Answers
/// whether it is.
fn check_encryption(encryption: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<bool, Invalid> {
    let mode = req_str(encryption, "Mode", path)?;
    if !ENCRYPTION_MODES.contains(&mode) {
        return Err(format!("{}: {mode:?} is not one of {}", at(path, "Mode"), ENCRYPTION_MODES.join(", ")));
    }
    let key = opt_base64(encryption, "Key", path)?;
    let key_md5 = opt_base64(encryption, "KeyMd5", path)?;
    let iv = opt_str(encryption, "InitializationVector", path)?.unwrap_or("");
    check_len(&at(path, "InitializationVector"), iv, 0, 255)?;
    if !mode.starts_with("aes-") {
        return Ok(false);
    }
    require_non_empty(path, "Key", key, &format!("Mode {mode}"))?;
    require_non_empty(path, "KeyMd5", key_md5, &format!("Mode {mode}"))?;
    require_non_empty(path, "InitializationVector", iv, &format!("Mode {mode}"))?;
    walk.blocks.push(AesBlock {
        path: path.to_owned(),
        kind: BlockKind::File,
        mode: mode.to_owned(),
        key: key.to_owned(),
        key_md5: key_md5.to_owned(),
        iv: iv.to_owned(),
    });
    Ok(true)
}

fn check_playlist(playlist: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let name = req_str(playlist, "Name", path)?;
    check_len(&at(path, "Name"), name, 1, 255)?;
    let format = req_str(playlist, "Format", path)?;
    const FORMATS: &[&str] = &["HLSv3", "HLSv4", "Smooth", "MPEG-DASH"];
    if !FORMATS.contains(&format) {
        return Err(format!("{}: {format:?} is not one of {}", at(path, "Format"), FORMATS.join(", ")));
    }
    let keys = opt_list(playlist, "OutputKeys", path)?.unwrap_or_default();
    if keys.len() > MAX_OUTPUTS {
        return Err(format!("{}: at most {MAX_OUTPUTS} output keys, got {}", at(path, "OutputKeys"), keys.len()));
    }
    let mut output_keys = Vec::with_capacity(keys.len());
    for (j, key) in keys.iter().enumerate() {
        let key_path = format!("{path}.OutputKeys[{j}]");
        let key = key.as_str().ok_or_else(|| format!("{key_path}: must be a string"))?;
        check_len(&key_path, key, 1, 255)?;
        output_keys.push(key.to_owned());
    }

    let hls = opt_obj(playlist, "HlsContentProtection", path)?;
    if let Some(hls) = hls {
        let hls_path = at(path, "HlsContentProtection");
        if !format.starts_with("HLS") {
            return Err(format!("{hls_path}: applies only to HLSv3 and HLSv4 playlists, not {format}"));
        }
        check_hls(hls, &hls_path, walk)?;
    }
    let play_ready = opt_obj(playlist, "PlayReadyDrm", path)?;
    if let Some(drm) = play_ready {
        let drm_path = at(path, "PlayReadyDrm");
        if format != "HLSv3" && format != "Smooth" {
            return Err(format!("{drm_path}: applies only to HLSv3 and Smooth playlists, not {format}"));
        }
        check_play_ready(drm, &drm_path, walk)?;
    }
    walk.playlists.push(PlaylistInfo {
        path: path.to_owned(),
        output_keys,
        hls: hls.is_some(),
        play_ready: play_ready.is_some(),
    });
    Ok(())
}

fn check_hls(hls: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    if let Some(method) = opt_str(hls, "Method", path)?
        && method != "aes-128"
    {
        return Err(format!("{}: {method:?} is not aes-128", at(path, "Method")));
    }
    let key = opt_base64(hls, "Key", path)?;
    let key_md5 = opt_base64(hls, "KeyMd5", path)?;
    let iv = opt_str(hls, "InitializationVector", path)?.unwrap_or("");
    check_len(&at(path, "InitializationVector"), iv, 0, 255)?;
    let url = opt_str(hls, "LicenseAcquisitionUrl", path)?.unwrap_or("");
    let url_path = at(path, "LicenseAcquisitionUrl");
    check_len(&url_path, url, 0, 512)?;
    if !url.is_empty() && !is_absolute_url(url) {
        return Err(format!("{url_path}: must be an absolute URL"));
    }
    let policy = opt_str(hls, "KeyStoragePolicy", path)?;
    match policy {
        None | Some("NoStore") => {}
        Some("WithVariantPlaylists") => {
            if !url.is_empty() {
                return Err(format!("{url_path}: must be empty with KeyStoragePolicy WithVariantPlaylists"));
            }
        }
        Some(other) => {
            return Err(format!("{}: {other:?} is not NoStore or WithVariantPlaylists", at(path, "KeyStoragePolicy")));
        }
    }
    if key.is_empty() {
        // ET generates the key; then it generates the digest and IV too.
        for (field, value) in [("KeyMd5", key_md5), ("InitializationVector", iv)] {
            if !value.is_empty() {
                return Err(format!("{}: must be empty when Key is empty (ET generates the key)", at(path, field)));
            }
        }
        return Ok(());
    }
    require_non_empty(path, "KeyMd5", key_md5, "a Key")?;
    require_non_empty(path, "InitializationVector", iv, "a Key")?;
    walk.blocks.push(AesBlock {
        path: path.to_owned(),
        kind: BlockKind::Hls,
        mode: "aes-128".to_owned(),
        key: key.to_owned(),
        key_md5: key_md5.to_owned(),
        iv: iv.to_owned(),
    });
    Ok(())
}

fn check_play_ready(drm: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let format = req_str(drm, "Format", path)?;
    if format != "microsoft" && format != "discretix-3.0" {
        return Err(format!("{}: {format:?} is not microsoft or discretix-3.0", at(path, "Format")));
    }
    let key = opt_base64(drm, "Key", path)?;
    require_non_empty(path, "Key", key, "PlayReadyDrm")?;
    let key_md5 = opt_base64(drm, "KeyMd5", path)?;
    require_non_empty(path, "KeyMd5", key_md5, "PlayReadyDrm")?;
    let key_id = req_str(drm, "KeyId", path)?;
    if !is_guid(key_id) {
        return Err(format!("{}: {key_id:?} is not a GUID (8-4-4-4-12 or 32 hex digits)", at(path, "KeyId")));
    }
    let iv = opt_str(drm, "InitializationVector", path)?.unwrap_or("");
    check_len(&at(path, "InitializationVector"), iv, 0, 255)?;
    let url = req_str(drm, "LicenseAcquisitionUrl", path)?;
    check_len(&at(path, "LicenseAcquisitionUrl"), url, 1, 512)?;
    walk.blocks.push(AesBlock {
        path: path.to_owned(),
        kind: BlockKind::PlayReady,
        mode: format.to_owned(),
        key: key.to_owned(),
        key_md5: key_md5.to_owned(),
        iv: iv.to_owned(),
    });
    Ok(())
}

fn check_user_metadata(metadata: &Map<String, Value>) -> Result<(), Invalid> {
    if metadata.len() > MAX_USER_METADATA {
        return Err(format!("UserMetadata: at most {MAX_USER_METADATA} key/value pairs, got {}", metadata.len()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || " _.:/=+-%@".contains(c);
    for (key, value) in metadata {
        let path = format!("UserMetadata.{key}");
        let value = value.as_str().ok_or_else(|| format!("{path}: must be a string"))?;
        check_len(&path, key, 1, 128)?;
        check_len(&path, value, 0, 256)?;
        if !key.chars().all(allowed) || !value.chars().all(allowed) {
            return Err(format!("{path}: keys and values use only 0-9 A-Z a-z space _.:/=+-%@"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- KMS phase

async fn verify_block(shared: &Shared, pipeline: &PipelineFixture, block: &AesBlock) -> Result<VerifiedKey, Invalid> {
    let path = &block.path;
    let wrapped_key = B64.decode(&block.key).map_err(|e| format!("{path}.Key: is not valid base64 ({e})"))?;
    let decrypted = shared
        .kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped_key.clone()))
        .encryption_context(ET_CONTEXT_KEY, ET_CONTEXT_VALUE)
        .send()
        .await
        .map_err(|e| {
            // The KMS error code (InvalidCiphertextException, NotFoundException,
            // ...) is what a test wants to read; the raw response is noise.
            let reason = match e.as_service_error() {
                Some(kms) => match (kms.code(), kms.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_owned(),
                    (None, _) => kms.to_string(),
                },
                None => aws_sdk_kms::error::DisplayErrorContext(&e).to_string(),
            };
            format!(
                "{path}.Key: AWS KMS cannot decrypt the key under the encryption context \
                 {{\"{ET_CONTEXT_KEY}\":\"{ET_CONTEXT_VALUE}\"}} ({reason})"
            )
        })?;
    let kms_key_id = decrypted.key_id().unwrap_or_default().to_owned();
    if let Some(expected) = &pipeline.kms_key_arn
        && !same_kms_key(expected, &kms_key_id)
    {
        return Err(format!(
            "{path}.Key: was encrypted under KMS key {kms_key_id}, not the pipeline's AwsKmsKeyArn {expected}"
        ));
    }
    let key = decrypted.plaintext().map(|blob| blob.as_ref().to_vec()).unwrap_or_default();
    let sizes: &[usize] = if block.kind == BlockKind::Hls { &[16] } else { &[16, 24, 32] };
    if !sizes.contains(&key.len()) {
        let rule = if block.kind == BlockKind::Hls {
            "HLS content protection keys are 16 bytes (128 bits)"
        } else {
            "AES keys are 16, 24 or 32 bytes (128, 192 or 256 bits)"
        };
        return Err(format!("{path}.Key: decrypts to {} bytes; {rule}", key.len()));
    }
    let key_md5 = B64.decode(&block.key_md5).map_err(|e| format!("{path}.KeyMd5: is not valid base64 ({e})"))?;
    if key_md5.len() != 16 {
        return Err(format!("{path}.KeyMd5: decodes to {} bytes; an MD5 digest is 16", key_md5.len()));
    }
    let (digest_of, what) = match shared.md5 {
        KeyMd5Reading::Plaintext => (&key, "the decrypted key"),
        KeyMd5Reading::Ciphertext => (&wrapped_key, "the KMS ciphertext blob"),
    };
    if Md5::digest(digest_of).as_slice() != key_md5.as_slice() {
        return Err(format!("{path}.KeyMd5: is not the MD5 digest of {what}"));
    }
    let iv = if block.iv.is_empty() {
        None
    } else {
        let iv =
            B64.decode(&block.iv).map_err(|e| format!("{path}.InitializationVector: is not valid base64 ({e})"))?;
        let wanted = if block.kind == BlockKind::PlayReady { 8 } else { 16 };
        if iv.len() != wanted {
            return Err(format!(
                "{path}.InitializationVector: decodes to {} bytes; it must be exactly {wanted}",
                iv.len()
            ));
        }
        Some(iv)
    };
    Ok(VerifiedKey {
        job_id: String::new(),
        path: path.clone(),
        mode: block.mode.clone(),
        wrapped_key,
        key,
        iv,
        key_md5,
        kms_key_id,
    })
}

/// KMS reports a key ARN; a fixture may hold the ARN or the bare key id.
fn same_kms_key(expected: &str, reported: &str) -> bool {
    let key_id = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    expected == reported || key_id(expected) == key_id(reported)
}

// ---------------------------------------------------------------- helpers

fn at(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

/// A member, treating JSON `null` as absent (as ET's deserializer does).
fn member<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    obj.get(field).filter(|v| !v.is_null())
}

fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<Option<&'a str>, Invalid> {
    match member(obj, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{}: must be a string", at(path, field))),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<&'a str, Invalid> {
    opt_str(obj, field, path)?.ok_or_else(|| format!("{}: is required", at(path, field)))
}

fn opt_obj<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, Invalid> {
    match member(obj, field) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("{}: must be an object", at(path, field))),
    }
}

fn opt_list<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<Option<&'a [Value]>, Invalid> {
    match member(obj, field) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(format!("{}: must be a list", at(path, field))),
    }
}

fn as_obj<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Invalid> {
    value.as_object().ok_or_else(|| format!("{path}: must be an object"))
}

/// An optional base64 member (`Base64EncodedString`); absent reads as "".
fn opt_base64<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<&'a str, Invalid> {
    let value = opt_str(obj, field, path)?.unwrap_or("");
    if !is_base64(value) {
        return Err(format!("{}: is not base64 (padded, standard alphabet)", at(path, field)));
    }
    Ok(value)
}

fn require_non_empty(path: &str, field: &str, value: &str, context: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(format!("{}: is required with {context}", at(path, field)));
    }
    Ok(())
}

fn check_len(path: &str, value: &str, min: usize, max: usize) -> Result<(), Invalid> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(format!("{path}: length {len} is outside {min}..={max}"));
    }
    Ok(())
}

fn check_enum_opt(obj: &Map<String, Value>, field: &str, path: &str, allowed: &[&str]) -> Result<(), Invalid> {
    if let Some(value) = opt_str(obj, field, path)?
        && !allowed.contains(&value)
    {
        return Err(format!("{}: {value:?} is not one of {}", at(path, field), allowed.join(", ")));
    }
    Ok(())
}

/// Whether `id` has the shape of ET's pipeline and job ids:
/// `^\d{13}-\w{6}$` with Java's ASCII `\w`.
pub fn is_et_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 20
        && bytes[..13].iter().all(u8::is_ascii_digit)
        && bytes[13] == b'-'
        && bytes[14..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// `^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$`
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `(^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$)|(^[0-9A-Fa-f]{32}$)`
fn is_guid(s: &str) -> bool {
    let hex = |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit());
    if s.len() == 32 {
        return hex(s, 32);
    }
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(part, len)| hex(part, len))
}

/// `\d{1,5}x\d{1,5}`
fn is_resolution(s: &str) -> bool {
    let digits = |p: &str| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    s.split_once('x').is_some_and(|(w, h)| digits(w) && digits(h))
}

fn is_absolute_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    })
}
