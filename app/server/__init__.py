"""``enclave serve``: an OpenAI-compatible HTTP API over the app's services (Starlette + uvicorn).

``config`` decides how the server listens (keys, TLS, the policy's refusal); ``bodies`` turns
request JSON into ``ApiRequest``; ``backend`` does the blocking work with ``Services`` in one
thread; ``jobs`` runs it from asyncio behind ``FairQueue``; ``shapes`` writes OpenAI's JSON;
``routes`` is the Starlette application.
"""
