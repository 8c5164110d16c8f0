"""The contract catalog on the broker: every contract as a record of ``catalog.contracts.registry.v1``
(compacted, keyed by topic), so consumers discover what each topic carries without the repository."""

from __future__ import annotations

import json
from typing import Any, Iterable

from citybrain.contracts.model import Contract
from citybrain.contracts.topics import CONTRACT_REGISTRY
from citybrain.settings import Settings
from citybrain.times import now_iso


def catalog_record(contract: Contract, published_at: str | None = None) -> dict[str, Any]:
    """The catalog topic's record for one contract (validated against the catalog contract)."""
    return {
        "topic": contract.topic,
        "contract": contract.id,
        "version": contract.version,
        "owner": contract.owner,
        "title": contract.raw["title"],
        "compatibility": contract.compatibility,
        "personal_fields": contract.personal_fields(),
        "document": _without_personal_examples(contract),
        "published_at": published_at or now_iso(),
    }


def _without_personal_examples(contract: Contract) -> dict[str, Any]:
    """The contract as published: every department reads the catalogue, so example values of
    personal fields (made up, but shaped like real numbers and addresses) are withheld."""
    doc = json.loads(json.dumps(contract.to_document(), default=str))
    personal = contract.personal_fields()
    for example in doc.get("examples") or []:
        for name in personal:
            if isinstance(example, dict) and example.get(name) is not None:
                example[name] = f"<withheld: personal data, {contract.fields[name].protect or 'restricted'}>"
    return doc


def publish_catalog(settings: Settings, contracts: Iterable[Contract]) -> int:
    """Publish every contract to the compacted catalog topic, through the validated producer."""
    from citybrain.contracts.model import load_all
    from citybrain.ingest.producer import ValidatedProducer

    contracts = list(contracts)
    catalog = next((c for c in contracts if c.topic == CONTRACT_REGISTRY), None) or load_all(settings.schemas_dir)[CONTRACT_REGISTRY]
    with ValidatedProducer(settings, producer_id="citybrain-catalog") as producer:
        summary = producer.produce_values(catalog, (catalog_record(c) for c in contracts), source="catalog")
    if summary.dead_lettered:
        raise ValueError(f"{summary.dead_lettered} catalog record(s) were refused: {summary.rejections}")
    return summary.accepted
