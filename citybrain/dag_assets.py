"""Assets the CityBrain DAGs produce and are scheduled on (shared by the DAG files)."""

from airflow.sdk import Asset

#: The data_quality DAG checked the lake's layers: bronze (validated raw) and silver (curated).
CHECKED = {layer: Asset(f"citybrain://lake/{layer}/checked") for layer in ("bronze", "silver")}


def gold(dataset: str) -> Asset:
    """A scenario dataset's releases."""
    return Asset(f"citybrain://lake/gold/{dataset}")
