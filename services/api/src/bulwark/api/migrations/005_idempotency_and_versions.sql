-- Safe writes over bad networks (docs/safe-writes.md).

-- Optimistic concurrency: each note's version, raised by every update; its strong ETag is
-- the version in quotes. Existing notes start at 1 (a constant default: no table rewrite).
ALTER TABLE notes ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);

-- Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): the first answer of each
-- user's key, written in the transaction that created the resource, replayed to a retry
-- with the same request until expires_at. The answer is the JSON body and the headers
-- Location and ETag, never a request header (no token is kept). bulwark.api.idempotency
-- holds the SQL.
CREATE TABLE idempotency_keys (
    owner_id uuid NOT NULL,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
    status smallint NOT NULL CHECK (status BETWEEN 200 AND 299),
    headers jsonb NOT NULL CHECK (jsonb_typeof(headers) = 'object'),
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (owner_id, key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);
