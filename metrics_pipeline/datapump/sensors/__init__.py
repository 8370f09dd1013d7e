"""The DataPump family's sensors: the refresh chain, the shard retry, the backlog."""
