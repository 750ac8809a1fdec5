"""The manifest of minimum app versions: kept in the API's database, published to the auth
service and the apps at ``GET /v1/app-versions``, changed with ``bulwark-api app-versions``."""
