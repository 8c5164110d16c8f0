"""Running the platform: the supervisor, readiness of the broker and topics, stream worker processes."""
