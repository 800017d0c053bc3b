"""Worker processes exit when the process that started them is killed with SIGKILL, idle or busy.

Real processes and a real ``kill -9``: a child process in a session of its
own starts ragopt's workers (the parse pool and the embedding worker); the
test kills the child and polls that session until nothing in it runs. The
10 s bound is the requirement itself, not a timing guess.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor

import psutil
import pytest

from ragopt.measure.bench.crash import ChildRun, orphans, session_processes
from ragopt.resources.lifeline import lifeline

IDLE_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from ragopt.backends.embedding import embedding_worker
    from ragopt.engine.parse_pool import OFFLINE, parse_pool

    def meet(folder):
        # Returns once two workers are in here at once: both parse workers have started.
        open(os.path.join(folder, str(os.getpid())), "w").close()
        while len(os.listdir(folder)) < 2:
            time.sleep(0.01)
        return os.getpid()

    if __name__ == "__main__":
        embedding_worker(None).submit(os.getpid).result()
        pool = parse_pool(OFFLINE, 2)
        assert len({f.result() for f in [pool.submit(meet, sys.argv[1]) for _ in range(2)]}) == 2
        print("ready", flush=True)
        time.sleep(3600)  # idle, as a notebook kernel after a cell
    """
)


def _workers(session: int):
    return [p for p in session_processes(session) if "spawn_main" in " ".join(p.cmdline())]


def test_idle_workers_exit_when_their_parent_is_killed(tmp_path):
    script, meeting = tmp_path / "idle.py", tmp_path / "meeting"
    script.write_text(IDLE_SCRIPT)
    meeting.mkdir()
    child = subprocess.Popen([sys.executable, str(script), str(meeting)], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert len(_workers(child.pid)) == 3  # two parse workers, the embedding worker
        os.kill(child.pid, signal.SIGKILL)
        assert orphans(child.pid) == 0  # polls the session until nothing runs, for at most 10 s
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
def test_busy_workers_exit_when_an_ingesting_parent_is_killed(tmp_path):
    """Killed as it starts parsing the sample: the parse pool starting, the embedding worker's model loaded."""
    from ragopt.config import RagoptConfig
    from ragopt.measure.workloads import SAMPLE_CORPUS

    config = RagoptConfig.from_env(sim_preset="fast", enable_parse_cache=False)
    log = tmp_path / "child.log"
    run = ChildRun(tmp_path / "kb", SAMPLE_CORPUS, {**os.environ, **config.to_env()}, log)
    try:
        assert run.wait_for("ready"), log.read_text()[-3000:]
        while "parse_start" not in run.events:
            assert run.process.poll() is None, log.read_text()[-3000:]
            run.said["done"].wait(0.01)
        assert _workers(run.process.pid), "no worker process to kill"
        run.kill()
        assert orphans(run.process.pid) == 0  # whatever it had started by the kill, also a moment before
    finally:
        run.process.kill()
        run.process.wait()


def _pid_from_a_thread(pool: ProcessPoolExecutor) -> int:
    pids = []
    thread = threading.Thread(target=lambda: pids.append(pool.submit(os.getpid).result()))
    thread.start()
    thread.join()
    return pids[0]


def test_a_worker_spawned_from_a_thread_that_ended_keeps_running():
    """The kernel's parent-death signal follows the spawning thread, so lifeline leaves it off there."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"), **lifeline())
    try:
        pid = _pid_from_a_thread(pool)  # that thread has ended now
        assert pool.submit(os.getpid).result() == pid
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    finally:
        pool.shutdown()


def _pin(value):
    os.environ["RAGOPT_TEST_PINNED"] = value


def _worker_state():
    return os.environ.get("RAGOPT_TEST_PINNED"), {t.name for t in threading.enumerate()}


def test_lifeline_runs_the_pools_own_initializer_after_its_own():
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"), **lifeline(_pin, ("7",)))
    try:
        pinned, threads = pool.submit(_worker_state).result()
    finally:
        pool.shutdown()
    assert pinned == "7"
    assert "ragopt-lifeline" in threads
