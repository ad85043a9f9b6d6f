#!/usr/bin/env python3
"""PyTorch eager twin of test/bench/gpu_train.cpp: the same M4 models, batches
and timing, so that Strata's GPU training step can be compared with PyTorch's
on the same GPU.

The models are the independent reference of this directory
(strata_reference.Translator, moe_reference.MoEFFN), built from the same YAML
configs as the C++ benchmark (PRESETS below mirrors its presets), with these
differences from the reference check, all for training:

* MoE blocks use the training capacity ceil(capacity_factor * k * ceil(S / V))
  instead of the evaluation fraction, and draw the second expert's Gumbel
  noise on the device from torch's generator (Strata draws it from the
  training generator too); the reference code is otherwise untouched.
* The reference's modules call torch.zeros/ones/full/tensor without a
  device; a module-level stand-in for `torch` inside strata_reference and
  moe_reference gives those calls the benchmark's device (torch's global
  set_default_device would route every op of the program through a Python
  TorchFunctionMode and slow eager PyTorch down).
* The embedding is drawn N(0, d^-1/2) (fairseq's init) instead of nn.Embedding's N(0, 1).

Not in the reference, and so not timed on this side: dropout (compare with
Strata run with --set model.dropout=0 --set model.attention_dropout=0) and the
MoE balance loss (a few small reductions per block). Its MoE blocks are the
GShard/fairseq formulation (one-hot [S, E, C] dispatch/combine einsums, one
Linear pair per expert), i.e. what fairseq's MoE layer does.

A step: bf16 autocast (or fp32) forward, F.cross_entropy with label smoothing
0.1 (torch's form is the reference MoE criterion's eps/V), loss summed and
gradients scaled by 1/tokens afterwards (as Strata and fairseq do), AdamW
(betas 0.9/0.98, eps 1e-6, no weight decay: Adam; fused on CUDA). Timing:
--warmup untimed steps, then --steps steps between CUDA events.

  python3 test/reference/gpu_train_torch.py [--configs dense,moe,smoe] [--steps 10] [--json F]
  python3 test/reference/gpu_train_torch.py --device cpu --steps 1 --tiny   # smoke test, no GPU
"""
import argparse
import json
import math
import os
import re
import sys
import time
import traceback
import types

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference  # noqa: E402
import strata_reference  # noqa: E402
from moe_reference import MoEFFN  # noqa: E402
from strata_reference import Perturb, Translator, apply_overrides  # noqa: E402

PAD, EOS = 1, 2
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# name -> (config file under --config-dir, section.key=value overrides, description).
# Keep in step with presets() in test/bench/gpu_train.cpp.
PRESETS = {
    "dense": ("m4_dense.yaml", [], "M4 dense (transformer_base)"),
    "moe": ("m4.yaml", ["moe.experts=8"], "M4 top-2 MoE, 8 experts"),
    "smoe": ("m4_smoe.yaml", [], "M4 SMoE 2-2-2-2"),
}
# --tiny: the same configs shrunk to seconds on a CPU (the smoke test of this script).
TINY = ["model.encoder_layers=2", "model.decoder_layers=2", "model.embed_dim=64", "model.ffn_dim=128",
        "model.attention_heads=4"]


# ------------------------------------------------------------- configs ----
def load_config(path):
    """A sectioned Strata YAML config as {section: {key: value}}, `include:` resolved
    (relative to the including file; the including file's keys win)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        import yaml
        cfg = yaml.safe_load(text) or {}
    except ImportError:
        cfg = strata_reference.read_config(path)
        cfg.pop("include", None)
        m = re.search(r"^include:\s*(\S+)", text, re.M)
        if m:
            cfg["include"] = m.group(1)
    include = cfg.pop("include", None)
    if include:
        base = load_config(os.path.join(os.path.dirname(path), include))
        for section, values in cfg.items():
            if isinstance(values, dict):
                base.setdefault(section, {}).update(values)
            else:
                base[section] = values
        cfg = base
    for section, values in cfg.items():
        if not isinstance(values, dict):
            raise SystemExit(f"{path}: top-level key '{section}' is not a section; write keys inside their section")
    return cfg


# -------------------------------------------------------------- device ----
class _TorchOnDevice(types.ModuleType):
    """Stands in for `torch` inside the reference modules: factory calls without a
    device get the benchmark's device, from_numpy results move there (and
    tensors pass through), everything else is torch's own."""

    _FACTORIES = ("zeros", "ones", "full", "empty", "tensor", "arange")

    def __init__(self, device):
        super().__init__("torch")
        self._device = device

    def __getattr__(self, name):
        attr = getattr(torch, name)
        device = self._device
        if name in self._FACTORIES:
            def factory(*args, **kwargs):
                kwargs.setdefault("device", device)
                return attr(*args, **kwargs)
            return factory
        if name == "from_numpy":
            return lambda a: a if isinstance(a, torch.Tensor) else torch.from_numpy(a).to(device)
        setattr(self, name, attr)  # later lookups skip __getattr__
        return attr


