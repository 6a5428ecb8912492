"""Sans-IO HTTP: bytes in, events out; events in, bytes out. No sockets, no anyio, no os.

The event vocabulary (:mod:`asyncmpm.protocol.events`) is shared by every HTTP version, so the
dispatcher and the children never learn which one a request came over.
"""
