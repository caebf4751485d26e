"""Built-in task plugins: one YAML file per task (see speckd_bench.tasks)."""
