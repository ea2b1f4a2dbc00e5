"""Running webhook-bridge: the `webhook-bridge` command, `up`, brokers, topics, `send`.

The top floor: it starts the gateway (``gateway/``) and the consumers (``consumers/``)
and manages what they run against (Apache Kafka, the embedded broker, a local schema
registry, the topics). Nothing below imports it.
"""
