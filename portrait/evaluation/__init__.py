"""Offline evaluation of Portrait: splits, metrics, baselines, the replay runner, tuning, A/B,
the systems compared (:mod:`~portrait.evaluation.roster`), and the summaries and goals of a run.

Everything in this package is pure (numpy and the standard library, no I/O); the application
that loads data, encodes text and writes reports is the :mod:`offline` package.
"""
