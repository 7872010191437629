"""``ui.server.freeze_long_lived_objects``: freezes the heap after a wave of imports or a slow
full collection, collects garbage first, and does nothing more until the next one."""

from __future__ import annotations

import gc
import sys
import types

import pytest

from ui import server


@pytest.fixture
def fresh_state(monkeypatch):
    monkeypatch.setattr(server, "_modules_at_freeze", 0)
    server._slow_collection.clear()
    yield
    gc.unfreeze()
    server._slow_collection.clear()
    for name in [n for n in sys.modules if n.startswith("scanatlas_test_fake_module_")]:
        del sys.modules[name]


def test_the_heap_is_frozen_once_per_wave_of_imports_after_a_collection(fresh_state, monkeypatch):
    collections = []
    real_collect = gc.collect
    monkeypatch.setattr(server.gc, "collect", lambda *a: collections.append(1) or real_collect(*a))

    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage  # a reference cycle: only the collector frees it
    probe = __import__("weakref").ref(garbage)
    del garbage

    assert server.freeze_long_lived_objects() is True
    assert probe() is None  # collected before the freeze, not frozen forever
    frozen = gc.get_freeze_count()
    assert frozen > 1000 and collections == [1]

    assert server.freeze_long_lived_objects() is False  # no new imports: nothing to do
    assert collections == [1]

    for i in range(server.NEW_MODULES_BEFORE_REFREEZE):  # a wave of imports
        sys.modules[f"scanatlas_test_fake_module_{i}"] = types.ModuleType(f"fake{i}")
    assert server.freeze_long_lived_objects() is True
    assert collections == [1, 1]


def test_a_slow_full_collection_makes_the_next_call_freeze_what_survived(fresh_state, monkeypatch):
    assert server.freeze_long_lived_objects() is True  # the first call always freezes
    assert server.freeze_long_lived_objects() is False
    monkeypatch.setattr(server, "SLOW_FULL_COLLECTION_S", 0.0)  # any full collection is "slow"
    survivors = [[i] for i in range(200_000)]  # long-lived objects made without an import
    before = gc.get_freeze_count()
    gc.collect()  # a full collection, watched by the callback the first call installed
    assert server.freeze_long_lived_objects() is True
    assert gc.get_freeze_count() >= before + len(survivors)
    assert server.freeze_long_lived_objects() is False  # until the next slow collection
