"""The fault benchmark's quick mode, from CI: kills at steps of the commit (SIGINT, SIGTERM, SIGKILL)
of synthetic sets and of ``predict`` itself leave no mixed set and no hidden folder (issue 25).

The benchmark has teeth: with the journal discarded on Ctrl-C (the bug of issue 25, R1) the same
quick run counts mixed sets.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_fault_benchmark_leaves_nothing_mixed_and_nothing_hidden(project_root, tmp_path):
    out = tmp_path / "bench_faults.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(project_root / "benchmarks" / "bench_faults.py"),
            "--quick",
            "--synthetic-kills",
            "6",
            "--commit-kills",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    goals = report["goals"]
    assert goals["runs_killed"] >= 6, goals  # the kills did land
    assert goals["sets_mixed"] == 0, report["commit_kills"]
    assert goals["hidden_left"] == 0, report["commit_kills"]
    assert goals["good_complete_after_rerun"] == goals["good_slides"] == 2
    signals = {r["signal"] for r in report["commit_kills"]["synthetic"]["rounds"]}
    assert signals == {"SIGINT", "SIGTERM", "SIGKILL"}
    assert proc.returncode == 0 and goals["met"]
