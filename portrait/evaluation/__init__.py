"""Offline evaluation of Portrait: splits, metrics, baselines, the replay runner, tuning, A/B.

Everything in this package is pure (numpy and the standard library, no I/O); the command line
front end that loads data, encodes text and writes reports is :mod:`serve.cli.evaluate`.
"""
