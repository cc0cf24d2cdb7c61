//! A MediaConvert endpoint that lives in the test suite.
//!
//! Neither moto nor the free LocalStack implements MediaConvert, so this
//! server speaks its rest-json (API 2017-08-29) for CreateJob
//! (`POST /2017-08-29/jobs`), GetJob (`GET /2017-08-29/jobs/{id}`) and
//! ListJobs (`GET /2017-08-29/jobs`, query checked against the model's
//! `ListJobsRequest`, answered newest first by default). It
//! judges a CreateJob body by the botocore model ([`super::mc_model`]), then
//! KMS-decrypts (moto, over HTTP) every `Inputs[].DecryptionSettings`
//! `EncryptedDecryptionKey` under `{"service":"mediaconvert.amazonaws.com"}`
//! and checks the key length (16, 24 or 32 bytes) and the IV length for the
//! mode (16 bytes, or 12 for `AES_GCM` and `AES_CTR`), and a `KmsKeyRegion`
//! against the region of the key KMS reports. It also reads every
//! output group's S3 encryption and HLS/CMAF static key so tests can assert
//! on them. A `ClientRequestToken` seen before returns the first job, as
//! MediaConvert does within its minute. Errors answer MediaConvert's shapes:
//! `x-amzn-ErrorType: BadRequestException` with `{"message": ...}`, the
//! message starting with the JSON path of the first violation.
//!
//! It never transcodes anything and never moves a job past `SUBMITTED`. It
//! keeps the plaintext keys KMS gave it ([`McEndpoint::input_keys`]) for
//! tests to compare; never do this outside tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

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
use serde_json::{Value, json};

use super::mc_model::model;

/// The encryption context MediaConvert decrypts input keys under.
pub const MC_CONTEXT_VALUE: &str = "mediaconvert.amazonaws.com";
/// The account job ARNs are in.
pub const ACCOUNT_ID: &str = "111122223333";

/// One input key KMS decrypted for an accepted job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputKey {
    /// The job the key belongs to.
    pub job_id: String,
    /// `Settings.Inputs[i].DecryptionSettings`.
    pub path: String,
    /// `AES_CBC`, `AES_CTR` or `AES_GCM`.
    pub mode: String,
    /// The KMS ciphertext blob, decoded.
    pub wrapped_key: Vec<u8>,
    /// The plaintext data key KMS answered.
    pub key: Vec<u8>,
    /// The decoded IV (16 or 12 bytes).
    pub iv: Vec<u8>,
    /// The KMS key ARN Decrypt reported.
    pub kms_key_id: String,
    /// `KmsKeyRegion`, if any: checked to be the region of that ARN.
    pub kms_key_region: Option<String>,
    /// The input's `FileInput`.
    pub file_input: String,
}

/// What an output group asked of S3 and of packaging encryption.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GroupProtection {
    /// The job the group belongs to.
    pub job_id: String,
    /// `Settings.OutputGroups[i]`.
    pub path: String,
    /// The group's `OutputGroupSettings.Type`.
    pub group_type: String,
    /// `S3Settings.Encryption.EncryptionType`, if any.
    pub encryption_type: Option<String>,
    /// `S3Settings.Encryption.KmsKeyArn`, if any.
    pub kms_key_arn: Option<String>,
    /// `KmsEncryptionContext`, decoded (base64 of a JSON string map).
    pub kms_encryption_context: Option<HashMap<String, String>>,
    /// `StaticKeyProvider.StaticKeyValue` (32 hex characters), if any.
    pub static_key: Option<String>,
    /// `StaticKeyProvider.Url`, if any.
    pub static_key_url: Option<String>,
    /// `ConstantInitializationVector`, if any.
    pub constant_iv: Option<String>,
    /// `EncryptionMethod`, if any.
    pub encryption_method: Option<String>,
}

