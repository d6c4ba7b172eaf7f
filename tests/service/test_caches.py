"""The service's in-memory caches: sizes, recency and owners (one library, ``cachetools``, behind all of them)."""

from __future__ import annotations

import threading

from service.core import ResultsCache


def test_results_cache_keeps_the_most_recently_used_and_answers_the_owner_only() -> None:
    cache = ResultsCache(max_entries=2)
    cache.put("job_a", "alice", b"A")
    cache.put("job_b", "alice", b"B")
    assert cache.get("job_a", "alice") == b"A"  # job_b is now the least recently used
    cache.put("job_c", "bob", b"C")
    assert cache.get("job_b", "alice") is None
    assert cache.get("job_a", "alice") == b"A" and cache.get("job_c", "bob") == b"C"
    assert cache.get("job_c", "alice") is None  # another owner's body is never served
    cache.discard("job_a")
    assert cache.get("job_a", "alice") is None
    cache.discard("job_a")  # discarding an absent job is no error


def test_results_cache_from_many_threads_stays_within_its_size() -> None:
    cache = ResultsCache(max_entries=8)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(300):
                cache.put(f"job_{n}_{i}", "alice", b"x")
                cache.get(f"job_{n}_{i - 1}", "alice")
                cache.discard(f"job_{n}_{i - 2}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache._entries) <= 8
