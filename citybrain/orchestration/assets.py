"""Assets the CityBrain DAGs produce and are scheduled on (shared by the DAG files)."""

from airflow.sdk import Asset

from citybrain.orchestration.bridge import lake_asset

#: New data in a lake layer: announced by its sink when it compacts the hours it wrote (catalog.lake.compacted.v1),
#: posted to Airflow as an asset event by `citybrain airflow events`.
LAKE = {layer: Asset(lake_asset(layer)) for layer in ("bronze", "silver")}
#: The data_quality DAG checked the lake's layers: bronze (validated raw) and silver (curated).
CHECKED = {layer: Asset(f"citybrain://lake/{layer}/checked") for layer in ("bronze", "silver")}


def gold(dataset: str) -> Asset:
    """A scenario dataset's releases."""
    return Asset(f"citybrain://lake/gold/{dataset}")
