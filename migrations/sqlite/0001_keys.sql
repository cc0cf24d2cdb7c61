-- One row per key the broker handed out or used: the wrapped key exactly
-- as it left, never plaintext.
CREATE TABLE ledger_keys (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id        TEXT    NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    identity        TEXT    NOT NULL,
    rpc             TEXT    NOT NULL,
    request_id      TEXT    NOT NULL,
    kms_key_arn     TEXT    NOT NULL,
    service_context TEXT    NOT NULL,
    mode            TEXT    NOT NULL,
    key_bits        INTEGER,
    wrapped_key     TEXT    NOT NULL,
    iv              TEXT,
    key_md5         TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    job_id          TEXT,
    job_place       TEXT,
    s3_bucket       TEXT,
    s3_key          TEXT,
    s3_version_id   TEXT,
    s3_etag         TEXT
);
CREATE INDEX ledger_keys_entry ON ledger_keys (entry_id);
CREATE INDEX ledger_keys_fingerprint ON ledger_keys (fingerprint);
CREATE INDEX ledger_keys_wrapped ON ledger_keys (wrapped_key);
CREATE INDEX ledger_keys_job ON ledger_keys (job_id);
CREATE INDEX ledger_keys_object ON ledger_keys (s3_bucket, s3_key);
