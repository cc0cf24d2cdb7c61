-- Lookups by fingerprint and by wrapped key go through short, random
-- slices of them (the first 16 hex digits after the fingerprint's "hmac-sha256:" prefix, the wrapped key's
-- last 16 base64 characters, which end in the KMS ciphertext's random tag)
-- instead of indexes on the whole texts: every recorded key inserts into
-- these indexes at a random place, and long entries made each group commit
-- write many more index pages. Queries compare the whole text after the
-- slice has found the row.
DROP INDEX ledger_keys_fingerprint;
DROP INDEX ledger_keys_wrapped;
CREATE INDEX ledger_keys_fingerprint_head ON ledger_keys ((substr(fingerprint, 13, 16)));
CREATE INDEX ledger_keys_wrapped_tail ON ledger_keys ((substr(wrapped_key, length(wrapped_key) - 15)));