#[derive(Default)]
struct Record {
    request_count: usize,
    create_requests: usize,
    created_jobs: Vec<Value>,
    rejections: Vec<String>,
    input_keys: Vec<InputKey>,
    groups: Vec<GroupProtection>,
    jobs: HashMap<String, Value>,
    /// Job ids in creation order, for ListJobs.
    job_order: Vec<String>,
    tokens: HashMap<String, String>,
    list_requests: usize,
    /// CreateJob failures to answer before looking at the body.
    injected_failures: std::collections::VecDeque<(u16, String)>,
    /// CreateJob answers to lose: the job is created, then the answer is
    /// held back past any attempt timeout, as a lost response looks.
    lost_answers: usize,
}

struct Shared {
    kms: aws_sdk_kms::Client,
    record: Mutex<Record>,
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running MediaConvert endpoint; dropping it stops the listener.
pub struct McEndpoint {
    /// `http://127.0.0.1:PORT`, the value for `AWS_ENDPOINT_URL_MEDIACONVERT`.
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for McEndpoint {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl McEndpoint {
    /// Starts an endpoint on 127.0.0.1:0 that decrypts keys with `kms` (a
    /// client of the suite's moto). Loads the botocore model first.
    pub async fn spawn(kms: aws_sdk_kms::Client) -> McEndpoint {
        model();
        let shared = Arc::new(Shared { kms, record: Mutex::new(Record::default()) });
        let app = Router::new()
            .route("/2017-08-29/jobs", post(create_job).get(list_jobs))
            .route("/2017-08-29/jobs/{id}", get(get_job))
            .fallback(unknown_operation)
            .layer(middleware::from_fn_with_state(shared.clone(), count_and_authenticate))
            .with_state(shared.clone());
        let (url, shutdown) = super::serve_on_loopback(app, "MediaConvert endpoint").await;
        McEndpoint { url, shared, shutdown: Some(shutdown) }
    }

    /// Every HTTP request received, whatever its fate.
    pub fn request_count(&self) -> usize {
        self.shared.record().request_count
    }

    /// CreateJob requests received, accepted, repeated or refused.
    pub fn create_requests(&self) -> usize {
        self.shared.record().create_requests
    }

    /// The wire bodies of CreateJob requests that made a new job.
    pub fn created_jobs(&self) -> Vec<Value> {
        self.shared.record().created_jobs.clone()
    }

    /// ListJobs requests received.
    pub fn list_requests(&self) -> usize {
        self.shared.record().list_requests
    }

    /// Answers the next `times` CreateJob requests with `status` and
    /// `error_type`, making no job.
    pub fn fail_next_create_jobs(&self, times: usize, status: u16, error_type: &str) {
        let mut record = self.shared.record();
        record.injected_failures.extend(std::iter::repeat_n((status, error_type.to_owned()), times));
    }

    /// Makes the next `times` new jobs, then holds their answers back for a
    /// minute (an answer lost on its way).
    pub fn lose_next_create_job_answers(&self, times: usize) {
        self.shared.record().lost_answers += times;
    }

    /// The message of every BadRequestException answered, in order.
    pub fn rejections(&self) -> Vec<String> {
        self.shared.record().rejections.clone()
    }

    /// Every input key of every new job, in job then document order.
    pub fn input_keys(&self) -> Vec<InputKey> {
        self.shared.record().input_keys.clone()
    }

    /// Every output group of every new job, in job then document order.
    pub fn groups(&self) -> Vec<GroupProtection> {
        self.shared.record().groups.clone()
    }

    /// A MediaConvert SDK client built from `base`, pointed here.
    pub fn sdk_client(&self, base: &aws_config::SdkConfig) -> aws_sdk_mediaconvert::Client {
        let config = aws_sdk_mediaconvert::config::Builder::from(base).endpoint_url(&self.url).build();
        aws_sdk_mediaconvert::Client::from_conf(config)
    }
}

fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amzn-ErrorType",
        HeaderValue::from_str(error_type).unwrap_or(HeaderValue::from_static("InternalServerErrorException")),
    );
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (status, headers, json!({ "message": message }).to_string()).into_response()
}

fn bad_request(shared: &Shared, message: String) -> Response {
    let response = error_response(StatusCode::BAD_REQUEST, "BadRequestException", &message);
    shared.record().rejections.push(message);
    response
}

/// Counts every request and refuses any not signed with SigV4 for service
/// `mediaconvert`.
async fn count_and_authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.record().request_count += 1;
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !authorization.starts_with("AWS4-HMAC-SHA256 ") || !authorization.contains("/mediaconvert/aws4_request") {
        return error_response(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            "the request is not signed with SigV4 for service mediaconvert",
        );
    }
    next.run(request).await
}

