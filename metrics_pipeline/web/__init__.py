"""What the platform's HTTP services share (the API and the collector): bearer tokens and
principals, the middleware, the loopback rule. Nothing here loads either service."""
