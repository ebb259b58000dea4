"""Multi-process (gloo) test harness: hard timeouts, and a teardown that leaves no gloo thread behind.

A worker is ``fn(rank, *args)``; it calls ``init_group`` first and ``teardown_group`` last. Everything the
worker needs must be imported before ``init_group`` (at the test module's top level): see test_ddp.py for
why an import made while the group exists turns teardown into an intermittent abort.
"""
import os
import time
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
COLLECTIVE_TIMEOUT = timedelta(seconds=60)  # a rank that waits longer for its peer fails instead of hanging


def native_threads() -> int:
    """Threads of this process, counted by the kernel (gloo's threads are invisible to ``threading``)."""
    return len(os.listdir("/proc/self/task"))


def init_group(rank: int, init_file: str, world: int = WORLD) -> int:
    """Joins the gloo group of ``world`` ranks; returns how many threads the group started, for
    ``teardown_group``."""
    before = native_threads()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT)
    return native_threads() - before


def teardown_group(group_threads: int) -> None:
    """Synchronises the ranks, destroys the group and checks that gloo's threads were joined.

    If the group object outlives ``destroy_process_group`` (a leaked reference), its threads keep running
    into interpreter shutdown, where releasing a tensor aborts the process now and then; this check turns
    that 1-in-5 abort into a failure every time, with its cause.
    """
    dist.barrier()
    before = native_threads()
    dist.destroy_process_group()
    left = group_threads - (before - native_threads())
    if left > 0:
        raise RuntimeError(f"{left} gloo thread(s) still alive after destroy_process_group: something kept a "
                           f"reference to the process group (an import after init_process_group?)")


def run_ranks(fn, args: tuple, timeout_s: float, nprocs: int = WORLD) -> None:
    """Runs ``fn(rank, *args)`` in ``nprocs`` spawned processes; raises if one fails or all have not
    finished within ``timeout_s`` seconds (the survivors are killed)."""
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            for process in context.processes:
                process.join(5)
            raise TimeoutError(f"{fn.__name__}: {nprocs} ranks did not finish within {timeout_s:.0f} s")
