"""The whole study in one call: :func:`run` (``cdeg run --config FILE``).

Stages run in order (synth -> segment train -> segment predict -> segment evaluate -> extract -> fit ->
validate -> predict -> report), each only when its options or inputs changed since its last run
(:mod:`cdeg.pipeline.cache`). Each calls the public function of its stage, so every stage remains runnable on
its own with the same results.
"""

from __future__ import annotations

from cdeg.pipeline.config import RunConfig, load_run_config
from cdeg.pipeline.runner import RunResult, run

__all__ = ["RunConfig", "RunResult", "load_run_config", "run"]
