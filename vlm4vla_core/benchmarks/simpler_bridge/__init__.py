"""SimplerEnv-Bridge (planned): the study config, the DAG and the aggregate tables know it; its
importer and evaluator are not part of this version, so its data and evaluation jobs stop with a
message. The protocol facts are in shared/benchmarks/PROTOCOLS.md section 2."""

from vlm4vla_core.benchmarks.base import Benchmark


class SimplerBridgeBenchmark(Benchmark):
    kind = "simpler_bridge"
    action_dim = 7
    keys = {
        "tasks": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "episodes_per_task": {"type": "integer", "minimum": 1},
        "max_steps": {"type": "integer", "minimum": 1},
    }
    required = ("data_path",)
    runnable = False


BENCHMARK = SimplerBridgeBenchmark()
