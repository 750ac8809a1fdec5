"""The services' OpenAPI documents: what each operation answers (`answers`) and the document
built from a Litestar app (`document`)."""
