-- Grace window for benign refresh retries: a used token remembers the token that replaced it
-- (its hash) and, sealed under a key only that used token can derive, the replacement itself,
-- so a retry within the window gets the very same refresh token back and the family keeps
-- exactly one live token. Cleared when the replacement is used in turn.
ALTER TABLE refresh_tokens
    ADD COLUMN successor_hash bytea,
    ADD COLUMN successor_sealed bytea;

-- Sessions ended in the last minutes are re-published to Redis's revoked-session set.
CREATE INDEX refresh_families_revoked_at_idx ON refresh_families (revoked_at)
    WHERE revoked_at IS NOT NULL;
