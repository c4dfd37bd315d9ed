"""The test suite, a package so that its helpers import as ``tests.live``, ``tests.redis_server``...

(the benchmarks start their servers with ``tests.live`` too).
"""
