-- A key rewrapped (KMS ReEncrypt) to another KMS key or service context is
-- recorded as a new row naming, by fingerprint, the key it came from.
ALTER TABLE ledger_keys ADD COLUMN rewrapped_from TEXT;
CREATE INDEX ledger_keys_rewrapped_from ON ledger_keys (rewrapped_from);
