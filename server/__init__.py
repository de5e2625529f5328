"""``blockpool serve``: an OpenAI-compatible HTTP server on the block-pool engine.

The engine's owner thread (``engine.owner_thread``) owns the engine; ``engine_link`` routes
its events to each request's asyncio queue and feeds the metrics and the ``/v1/events`` hub;
FastAPI routes talk to it through ``client``. Idle conversations stay in blocks so stateless
requests continue them (the owner's conversation table, ``engine.conversations``). Nothing
heavy is imported here.
"""
