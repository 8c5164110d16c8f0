"""CityBrain: the shared package of the city-brain data platform.

Contracts, the embedded broker, validated producers and the command line live here;
``streams/`` and ``dags/`` hold only the wiring around these functions.
"""

__version__ = "0.1.0"
