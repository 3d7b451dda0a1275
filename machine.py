"""What this machine can do: which device, bf16 or fp32, torch.compile or not. A reader learning the
model can skip this file; train.py, sample.py and bench.py import it.

The defaults: CUDA, then Apple's MPS, then the CPU; bf16 where the hardware runs it natively (CUDA from
Ampere on, CPUs with AVX512-BF16 or AMX), fp32 elsewhere, where bf16 would be emulated and slower.
"""
import logging
from contextlib import nullcontext

import torch

COMPILE_MINUTES = 10  # a budget this long is compiled by default: 20-25 s of compiling on a CPU pays for itself
COMPILE_STEPS = 2000  # and so is a run of this many steps (a CUDA run's, by default: 40-60 s of compiling there)

# torch built for CUDA but run without a GPU says so when it compiles for the CPU; no CUDA code is built here
logging.getLogger("torch.utils.cpp_extension").addFilter(lambda record: "No CUDA runtime" not in str(record.msg))


def best_device():
    """CUDA, then Apple's MPS, then the CPU."""
    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def synchronize(device):
    """Wait for the work queued on a GPU (CUDA and MPS run asynchronously), so that a clock read next
    times it; a CPU has nothing queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def fast_dtype(device):
    """bf16 where the device runs it natively, so faster than fp32; fp32 elsewhere."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    native = device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return "bf16" if native else "fp32"


def autocast_for(device, dtype):
    """bf16 autocast for dtype "bf16" (matmuls in bf16, the rest in fp32), no-op for "fp32"."""
    return torch.autocast(device.type, torch.bfloat16) if dtype == "bf16" else nullcontext()


def compiles_by_default(device, minutes, steps):
    """Whether a run is compiled unless told: where torch.compile was tried and pays (CUDA, and x86 CPUs with
    AVX2 or AVX-512; not ARM CPUs, not MPS), for a run long enough to earn back its 20-60 s of compiling."""
    tested = device.type == "cuda" or (device.type == "cpu"
                                       and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))
    return tested and (minutes >= COMPILE_MINUTES if minutes else steps >= COMPILE_STEPS)


def choose(device, dtype, compile, minutes, steps, resumed=None):
    """A run's dtype and whether it compiles: as asked; else as the run it resumes (`resumed`: its settings), but
    fp32 on a device that would emulate its bf16; else what this device runs fastest. Returns (dtype, compile,
    why compiling is off, or None). Raises ValueError when --compile was asked where it cannot work."""
    dtype = dtype or ("fp32" if fast_dtype(device) == "fp32" else resumed["dtype"] if resumed else fast_dtype(device))
    asked = compile
    if compile is None:
        compile = resumed["compile"] if resumed else compiles_by_default(device, minutes, steps)
    problem = compile_problem(device) if compile else None
    if problem and asked:
        raise ValueError(f"--compile: {problem}; drop --compile")
    return dtype, compile and not problem, problem


def compile_problem(device):
    """Why torch.compile cannot run on this device, as one line, or None where it can. What fails
    depends on the machine (on a CPU, Inductor needs a C++ compiler), so a tiny function is compiled
    and run to find out (5-10 s on a 2-core CPU)."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2, device=device))
    except Exception as e:  # whatever fails, the answer is the same: run the model as it is
        return f"torch.compile does not work here ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})"
    return None
