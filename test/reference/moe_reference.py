"""Mixture-of-experts FFN blocks for the PyTorch reference (evaluation mode).

Written from docs/smoe_spec.md (the SMoE reference code's semantics), in the
fairseq/GShard style with dense one-hot dispatch and combine tensors
([S, E, C] einsums), which is deliberately a different formulation from
Strata's index gathers: the two must agree on the routing to agree at all.

Covers plain top-2 MoE and Switch top-1, stratified MoE (the pass loop over
strata with per-stratum LayerNorms, the code's or the paper's residual), EOM
(evaluation scaling) and CMR. The Gumbel noise of the second expert is drawn
exactly as Strata draws it in evaluation without a generator: Philox-4x32-10
keyed by (mix_keys(0x534D6F45, block key), stratum), element row * V + e.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------- philox ----
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK64 = (1 << 64) - 1


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Salmon et al.'s Philox-4x32-10 on uint64 arrays that hold 32-bit words."""
    k0, k1 = int(k0), int(k1)
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def philox_u32(seed, offset, n):
    """Elements 0..n-1 of the stream (seed, offset): block b = i // 4 is
    philox(counter = (lo b, hi b, lo offset, hi offset), key = (lo seed, hi seed))."""
    i = np.arange(n, dtype=np.uint64)
    b = i >> np.uint64(2)
    full = lambda v: np.full(n, v, dtype=np.uint64)  # noqa: E731
    words = philox4x32_10(b & _MASK32, b >> np.uint64(32), full(offset & 0xFFFFFFFF), full(offset >> 32),
                          seed & 0xFFFFFFFF, seed >> 32)
    lane = (i & np.uint64(3)).astype(np.int64)
    return np.choose(lane, words)


def gumbel(seed, offset, n):
    """Gumbel(0,1) as float32: -log(-log(u)), u = ((u32 >> 8) + 0.5) / 2^24."""
    u = ((philox_u32(seed, offset, n) >> np.uint64(8)).astype(np.float32) + np.float32(0.5)) * np.float32(1 / 16777216)
    return -np.log(-np.log(u))


