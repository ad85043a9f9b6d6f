#!/usr/bin/env python3
"""Independent PyTorch reference for Strata's translation model and loss.

Reads a Strata checkpoint (config.yaml + model.safetensors) and a batch dumped
by `strata-score --dump-batch DIR` (DIR/batch.safetensors + DIR/strata_loss.json),
recomputes the label-smoothed loss and the NLL of that batch with dropout off,
in float64 and in float32, and compares them with Strata's numbers.

The model is written from the published math (fairseq's pre-norm transformer
with --share-all-embeddings, sinusoidal positions, ReLU FFN; MoE, SMoE, EOM and
CMR blocks in moe_reference.py from docs/smoe_spec.md), not from Strata's C++:
see README.md in this directory for the equations.

Exit status: 0 the numbers agree within --rtol; 1 they do not (the message
says which and by how much); 2 the inputs are unusable or unsupported.

--perturb NAME deliberately changes one piece of the math (the e2e test uses it
to prove the comparison is sensitive: with any perturbation the check must
fail); --sensitivity tries all that apply to the checkpoint's model in one
process; --list-perturbations prints them. --set section.key=value overrides
the checkpoint's config as strata-score --set does.
"""
import argparse
import json
import math
import os
import re
import struct
import sys
import traceback

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from moe_reference import MOE_PERTURBATIONS, MoEFFN, moe_settings, philox_self_test

PERTURBATIONS = {
    "attention_scale": "scale attention scores by 1/sqrt(embed_dim) instead of 1/sqrt(head_dim)",
    "ln_eps": "LayerNorm epsilon 1e-2 instead of the configured one",
    "positions": "count positions from 0 instead of padding_idx + 1",
    "sinusoid_interleave": "interleave sin/cos in the position table instead of [sin | cos]",
    "embed_scale": "do not scale token embeddings by sqrt(embed_dim)",
    "causal_mask": "let decoder self-attention see future tokens",
    "key_padding": "do not mask padded source tokens in attention",
    "post_norm": "post-norm layers (LayerNorm after the residual add) instead of pre-norm",
    "final_ln": "skip the final LayerNorm of the encoder and the decoder",
    "activation": "GELU instead of ReLU in the FFN",
    "head_split": "split heads as [dh, H] instead of [H, dh]",
    "smoothing_form": "use the other label-smoothing form (moe <-> fairseq)",
}
PERTURBATIONS.update({name: desc for name, (desc, _) in MOE_PERTURBATIONS.items()})
DENSE_PERTURBATIONS = [n for n in PERTURBATIONS if n not in MOE_PERTURBATIONS]


def applicable_perturbations(cfg):
    """Every dense perturbation, plus the MoE ones this checkpoint's blocks exercise."""
    settings = moe_settings(cfg)
    return sorted(DENSE_PERTURBATIONS + [n for n, (_, applies) in MOE_PERTURBATIONS.items()
                                         if settings["experts"] > 0 and applies(settings)])


class InputError(Exception):
    """The checkpoint or the dump cannot be used (exit status 2)."""


# --------------------------------------------------------------- files ----
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "BF16": "<u2"}


def read_safetensors(path):
    """Minimal safetensors reader: u64 header size, JSON header, raw LE bytes."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}")
    if len(raw) < 8:
        raise InputError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise InputError(f"{path}: header size {n} exceeds the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise InputError(f"{path}: tensor '{name}' has unsupported dtype {dt}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        arr = np.frombuffer(data[begin:end], dtype=_ST_DTYPES[dt])
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise InputError(f"{path}: tensor '{name}' holds {arr.size} values for shape {list(shape)}")
        if dt == "BF16":  # bfloat16 is the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(arr.reshape(shape).copy())
    return out


def _scalar(text):
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(t) for t in text[1:-1].split(",") if t.strip()]
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def read_config(path):
    """config.yaml as {section: {key: value}} (python3-yaml when installed)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}")
    try:
        import yaml
        return yaml.safe_load(text)
    except ImportError:
        pass
    # Strata writes a sectioned, one-key-per-line file; that is all this parses
    # (a comment starts at a '#' after whitespace, as in YAML).
    cfg, section = {}, None
    for line in text.splitlines():
        body = re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if not body.strip():
            continue
        key, _, value = body.strip().partition(":")
        if not line.startswith(" "):
            section = cfg.setdefault(key, {})
        elif section is not None:
            section[key] = _scalar(value)
    return cfg


