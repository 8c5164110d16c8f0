"""CityBrain's seam to Kafka: every client, header, topic and replay goes through here.

- :mod:`citybrain.kafka.clients`: consumers, producers and admin clients (kafka-python and
  aiokafka) and faust's credentials, built from :class:`~citybrain.settings.Settings` alone;
- :mod:`citybrain.kafka.headers`: the standard headers every record carries and the one
  event-id rule;
- :mod:`citybrain.kafka.topics`: topics from contracts, the contract catalog, reading topics
  back, consumer-group offsets and lag;
- :mod:`citybrain.kafka.follow`: the one long-running consumer loop (poll, hand over, commit,
  stop when drained, status file) of the lake sinks, the Airflow bridge and the notifier;
- :mod:`citybrain.kafka.replay`: the records before a consumer group's committed offsets,
  which a restarting worker re-reads to rebuild its state.

Nothing else in CityBrain constructs a Kafka client.
"""
