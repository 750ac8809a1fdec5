-- Anomaly flags: accounts that behaved unusually, kept for an operator's review (never a
-- block; docs/anomalies.md). The same table in the auth and the API databases, each holding
-- its own detectors' flags; bulwark.common.anomaly_flags holds the SQL.
CREATE TABLE anomaly_flags (
    id bigserial PRIMARY KEY,
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind ~ '^[a-z_]{1,64}$'),
    detected_at timestamptz NOT NULL DEFAULT now(),
    evidence jsonb NOT NULL CHECK (jsonb_typeof(evidence) = 'object'),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'reviewed')),
    reviewed_at timestamptz,
    review_note text CHECK (length(review_note) <= 500)
);
CREATE INDEX anomaly_flags_user_idx ON anomaly_flags (user_id, detected_at DESC);
CREATE INDEX anomaly_flags_detected_idx ON anomaly_flags (detected_at DESC);

-- Kept as detected: no DELETE or TRUNCATE, and an UPDATE may only review an open flag.
CREATE FUNCTION anomaly_flags_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
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
CREATE TRIGGER anomaly_flags_kept
    BEFORE UPDATE OR DELETE ON anomaly_flags
    FOR EACH ROW EXECUTE FUNCTION anomaly_flags_guard();
CREATE TRIGGER anomaly_flags_no_truncate
    BEFORE TRUNCATE ON anomaly_flags
    FOR EACH STATEMENT EXECUTE FUNCTION anomaly_flags_guard();
