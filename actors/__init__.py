"""User actors: logical per-user actors hosted on a fixed set of ProfileShard Ray actors."""
