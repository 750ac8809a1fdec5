-- OAuth grants besides the app's own login: the device authorization grant (RFC 8628) and
-- the authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636), and the browser
-- sessions of the pages where users approve them. Every secret is stored as its SHA-256.

-- The scope a session was granted (RFC 6749 §3.3); a refresh may narrow it, never widen it.
ALTER TABLE refresh_families ADD COLUMN scope text NOT NULL DEFAULT 'api';

CREATE TABLE device_authorizations (
    device_code_hash bytea PRIMARY KEY,
    user_code_hash bytea NOT NULL UNIQUE,
    client_id text NOT NULL,
    scope text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- The polling interval in force, in seconds: raised by 5 at each slow_down (§3.5).
    interval_seconds integer NOT NULL,
    last_polled_at timestamptz,
    -- pending, approved, denied, or exchanged (the tokens were issued once).
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'denied', 'exchanged')),
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    family_id uuid REFERENCES refresh_families (id) ON DELETE CASCADE
);
CREATE INDEX device_authorizations_expires_idx ON device_authorizations (expires_at);

CREATE TABLE authorization_codes (
    code_hash bytea PRIMARY KEY,
    client_id text NOT NULL,
    redirect_uri text NOT NULL,
    -- Whether the authorization request named redirect_uri: then the token request must
    -- name the same (RFC 6749 §4.1.3); else the client's only URI was used.
    redirect_uri_sent boolean NOT NULL,
    code_challenge text NOT NULL,
    scope text NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    -- The session the code's one exchange started: ended if the code is presented again.
    family_id uuid REFERENCES refresh_families (id) ON DELETE CASCADE
);
CREATE INDEX authorization_codes_expires_idx ON authorization_codes (expires_at);

-- A user signed in on the pages (/signin, /device, /oauth2/authorize), for a few minutes.
CREATE TABLE page_sessions (
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX page_sessions_user_idx ON page_sessions (user_id);
