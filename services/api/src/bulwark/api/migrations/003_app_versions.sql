-- The minimum supported app version of each platform (docs/app-versions.md); a platform
-- without a row has none. Set by `bulwark-api app-versions`, which checks the version
-- strictly (SemVer 2.0.0); the checks below only keep out what no version looks like.
CREATE TABLE app_versions (
    platform text PRIMARY KEY CHECK (platform IN ('ios', 'android')),
    minimum_version text NOT NULL CHECK (minimum_version ~ '^[0-9A-Za-z.+-]{5,64}$'),
    updated_at timestamptz NOT NULL DEFAULT now()
);
