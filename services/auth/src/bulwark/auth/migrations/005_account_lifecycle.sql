-- The account's whole life (docs/account.md): verified addresses, one-time account tokens,
-- the mail outbox, deletions waiting to reach the API, and erasing a deleted user's data
-- from the two tables that otherwise refuse every change.

-- When the current address was proven to reach the user (NULL: not yet). Deleted accounts
-- stay as a tombstone without personal data until their sessions' last access token has
-- expired, so the ended sessions can still be listed as revoked (docs/account.md).
ALTER TABLE users
    ADD COLUMN email_verified_at timestamptz,
    ADD COLUMN deleted_at timestamptz;

-- One-time tokens mailed to a user: a link token (stored as its SHA-256) and, for entry in
-- the app, a 6-digit code (stored as an HMAC under a server key: 10^6 codes are too few
-- for a plain hash). ``email`` is the address the token was sent to and proves: the new
-- address of an email change, the old one for its undo.
CREATE TABLE account_tokens (
    token_hash bytea PRIMARY KEY,
    code_hash bytea,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose text NOT NULL CHECK (
        purpose IN ('verify_email', 'password_reset', 'email_change', 'email_change_undo')
    ),
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    -- Wrong codes tried against this token: at the limit it is spent.
    failed_codes integer NOT NULL DEFAULT 0
);
CREATE INDEX account_tokens_user_idx ON account_tokens (user_id, purpose) WHERE used_at IS NULL;
CREATE INDEX account_tokens_expires_idx ON account_tokens (expires_at);

-- Mail waiting to be sent, written in the transaction of the change it tells about and
-- deleted once the SMTP server has accepted it (its body may hold a one-time link).
CREATE TABLE mail_outbox (
    id bigserial PRIMARY KEY,
    user_id uuid,
    recipient text NOT NULL,
    subject text NOT NULL,
    text_body text NOT NULL,
    html_body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at);
CREATE INDEX mail_outbox_user_idx ON mail_outbox (user_id);

-- Deleted accounts, until the deletion is published to the API's stream.
CREATE TABLE account_deletions (
    user_id uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX account_deletions_unpublished_idx ON account_deletions (deleted_at)
    WHERE published_at IS NULL;

-- A deleted user's security events are kept for their retention, without the IP and the
-- device id: the one UPDATE allowed, and only in a transaction that names the user in
-- ``bulwark.erase_user`` (SET LOCAL; account deletion alone does).
CREATE OR REPLACE FUNCTION security_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.user_id IS NOT NULL
        AND OLD.user_id::text = current_setting('bulwark.erase_user', true)
        AND NEW.ip IS NULL
        AND NEW.device_id IS NULL
        AND NEW.id = OLD.id
        AND NEW.occurred_at = OLD.occurred_at
        AND NEW.event_type = OLD.event_type
        AND NEW.user_id = OLD.user_id
        AND NEW.family_id IS NOT DISTINCT FROM OLD.family_id
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'security_events is append-only';
END;
$$;

-- A deleted user's anomaly flags go (their evidence holds IPs and countries), under the
-- same transaction setting; otherwise they are kept as detected.
CREATE OR REPLACE FUNCTION anomaly_flags_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
        AND OLD.user_id::text = current_setting('bulwark.erase_user', true)
    THEN
        RETURN OLD;
    END IF;
    IF TG_OP <> 'UPDATE'
        OR OLD.status <> 'open'
        OR NEW.id IS DISTINCT FROM OLD.id
        OR NEW.user_id IS DISTINCT FROM OLD.user_id
        OR NEW.kind IS DISTINCT FROM OLD.kind
        OR NEW.detected_at IS DISTINCT FROM OLD.detected_at
        OR NEW.evidence IS DISTINCT FROM OLD.evidence
    THEN
        RAISE EXCEPTION 'anomaly_flags rows are kept as detected; only an open flag may be reviewed';
    END IF;
    RETURN NEW;
END;
$$;
