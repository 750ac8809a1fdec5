-- Account deletion (docs/account-deletion.md): anomaly flags stay kept as detected, except
-- that the erasure of a deleted account may delete that account's own flags. The erasing
-- transaction says whose: SET LOCAL bulwark.erase_user = '<user uuid>' (lower-case, as
-- uuid::text writes it; or set_config(..., true)). A DELETE of another user's flag or
-- outside such a transaction, and TRUNCATE, are still refused; UPDATE is unchanged.
CREATE OR REPLACE FUNCTION anomaly_flags_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN  -- nested: OLD is NULL in the TRUNCATE (statement) trigger
        IF OLD.user_id::text = current_setting('bulwark.erase_user', true) THEN
            RETURN OLD;
        END IF;
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