# --------------------------------------------------------------- model ----
class Perturb:
    def __init__(self, name=None):
        self.name = name

    def __call__(self, name):
        return self.name == name


def sinusoidal_positions(num, dim, padding_idx, perturb):
    """Vaswani et al.'s table as fairseq lays it out: row p = [sin(p w) | cos(p w)],
    w_i = 10000^(-i / (dim/2 - 1)); the padding row is zero."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    w = torch.pow(torch.tensor(10000.0, dtype=torch.float64), -i / (half - 1))
    angle = torch.arange(num, dtype=torch.float64)[:, None] * w[None, :]
    if perturb("sinusoid_interleave"):
        table = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(num, dim)
    else:
        table = torch.cat([angle.sin(), angle.cos()], dim=1)
    table[padding_idx] = 0
    return table


def position_ids(tokens, padding_idx, perturb):
    """fairseq's make_positions: real tokens get padding_idx + 1, + 2, ...; pads get padding_idx."""
    real = tokens.ne(padding_idx).long()
    pos = torch.cumsum(real, dim=1) * real + padding_idx
    if perturb("positions"):
        pos = torch.where(real.bool(), pos - (padding_idx + 1), pos)
    return pos


class MultiheadAttention(nn.Module):
    def __init__(self, dim, heads, perturb):
        super().__init__()
        self.dim, self.heads, self.head_dim, self.perturb = dim, heads, dim // heads, perturb
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x):  # [B, T, d] -> [B, H, T, dh]
        B, T, _ = x.shape
        if self.perturb("head_split"):
            return x.view(B, T, self.head_dim, self.heads).permute(0, 3, 1, 2)
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, query, memory, key_pad, causal):
        """query [B, Tq, d], memory [B, Tk, d], key_pad [B, Tk] bool (True = pad)."""
        B, Tq, _ = query.shape
        Tk = memory.shape[1]
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
        scale = self.dim if self.perturb("attention_scale") else self.head_dim
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(scale)  # [B, H, Tq, Tk]
        blocked = torch.zeros(B, 1, Tq, Tk, dtype=torch.bool)
        if key_pad is not None and not self.perturb("key_padding"):
            blocked = blocked | key_pad[:, None, None, :]
        if causal and not self.perturb("causal_mask"):
            blocked = blocked | torch.ones(Tq, Tk, dtype=torch.bool).triu(1)[None, None]
        probs = F.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(B, Tq, self.dim)
        return self.out_proj(ctx)


class LayerNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class DenseFFN(nn.Module):
    """Pre-norm FFN sub-block: x + fc2(act(fc1(LN(x)))). Its parameters sit in
    the layer's namespace in the checkpoint (fairseq's fc1/fc2/final_layer_norm)."""

    checkpoint_prefix = ""  # "layers.N.ffn.fc1.weight" <-> "layers.N.fc1.weight"

    def __init__(self, dim, ffn_dim, eps, perturb):
        super().__init__()
        self.perturb = perturb
        self.final_layer_norm = LayerNorm(dim, eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)

    def _act(self, h):
        return F.gelu(h) if self.perturb("activation") else F.relu(h)

    def forward(self, x, pad):
        if self.perturb("post_norm"):
            return self.final_layer_norm(x + self.fc2(self._act(self.fc1(x))))
        return x + self.fc2(self._act(self.fc1(self.final_layer_norm(x))))