async fn unknown_operation(request: Request) -> Response {
    let message = format!("no operation at {} {}", request.method(), request.uri().path());
    error_response(StatusCode::NOT_FOUND, "NotFoundException", &message)
}

async fn get_job(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.record().jobs.get(&id) {
        Some(job) => (StatusCode::OK, axum::Json(json!({ "job": job }))).into_response(),
        None => error_response(StatusCode::NOT_FOUND, "NotFoundException", &format!("job {id} does not exist")),
    }
}

/// The most jobs a ListJobs page holds when `maxResults` is absent.
const LIST_PAGE: usize = 20;

/// ListJobs: the query as the model's `ListJobsRequest` has it
/// (`maxResults` 1 to 20, `nextToken`, `order` ASCENDING or DESCENDING,
/// `queue`, `status` a `JobStatus`); the answer is `{"jobs": [...],
/// "nextToken": ...}`, newest first unless `order=ASCENDING`. A
/// `nextToken` is the id of the job the page starts at.
async fn list_jobs(State(shared): State<Arc<Shared>>, Query(query): Query<HashMap<String, String>>) -> Response {
    shared.record().list_requests += 1;
    let request_shape = model().shape("ListJobsRequest");
    let members = request_shape.get("members").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut checked = serde_json::Map::new();
    for (name, value) in &query {
        let Some((member, _)) =
            members.iter().find(|(_, spec)| spec.get("locationName").and_then(Value::as_str) == Some(name))
        else {
            return bad_request(&shared, format!("{name}: is not a ListJobs query parameter"));
        };
        let typed = if member == "MaxResults" {
            match value.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => return bad_request(&shared, format!("MaxResults: {value:?} is not an integer")),
            }
        } else {
            json!(value)
        };
        checked.insert(name.clone(), typed);
    }
    if let Err(violation) = model().check(&Value::Object(checked), "ListJobsRequest", "") {
        return bad_request(&shared, violation);
    }
    let descending = query.get("order").map(String::as_str) != Some("ASCENDING");
    let limit = query.get("maxResults").and_then(|n| n.parse().ok()).unwrap_or(LIST_PAGE);
    let record = shared.record();
    let mut jobs: Vec<&Value> = record
        .job_order
        .iter()
        .filter_map(|id| record.jobs.get(id))
        .filter(|job| query.get("queue").is_none_or(|queue| job["queue"] == queue.as_str()))
        .filter(|job| query.get("status").is_none_or(|status| job["status"] == status.as_str()))
        .collect();
    if descending {
        jobs.reverse();
    }
    let start = match query.get("nextToken") {
        Some(token) => match jobs.iter().position(|job| job["id"] == token.as_str()) {
            Some(at) => at,
            None => return bad_request(&shared, format!("NextToken: {token:?} names no job")),
        },
        None => 0,
    };
    let page: Vec<Value> = jobs.iter().skip(start).take(limit).map(|job| (*job).clone()).collect();
    let mut body = json!({ "jobs": page });
    if let Some(next) = jobs.get(start + limit) {
        body["nextToken"] = next["id"].clone();
    }
    drop(record);
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn create_job(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let injected = {
        let mut record = shared.record();
        record.create_requests += 1;
        record.injected_failures.pop_front()
    };
    if let Some((status, error_type)) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(status, &error_type, &format!("injected failure: {error_type}"));
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return bad_request(&shared, format!("the body is not JSON: {e}")),
    };
    if let Err(violation) = model().check(&request, "CreateJobRequest", "") {
        return bad_request(&shared, violation);
    }
    let token = request.get("clientRequestToken").and_then(Value::as_str).map(str::to_owned);
    if let Some(token) = &token {
        let record = shared.record();
        if let Some(job) = record.tokens.get(token).and_then(|id| record.jobs.get(id)) {
            return (StatusCode::CREATED, axum::Json(json!({ "job": job }))).into_response();
        }
    }
    let job_id = format!("{}-{}", chrono_like_now(), &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let settings = &request["settings"];
    let mut keys = Vec::new();
    for (i, input) in settings.get("inputs").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if let Some(decryption) = input.get("decryptionSettings") {
            let path = format!("Settings.Inputs[{i}].DecryptionSettings");
            match verify_input_key(&shared, decryption, &path).await {
                Ok(mut key) => {
                    key.job_id = job_id.clone();
                    key.file_input = input.get("fileInput").and_then(Value::as_str).unwrap_or_default().to_owned();
                    keys.push(key);
                }
                Err(violation) => return bad_request(&shared, violation),
            }
        }
    }
    let mut groups = Vec::new();
    for (i, group) in settings.get("outputGroups").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match read_group(group, &format!("Settings.OutputGroups[{i}]")) {
            Ok(mut protection) => {
                protection.job_id = job_id.clone();
                groups.push(protection);
            }
            Err(violation) => return bad_request(&shared, violation),
        }
    }
    let job = json!({
        "id": job_id,
        "arn": format!("arn:aws:mediaconvert:us-east-1:{ACCOUNT_ID}:jobs/{job_id}"),
        "role": request["role"],
        "settings": request["settings"],
        "status": "SUBMITTED",
        "queue": request.get("queue").cloned().unwrap_or_else(|| json!(format!("arn:aws:mediaconvert:us-east-1:{ACCOUNT_ID}:queues/Default"))),
        "userMetadata": request.get("userMetadata").cloned().unwrap_or_else(|| json!({})),
        "clientRequestToken": request.get("clientRequestToken"),
        "createdAt": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    });
    let lose_answer = {
        let mut record = shared.record();
        if let Some(token) = token {
            record.tokens.insert(token, job_id.clone());
        }
        record.job_order.push(job_id.clone());
        record.jobs.insert(job_id, job.clone());
        record.created_jobs.push(request);
        record.input_keys.extend(keys);
        record.groups.extend(groups);
        let lose = record.lost_answers > 0;
        record.lost_answers = record.lost_answers.saturating_sub(1);
        lose
    };
    if lose_answer {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
    (StatusCode::CREATED, axum::Json(json!({ "job": job }))).into_response()
}

