"""Measure engine steps without vLLM: a compact Llama in PyTorch with random weights.

For a GPU that has PyTorch but no vLLM. The model is built from a Hugging Face config.json
(RMSNorm, rotary embeddings, grouped-query attention through
torch.nn.functional.scaled_dot_product_attention over a per-sequence KV cache tensor,
SwiGLU MLP) and driven through the same grid as vllm_harness (calibration/sweep.py) by a small
continuous-batching loop of vLLM's shape: running sequences first, then prompt chunks up to the
step's token budget. Each step's time: CUDA events on a GPU, perf_counter on a CPU. Output: the same
rows and engine facts as vllm_harness (`SweepResult`).

What it leaves out: paged attention kernels, fused custom ops, CUDA graphs, sampling
beyond argmax, the scheduler's own overhead. A profile from it is a lower bound on what
vLLM would take on the same GPU; prefer measure_vllm where vLLM runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sweep import Grid, Point, StepRecorder, SweepResult, device_name, short_dtype, sweep_points

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    max_positions: int
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @classmethod
    def from_config(cls, cfg: dict) -> "LlamaShape":
        if int(cfg.get("num_local_experts", 1) or 1) > 1:
            raise ValueError("torch_harness models dense Llama-style decoders only; this config is a mixture of "
                             "experts (num_local_experts > 1): measure it with vLLM")
        heads = int(cfg["num_attention_heads"])
        return cls(hidden=int(cfg["hidden_size"]), layers=int(cfg["num_hidden_layers"]), heads=heads,
                   kv_heads=int(cfg.get("num_key_value_heads", heads)),
                   head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
                   ffn=int(cfg["intermediate_size"]), vocab=int(cfg["vocab_size"]),
                   max_positions=int(cfg.get("max_position_embeddings", 2048)),
                   rope_theta=float(cfg.get("rope_theta", 10000.0)), eps=float(cfg.get("rms_norm_eps", 1e-5)))


class KVCache:
    """K and V of every layer for `slots` sequences of up to `max_len` tokens:
    data[layer, 0 (K) or 1 (V), slot, position, kv_head, :]."""

    def __init__(self, shape: LlamaShape, slots: int, max_len: int, dtype, device):
        self.data = torch.zeros(shape.layers, 2, slots, max_len, shape.kv_heads, shape.head_dim, dtype=dtype,
                                device=device)

    @property
    def slots(self) -> int:
        return self.data.shape[2]

    @property
    def max_len(self) -> int:
        return self.data.shape[3]


@dataclass(frozen=True)
class StepBatch:
    """One step's work: sequence j computes `chunks[j]` tokens at positions contexts[j].. in cache slot slots[j]."""

    tokens: torch.Tensor  # [T] token ids, the sequences' chunks concatenated
    positions: torch.Tensor  # [T]
    token_slots: torch.Tensor  # [T] cache slot of each token
    groups: tuple  # ((token index [g, L], slots [g], context, L), ...): sequences of equal (context, L) attend together
    sample_index: torch.Tensor  # [S] index into T of the last token of each sequence that samples


