"""pipeline.resources.fit_actor_cpus: pools that run together leave Ray Data's tasks a CPU."""
from __future__ import annotations

import pytest

from dc3ray.pipeline.resources import fit_actor_cpus


def test_two_one_cpu_pools_on_two_cpus_are_halved_so_the_reads_can_run():
    assert fit_actor_cpus([(1, 1.0), (1, 1.0)], 2) == [0.5, 0.5]


def test_requests_that_leave_a_cpu_free_are_kept():
    assert fit_actor_cpus([(1, 1.0), (1, 1.0)], 3) == [1.0, 1.0]
    assert fit_actor_cpus([(0, 1.0), (1, 1.0)], 2) == [1.0, 1.0]  # one pool: 1 of 2 CPUs
    assert fit_actor_cpus([(2, 4.0)], 0) == [4.0]  # cluster size unknown: as asked


@pytest.mark.parametrize("pools", [[(2, 1.0), (3, 2.0)], [(4, 1.0)], [(1, 1.0), (1, 0.5)]])
@pytest.mark.parametrize("total", [1, 2, 4, 8])
def test_fitted_pools_keep_their_proportions_and_a_free_slot(pools, total):
    cpus = fit_actor_cpus(pools, total)
    used = sum(n * c for (n, _), c in zip(pools, cpus))
    assert used <= max(total - 1, total / 2) + 1e-9
    ratios = {round(c / want, 9) for (_, want), c in zip(pools, cpus)}
    assert len(ratios) == 1 and 0 < ratios.pop() <= 1
