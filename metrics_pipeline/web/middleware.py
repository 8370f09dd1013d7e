"""ASGI middleware of the API (and the collector)."""

import json


class SecurityHeaders:
    """Adds nosniff and no-referrer to every answer (plain ASGI: no per-request task)."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: How much of an unread request body is read and discarded before the answer goes out.
DRAIN_BYTES = 1 << 30


class DrainedBodies:
    """Reads (and discards) what is left of a request body before the answer is sent, so that
    the client sees the answer — a 413 for a body over the cap above all.

    A server that answers before the body is read and then closes the connection (as uvicorn
    does for ``Connection: close``) resets it under a client still sending: the client gets
    ``Connection reset by peer`` instead of the answer. A client waiting for ``100 Continue``
    has sent no body, and none is asked for.

    With ``max_bytes`` (for an app that reads no body), a body above it — declared by
    ``Content-Length``, or found so while draining a chunked one — is answered 413 with
    ``error(max_bytes)`` as JSON instead of the app's answer.
    """

    def __init__(self, app, max_bytes: int | None = None, error=None, drain: int = DRAIN_BYTES):
        self.app, self.max_bytes, self.error, self.drain = app, max_bytes, error, drain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not (chunked or (length.isdigit() and int(length) > 0)):
            await self.app(scope, receive, send)  # nothing to drain: most requests
            return
        state = {"done": False, "messages": 0, "bytes": 0, "replaced": False}
        waits_for_continue = headers.get(b"expect", b"").lower() == b"100-continue"

        async def tracked():
            message = await receive()
            state["messages"] += 1
            state["bytes"] += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["done"] = True
            return message

        async def drain():
            if waits_for_continue and not state["messages"]:
                return
            while not state["done"] and state["bytes"] <= self.drain:
                await tracked()

        def too_large() -> bool:
            declared = int(length) if length.isdigit() else 0
            return self.max_bytes is not None and max(declared, state["bytes"]) > self.max_bytes

        async def refuse():
            body = json.dumps(self.error(self.max_bytes)).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        async def send_after_drain(message):
            if message["type"] == "http.response.start":
                await drain()
                if too_large():
                    state["replaced"] = True
                    await refuse()
                    return
            elif state["replaced"]:
                return
            await send(message)

        if too_large():
            await drain()
            await refuse()
            return
        await self.app(scope, tracked, send_after_drain)
