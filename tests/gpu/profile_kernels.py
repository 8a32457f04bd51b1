"""Where each benchmark side spends its GPU time: the kernels and copies of one call of every side
of the benchmark's cases (tests/gpu/bench.py), from torch.profiler, with the call's host time.
Tells slow kernels (one kernel near the side's time) from launch-bound steps (many short
kernels, host time above GPU time) and shows what a side runs beyond its main kernel.

    python tests/gpu/profile_kernels.py [--out kernels.txt] [--calls 3] [case substrings...]
"""

import argparse
import sys
import time

import torch
from bench import CASES, with_tf32
from torch.profiler import ProfilerActivity, profile

import torch_ops


def device_us(event):
    """An event's GPU microseconds (torch >= 2.4 names it device_time_total)."""
    return getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)


def side_report(fn, calls):
    """Lines: per call, the host time, the GPU time and kernel count, then each kernel or copy."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        host_us = (time.perf_counter() - start) * 1e6 / calls
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.key_averages() if device_us(e) > 0), key=device_us, reverse=True)
    gpu_us = sum(device_us(e) for e in kernels) / calls
    launches = sum(e.count for e in kernels) / calls
    lines = [f"  host {host_us:8.1f} us  GPU {gpu_us:8.1f} us  {launches:.0f} kernels and copies per call"]
    for e in kernels[:12]:
        lines.append(f"    {device_us(e) / calls:8.1f} us  x{e.count / calls:<4.0f} {e.key[:110]}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--calls", type=int, default=3, help="profiled calls of each side (after one warm-up)")
    parser.add_argument("cases", nargs="*", help="only the cases whose name contains one of these")
    args = parser.parse_args(argv)
    ok, why = torch_ops.available()
    if not ok:
        print(f"kernel profile skipped: {why}")
        return 0
    torch_ops.set_tf32(False)
    lines = [torch.cuda.get_device_name()]
    for name, (build, _) in CASES.items():
        if args.cases and not any(part in name for part in args.cases):
            continue
        sides = build()
        sides["deterministic_tf32"] = with_tf32(sides["deterministic"])
        for side, fn in sides.items():
            report = [f"{name} / {side}", *side_report(fn, args.calls)]
            print("\n".join(report), flush=True)
            lines.extend(report)
        del sides
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
