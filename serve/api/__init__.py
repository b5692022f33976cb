"""Portrait's HTTP API: routes, the shard fan-out, responses and the error table.

Nothing here knows whether shards are Ray actors or objects in this process: the
composition root (:mod:`serve.composition`) builds an :class:`~serve.api.context.ApiContext`
and :func:`~serve.api.routes.create_app` serves it.
"""
