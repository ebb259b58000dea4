"""An experiment is a list of shell commands in dependency order; a command whose outputs exist is done.

The same list is run from this process (``run_jobs``, resumable: done jobs are skipped) or printed for a
cluster scheduler (``format_jobs``); both execute exactly the same commands. nnU-Net's commands run as their
console scripts; ours (``nnunet_mt``, ``nnunet_mt_ood``) run their ``main(argv)`` in this process with the
job's variables set for its duration: the same code, without a new interpreter's seconds of imports.
"""
import importlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from nnunet_mt.errors import StepFailed


class JobFailed(StepFailed):
    """A command of the experiment exited with an error (its own output says why)."""


@dataclass
class Job:
    title: str  # what the step does, for progress lines
    argv: List[str]  # the command; argv[0] is a console script of this environment (nnUNetv2_*, nnunet_mt*)
    outputs: List[str]  # files that exist once the job has finished
    env: Dict[str, str] = field(default_factory=dict)  # variables set for this command only

    def done(self) -> bool:
        return bool(self.outputs) and all(os.path.exists(p) for p in self.outputs)

    def shell(self) -> str:
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(self.env.items()))
        return prefix + " ".join(shlex.quote(a) for a in self.argv)


def console_script(name: str) -> str:
    """Prefer the console script installed beside this interpreter (the same venv), else PATH."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.path.isfile(local) else (shutil.which(name) or name)


OUR_COMMANDS = {"nnunet_mt": "nnunet_mt.cli", "nnunet_mt_ood": "nnunet_mt_ood.cli"}


def _run_here(job: Job) -> int:
    """Exit code of one of our commands run in this process (main(argv) with the job's variables)."""
    main = importlib.import_module(OUR_COMMANDS[job.argv[0]]).main
    saved = dict(os.environ)
    os.environ.update(job.env)
    try:
        return main(list(job.argv[1:])) or 0
    except SystemExit as e:  # argparse's usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.stdout.flush()
        os.environ.clear()
        os.environ.update(saved)


def format_jobs(jobs: Sequence[Job], pending_only: bool = True) -> str:
    """One line per command (comment lines name the step), in the order they must run."""
    lines = []
    for job in jobs:
        if pending_only and job.done():
            continue
        lines += [f"# {job.title}", job.shell()]
    return "\n".join(lines) + ("\n" if lines else "")


def run_jobs(jobs: Sequence[Job], log=print) -> int:
    """Runs the jobs that are not done, in order; returns how many ran. Raises JobFailed on the first failure."""
    ran = 0
    for i, job in enumerate(jobs, 1):
        if job.done():
            log(f"[{i}/{len(jobs)}] done already: {job.title}")
            continue
        log(f"[{i}/{len(jobs)}] {job.title}\n  $ {job.shell()}")
        start = time.time()
        sys.stdout.flush()
        if job.argv[0] in OUR_COMMANDS:
            code = _run_here(job)
        else:
            code = subprocess.run([console_script(job.argv[0])] + job.argv[1:], env=dict(os.environ, **job.env)).returncode
        if code != 0:
            raise JobFailed(f"step {i} ({job.title}) failed with exit code {code}: {job.shell()}")
        missing = [p for p in job.outputs if not os.path.exists(p)]
        if missing:
            raise JobFailed(f"step {i} ({job.title}) finished but did not write {missing[0]}")
        log(f"[{i}/{len(jobs)}] finished in {time.time() - start:.0f} s: {job.title}")
        ran += 1
    return ran
