"""Shared fixtures: deterministic seeds and few threads so the suite behaves the same on 2 cores and in CI; a
private PostgreSQL server for the tests that need one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from glob import glob
from pathlib import Path

import pytest
import torch

# A shell that starts the suite in the background (`make test &` in a script) makes it ignore SIGINT, and exec
# passes an ignored signal on: the Ctrl-C tests, here and in the commands they start, would wait in vain. Python's own
# handler here gives this process Ctrl-C back, and every child the default (exec resets a handled signal).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


def _pg_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_url():
    """A private PostgreSQL server on 127.0.0.1 (a free port, a temp dir), with one database; stopped afterwards."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (.ci/run installs Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="effscope-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as nobody, who owns the temp dir
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chmod(root, 0o755)
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def pg(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], cwd=root, check=True, capture_output=True, timeout=60)

    data = root / "data"
    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
       f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "start")  # fmt: skip
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "effscope")
        yield f"postgresql://postgres@127.0.0.1:{port}/effscope"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An ImageFolder of 2 classes x 6 small PNG images (the calibration tests' data)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(6):
            Image.fromarray((rng.random((36, 36, 3)) * 255).astype(np.uint8)).save(root / c / f"{i}.png")
    return root
