"""The one place that starts Ray and turns settings into actor-pool resources."""
from __future__ import annotations

import logging
import os
import warnings

import ray

from ..errors import ClusterError
from ..logs import verbose

log = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None, **kwargs) -> None:
    """Start (or join) Ray once.

    With RAY_ADDRESS set, connect to that cluster. Otherwise start a local instance with an
    explicit CPU count (all cores by default) and no dashboard, which works on a 2-core laptop.
    """
    if ray.is_initialized():
        return
    # Local single-user clusters need no token; a real cluster sets its own auth mode.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Worker output (Ray Train's own lines) reaches the driver only with --verbose; our progress
    # comes through dc3ray.pipeline.progress. Workers' logs stay in Ray's session folder.
    quiet = {"log_to_driver": verbose()}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, **quiet, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                               hint="check the address (`ray status` on the head node), or "
                                    "unset RAY_ADDRESS to run on a local instance") from None
        return
    local_train_defaults()
    # Every worker of the local instance runs the hook below (detached actors included).
    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", _QUIET_HOOK)
    try:
        # address="local": a new instance of our own, even when `ray start` left one running.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2,
                 include_dashboard=False, runtime_env=runtime_env, **quiet, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, OSError) as e:
        raise ClusterError(f"could not start a local Ray instance ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]})",
                           hint="another Ray may hold its ports: `ray stop` ends instances "
                                "started with `ray start`, or set RAY_ADDRESS=auto to join one; "
                                "`--verbose` shows Ray's own log") from None


def local_train_defaults() -> None:
    """Ray Train settings for a local instance, unless the user set them.

    Ray Train V2 starts a PreemptionWatcher actor per run that polls for draining nodes. A local
    instance has no autoscaler and never drains a node, so the watcher only costs a process
    start per run (seconds on 2 cores) and an error-level 'constructor arguments in the object
    store' line in every training log. Set before ray.init, so the local workers (Tune trials
    building their own TorchTrainer) inherit it; a real cluster (RAY_ADDRESS) keeps the watcher.
    """
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


# Ray Train V2 starts a detached PlacementGroupCleaner per run that asks the State API every
# second whether the controller lives. The State API needs the dashboard, which the local
# instance runs without (CPU on 2-core machines), so each poll logs a warning: ~1 line/s that
# buries our progress lines. A local instance's placement groups die with it, so nothing is
# lost by silencing exactly that logger; a real cluster (RAY_ADDRESS) keeps its warnings.
_NOISY_WITHOUT_DASHBOARD = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
_QUIET_HOOK = f"{__name__}._quiet_local_workers"


def _quiet_local_workers() -> None:
    """worker_process_setup_hook of the local instance (see _NOISY_WITHOUT_DASHBOARD)."""
    logging.getLogger(_NOISY_WITHOUT_DASHBOARD).setLevel(logging.ERROR)


def cuda_available_in_cluster() -> bool:
    """True when the Ray cluster advertises at least one GPU."""
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1


# A pool actor whose process dies (lost node, OOM kill, ray.kill) is restarted and its batch
# retried up to this many times. Ray Data's default is forever (-1), which turns a batch that
# kills its actor every time into a run that never ends; this bound makes it an error instead.
# Ray 2.60 takes these two only through map_batches' **ray_remote_args (a RayDeprecationWarning,
# to be removed in Ray 2.64: revisit when the ray pin moves).
ACTOR_MAX_RESTARTS = 5


def actor_pool_kwargs(num_actors: int, num_cpus_per_actor: float = 1.0,
                      use_gpu: bool | None = None) -> dict:
    """map_batches kwargs for a fixed-size actor pool.

    `use_gpu=None` means: one GPU per actor when the cluster has GPUs, CPU otherwise. On small
    machines each actor asks for an explicit num_cpus so the pool cannot starve the read tasks.
    Dead actors are restarted (constructor rerun) and their batches retried, at most
    ACTOR_MAX_RESTARTS times each; exceptions raised by the actor's own code are not retried.
    """
    if use_gpu is None:
        use_gpu = cuda_available_in_cluster()
    kwargs = {"compute": ray.data.ActorPoolStrategy(size=int(num_actors)),
              "num_cpus": float(num_cpus_per_actor),
              "max_restarts": ACTOR_MAX_RESTARTS, "max_task_retries": ACTOR_MAX_RESTARTS}
    if use_gpu:
        kwargs["num_gpus"] = 1
    return kwargs


def configure_data_context(show_progress: bool = True) -> None:
    """Deterministic block order (needed for byte-identical outputs); Ray Data's own progress
    bars only with --verbose (ours: dc3ray.pipeline.progress)."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    # Ray Data's own bars and plans go to stderr: out/logs/ray.log inside a run (dc3ray.logs).
    ctx.enable_progress_bars = show_progress and verbose()


def fit_actor_cpus(pools: list[tuple[int, float]], total_cpus: float,
                   spare: float = 1.0) -> list[float]:
    """CPUs per actor for actor pools that run at the same time, scaled down together when
    they would leave fewer than `spare` of the cluster's `total_cpus` logical CPUs free.

    Ray Data's read and write tasks need a CPU slot too: pools holding every CPU starve the
    reads that feed them and the stage never moves (an Embedder and a GradientFeaturizer pool
    of 1 CPU each on a 2-CPU laptop). total_cpus <= 0 (nothing known yet, e.g. an autoscaling
    cluster with no workers) keeps the requests as they are.
    """
    want = [float(c) for _, c in pools]
    need = sum(n * c for n, c in pools)
    room = max(total_cpus - spare, total_cpus / 2)
    if total_cpus <= 0 or need <= room:
        return want
    return [c * room / need for c in want]


def cluster_cpus() -> float:
    """Logical CPUs of the connected cluster now (0 when it reports none)."""
    return float(ray.cluster_resources().get("CPU", 0.0))


def map_with_actor_pool(ds: "ray.data.Dataset", actor_cls: type, num_actors: int,
                        num_cpus_per_actor: float = 1.0, use_gpu: bool | None = None,
                        **map_kwargs) -> "ray.data.Dataset":
    """ds.map_batches(actor_cls, ...) on a fixed pool (actor_pool_kwargs).

    Ray 2.60 takes max_restarts / max_task_retries only through its deprecated
    `ray_remote_args` (to go in 2.64, no named replacement yet): that one expected warning of
    this call is filtered here; any other stays visible.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated",
                                category=DeprecationWarning)
        return ds.map_batches(actor_cls, **actor_pool_kwargs(num_actors, num_cpus_per_actor,
                                                             use_gpu), **map_kwargs)
