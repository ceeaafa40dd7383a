"""Fixtures shared by the data tests."""

import pytest

from mumo.data.shard_writer import pairs_from_shapes, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """96 shapes scenes in shards of 10 (the last holds 6)."""
    root = tmp_path_factory.mktemp("shards")
    summary = write_shards(pairs_from_shapes(96), root, shard_size=10)
    assert summary == {"shards": 10, "samples": 96, "skipped": []}
    return root
