"""Fixtures of the scale-out tests; the cluster itself is ``celery_cluster``."""

import pytest

from celery_cluster import Cluster


@pytest.fixture
def cluster(redis_server, tmp_path):
    """A cluster factory: ``cluster(**settings)`` with environment overrides for client and workers."""
    made = []

    def make(**settings: str) -> Cluster:
        made.append(Cluster(redis_server, tmp_path, **settings))
        return made[-1]

    yield make
    for each in made:
        each.close()