fn chrono_like_now() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

async fn verify_input_key(shared: &Shared, block: &Value, path: &str) -> Result<InputKey, String> {
    let text = |member: &str| block.get(member).and_then(Value::as_str).map(str::to_owned);
    let mode = text("decryptionMode").ok_or_else(|| format!("{path}.DecryptionMode: is required to decrypt"))?;
    let key_b64 =
        text("encryptedDecryptionKey").ok_or_else(|| format!("{path}.EncryptedDecryptionKey: is required"))?;
    let iv_b64 = text("initializationVector").ok_or_else(|| format!("{path}.InitializationVector: is required"))?;
    let wrapped_key =
        B64.decode(&key_b64).map_err(|e| format!("{path}.EncryptedDecryptionKey: is not valid base64 ({e})"))?;
    let decrypted = shared
        .kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped_key.clone()))
        .encryption_context("service", MC_CONTEXT_VALUE)
        .send()
        .await
        .map_err(|e| {
            let reason = match e.as_service_error() {
                Some(kms) => format!("{}: {}", kms.code().unwrap_or("?"), kms.message().unwrap_or("")),
                None => aws_sdk_kms::error::DisplayErrorContext(&e).to_string(),
            };
            format!(
                "{path}.EncryptedDecryptionKey: AWS KMS cannot decrypt the key under the encryption context \
                 {{\"service\":\"{MC_CONTEXT_VALUE}\"}} ({reason})"
            )
        })?;
    let key = decrypted.plaintext().map(|blob| blob.as_ref().to_vec()).unwrap_or_default();
    let kms_key_id = decrypted.key_id().unwrap_or_default().to_owned();
    let kms_key_region = text("kmsKeyRegion");
    if let Some(region) = &kms_key_region
        && kms_key_id.split(':').nth(3) != Some(region.as_str())
    {
        return Err(format!(
            "{path}.KmsKeyRegion: {region} is not the region of the KMS key that encrypted the key ({kms_key_id})"
        ));
    }
    if ![16, 24, 32].contains(&key.len()) {
        return Err(format!(
            "{path}.EncryptedDecryptionKey: decrypts to {} bytes; the key must be 128, 192 or 256 bits",
            key.len()
        ));
    }
    let iv = B64.decode(&iv_b64).map_err(|e| format!("{path}.InitializationVector: is not valid base64 ({e})"))?;
    let allowed: &[usize] = if mode == "AES_CBC" { &[16] } else { &[16, 12] };
    if !allowed.contains(&iv.len()) {
        return Err(format!(
            "{path}.InitializationVector: decodes to {} bytes; {mode} takes {}",
            iv.len(),
            if mode == "AES_CBC" { "16" } else { "16 or 12" }
        ));
    }
    Ok(InputKey {
        job_id: String::new(),
        path: path.to_owned(),
        mode,
        wrapped_key,
        key,
        iv,
        kms_key_id,
        kms_key_region,
        file_input: String::new(),
    })
}

