"""PyRadiomics is an extra: only `cdeg extract` needs it (it does not build on Python 3.12+).

Its absence is made real in a subprocess: a sitecustomize on PYTHONPATH makes ``import radiomics`` fail as
it does where the package is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdeg.cohort import Cohort

NO_RADIOMICS = (
    "import sys\nsys.modules['radiomics'] = None  # import radiomics -> ImportError, as uninstalled\n"
)


def _cdeg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    boot = tmp_path / "boot"
    boot.mkdir(exist_ok=True)
    (boot / "sitecustomize.py").write_text(NO_RADIOMICS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(boot), os.environ.get("PYTHONPATH", "")])}
    env["CDEG_NO_PROGRESS"] = "1"
    code = "from cdeg.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


@pytest.mark.slow
def test_extract_says_how_to_install_and_corners_run_without_it(xray_cohort5, tmp_path):
    r = _cdeg(tmp_path, "extract", "--cohort", str(xray_cohort5), "--out", str(tmp_path / "feat"))
    assert r.returncode != 0
    assert "PyRadiomics is not installed" in r.stderr and "pyradiomics==3.0.1" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert not (tmp_path / "feat" / "features.parquet").exists()
    # measurements from corner points need no PyRadiomics
    corners = Cohort.open(xray_cohort5).truth_corners_path
    args = ("extract", "--cohort", str(xray_cohort5), "--corners", str(corners), "--out", str(tmp_path / "c"))
    r = _cdeg(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c" / "features.parquet").is_file()
