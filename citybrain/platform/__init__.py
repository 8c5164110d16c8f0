"""Running the platform: the supervisor, readiness of the broker and topics, stream worker processes, and the
systemd units that run the same services on a host of their own."""
