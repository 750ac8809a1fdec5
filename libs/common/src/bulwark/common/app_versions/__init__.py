"""The minimum-app-version policy (docs/app-versions.md): versions, the manifest of minimum
versions and its cache, and the check every HTTP service runs before anything else."""
