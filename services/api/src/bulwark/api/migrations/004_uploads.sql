-- Uploads (docs/uploads.md): a file a user sends to object storage through a pre-signed URL.
-- 'pending' until POST /v1/uploads/{id}/complete has checked the stored bytes; a rejected
-- upload is deleted, record and object. object_key is made by the server from the owner and
-- the id, never from the filename, which is kept only to be shown back on download.
CREATE TABLE uploads (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    object_key text NOT NULL UNIQUE CHECK (object_key ~ '^uploads/[0-9a-f-]{36}/[0-9a-f-]{36}$'),
    filename text NOT NULL CHECK (octet_length(filename) BETWEEN 1 AND 255),
    content_type text NOT NULL CHECK (content_type ~ '^[a-z]+/[a-z0-9.+-]{1,100}$'),
    size bigint NOT NULL CHECK (size > 0),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'complete')),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at timestamptz,
    CHECK ((state = 'complete') = (completed_at IS NOT NULL))
);
CREATE INDEX uploads_owner_idx ON uploads (owner_id, created_at DESC, id DESC);
