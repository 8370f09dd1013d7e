"""Exports of the published tables, page by page with signed continuation tokens, fetched ahead
into a cache and watched through the activity monitoring endpoints (seed 003). See docs/api.md."""