class TinyLlama(torch.nn.Module):
    """A Llama decoder with random weights (values do not change the time of a step)."""

    def __init__(self, shape: LlamaShape, dtype=torch.bfloat16, device="cpu", seed: int = 0):
        super().__init__()
        self.shape = s = shape
        # N(0, 0.02). On a CPU the weights are drawn there (reproducible across machines); on a GPU they
        # are drawn by the GPU's own generator: drawing an 8B model on one CPU thread and copying it
        # over takes minutes of a lease, and a weight's value does not change a step's time.
        gen_device = torch.device(device) if torch.device(device).type == "cuda" else torch.device("cpu")
        gen = torch.Generator(device=gen_device).manual_seed(seed)

        def w(*dims):
            drawn = torch.randn(*dims, generator=gen, device=gen_device, dtype=torch.float32) * 0.02
            return torch.nn.Parameter(drawn.to(dtype=dtype, device=device), requires_grad=False)

        q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
        self.embed = w(s.vocab, s.hidden)
        self.wqkv = torch.nn.ParameterList([w(q + 2 * kv, s.hidden) for _ in range(s.layers)])
        self.wo = torch.nn.ParameterList([w(s.hidden, q) for _ in range(s.layers)])
        self.w_gate_up = torch.nn.ParameterList([w(2 * s.ffn, s.hidden) for _ in range(s.layers)])
        self.w_down = torch.nn.ParameterList([w(s.hidden, s.ffn) for _ in range(s.layers)])
        def ones():
            return torch.nn.Parameter(torch.ones(s.hidden, dtype=dtype, device=device), requires_grad=False)

        self.norm_attn = torch.nn.ParameterList([ones() for _ in range(s.layers)])
        self.norm_mlp = torch.nn.ParameterList([ones() for _ in range(s.layers)])
        self.norm_final = ones()
        self.lm_head = w(s.vocab, s.hidden)
        inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.float32) / s.head_dim))
        angles = torch.outer(torch.arange(s.max_positions, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos().to(device), persistent=False)
        self.register_buffer("sin", angles.sin().to(device), persistent=False)

    def _rms(self, x, weight):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.shape.eps)).to(x.dtype) * weight

    def _rope(self, x, positions):  # x [T, heads, head_dim]; rotate-half convention (HF Llama)
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)

    @torch.inference_mode()
    def forward_step(self, batch: StepBatch, cache: KVCache) -> torch.Tensor:
        """Run one step, writing its K/V into `cache`; logits of the sampled positions [S, vocab]."""
        s = self.shape
        q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        x = self.embed[batch.tokens]
        for i in range(s.layers):
            h = self._rms(x, self.norm_attn[i]) @ self.wqkv[i].T
            q = self._rope(h[:, :q_dim].view(-1, s.heads, s.head_dim), batch.positions)
            k = self._rope(h[:, q_dim:q_dim + kv_dim].view(-1, s.kv_heads, s.head_dim), batch.positions)
            v = h[:, q_dim + kv_dim:].view(-1, s.kv_heads, s.head_dim)
            cache.data[i, 0, batch.token_slots, batch.positions] = k
            cache.data[i, 1, batch.token_slots, batch.positions] = v
            out = torch.empty_like(q)
            for idx, slots, ctx, L in batch.groups:
                qg = q[idx].transpose(1, 2)  # [g, heads, L, d]
                kg = cache.data[i, 0, slots, :ctx + L].transpose(1, 2)  # [g, kv_heads, ctx+L, d]
                vg = cache.data[i, 1, slots, :ctx + L].transpose(1, 2)
                if L == 1:
                    mask, causal = None, False
                elif ctx == 0:
                    mask, causal = None, True
                else:  # a prompt chunk on top of cached tokens: query i sees keys 0 .. ctx + i
                    mask = torch.ones(L, ctx + L, dtype=torch.bool, device=x.device).tril(diagonal=ctx)
                    causal = False
                og = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, is_causal=causal, enable_gqa=True)
                out[idx] = og.transpose(1, 2)
            x = x + out.reshape(-1, q_dim) @ self.wo[i].T
            gate, up = (self._rms(x, self.norm_mlp[i]) @ self.w_gate_up[i].T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ self.w_down[i].T
        last = self._rms(x[batch.sample_index], self.norm_final)
        return last @ self.lm_head.T


@dataclass
class _Seq:
    prompt: list[int]
    max_tokens: int
    slot: int
    computed: int = 0
    generated: int = 0
    last_token: int = 0


class TorchEngine:
    """A continuous-batching loop over TinyLlama (the Driver protocol of calibration/sweep.py)."""

    def __init__(self, model: TinyLlama, recorder: StepRecorder, *, max_batched_tokens: int, max_len: int,
                 dtype, device, seed: int = 0):
        self.model, self.recorder = model, recorder
        self.budget, self.max_len, self.dtype, self.device = max_batched_tokens, max_len, dtype, device
        self.cuda = torch.device(device).type == "cuda"
        self.cache: KVCache | None = None
        self._free: list[int] = []
        self._seqs: dict[str, _Seq] = {}  # in arrival order: running first is vLLM's order too
        self._n = 0
        self._gen = torch.Generator(device="cpu").manual_seed(seed)

    def prepare(self, point: Point) -> None:
        """Size the KV cache for the point (slots x longest sequence), so a big model fits its GPU."""
        slots = point.batch + (1 if point.kind == "mixed" else 0)
        length = max([point.prompt + max(point.steps, 2 * len(point.new_prompts)) + 2, *point.new_prompts])
        length = min(self.max_len, length)
        if self.cache is None or self.cache.slots < slots or self.cache.max_len < length:
            self.cache = None  # free the old one first
            if self.cuda:
                torch.cuda.empty_cache()
            self.cache = KVCache(self.model.shape, slots, length, self.dtype, self.device)
        self._free = list(range(self.cache.slots))

    def add(self, prompt_tokens: int, max_tokens: int) -> str:
        if not self._free:
            raise RuntimeError("torch_harness: no free KV slot (prepare() sized the cache for fewer sequences)")
        rid = f"r{self._n}"
        self._n += 1
        prompt = torch.randint(3, self.model.shape.vocab, (prompt_tokens,), generator=self._gen).tolist()
        self._seqs[rid] = _Seq(prompt=prompt, max_tokens=max_tokens, slot=self._free.pop(0))
        return rid

    def decoding(self, request_id: str) -> bool:
        seq = self._seqs.get(request_id)
        return seq is None or seq.computed >= len(seq.prompt)

    def busy(self) -> bool:
        return bool(self._seqs)

    def _schedule(self) -> list[tuple[str, int]]:
        """(request, tokens) for this step: every decode, then prompt chunks while the budget lasts."""
        plan, budget = [], self.budget
        for rid, seq in self._seqs.items():
            if seq.computed >= len(seq.prompt) and budget > 0:
                plan.append((rid, 1))
                budget -= 1
        for rid, seq in self._seqs.items():
            left = len(seq.prompt) - seq.computed
            if left > 0 and budget > 0:
                plan.append((rid, min(left, budget)))
                budget -= min(left, budget)
        return plan

    def _batch(self, plan: list[tuple[str, int]]) -> tuple[StepBatch, list[str]]:
        tokens, positions, slots, sample_at, samplers = [], [], [], [], []
        groups: dict[tuple[int, int], list[tuple[list[int], int]]] = {}
        for rid, n in plan:
            seq = self._seqs[rid]
            start = len(tokens)
            if seq.computed < len(seq.prompt):
                tokens += seq.prompt[seq.computed:seq.computed + n]
            else:
                tokens.append(seq.last_token)
            positions += range(seq.computed, seq.computed + n)
            slots += [seq.slot] * n
            groups.setdefault((seq.computed, n), []).append((list(range(start, start + n)), seq.slot))
            if seq.computed + n >= len(seq.prompt):
                sample_at.append(start + n - 1)
                samplers.append(rid)
        dev = self.device

        def as_t(values):
            return torch.tensor(values, dtype=torch.long, device=dev)

        g = tuple((as_t([m[0] for m in members]), as_t([m[1] for m in members]), ctx, n)
                  for (ctx, n), members in groups.items())
        return StepBatch(tokens=as_t(tokens), positions=as_t(positions), token_slots=as_t(slots), groups=g,
                         sample_index=as_t(sample_at)), samplers

    def step(self) -> None:
        plan = self._schedule()
        if not plan:
            return
        composition = [(n, self._seqs[rid].computed, len(self._seqs[rid].prompt)) for rid, n in plan]
        t_unix = time.time()
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        batch, samplers = self._batch(plan)  # building the inputs is part of a step, as in an engine
        logits = self.model.forward_step(batch, self.cache)
        next_tokens = logits.argmax(dim=-1).tolist()  # waits for the device, like an engine's sampler
        if self.cuda:
            end.record()
            end.synchronize()
            step_s = start.elapsed_time(end) / 1000.0
        wall_s = time.perf_counter() - t0
        self.recorder.record(composition, step_s if self.cuda else wall_s, t_unix, wall_time_s=wall_s)
        for rid, n in plan:
            self._seqs[rid].computed += n
        for rid, tok in zip(samplers, next_tokens):
            seq = self._seqs[rid]
            seq.generated += 1
            seq.last_token = int(tok)
            if seq.generated >= seq.max_tokens:
                self._free.append(seq.slot)
                del self._seqs[rid]


def measure_torch(config: dict, grid: Grid, *, device: str | None = None, dtype: str = "bfloat16",
                  max_model_len: int = 8192, max_batched_tokens: int | None = None, seed: int = 0,
                  log=print) -> SweepResult:
    """Run the grid on TinyLlama built from `config` (a config.json dict) on `device` (default: cuda if present)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}; allowed: {sorted(DTYPES)}")
    shape = LlamaShape.from_config(config)
    max_len = min(max_model_len, shape.max_positions)
    budget = max_batched_tokens or max_len
    torch.manual_seed(seed)
    t0 = time.time()
    model = TinyLlama(shape, dtype=DTYPES[dtype], device=device, seed=seed)
    recorder = StepRecorder()
    engine = TorchEngine(model, recorder, max_batched_tokens=budget, max_len=max_len, dtype=DTYPES[dtype],
                         device=device, seed=seed)
    points = grid.points(max_len, budget)
    startup_s = time.time() - t0
    t_sweep = time.time()
    sweep_points(engine, points, grid.repeats, recorder, log=log, max_repeats=grid.max_repeats)
    info = {"engine": "torch", "engine_version": torch.__version__, "device": device_name(),
            "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            "dtype": short_dtype(dtype), "kv_dtype": short_dtype(dtype),
            "block_size_tokens": 16, "num_kv_blocks": None,
            "max_model_len": max_len, "max_num_batched_tokens": budget,
            "startup_s": round(startup_s, 2), "sweep_s": round(time.time() - t_sweep, 2),
            "timing": ("CUDA events around each step" if torch.device(device).type == "cuda" else
                       "perf_counter around each step") + " (input building + forward + argmax sampling)",
            "notes": "compact PyTorch Llama, random weights, contiguous per-sequence KV cache (no paging: "
                     "block_size_tokens is vLLM's GPU default, num_kv_blocks not measured); eager: no CUDA "
                     "graphs, unfused norms and RoPE, so its steps are slower than vLLM's (host-bound at small "
                     "batches on a GPU: docs/gpu_h200.md)",
            "grid": grid.name, "repeats": int(recorder.frame()["repeat"].max()) + 1, "points": len(points),
            "model_config": config}
    return SweepResult(measurements=recorder.frame(), engine=info)


def reference_logits(model: TinyLlama, token_ids: list[int]) -> torch.Tensor:
    """Logits of the last position of one sequence in a single causal pass (for tests)."""
    L = len(token_ids)
    cache = KVCache(model.shape, 1, L, model.embed.dtype, model.embed.device)
    dev = model.embed.device
    idx = torch.arange(L, device=dev)
    batch = StepBatch(tokens=torch.tensor(token_ids, device=dev), positions=idx,
                      token_slots=torch.zeros(L, dtype=torch.long, device=dev),
                      groups=((idx.unsqueeze(0), torch.zeros(1, dtype=torch.long, device=dev), 0, L),),
                      sample_index=torch.tensor([L - 1], device=dev))
    return model.forward_step(batch, cache)[0]

