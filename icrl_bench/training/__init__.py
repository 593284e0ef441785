"""Training in-context agents: configs (config.py), the run directory (run_dir.py), time budgets
(budget.py) and the loop (loop.py)."""

from icrl_bench.training.config import BASELINES_DIR, RunConfig, TrainConfig, load_run_config, parse_overrides
from icrl_bench.training.loop import TrainResult, train

__all__ = ["BASELINES_DIR", "RunConfig", "TrainConfig", "TrainResult", "load_run_config", "parse_overrides", "train"]
