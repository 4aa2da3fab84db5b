"""CALVIN ABC->D (planned): the study config, the DAG and the aggregate tables know it; its importer
and evaluator are not part of this version, so its data and evaluation jobs stop with a message.
The protocol facts are in shared/benchmarks/PROTOCOLS.md section 1."""

from vlm4vla_core.benchmarks.base import Benchmark


class CalvinBenchmark(Benchmark):
    kind = "calvin"
    action_dim = 7
    keys = {"max_steps": {"type": "integer", "minimum": 1, "description": "environment steps per subtask"}}
    required = ("data_path",)
    runnable = False


BENCHMARK = CalvinBenchmark()
