//! The broker's limits over real mutual TLS: per-identity rates, the
//! concurrency limit, an object stream's place, the server's deadline cap,
//! field and message size limits, and an audit log that cannot be written.

use std::sync::Arc;
use std::time::Duration;

use keybroker::custody::kms::{Kms, LocalKeyring};
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use tonic::Code;

use crate::custody::*;
use crate::support::broker::issue;
use crate::support::kms::ScriptedKms;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_identity_and_answers_resource_exhausted() {
    let c = custody().await;
    let mut limited = c.client_as(LIMITED).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(
            limited
                .issue_data_key(issue(128, "aes-gcm"))
                .await
                .map(|_| ())
                .map_err(|e| (e.code(), e.message().to_owned())),
        );
    }
    assert!(answers[..3].iter().all(Result::is_ok), "the burst of 3 is allowed: {answers:?}");
    let (code, message) = answers[3].clone().unwrap_err();
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("over its rate limit of 1 calls per second (policy rule 3)"), "{message}");
    // Another identity is not limited by it.
    c.client_as(ENCODER).await.issue_data_key(issue(128, "aes-gcm")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_sheds_load_and_health_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let ring: Arc<dyn Kms> = Arc::new(LocalKeyring::open_or_create(&dir.path().join("mk")).unwrap());
    let slow: Arc<dyn Kms> = ScriptedKms::delayed(ring, Duration::from_millis(600));
    let c = custody_with(|config| config.limits.max_concurrent_requests = 2, Some(slow)).await;
    let channel = c.endpoint(Some(&c.ca.client(ENCODER)), &c.ca.pem).connect().await.unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut client = KeyBrokerClient::new(channel.clone());
            tokio::spawn(async move { client.issue_data_key(issue(128, "aes-gcm")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let mut ok = 0;
    let mut shed = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
                assert!(e.message().contains("limit of 2 calls in flight"), "{}", e.message());
                shed += 1;
            }
        }
    }
    assert_eq!((ok, shed), (2, 4));
    // The shed calls are audited too, under their caller's identity.
    let records = c.audit_records_when(|r| r.len() == 6).await;
    let shed_records: Vec<_> = records.iter().filter(|r| r["code"] == "ResourceExhausted").collect();
    assert_eq!((records.len(), shed_records.len()), (6, 4), "{records:?}");
    for record in shed_records {
        assert_eq!(record["identity"], ENCODER);
        assert_eq!(record["rpc"], "IssueDataKey");
        assert_eq!(record["outcome"], "denied");
        assert!(record["message"].as_str().unwrap().contains("limit of 2 calls in flight"), "{record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_stream_holds_its_place_until_it_ends_and_its_deadline_ends_it() {
    let c = custody_with(|config| config.limits.max_concurrent_requests = 1, None).await;
    let mut ops = c.client_as(OPS).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let start = pb::EncryptObjectStart { mode: "aes-ctr".into(), key_bits: 128, ..Default::default() };
    tx.send(pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Start(start.clone())) })
        .await
        .unwrap();
    tx.send(pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Chunk(vec![7; 1000])) })
        .await
        .unwrap();
    let mut stream = ops.encrypt_object(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    // The stream is answered (headers sent) and still open: it is in flight.
    let err = c.client_as(OPS).await.issue_data_key(issue(128, "aes-gcm")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    drop(tx);
    let mut ciphertext = 0;
    let mut result = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.message.unwrap() {
            pb::encrypt_object_response::Message::Chunk(chunk) => ciphertext += chunk.len(),
            pb::encrypt_object_response::Message::Result(done) => result = Some(done),
        }
    }
    assert_eq!(ciphertext, 1000);
    assert_eq!(result.unwrap().plaintext_bytes, 1000);
    // Ended: its place is free again.
    c.client_as(OPS).await.issue_data_key(issue(128, "aes-gcm")).await.unwrap();

    // A stream that outlives the caller's deadline ends with DEADLINE_EXCEEDED.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Start(start)) })
        .await
        .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert("grpc-timeout", "300m".parse().unwrap());
    let outcome = async {
        let mut stream = ops.encrypt_object(request).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    };
    let err = tokio::time::timeout(Duration::from_secs(10), outcome).await.expect("the stream outlived its deadline");
    drop(tx);
    let err = err.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    // (The client may give up first; the server's record follows.)
    let records = c
        .audit_records_when(|r| r.last().is_some_and(|last| last["rpc"] == "EncryptObject" && last["code"] != "Ok"))
        .await;
    let last = records.last().unwrap();
    assert_eq!(last["rpc"], "EncryptObject");
    assert_eq!(last["code"], "DeadlineExceeded", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_is_capped_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let ring: Arc<dyn Kms> = Arc::new(LocalKeyring::open_or_create(&dir.path().join("mk")).unwrap());
    let slow = ScriptedKms::delayed(ring, Duration::from_secs(3));
    let c = custody_with(|config| config.limits.request_timeout_ms = 300, Some(slow.clone() as Arc<dyn Kms>)).await;
    let mut client = c.client_as(ENCODER).await;
    let started = std::time::Instant::now();
    let mut request = tonic::Request::new(issue(128, "aes-gcm"));
    request.set_timeout(Duration::from_secs(30));
    let err = client.issue_data_key(request).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("deadline of 300 ms"), "{}", err.message());
    // A shorter deadline from the caller wins over the server's cap.
    // (tonic's client gives up at the same moment, so the server's side is
    // read from its audit record.)
    let mut request = tonic::Request::new(issue(128, "aes-gcm"));
    request.set_timeout(Duration::from_millis(100));
    client.issue_data_key(request).await.unwrap_err();
    let records = c.audit_records_when(|r| r.len() == 2).await;
    // Both calls are in the audit log, each with the deadline it ran into
    // (the second, unless the client's reset reached the server first, in
    // which case the call is recorded as cancelled).
    let seen: Vec<_> = records.iter().map(|r| (r["code"].as_str().unwrap(), r["message"].as_str().unwrap())).collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, "DeadlineExceeded");
    assert!(seen[0].1.contains("deadline of 300 ms"), "{seen:?}");
    assert!(
        seen[1] == ("Cancelled", "the caller cancelled the call or went away before it was answered")
            || (seen[1].0 == "DeadlineExceeded" && seen[1].1.contains("deadline of 100 ms")),
        "{seen:?}"
    );

    // A call its caller abandons is recorded too, as cancelled.
    let reached = slow.count();
    let call = tokio::spawn(async move { client.issue_data_key(issue(128, "aes-gcm")).await });
    // Abandon it once it waits on KMS inside the broker.
    while slow.count() == reached {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call.abort();
    let _ = call.await;
    let records = c.audit_records_when(|r| r.len() == 3).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[2]["code"], "Cancelled", "{records:?}");
    assert_eq!(records[2]["identity"], ENCODER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_of_input_is_refused_at_its_field_limit_and_a_long_value_echoed_as_a_short_prefix() {
    let c = custody().await;
    let huge = "m".repeat(1 << 20);

    // A unary call: over the field's limit, named with its length only.
    let mut encoder = c.client_as(ENCODER).await;
    let err = encoder.issue_data_key(issue(128, &huge)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "mode: must be at most 64 bytes (a word of the field's grammar), got 1048576");
    // Within the limit, a bad value is echoed as a short prefix.
    let err = encoder.issue_data_key(issue(128, &"m".repeat(60))).await.unwrap_err();
    assert!(err.message().starts_with("mode: must be aes-cbc-pkcs7, aes-ctr or aes-gcm"), "{}", err.message());
    assert!(err.message().ends_with(&format!("(lower case), got \"{}\"… (60 bytes)", "m".repeat(32))));

    // A streaming call, through the same gate.
    let mut ops = c.client_as(OPS).await;
    let start = pb::EncryptObjectStart { mode: huge.clone(), ..Default::default() };
    let request = pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Start(start)) };
    let mut stream = ops.encrypt_object(futures::stream::iter([request])).await.unwrap().into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("start.mode: must be"), "{}", &err.message()[..80]);
    assert!(err.message().len() < 256, "{} bytes", err.message().len());

    let records = c.audit_records_when(|r| r.iter().filter(|r| r["code"] == "InvalidArgument").count() == 3).await;
    let refused: Vec<_> = records.iter().filter(|r| r["code"] == "InvalidArgument").collect();
    assert_eq!(refused.len(), 3, "{records:?}");
    for (record, length) in refused.into_iter().zip(["got 1048576", "… (60 bytes)", "got 1048576"]) {
        let line = serde_json::to_string(record).unwrap();
        assert!(line.len() < 1024, "an audit record of {} bytes", line.len());
        assert!(record["message"].as_str().unwrap().contains(length), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused() {
    let c = custody_with(|config| config.limits.max_message_bytes = 1024, None).await;
    let mut client = c.client_as(ENCODER).await;
    let err =
        client.wrap_key(pb::WrapKeyRequest { plaintext_key: vec![1; 4096], ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("limit of 1024 bytes (limits.max_message_bytes)"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_fails_the_call_and_returns_no_key() {
    let c = custody().await;
    let mut client = c.client_as(ENCODER).await;
    client.issue_data_key(issue(128, "aes-gcm")).await.unwrap();
    std::fs::remove_file(&c.audit).unwrap();
    let err = client.issue_data_key(issue(128, "aes-gcm")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("audit log"), "{}", err.message());
    assert!(!c.audit.exists(), "the broker did not recreate a removed log behind the operator's back");
}
