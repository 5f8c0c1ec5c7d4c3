"""hello-service: a small HTTP greeting service."""
