"""engine.run_lock: one writer per run folder; the holder is named; a dead holder's lock is taken over."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from pyg_sdfl.engine.run_lock import LOCK_NAME, RunFolderLocked, RunLock

HOLD = ("import sys, time\n"
        "from pyg_sdfl.engine.run_lock import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")


def test_the_lock_is_released_on_exit_even_after_an_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunLock(tmp_path):
            holder = json.loads((tmp_path / LOCK_NAME).read_text())
            assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
            1 / 0
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):  # free again
        pass


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderLocked, match=rf"in use by process {os.getpid()} on {socket.gethostname()} "
                                                  rf"\(started .*\); use another folder"):
            RunLock(tmp_path).acquire()
        assert (tmp_path / LOCK_NAME).exists()  # the refused one did not remove the holder's lock


def test_a_live_process_holds_the_folder_and_its_stale_lock_is_taken_over_after_a_kill(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderLocked, match=rf"in use by process {holder.pid} "):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with caplog.at_level(logging.WARNING, logger="pyg_sdfl.engine.run_lock"):
        with RunLock(tmp_path):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over the stale lock {tmp_path / LOCK_NAME} of process {holder.pid}" in caplog.text


def test_a_lock_from_another_host_or_unreadable_is_never_taken_over(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": 1, "host": "other-machine", "started": "2025-01-01T00:00:00+00:00"}))
    with pytest.raises(RunFolderLocked, match="in use by process 1 on other-machine"):
        RunLock(tmp_path).acquire()
    lock.write_text("")
    with pytest.raises(RunFolderLocked, match=r"exists but cannot be read\); use another folder, or delete "
                                              r".*run.lock if no run is using"):
        RunLock(tmp_path).acquire()


def test_a_refused_run_puts_back_the_holders_launcher_records(tmp_path):
    record = tmp_path / ".hydra" / "overrides.yaml"
    record.parent.mkdir()
    record.write_text("- seed=0\n")
    with RunLock(tmp_path, records=[".hydra/overrides.yaml"]):
        record.write_text("- seed=1\n")  # what the second run's launcher writes before it asks for the lock
        with pytest.raises(RunFolderLocked):
            RunLock(tmp_path, records=[".hydra/overrides.yaml"]).acquire()
        assert record.read_text() == "- seed=0\n"
