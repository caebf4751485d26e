"""Data parallelism through HF accelerate: which process this is, the collectives the train loop and the
evaluation need, and FSDP sharding of a teacher too large for one device.

A run started by `accelerate launch` (or `speckd-bench run --launcher accelerate`) has WORLD_SIZE > 1 in
its environment: accelerate then sets up the process group (NCCL on GPUs, gloo on CPUs) and the device.
A plain run is process 0 of 1 and every collective below is the identity, so the train loop and the
evaluation have one code path for 1 and N processes.

Gradients are summed with an explicit all-reduce after the optimiser step's micro-batches, instead of a
DDP wrapper: the student stays a plain transformers model (target_logits, generate and checkpoints use
it as is), a process whose shard of a micro-batch is empty simply skips it, and the sum is exact.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

from speckd_bench.errors import UserError

LAUNCHERS = ("none", "accelerate")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int
    world: int
    device: torch.device
    accelerator: Any = None
    """The accelerate.Accelerator of a multi-process run (None when world == 1)."""

    @property
    def is_main(self) -> bool:
        """Only the main process writes records, logs, checkpoints, samples and caches."""
        return self.rank == 0

    def shard(self, items: list[Any]) -> list[Any]:
        """This process's part of `items`: every world-th item from its rank (balanced lengths)."""
        return items[self.rank :: self.world]

    def gather(self, part: list[Any]) -> list[Any]:
        """The inverse of shard: every process's part, back in the original order (on every process)."""
        if self.world == 1:
            return list(part)
        parts: list[list[Any]] = [[] for _ in range(self.world)]
        torch_dist.all_gather_object(parts, part)
        return [parts[i % self.world][i // self.world] for i in range(sum(len(p) for p in parts))]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes (float64: token counts stay exact)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(t)
        return t.tolist()

    def max(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return float(t)

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over processes, in place. A gradient a process does not have
        (all its micro-batches were empty) counts as zero."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        works = [torch_dist.all_reduce(p.grad, async_op=True) for p in params]
        for work in works:
            work.wait()

    def broadcast(self, obj: Any) -> Any:
        """The main process's `obj`, on every process."""
        if self.world == 1:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()


def launched_world() -> int:
    """Processes of the run this process belongs to, as the launcher (accelerate / torchrun) set them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@functools.cache
def process_context() -> Dist:
    """This process's Dist, built once: accelerate's state in a launched run, process 0 of 1 otherwise."""
    cuda = torch.cuda.is_available()
    if launched_world() == 1:
        return Dist(0, 1, torch.device("cuda" if cuda else "cpu"))
    from accelerate import Accelerator

    # The harness does its own bf16 autocast; a user's accelerate config must not add another.
    accelerator = Accelerator(cpu=not cuda, mixed_precision="no")
    return Dist(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator)


def shard_teacher(teacher: Any, dist: Dist) -> Any:
    """The frozen teacher sharded with FSDP2 across the run's processes (accelerate's FSDP plugin:
    one shard group per decoder layer, one for the input embeddings, one for the final norm and the
    output layer), on this process's device.

    The loss calls the teacher's base model and reads its output weights directly rather than calling
    its forward. Under FSDP2 each decoder layer gathers its shard in its own forward hook; the root group
    (input embeddings, final norm, output layer) is gathered by one forward through the root here and
    stays gathered, because FSDP2 never reshards the root after forward (torch's fully_shard docs): so
    every process holds the embeddings and output layer in full and the decoder layers sharded, and the
    fused loss can read the output weights as plain tensors. accelerate's Accelerator only
    accepts an FSDP plugin on GPU processes, so the plugin is handed to accelerate's fsdp2_prepare_model
    (what Accelerator.prepare calls) directly: the same code shards on CPU (gloo, tests) and GPUs.
    """
    if dist.world == 1:
        return teacher.to(dist.device)
    from accelerate.utils import FullyShardedDataParallelPlugin, fsdp2_prepare_model

    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True
    )
    dist.accelerator.state.fsdp_plugin = plugin
    sharded = fsdp2_prepare_model(dist.accelerator, teacher)
    with torch.no_grad():
        sharded(input_ids=torch.zeros(1, 1, dtype=torch.long, device=dist.device))
    return sharded


def relaunch(launcher: str, num_processes: int, argv: list[str]) -> int:
    """Run `speckd-bench <argv>` under `accelerate launch` with num_processes processes on this machine
    (one per GPU; gloo on CPUs); its exit code."""
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r} is not one of {', '.join(LAUNCHERS)}")
    if num_processes < 1:
        raise UserError(f"--num-processes {num_processes} must be >= 1 (processes on this machine)")
    if launched_world() > 1:
        raise UserError("this run is already one process of a launched run; drop --launcher")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:  # accelerate's torchrun path (gloo on CPUs, see process_context)
        cmd.append("--multi_gpu")
    cmd += ["-m", "speckd_bench", *argv]
    return subprocess.run(cmd, check=False).returncode


def strip_launch_options(argv: list[str]) -> list[str]:
    """argv without --launcher / --num-processes and their values (what each launched process runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--launcher", "--num-processes"):
            skip = True
        elif not arg.startswith(("--launcher=", "--num-processes=")):
            out.append(arg)
    return out
