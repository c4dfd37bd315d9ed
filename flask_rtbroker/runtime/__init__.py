"""The process underneath: gevent or threads (``concurrency``), wakers, random ids, the
server's limits and its shutdown signals."""
