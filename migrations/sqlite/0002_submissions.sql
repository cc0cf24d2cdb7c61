-- Idempotent SubmitEncryptedJob: one row per (caller identity, request
-- token). Written PENDING before the Elastic Transcoder POST, with the
-- planned answer (wrapped keys only) once the job's keys are recorded;
-- SUBMITTED with the job id after ET answers.
CREATE TABLE ledger_submissions (
    identity         TEXT   NOT NULL,
    request_token    TEXT   NOT NULL,
    request_hash     TEXT   NOT NULL,
    state            TEXT   NOT NULL,
    claimed_until_ms BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    entry_id         TEXT,
    answer_json      TEXT,
    job_id           TEXT,
    PRIMARY KEY (identity, request_token)
);
CREATE INDEX ledger_submissions_created ON ledger_submissions (created_at_ms);