def make_ffn(cfg, decoder, layer, perturb):
    """The FFN block of one layer: an MoE block (moe_reference.MoEFFN) in every
    layer with (layer + 1) % moe_freq == 0 when moe.experts > 0
    (encoder_/decoder_moe_freq override moe_freq), the dense FFN elsewhere."""
    m, moe = cfg["model"], cfg.get("moe", {}) or {}
    experts = int(moe.get("experts", 0) or 0)
    if experts > 0:
        freq = int(moe.get("decoder_moe_freq" if decoder else "encoder_moe_freq", -1))
        if freq < 0:
            freq = int(moe.get("moe_freq", 2))
        if freq > 0 and (layer + 1) % freq == 0:
            act = lambda h: F.gelu(h) if perturb("activation") else F.relu(h)  # noqa: E731
            try:
                return MoEFFN(cfg, decoder, layer, ln_eps(cfg, perturb), perturb, act)
            except ValueError as e:
                raise InputError(f"{'decoder' if decoder else 'encoder'} layer {layer}: {e}")
    return DenseFFN(m["embed_dim"], m["ffn_dim"], ln_eps(cfg, perturb), perturb)


def ln_eps(cfg, perturb):
    return 1e-2 if perturb("ln_eps") else float(cfg["model"].get("layernorm_eps", 1e-5))


class EncoderLayer(nn.Module):
    def __init__(self, cfg, index, perturb):
        super().__init__()
        d, eps = cfg["model"]["embed_dim"], ln_eps(cfg, perturb)
        self.perturb = perturb
        self.self_attn = MultiheadAttention(d, cfg["model"]["attention_heads"], perturb)
        self.self_attn_layer_norm = LayerNorm(d, eps)
        self.ffn = make_ffn(cfg, False, index, perturb)

    def forward(self, x, pad):
        if self.perturb("post_norm"):
            x = self.self_attn_layer_norm(x + self.self_attn(x, x, pad, False))
        else:
            h = self.self_attn_layer_norm(x)
            x = x + self.self_attn(h, h, pad, False)
        return self.ffn(x, pad)


class DecoderLayer(nn.Module):
    def __init__(self, cfg, index, perturb):
        super().__init__()
        d, heads, eps = cfg["model"]["embed_dim"], cfg["model"]["attention_heads"], ln_eps(cfg, perturb)
        self.perturb = perturb
        self.self_attn = MultiheadAttention(d, heads, perturb)
        self.self_attn_layer_norm = LayerNorm(d, eps)
        self.encoder_attn = MultiheadAttention(d, heads, perturb)
        self.encoder_attn_layer_norm = LayerNorm(d, eps)
        self.ffn = make_ffn(cfg, True, index, perturb)

    def forward(self, x, tgt_pad, enc, enc_pad):
        if self.perturb("post_norm"):
            x = self.self_attn_layer_norm(x + self.self_attn(x, x, tgt_pad, True))
            x = self.encoder_attn_layer_norm(x + self.encoder_attn(x, enc, enc_pad, False))
        else:
            h = self.self_attn_layer_norm(x)
            x = x + self.self_attn(h, h, tgt_pad, True)
            h = self.encoder_attn_layer_norm(x)
            x = x + self.encoder_attn(h, enc, enc_pad, False)
        return self.ffn(x, tgt_pad)


class Stack(nn.Module):
    def __init__(self, cfg, layer_cls, n, perturb):
        super().__init__()
        self.layers = nn.ModuleList([layer_cls(cfg, i, perturb) for i in range(n)])
        self.layer_norm = LayerNorm(cfg["model"]["embed_dim"], ln_eps(cfg, perturb))


class Translator(nn.Module):
    """Encoder-decoder transformer with one embedding matrix for the encoder
    input, the decoder input and the output projection."""

    def __init__(self, cfg, vocab_size, padding_idx, perturb):
        super().__init__()
        m = cfg["model"]
        if not m.get("share_all_embeddings", True):
            raise InputError("share_all_embeddings: false is not what Strata trains; the reference ties all three")
        self.cfg, self.pad, self.perturb = cfg, padding_idx, perturb
        self.dim = m["embed_dim"]
        self.encoder = Stack(cfg, EncoderLayer, m["encoder_layers"], perturb)
        self.decoder = Stack(cfg, DecoderLayer, m["decoder_layers"], perturb)
        self.encoder.embed_tokens = nn.Embedding(vocab_size, self.dim, padding_idx=padding_idx)
        max_pos = max(m["max_source_positions"], m["max_target_positions"])
        self.register_buffer("positions", sinusoidal_positions(max_pos + padding_idx + 1, self.dim, padding_idx,
                                                               perturb), persistent=False)

    def embed(self, tokens):
        scale = 1.0 if self.perturb("embed_scale") else math.sqrt(self.dim)
        x = scale * self.encoder.embed_tokens(tokens)
        return x + F.embedding(position_ids(tokens, self.pad, self.perturb), self.positions.to(x.dtype))

    def forward(self, src, prev):
        src_pad, tgt_pad = src.eq(self.pad), prev.eq(self.pad)
        x = self.embed(src)
        for layer in self.encoder.layers:
            x = layer(x, src_pad)
        enc = x if self.perturb("final_ln") else self.encoder.layer_norm(x)
        y = self.embed(prev)
        for layer in self.decoder.layers:
            y = layer(y, tgt_pad, enc, src_pad)
        if not self.perturb("final_ln"):
            y = self.decoder.layer_norm(y)
        return F.linear(y, self.encoder.embed_tokens.weight)  # [B, T, V]


