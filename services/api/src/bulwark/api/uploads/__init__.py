"""Uploads: files a user sends straight to object storage through pre-signed URLs, checked
by the API before they count (docs/uploads.md)."""
