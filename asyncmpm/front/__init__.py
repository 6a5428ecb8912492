"""The anyio front loop (asyncio or trio): listeners, connections, and the Server that owns them."""
