"""benchmarks/build_scale.py runs end to end in --quick mode: both builders on 20,000
TaobaoAd_x1-schema rows, identical outputs, one JSON result per run and the table."""
import json
import os
import subprocess
import sys

from conftest import REPO


def test_build_scale_quick(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "build_scale.py"), "--quick",
                           "--scratch", str(tmp_path / "scratch"), "--results", str(results)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| 20,000 |" in proc.stdout and "identical to FuxiCTR's" in proc.stdout
    records = {r["builder"]: r for r in (json.load(open(results / f)) for f in os.listdir(results))}
    assert set(records) == {"fuxictr", "streaming"}
    assert all(r["status"] == "ok" and r["peak_pss_gb"] > 0 and r["wall_s"] > 0 for r in records.values())
    assert records["streaming"]["same_as_fuxictr"] == "identical to FuxiCTR's"
    assert not os.path.exists(tmp_path / "scratch" / "csv_20000")  # quick mode leaves no data
