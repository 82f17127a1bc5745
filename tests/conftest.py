import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def run_expid(config_dir, expid, cwd, *extra, timeout=300):
    """Run ``run_expid.py`` as a user would: a subprocess in another working directory."""
    cmd = [sys.executable, os.path.join(REPO, "run_expid.py"), "--config", str(config_dir),
           "--expid", expid, "--gpu", "-1", *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path):
    """A copy of the project's configs and embedded data; runs happen in ``<tmp>/work``."""
    shutil.copytree(os.path.join(REPO, "config"), tmp_path / "config")
    shutil.copytree(os.path.join(REPO, "data", "tiny_amazon"), tmp_path / "data" / "tiny_amazon")
    (tmp_path / "work").mkdir()
    return tmp_path
