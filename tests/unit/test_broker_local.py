"""The embedded broker's pure parts."""

from __future__ import annotations


def test_kraft_cluster_ids_never_start_with_a_dash() -> None:
    """Regression: an id starting with '-' made `kafka-storage format -t <id>` fail (1 in 64 fresh set-ups)."""
    import base64
    import uuid
    from unittest import mock

    from citybrain.broker.local import new_cluster_id

    dash_first = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    with mock.patch("citybrain.broker.local.uuid.uuid4", side_effect=[dash_first, uuid.UUID(int=7)]):
        assert new_cluster_id() == base64.urlsafe_b64encode(uuid.UUID(int=7).bytes).decode().rstrip("=")
    assert all(not new_cluster_id().startswith("-") for _ in range(2000))
