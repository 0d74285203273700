"""Schemathesis hooks for Rota's API: tus PATCH bodies
(application/offset+octet-stream) are sent as raw bytes, as
application/octet-stream bodies are."""
import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
