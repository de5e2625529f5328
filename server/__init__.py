"""``blockpool serve``: an OpenAI-compatible HTTP server on the block-pool engine.

One engine thread owns the engine (``engine_thread``); FastAPI routes talk to it
through its inbox (``client``). Idle conversations stay in blocks so stateless
requests continue them (``conversations``). Nothing heavy is imported here.
"""
