"""``--ray local`` starts a Ray instance that listens on loopback only: Ray has no
authentication, and a single-machine run over patient text must not open ports on the
network. Marked ``slow`` (a Ray start takes tens of seconds on a busy machine)."""

from __future__ import annotations

import os

import pytest

from medeir_rag.rag.distributed import LOCAL, LOOPBACK_ONLY_ENV, RaySession


@pytest.mark.slow
def test_local_ray_binds_loopback_and_restores_the_environment():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from ray._private import ray_constants

    if ray.is_initialized():
        ray.shutdown()
    flag_before = ray_constants.ENABLE_RAY_CLUSTER
    with RaySession.connect(LOCAL) as session:
        assert session.owns
        addresses = {node["NodeManagerAddress"] for node in ray.nodes()}
        gcs = ray.get_runtime_context().gcs_address
        worker_ip = ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote())
    assert addresses == {"127.0.0.1"} and gcs.startswith("127.0.0.1:") and worker_ip == "127.0.0.1"
    assert not ray.is_initialized()
    assert LOOPBACK_ONLY_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER == flag_before
