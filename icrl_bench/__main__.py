"""`python -m icrl_bench ...`: the `icrl-bench` CLI where no console script is on PATH."""

from icrl_bench.cli import main

main()