def install_device(device):
    shim = _TorchOnDevice(device)
    strata_reference.torch = shim
    moe_reference.torch = shim

    def gumbel(seed, offset, n):
        # training noise: torch's generator on the device (the reference's Philox
        # stream is the evaluation one, drawn on the host with numpy)
        u = torch.rand(n, device=device, dtype=torch.float32).clamp_(1e-20, 1 - 1e-7)
        return -torch.log(-torch.log(u))

    moe_reference.gumbel = gumbel


# --------------------------------------------------------------- model ----
def build_model(cfg, vocab, device):
    model = Translator(cfg, vocab, PAD, Perturb(None))
    d = cfg["model"]["embed_dim"]
    with torch.no_grad():
        emb = model.encoder.embed_tokens.weight
        emb.normal_(0.0, d ** -0.5)
        emb[PAD].zero_()
    for m in model.modules():
        if isinstance(m, MoEFFN):
            m.frac = -1.0  # training capacity (MoEFFN._capacity), not the evaluation fraction
            m.stratum_of = m.stratum_of.to(device)
    return model.to(device).train()


def random_batch(B, S, T, vocab, seed, device):
    """Random real tokens (ids >= 4, never <pad>); prev = </s> + target shifted."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (B, S), generator=g, device="cpu")
    tgt = torch.randint(4, vocab, (B, T), generator=g, device="cpu")
    prev = torch.cat([torch.full((B, 1), EOS, dtype=torch.long, device="cpu"), tgt[:, :-1]], dim=1)
    return src.to(device), prev.to(device), tgt.to(device)


def make_optimizer(model, device):
    kw = dict(lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    if device.type == "cuda":
        try:
            return torch.optim.AdamW(model.parameters(), fused=True, **kw), True
        except (TypeError, RuntimeError):
            pass
    return torch.optim.AdamW(model.parameters(), **kw), False


def train_step(model, opt, batch, vocab, amp_dtype, smoothing, read_loss):
    src, prev, tgt = batch
    ntok = tgt.numel()  # no padding in these batches
    with torch.autocast(device_type=src.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        logits = model(src, prev)
        loss = F.cross_entropy(logits.reshape(-1, vocab).float(), tgt.reshape(-1), ignore_index=PAD,
                               label_smoothing=smoothing, reduction="sum")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    torch._foreach_mul_(grads, 1.0 / ntok)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item() / ntok if read_loss else None


class Timer:
    """CUDA events on the current stream (no host sync between steps), or the wall clock on a CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.marks = []

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def intervals_ms(self):
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [1e3 * (b - a) for a, b in zip(self.marks, self.marks[1:])]


