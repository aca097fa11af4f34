"""`make test` runs the suite on two workers; the tests sharing an expensive session fixture (a whole study, a
trained model) must run on one worker, or each worker builds the fixture again (minutes each).

Checked on a generated suite that uses the hook of tests/conftest.py and a cheap stand-in for the fixture.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_tests_sharing_an_expensive_fixture_run_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util
            import pytest

            spec = importlib.util.spec_from_file_location("cdeg_conftest", {str(HERE / "conftest.py")!r})
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            pytest_collection_modifyitems = mod.pytest_collection_modifyitems

            @pytest.fixture(scope="session")
            def smoke_xray_models():
                return 1
            """
        )
    )
    (tmp_path / "test_many.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_shared(smoke_xray_models, i):\n    pass\n\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_free(i):\n    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    workers = set(re.findall(r"\[(gw\d)\].*PASSED test_many.py::test_shared", proc.stdout))
    assert len(workers) == 1, (
        f"tests sharing smoke_xray_models ran on {sorted(workers)}:\n{proc.stdout[-2000:]}"
    )
