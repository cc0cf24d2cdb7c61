//! The endpoint's operations: ReadPipeline, UpdatePipeline, ReadJob,
//! ListJobsByPipeline and CreateJob.

use super::*;

pub(super) async fn read_pipeline(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
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
pub(super) async fn update_pipeline(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
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
pub(super) fn check_update_pipeline(request: &Map<String, Value>) -> Result<(), Invalid> {
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
pub(super) fn check_bucket(path: &str, bucket: &str) -> Result<(), Invalid> {
    let ok = (1..=255).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok { Ok(()) } else { Err(format!("{path}: {bucket:?} does not match ^(\\w|\\.|-){{1,255}}$")) }
}

pub(super) fn pipeline_json(p: &PipelineFixture) -> Value {
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

pub(super) async fn read_job(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
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
pub(super) const JOBS_PAGE: usize = 50;

/// ListJobsByPipeline (`GET /2012-09-25/jobsByPipeline/{PipelineId}`), per
/// ET's API model: `PipelineId` `^\d{13}-\w{6}$`, `Ascending` `true` or
/// `false` (default newest first), `PageToken` a job id `^\d{13}-\w{6}$`
/// naming where the page starts; the answer is `Jobs` and, when more
/// remain, `NextPageToken`.
pub(super) async fn list_jobs_by_pipeline(
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

pub(super) async fn create_job(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
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
pub(super) fn job_json(request: &Value, pipeline: &PipelineFixture) -> Value {
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
