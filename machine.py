"""What this machine can do: which device, bf16 or fp32, torch.compile or not. A reader learning the
model can skip this file; train.py, sample.py and bench.py import it.

The defaults: CUDA, then Apple's MPS, then the CPU; bf16 where the hardware runs it natively (CUDA from
Ampere on, CPUs with AVX512-BF16 or AMX), fp32 elsewhere, where bf16 would be emulated and slower.
"""
import argparse
import logging
from contextlib import nullcontext

import torch

# torch built for CUDA but run without a GPU says so when it compiles for the CPU; no CUDA code is built here
logging.getLogger("torch.utils.cpp_extension").addFilter(lambda record: "No CUDA runtime" not in str(record.msg))


def best_device():
    """CUDA, then Apple's MPS, then the CPU."""
    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def available_device(name):
    """--device's `type=`: a device this machine has ("cpu", "cuda", "cuda:1", "mps"); else an error
    that argparse prints in one line naming the flag."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{name} is not a device: give cpu, cuda, cuda:N or mps") from None
    kind = device.type
    if not {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(kind):
        raise argparse.ArgumentTypeError(f"this machine has no {kind}: give {best_device()}, or leave --device out")
    if kind == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        last = torch.cuda.device_count() - 1
        raise argparse.ArgumentTypeError(f"this machine has no {name}: give cuda:0"
                                         + (f" to cuda:{last}" if last else ""))
    return name


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


def compile_tested(device):
    """Where torch.compile was tried and pays: CUDA, and x86 CPUs (AVX-512 or AVX2); not ARM CPUs, not MPS."""
    return device.type == "cuda" or (device.type == "cpu"
                                     and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))


def compile_problem(device):
    """Why torch.compile cannot run on this device, as one line, or None where it can. What fails
    depends on the machine (on a CPU, Inductor needs a C++ compiler), so a tiny function is compiled
    and run to find out (5-10 s on a 2-core CPU)."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2, device=device))
    except Exception as e:  # whatever fails, the answer is the same: run the model as it is
        return f"torch.compile does not work here ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})"
    return None