def mix_keys(a, b):
    """splitmix64 of a + golden * (b + 1)."""
    z = (a + 0x9E3779B97F4A7C15 * (b + 1)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def philox_self_test():
    """Known-answer test of Random123 (counter 0, key 0)."""
    zero = np.zeros(1, dtype=np.uint64)
    got = [int(w[0]) for w in philox4x32_10(zero, zero, zero, zero, 0, 0)]
    return got == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


EVAL_NOISE_SEED = 0x534D6F45  # "SMoE", as in src/moe/moe_block.cpp


# ----------------------------------------------------------- perturbations ----
# name -> (description, applies(settings)): a perturbation is only a valid
# negative control when the checkpoint's MoE blocks exercise that piece.
MOE_PERTURBATIONS = {
    "moe_gumbel": ("second expert by plain argmax instead of the Gumbel-noised argmax",
                   lambda s: s["top2"] and s["policy"] == "sampling"),
    "moe_slot_order": ("second choices' capacity slots not offset by the first choices (colsum mask1)",
                       lambda s: s["top2"] and s["drops"]),
    "moe_renormalize": ("toggle normalising the two gate probabilities before/after capacity dropping",
                        lambda s: s["top2"] and s["drops"]),
    "moe_next_stratum": ("every token moves on to the next stratum instead of the one after its top-1 expert",
                         lambda s: s["strata"] > 1),
    "moe_residual": ("the other residual form at strata >= 1 (code: LN(h) <-> paper: raw h)",
                     lambda s: s["strata"] > 1 and s["hmoe"]),
    "moe_final_ln": ("skip the block's final per-stratum LayerNorm", lambda s: s["hmoe"]),
    "moe_eom_scale": ("no (1 - p) expert output scaling in evaluation", lambda s: s["eom"] > 0),
    "cmr_mix": ("swap the CMR weights of the shared FFN and the MoE", lambda s: s["cmr"]),
}


def moe_settings(cfg):
    """What the config's MoE blocks exercise (for choosing perturbations)."""
    moe = cfg.get("moe", {}) or {}
    experts = int(moe.get("experts", 0) or 0)
    strata = moe.get("strata") or ([experts] if experts else [])
    if isinstance(strata, int):
        strata = [strata]
    frac = float(moe.get("eval_capacity_token_fraction", 0.25))
    return {
        "experts": experts,
        "strata": len(strata),
        "top2": experts > 0 and not bool(moe.get("top1", False)),
        "policy": str(moe.get("second_expert_policy", "sampling")),
        "drops": experts > 0 and 0 < frac < 1,
        "hmoe": experts > 0 and bool(moe.get("hmoe_layernorm", True)) and moe.get("moe_type", "base") != "cmr",
        "eom": float(moe.get("eom_rate", 0.1)) if moe.get("moe_type", "base") == "eom" else 0.0,
        "cmr": experts > 0 and moe.get("moe_type", "base") == "cmr",
    }


# ------------------------------------------------------------------ model ----
class _LayerNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class _Expert(nn.Module):
    def __init__(self, dim, ffn_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)


class _Gate(nn.Module):
    def __init__(self, dim, visible):
        super().__init__()
        self.wg = nn.Linear(dim, visible, bias=False)


class _MoELayer(nn.Module):
    """moe_layer.gate.<s>.wg.weight and moe_layer.experts.<g>.fc{1,2}.*"""

    def __init__(self, dim, ffn_dim, strata):
        super().__init__()
        experts = sum(strata)
        offsets = [sum(strata[:s]) for s in range(len(strata))]
        self.gate = nn.ModuleList([_Gate(dim, experts - off) for off in offsets])
        self.experts = nn.ModuleList([_Expert(dim, ffn_dim) for _ in range(experts)])


class _CMRGate(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gate = nn.Linear(dim, 1)


class MoEFFN(nn.Module):
    """An MoE FFN block in evaluation mode: x [B, T, d] -> the updated stream."""

    def __init__(self, cfg, decoder, layer, eps, perturb, activation):
        super().__init__()
        m, moe = cfg["model"], cfg["moe"]
        d, f = int(m["embed_dim"]), int(m["ffn_dim"])
        experts = int(moe["experts"])
        strata = moe.get("strata") or [experts]
        if isinstance(strata, int):
            strata = [strata]
        self.strata = [int(n) for n in strata]
        if sum(self.strata) != experts:
            raise ValueError(f"strata {self.strata} do not sum to {experts} experts")
        self.offsets = [sum(self.strata[:s]) for s in range(len(self.strata))]
        self.stratum_of = torch.tensor([s for s, n in enumerate(self.strata) for _ in range(n)], dtype=torch.long)
        self.perturb, self.act = perturb, activation
        self.top1 = bool(moe.get("top1", False))
        self.policy = str(moe.get("second_expert_policy", "sampling"))
        if self.policy not in ("sampling", "argmax"):
            raise ValueError(f"second_expert_policy '{self.policy}' is not implemented by the reference")
        self.capacity_factor = float(moe.get("capacity_factor", 1.0))
        self.frac = float(moe.get("eval_capacity_token_fraction", 0.25))
        self.normalize_before = bool(moe.get("normalize_gate_prob_before_dropping", False))
        if perturb("moe_renormalize"):
            self.normalize_before = not self.normalize_before
        moe_type = str(moe.get("moe_type", "base"))
        self.eom = float(moe.get("eom_rate", 0.1)) if moe_type == "eom" else 0.0
        self.cmr = moe_type == "cmr"
        self.hmoe = bool(moe.get("hmoe_layernorm", True)) and not self.cmr
        self.paper_residual = str(moe.get("smoe_residual", "code")) == "paper"
        if perturb("moe_residual"):
            self.paper_residual = not self.paper_residual
        self.noise_seed = mix_keys(EVAL_NOISE_SEED, (0x10000 if decoder else 0) + layer)

        self.final_layer_norm = _LayerNorm(d, eps)
        self.moe_layer = _MoELayer(d, f, self.strata)
        if self.hmoe:
            self.hmoe_layernorms = nn.ModuleList([_LayerNorm(d, eps) for _ in self.strata])
        if self.cmr:
            self.cmr_layer = _CMRGate(d)
            self.fc1 = nn.Linear(d, f)
            self.fc2 = nn.Linear(f, d)

    def _capacity(self, S, V):
        if self.frac > 0:
            return math.ceil(self.frac * S)
        k = 1 if self.top1 else 2
        return math.ceil(self.capacity_factor * k * math.ceil(S / V) - 1e-9)

    def _pass(self, z, s):
        """One gate pass over the rows z [S, d] at stratum s: (y [S, d], top-1 expert [S])."""
        S, dtype = z.shape[0], z.dtype
        E, off = sum(self.strata), self.offsets[s]
        V = E - off
        logits = self.moe_layer.gate[s].wg(z)
        full = torch.cat([torch.full((S, off), float("-inf"), dtype=dtype), logits], dim=1)
        G = F.softmax(full, dim=1)
        e1 = G.argmax(dim=1)
        mask1 = F.one_hot(e1, E).to(dtype)
        C = self._capacity(S, V)
        loc1 = torch.cumsum(mask1, dim=0) - 1
        kept1 = mask1 * (loc1 < C).to(dtype)
        if self.top1:
            g1 = (G * kept1).sum(1)
            combine = g1[:, None, None] * kept1[:, :, None] * self._slots(loc1, kept1, C)[:, None, :]
        else:
            noisy = full
            if self.policy == "sampling" and not self.perturb("moe_gumbel"):
                g = torch.from_numpy(gumbel(self.noise_seed, s, S * V).reshape(S, V)).to(dtype)
                noisy = full + torch.cat([torch.zeros(S, off, dtype=dtype), g], dim=1)
            e2 = noisy.masked_fill(mask1.bool(), float("-inf")).argmax(dim=1)
            mask2 = F.one_hot(e2, E).to(dtype)
            loc2 = torch.cumsum(mask2, dim=0) - 1
            if not self.perturb("moe_slot_order"):
                loc2 = loc2 + mask1.sum(dim=0, keepdim=True)
            kept2 = mask2 * (loc2 < C).to(dtype)
            eps = torch.finfo(dtype).eps
            if self.normalize_before:
                p1, p2 = (G * mask1).sum(1), (G * mask2).sum(1)
                den = torch.clamp(p1 + p2, min=eps)
                g1, g2 = p1 / den * kept1.sum(1), p2 / den * kept2.sum(1)
            else:
                p1, p2 = (G * kept1).sum(1), (G * kept2).sum(1)
                den = torch.clamp(p1 + p2, min=eps)
                g1, g2 = p1 / den, p2 / den
            combine = (g1[:, None, None] * kept1[:, :, None] * self._slots(loc1, kept1, C)[:, None, :]
                       + g2[:, None, None] * kept2[:, :, None] * self._slots(loc2, kept2, C)[:, None, :])
        dispatch = (combine != 0).to(dtype)  # [S, E, C]
        x = torch.einsum("sec,sm->ecm", dispatch, z)
        y = torch.stack([self._expert(e, x[e]) for e in range(E)])  # [E, C, d]
        if self.eom > 0 and not self.perturb("moe_eom_scale"):
            y = y * (1 - self.eom)
        return torch.einsum("sec,ecm->sm", combine, y), e1

    @staticmethod
    def _slots(loc, kept, C):
        """One-hot [S, C] of each row's kept position (rows with nothing kept: position 0, masked later)."""
        pos = (loc * kept).sum(1).long()
        return F.one_hot(pos, max(C, 1)).to(kept.dtype)

    def _expert(self, e, x):
        ex = self.moe_layer.experts[e]
        return ex.fc2(self.act(ex.fc1(x)))

    def forward(self, x, pad):
        B, T, d = x.shape
        u = x.reshape(B * T, d)
        if self.cmr:
            z = self.final_layer_norm(u)
            y, _ = self._pass(z, 0)
            c = torch.sigmoid(self.cmr_layer.gate(z))
            shared = self.fc2(self.act(self.fc1(z)))
            if self.perturb("cmr_mix"):
                c = 1 - c
            return (u + (1 - c) * shared + c * y).reshape(B, T, d)
        L = len(self.strata)
        state = torch.zeros(B * T, dtype=torch.long)
        h = u
        s = 0
        while s < L:
            rows = (state == s).nonzero(as_tuple=True)[0]
            hs = h[rows]
            if s == 0:
                z, r = self.final_layer_norm(hs), hs
            elif self.hmoe:
                z = self.hmoe_layernorms[s - 1](hs)
                r = hs if self.paper_residual else z
            else:
                z, r = hs, hs
            y, e1 = self._pass(z, s)
            h = h.index_copy(0, rows, r + y)
            nxt = torch.full_like(e1, s + 1) if self.perturb("moe_next_stratum") else self.stratum_of[e1] + 1
            state = state.index_copy(0, rows, nxt)
            s = int(state.min())
        if self.hmoe and not self.perturb("moe_final_ln"):
            h = self.hmoe_layernorms[L - 1](h)
        return h.reshape(B, T, d)
