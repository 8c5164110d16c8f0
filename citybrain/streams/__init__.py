"""The stream workers' side of the shared package (faust-streaming, in the streams environment).

- :mod:`citybrain.streams.fusion`: the fusion worker as an app factory and ``main()``, run as
  ``python -m citybrain.streams.fusion`` (``citybrain streams fusion``);
- :mod:`citybrain.streams.batching`: whole fetches to one coroutine instead of faust's
  per-event path (why: in its docstring);
- :mod:`citybrain.streams.warmup`: the worker's state rebuilt from the raw topics on start.

The logic the workers run is in :mod:`citybrain.fusion` (pure, no Kafka).
"""
