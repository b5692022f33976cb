"""Portrait's pure domain: events, the profile fold, ranking math and ports.

Imports only numpy, msgpack and the standard library: no I/O, no clock, no environment.
"""
