"""The fusion worker: raw feeds in; city events, early warnings, SLA alerts, metrics and work
orders out. Wiring only: the app, its topics, the worker, the batch loop and the agents are the
package ``citybrain.streams.fusion``; the logic is ``citybrain.fusion``.

Run it with ``citybrain streams fusion`` (or ``python streams/fusion_worker.py worker -l info``).
"""

from citybrain.streams.fusion import main

if __name__ == "__main__":
    main()
