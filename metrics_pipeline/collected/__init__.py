"""The collected-metrics family (seed 002): HTTP collector -> NATS JetStream -> consumer into
``CollectedMetric`` -> hourly statistics ``CollectedMetricHourly`` -> the query route."""
