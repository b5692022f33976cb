"""The actor system and its control plane.

Users are logical actors hosted on ProfileShard Ray actors, whose number changes at run time
(:mod:`actors.shard_controller`); requests reach them through :mod:`actors.shard_router`, and
catalog views through the one publication (:mod:`actors.catalog_publication`)."""