def matmul_tflops(device, dtype, n=8192, iters=20):
    """[n,n] @ [n,n] in dtype, TFLOP/s over `iters` products after 3 warm-ups (CUDA only)."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    stop.record()
    stop.synchronize()
    return 2.0 * n ** 3 * iters / (start.elapsed_time(stop) / 1e3) / 1e12


def run(name, args, device, amp_dtype):
    file, overrides, what = PRESETS[name]
    cfg = load_config(os.path.join(args.config_dir, file))
    apply_overrides(cfg, overrides + (TINY if args.tiny else []) + (args.set or []))
    V = int(cfg["model"].get("vocab_size", 0) or 0) or args.vocab
    smoothing = float(cfg.get("train", {}).get("label_smoothing", 0.1))
    seed = int(cfg.get("train", {}).get("seed", 42))
    B = max(1, args.tokens // args.seq)
    torch.manual_seed(seed)
    model = build_model(cfg, V, device)
    opt, fused = make_optimizer(model, device)
    params = sum(p.numel() for p in model.parameters())
    batches = [random_batch(B, args.seq, args.seq, V, 100 + i, device) for i in range(4)]

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    first = None
    for i in range(args.warmup):
        loss = train_step(model, opt, batches[i % 4], V, amp_dtype, smoothing, i == 0)
        first = loss if i == 0 else first
    timer = Timer(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.steps):
        timer.mark()
        train_step(model, opt, batches[(i + args.warmup) % 4], V, amp_dtype, smoothing, False)
    timer.mark()
    ms = timer.intervals_ms()
    wall_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
    last = train_step(model, opt, batches[0], V, amp_dtype, smoothing, True)
    step_ms = sum(ms) / len(ms)
    tokens = B * args.seq
    return {
        "config": name, "description": what, "config_file": file, "params": params, "batch_sentences": B,
        "src_tokens": tokens, "tgt_tokens": tokens, "step_ms": step_ms, "step_ms_min": min(ms),
        "step_ms_median": sorted(ms)[len(ms) // 2], "wall_step_ms": 1e3 * wall_s / args.steps,
        "tokens_per_s": tokens / (step_ms / 1e3), "peak_mem_gib": peak, "first_loss": first, "last_loss": last,
        "fused_adamw": fused,
    }


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="dense,moe,smoe", help="comma-separated: " + ", ".join(PRESETS))
    ap.add_argument("--config-dir", default=os.path.join(ROOT, "jobs", "configs"))
    ap.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="config override, repeatable")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per config")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--tokens", type=int, default=None, help="target tokens per step (default 4096; --tiny 256)")
    ap.add_argument("--seq", type=int, default=None, help="sentence length (default 32; --tiny 16)")
    ap.add_argument("--vocab", type=int, default=None,
                    help="vocabulary when a config says 0 (default 32000; --tiny 1000)")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="2+2 layers, d 64: a seconds-long smoke test")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    args.tokens = args.tokens or (256 if args.tiny else 4096)
    args.seq = args.seq or (16 if args.tiny else 32)
    args.vocab = args.vocab or (1000 if args.tiny else 32000)
    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be at least 1")
    names = [n for n in args.configs.split(",") if n]
    for n in names:
        if n not in PRESETS:
            ap.error(f"unknown config '{n}' (expected {', '.join(PRESETS)})")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_train_torch: no CUDA device visible", file=sys.stderr)
        return 1
    # fp32 means fp32, as in Strata. torch >= 2.9 deprecates these flags in
    # favour of fp32_precision (a warning); never let that stop the benchmark.
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except (AttributeError, RuntimeError) as e:
        print(f"gpu_train_torch: could not turn TF32 off ({e}); bf16 runs are not affected", file=sys.stderr)
    install_device(device)
    amp_dtype = torch.bfloat16 if args.precision == "bf16" else None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = matmul_tflops(device, torch.bfloat16 if amp_dtype else torch.float32)
    print(f"PyTorch {torch.__version__} on {gpu}; {args.precision} matmul 8192^3: "
          + (f"{peak:.1f} TFLOP/s" if peak else "not measured (CPU)"))
    B = max(1, args.tokens // args.seq)
    print(f"batch {B} x {args.seq} source / target tokens, {args.warmup} warm-up + {args.steps} timed steps"
          + (", tiny models" if args.tiny else "") + "; no dropout (the reference has none)")
    print(f"{'config':6s} {'params':>9s} {'tgt tok':>9s} {'step ms':>9s} {'min ms':>9s} {'tgt tok/s':>12s} "
          f"{'mem GiB':>8s} {'loss first>last':>15s}")
    # Each config on its own: one that fails is reported and the others still
    # run; the JSON is rewritten after every config, so a run stopped by a time
    # limit keeps what it measured.
    results, failed = [], {}

    def write_json():
        if not args.json:
            return
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"benchmark": "gpu_train_torch", "torch": torch.__version__, "gpu": gpu,
                       "device": str(device), "precision": args.precision, "matmul_tflops": peak,
                       "tokens": args.tokens, "seq": args.seq, "warmup": args.warmup, "steps": args.steps,
                       "tiny": args.tiny, "set": args.set or [], "configs": results, "failed": failed}, f, indent=2)
            f.write("\n")

    for n in names:
        try:
            r = run(n, args, device, amp_dtype)
        except Exception as e:  # noqa: BLE001 (report, then go on with the next config)
            traceback.print_exc()
            print(f"gpu_train_torch: {n}: error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            failed[n] = f"{type(e).__name__}: {e}"[:500]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            write_json()
            continue
        print(f"{r['config']:6s} {r['params'] / 1e6:8.1f}M {r['tgt_tokens']:9d} {r['step_ms']:9.2f} "
              f"{r['step_ms_min']:9.2f} {r['tokens_per_s']:12.0f} {r['peak_mem_gib']:8.2f} "
              f"{r['first_loss']:6.2f}>{r['last_loss']:<6.2f}", flush=True)
        if not (math.isfinite(r["first_loss"]) and math.isfinite(r["last_loss"])):
            print(f"gpu_train_torch: {n}: the loss is not finite", file=sys.stderr)
            failed[n] = "the loss is not finite"
        results.append(r)
        write_json()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