def checkpoint_name(param_name):
    """Maps a reference parameter name to Strata's (fairseq's) checkpoint name."""
    return param_name.replace(".ffn.", "." + DenseFFN.checkpoint_prefix)


def load_weights(model, tensors, path):
    wanted = {checkpoint_name(n): p for n, p in model.named_parameters()}
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    if missing or unexpected:
        raise InputError(f"{path}: parameter names differ from the reference model: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    with torch.no_grad():
        for name, p in wanted.items():
            t = tensors[name]
            if tuple(t.shape) != tuple(p.shape):
                raise InputError(f"{path}: '{name}' has shape {list(t.shape)}, the reference expects {list(p.shape)}")
            p.copy_(t.to(torch.float64))


# ---------------------------------------------------------------- loss ----
def smoothed_loss(logits, target, padding_idx, eps, form):
    """Cross-entropy against the label-smoothed target distribution q, summed over
    non-pad tokens. moe: q = (1 - eps) onehot + eps/V (every class);
    fairseq: q = 1 - eps on the target and eps/(V-1) on each other class.
    Returns (loss_sum, nll_sum, tokens, per-token NLL [B, T] with 0 at padding)."""
    V = logits.shape[-1]
    lprobs = F.log_softmax(logits, dim=-1)  # [B, T, V]
    keep = target.ne(padding_idx)
    safe_target = target.masked_fill(~keep, 0)
    token_nll = -lprobs.gather(-1, safe_target[..., None])[..., 0] * keep
    onehot = F.one_hot(safe_target, V).to(lprobs.dtype)
    if form == "moe":
        q = (1 - eps) * onehot + eps / V
    elif form == "fairseq":
        q = (1 - eps) * onehot + (eps / (V - 1)) * (1 - onehot)
    else:
        raise InputError(f"unknown smoothing_form '{form}' (expected moe or fairseq)")
    token_loss = -(q * lprobs).sum(-1) * keep
    return token_loss.sum().item(), token_nll.sum().item(), int(keep.sum()), token_nll


# --------------------------------------------------------------- check ----
def check_batch_layout(src, prev, target, pad, eos):
    """The decoder input is the target shifted right behind </s>; pads line up."""
    problems = []
    if src.shape[0] != prev.shape[0] or prev.shape != target.shape:
        return [f"shapes src {list(src.shape)}, prev {list(prev.shape)}, target {list(target.shape)} do not fit"]
    if not bool(prev[:, 0].eq(eos).all()):
        problems.append("prev does not start with </s> in every row")
    real = target.ne(pad)
    if not bool(prev.ne(pad).eq(real).all()):
        problems.append("prev and target have padding in different places")
    if not bool((prev[:, 1:].eq(target[:, :-1]) | ~real[:, 1:]).all()):
        problems.append("prev is not target shifted right by one")
    if not bool(src[:, 0].ne(pad).all()):
        problems.append("a source row is empty")
    return problems


def rel_diff(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def load_inputs(checkpoint, batch_dir):
    cfg = read_config(os.path.join(checkpoint, "config.yaml"))
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise InputError(f"{checkpoint}/config.yaml: no model section")
    weights_path = os.path.join(checkpoint, "model.safetensors")
    weights = read_safetensors(weights_path)
    if "encoder.embed_tokens.weight" not in weights:
        raise InputError(f"{weights_path}: no encoder.embed_tokens.weight")
    batch_path = os.path.join(batch_dir, "batch.safetensors")
    batch = read_safetensors(batch_path)
    for key in ("src", "prev", "target"):
        if key not in batch or batch[key].dtype != torch.int64:
            raise InputError(f"{batch_path}: '{key}' missing or not I64")
    if "token_nll" not in batch or tuple(batch["token_nll"].shape) != tuple(batch["target"].shape):
        raise InputError(f"{batch_path}: 'token_nll' missing or not shaped like target")
    try:
        with open(os.path.join(batch_dir, "strata_loss.json"), encoding="utf-8") as f:
            strata = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{batch_dir}/strata_loss.json: {e}")
    for key in ("loss_sum", "nll_sum", "tokens", "label_smoothing", "smoothing_form"):
        if key not in strata:
            raise InputError(f"{batch_dir}/strata_loss.json: no '{key}'")
    return {"cfg": cfg, "weights": weights, "weights_path": weights_path, "batch": batch, "strata": strata,
            "vocab_size": weights["encoder.embed_tokens.weight"].shape[0]}


def run_check(inp, perturb_name, rtol, out=print):
    """Recomputes the batch's loss (optionally perturbed) and compares it with
    Strata's; returns the list of problems (empty: agreement within rtol)."""
    strata, batch, V = inp["strata"], inp["batch"], inp["vocab_size"]
    src, prev, target = batch["src"], batch["prev"], batch["target"]
    pad = int(strata.get("padding_idx", 1))
    eos = 2  # fairseq's </s>, as in every Strata vocabulary
    eps, form = float(strata["label_smoothing"]), strata["smoothing_form"]
    if perturb_name == "smoothing_form":
        form = "fairseq" if form == "moe" else "moe"
    out(f"reference: {strata.get('direction', '?')} {strata.get('split', '')} batch of {src.shape[0]} sentences "
        f"(src {list(src.shape)}, tgt {list(target.shape)}), V={V}, label smoothing {eps} ({form})"
        + (f", PERTURBED: {perturb_name} ({PERTURBATIONS[perturb_name]})" if perturb_name else ""))
    problems = check_batch_layout(src, prev, target, pad, eos)

    model = Translator(inp["cfg"], V, pad, Perturb(perturb_name)).to(torch.float64)
    load_weights(model, inp["weights"], inp["weights_path"])
    model.eval()  # the reference has no dropout at all; eval() documents the mode
    results = {}
    with torch.no_grad():
        for dtype in (torch.float64, torch.float32):
            logits = model.to(dtype)(src, prev)
            results[dtype] = smoothed_loss(logits, target, pad, eps, form)

    # Four comparisons, each within rtol: the two sums; their difference (the
    # smoothing term, which the sums alone barely feel: the moe and fairseq
    # forms differ by O(eps/V)); and every token's NLL (a batch sum averages
    # away changes that move some tokens up and others down).
    s_loss, s_nll, s_tok = float(strata["loss_sum"]), float(strata["nll_sum"]), int(strata["tokens"])
    s_token_nll = batch["token_nll"].to(torch.float64)
    out(f"  strata         loss_sum {s_loss:.8f}  nll_sum {s_nll:.8f}  tokens {s_tok}")
    worst = {}
    for dtype, (loss, nll, tok, token_nll) in results.items():
        name = "reference f64" if dtype == torch.float64 else "reference f32"
        d = {
            "loss_sum": rel_diff(loss, s_loss),
            "nll_sum": rel_diff(nll, s_nll),
            "smoothing term": rel_diff(loss - nll, s_loss - s_nll),
            # relative for large NLLs, absolute (rtol * 1) for confident tokens near 0
            "token nll": ((token_nll.double() - s_token_nll).abs() / (s_token_nll.abs() + 1)).max().item(),
        }
        for k, v in d.items():
            worst[k] = max(worst.get(k, 0.0), v)
        out(f"  {name}  loss_sum {loss:.8f}  nll_sum {nll:.8f}  tokens {tok}  rel diff: "
            + ", ".join(f"{k} {v:.2e}" for k, v in d.items()))
        if tok != s_tok:
            problems.append(f"{name} counts {tok} target tokens, strata {s_tok}")
    loss64 = results[torch.float64][0]
    out(f"  loss per token (base 2): strata {s_loss / max(s_tok, 1) / math.log(2):.6f}, "
        f"reference {loss64 / max(s_tok, 1) / math.log(2):.6f}")
    for k, v in worst.items():
        if v > rtol:
            problems.append(f"{k}: relative difference {v:.3e} exceeds rtol {rtol:.0e}")
    for p in problems:
        out(f"MISMATCH: {p}")
    if not problems:
        out(f"OK: strata and the reference agree (largest relative difference {max(worst.values()):.2e} "
            f"<= {rtol:.0e})")
    return problems


def sensitivity(inp, rtol):
    """The unperturbed check must pass and every applicable perturbation must fail."""
    bad = []
    if run_check(inp, None, rtol, out=lambda s: None):
        bad.append("the unperturbed check fails")
    names = applicable_perturbations(inp["cfg"])
    for name in names:
        lines = []
        detected = bool(run_check(inp, name, rtol, out=lines.append))
        worst = [l for l in lines if l.startswith("  reference f64")]
        print(f"  {name:20s} {'detected' if detected else 'NOT DETECTED'}  ({worst[0].split('rel diff: ')[1]})")
        if not detected:
            bad.append(f"perturbation {name} ({PERTURBATIONS[name]}) is not detected")
    for b in bad:
        print(f"SENSITIVITY FAILURE: {b}")
    if not bad:
        print(f"OK: all {len(names)} applicable perturbations detected at rtol {rtol:.0e}")
    return 1 if bad else 0


def apply_overrides(cfg, overrides):
    """--set section.key=value, as strata-score --set applies it to the checkpoint's config."""
    for item in overrides or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            raise InputError(f"--set {item}: expected section.key=value")
        value = value.strip()
        if "," in value and not value.startswith("["):
            value = "[" + value + "]"
        cfg.setdefault(section, {})[name] = _scalar(value)
    return cfg


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="checkpoint directory (config.yaml, model.safetensors)")
    ap.add_argument("--batch", help="directory written by strata-score --dump-batch")
    ap.add_argument("--rtol", type=float, default=1e-4, help="largest relative difference accepted (default 1e-4)")
    ap.add_argument("--perturb", choices=sorted(PERTURBATIONS), help="deliberately change one piece of the math")
    ap.add_argument("--sensitivity", action="store_true",
                    help="run every perturbation; exit 0 only when the plain check passes and each one fails")
    ap.add_argument("--list-perturbations", action="store_true")
    ap.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override a config value (pass what strata-score got with --set)")
    args = ap.parse_args(argv)
    if args.list_perturbations:
        for k in sorted(PERTURBATIONS):
            print(f"{k:20s} {PERTURBATIONS[k]}")
        return 0
    if not args.checkpoint or not args.batch:
        ap.error("--checkpoint and --batch are required")
    torch.set_num_threads(1)  # the ops are tiny: more threads only add synchronisation (10x slower on a busy machine)
    if not philox_self_test():
        raise InputError("the Philox implementation fails its known-answer test")
    inp = load_inputs(args.checkpoint, args.batch)
    apply_overrides(inp["cfg"], args.set)
    if args.perturb and args.perturb not in applicable_perturbations(inp["cfg"]):
        raise InputError(f"perturbation {args.perturb} does not apply to this checkpoint's model")
    if args.sensitivity:
        return sensitivity(inp, args.rtol)
    return 1 if run_check(inp, args.perturb, args.rtol) else 0


if __name__ == "__main__":
    # Only a completed comparison may exit 1: a crash must never pass for a
    # detected mismatch in the negative controls.
    try:
        status = main(sys.argv[1:])
    except InputError as e:
        print(f"strata_reference: error: {e}", file=sys.stderr)
        status = 2
    except Exception:  # noqa: BLE001 - report any crash as "could not check"
        traceback.print_exc()
        print("strata_reference: error: the reference crashed (see above)", file=sys.stderr)
        status = 2
    sys.exit(status)
