"""PyTorch's own scaled_dot_product_attention rate on the shapes `icrl bench model` times:
causal attention over [B, H, T, hd], forward and forward + backward, with the flash kernel
forced on CUDA (and the default choice on the CPU). FLOP convention as agent/src/bench.rs:
forward 2*B*H*T^2*hd (causal half of QK^T and PV), forward + backward 3.5 x that.
Prints one JSON object per shape, one per line.

    python3 bench/reference/sdpa_bench.py --device cuda --dtype bf16 --shape 16,8,4096,32 ...
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def timed(fn, iters, device):
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--shape", action="append", required=True, help="B,H,T,hd (repeatable)")
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    for shape in args.shape:
        b, h, t, hd = (int(x) for x in shape.split(","))
        q, k, v = (torch.randn(b, h, t, hd, device=args.device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        if args.device.startswith("cuda"):
            from torch.nn.attention import SDPBackend, sdpa_kernel
            ctx, backend = (lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION])), "flash_attention"
        else:
            import contextlib
            ctx, backend = contextlib.nullcontext, "default"

        def forward():
            with torch.no_grad(), ctx():
                F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def both():
            with ctx():
                F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

        fwd_flops = 2.0 * b * h * t * t * hd
        t_fwd, t_both = timed(forward, args.iters, args.device), timed(both, args.iters, args.device)
        print(json.dumps({
            "bench": "sdpa_reference", "torch": torch.__version__, "device": args.device,
            "dtype": args.dtype, "backend": backend, "shape": [b, h, t, hd],
            "forward_seconds": t_fwd, "forward_tflops_per_s": fwd_flops / t_fwd / 1e12,
            "fwd_bwd_seconds": t_both, "fwd_bwd_tflops_per_s": 3.5 * fwd_flops / t_both / 1e12,
        }), flush=True)


if __name__ == "__main__":
    main()