/// Reads one output group's S3 encryption and packaging encryption.
fn read_group(group: &Value, path: &str) -> Result<GroupProtection, String> {
    let settings = &group["outputGroupSettings"];
    let group_type = settings.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut protection = GroupProtection { path: path.to_owned(), group_type, ..GroupProtection::default() };
    let Some(type_settings) = settings
        .as_object()
        .and_then(|o| o.iter().find(|(k, v)| k.ends_with("GroupSettings") && v.is_object()).map(|(_, v)| v.clone()))
    else {
        return Ok(protection);
    };
    let str_at = |v: &Value, p: &[&str]| -> Option<String> {
        p.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_str).map(str::to_owned)
    };
    let s3 = ["destinationSettings", "s3Settings", "encryption"];
    protection.encryption_type = str_at(&type_settings, &[&s3[..], &["encryptionType"]].concat());
    protection.kms_key_arn = str_at(&type_settings, &[&s3[..], &["kmsKeyArn"]].concat());
    if let Some(context) = str_at(&type_settings, &[&s3[..], &["kmsEncryptionContext"]].concat()) {
        let at = format!("{path}.OutputGroupSettings...S3Settings.Encryption.KmsEncryptionContext");
        let bytes = B64.decode(&context).map_err(|e| format!("{at}: is not valid base64 ({e})"))?;
        let map: HashMap<String, String> =
            serde_json::from_slice(&bytes).map_err(|e| format!("{at}: is not a JSON map of strings ({e})"))?;
        protection.kms_encryption_context = Some(map);
    }
    if protection.kms_key_arn.is_some() && protection.encryption_type.as_deref() != Some("SERVER_SIDE_ENCRYPTION_KMS") {
        return Err(format!("{path}: KmsKeyArn needs EncryptionType SERVER_SIDE_ENCRYPTION_KMS"));
    }
    let encryption = &type_settings["encryption"];
    protection.static_key = str_at(encryption, &["staticKeyProvider", "staticKeyValue"]);
    protection.static_key_url = str_at(encryption, &["staticKeyProvider", "url"]);
    protection.constant_iv = str_at(encryption, &["constantInitializationVector"]);
    protection.encryption_method = str_at(encryption, &["encryptionMethod"]);
    if let Some(key) = &protection.static_key
        && !(key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!("{path}: StaticKeyValue must be 32 hex characters (a 128-bit key)"));
    }
    if protection.static_key.is_some() && protection.static_key_url.is_none() {
        return Err(format!("{path}: StaticKeyProvider.Url is required with a StaticKeyValue"));
    }
    Ok(protection)
}
