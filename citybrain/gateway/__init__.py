"""The HTTP edge: partner systems and IoT gateways write in the standards they already speak.

- :mod:`citybrain.gateway.server`: the aiohttp app (``build_app``, ``run_gateway``) and its route table;
- :mod:`citybrain.gateway.pipeline`: what every protocol shares: API keys, body, rate limits, entity
  checks, producing records and dead letters, refusals, ``/health``;
- one handler module per protocol: :mod:`~citybrain.gateway.open311_routes` (GeoReport v2),
  :mod:`~citybrain.gateway.ngsi_v2_routes` (FIWARE NGSI v2), :mod:`~citybrain.gateway.ngsi_ld_routes` (NGSI-LD);
- pure mapping, no HTTP: :mod:`~citybrain.gateway.open311`, :mod:`~citybrain.gateway.fiware`,
  :mod:`~citybrain.gateway.lint` (the models' known defects), :mod:`~citybrain.gateway.units`;
- :mod:`citybrain.gateway.book`: requests and the city's reference data, read back from the broker;
- :mod:`citybrain.gateway.idempotency`: Open311 retries by Idempotency-Key answer the first ticket.

Bodies are read by :mod:`citybrain.ingest.strict_json`, the loader's reading too: each entity is judged alone.
"""
