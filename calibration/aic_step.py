"""One engine step priced from aiconfigurator-core's per-operator vLLM tables (calibration/aic_tables.py).

A step is composed the way a decoder runs it, per layer: QKV GEMM, attention (context kernel for
prompts, generation kernel for decodes; sliding-window layers from the windowed rows), O-proj GEMM,
the memory-bound ops around attention that every token runs (RoPE on q and k, the KV-cache write, and the
model's q/k RMSNorm where it has one, with its all-reduce under TP when the norm spans all heads), then the MLP: gate/up and down GEMMs for a dense model, or for a mixture of experts the router GEMM
and one fused-MoE call from the `moe` table (experts split by tensor parallelism, or whole experts
per GPU under expert parallelism); two all-reduces when TP > 1; the residual-add+RMSNorm (and, dense,
SiLU-and-mul) element-wise ops; times num_layers; plus the embedding (and its all-reduce) and the
LM-head GEMM over the sampled positions. StepComposer picks each op's table rows for one model, TP
size and dtype, and prices a step from them; calibration/aic_compose.py composes a grid of such steps.

What per-op data do NOT contain: the engine's per-step CPU work (scheduling, input
preparation, sampling, detokenisation) and gaps between kernels. A composition with the
default step_overhead_s = 0 is therefore a LOWER BOUND on a real engine's step time.
"""
from __future__ import annotations

from collections import Counter

import pandas as pd

from calibration.aic_attention_ops import aux_bytes_per_token
from calibration.aic_tables import MS, ImportFailed, LogGrid, LookupLog, OpTables, _one_kernel
from sim.catalog import ModelSpec
from sim.memory import kv_heads_per_gpu

# servesim weight dtype -> the tables' gemm_dtype of the dense layers (attention projections, dense MLP)
# and moe_dtype of the experts, as the usual checkpoint of that format runs under vLLM: fp8 = per-tensor
# scales (modelopt FP8, e.g. nvidia/Llama-3.1-70B-Instruct-FP8), fp4 = NVFP4, mxfp4 = gpt-oss's MXFP4
# experts (weight-only Triton kernel) with bf16 attention.
GEMM_DTYPES = {"bf16": "bfloat16", "fp8": "fp8", "fp4": "nvfp4", "mxfp4": "bfloat16"}
MOE_DTYPES = {"bf16": "bfloat16", "fp8": "fp8", "fp4": "nvfp4", "mxfp4": "w4a16_mxfp4"}
# Checkpoints whose format differs from the above: (model, dtype) -> (gemm_dtype, moe_dtype).
CHECKPOINT_FORMATS = {
    # Qwen/Qwen3-235B-A22B-FP8 and MiniMaxAI/MiniMax-M2.5: fp8 with 128x128 block scales everywhere. Their
    # dense GEMMs are priced from the per-tensor fp8 table (same FLOPs and bytes): the block-scaled tables
    # (DeepGEMM, FlashInfer) carry a flat per-call floor of 60-90 us on H200 and ~180 us on B200 up to
    # m = 1024 (host-side launch cost that CUDA graphs hide in serving), which would put a lone MiniMax-M2.5
    # decode on B200 at ~28 ms where the measured runs (silicon_sample.csv, TP 2, concurrency 4) show ~10 ms.
    ("qwen3-235b-a22b", "fp8"): ("fp8", "fp8_block"),
    ("minimax-m2.5", "fp8"): ("fp8", "fp8_block"),
    # nvidia/MiniMax-M2.5-NVFP4 keeps self_attn in bf16 (hf_quant_config exclude_modules).
    ("minimax-m2.5", "fp4"): ("bfloat16", "nvfp4"),
}
KV_DTYPES = {"bf16": "bfloat16", "fp8": "fp8"}
# How expert GEMMs are split over the TP group: "tp" slices every expert's intermediate dimension
# (vLLM's default), "ep" places whole experts on each GPU (--enable-expert-parallel).
MOE_PARALLEL = ("tp", "ep")
# Token routing assumed by the MoE table rows: aiconfigurator's default workload distribution
# (sdk/config.py `workload_distribution: power_law`), its mildest skew; balanced where absent.
# (aiconfigurator's own MOEModel pins alpha 1.2, a stronger skew: fewer experts touched by a 16-token
# decode, a busier hottest expert in a prefill; benchmarks/compose_audit.py shows the difference.)
MOE_DISTRIBUTIONS = ("power_law_1.01", "balanced")

# vLLM V1 captures CUDA graphs for steps of up to 512 tokens (its default
# max_cudagraph_capture_size); larger steps run eagerly. Only the all-reduce table
# distinguishes the two (the eager custom all-reduce pays ~20-45 us of launch and sync).
CUDA_GRAPH_MAX_TOKENS = 512
# A fixed per-step engine overhead (seconds) added to every composed step. Default 0: the
# profile is then the kernel time alone, a lower bound. A real vLLM V1 step adds CPU
# scheduling, input preparation and sampling that async scheduling partly hides; pass a
# measured value (e.g. the gap between a measured TPOT and the composed decode step) here.
# For scale: the package's silicon_sample.csv has end-to-end TPOTs of Llama-3.1-8B on H100
# under TensorRT-LLM (TP 1, batch 8, 512 output tokens) 0.6-1.6 ms (8-20 %) above the
# composed decode steps at the same batch and mean context.
DEFAULT_STEP_OVERHEAD_S = 0.0


class StepComposer:
    """Per-step latency of one model (dense or mixture of experts) at one TP size and dtype, from the op tables."""

    def __init__(self, tables: OpTables, model: ModelSpec, *, tp: int, dtype: str = "bf16",
                 kv_dtype: str | None = None, step_overhead_s: float = DEFAULT_STEP_OVERHEAD_S,
                 moe_parallel: str = "tp"):
        kv_dtype = kv_dtype or (dtype if dtype in KV_DTYPES else "bf16")
        if tp < 1 or model.num_attention_heads % tp or (model.num_kv_heads % tp and tp % model.num_kv_heads):
            raise ImportFailed(f"--tp: {tp} does not split {model.name}'s {model.num_attention_heads} heads / "
                               f"{model.num_kv_heads} KV heads evenly")
        if dtype not in GEMM_DTYPES or kv_dtype not in KV_DTYPES:
            raise ImportFailed(f"--dtype/--kv-dtype: got {dtype!r}/{kv_dtype!r}; allowed {sorted(GEMM_DTYPES)} / "
                               f"{sorted(KV_DTYPES)}")
        if moe_parallel not in MOE_PARALLEL:
            raise ImportFailed(f"--moe-parallel: got {moe_parallel!r}; allowed {list(MOE_PARALLEL)}")
        if step_overhead_s < 0:
            raise ImportFailed(f"--step-overhead-ms: must be >= 0, got {step_overhead_s * 1e3:g}")
        self.tables, self.model, self.tp = tables, model, tp
        self.dtype, self.kv_dtype, self.step_overhead_s = dtype, kv_dtype, step_overhead_s
        self.moe_parallel = moe_parallel if model.is_moe else None
        self.kernels: dict[str, str] = {}
        gemm_dtype, moe_dtype = CHECKPOINT_FORMATS.get((model.name, dtype), (GEMM_DTYPES[dtype], MOE_DTYPES[dtype]))
        self.gemm_dtype, self.moe_dtype = gemm_dtype, (moe_dtype if model.is_moe else None)

        h, hd = model.hidden_size, model.head_dim
        self.heads = model.num_attention_heads // tp
        self.kv_heads = kv_heads_per_gpu(model, tp)
        # (n, k) of each per-layer GEMM: output features x input features, per GPU.
        self.shapes = {"qkv": ((self.heads + 2 * self.kv_heads) * hd, h), "o_proj": (h, self.heads * hd)}
        if not model.is_moe:
            self.shapes.update({"gate_up": (2 * model.ffn_size // tp, h), "down": (h, model.ffn_size // tp)})
        self.lm_head_n = -(-model.vocab_size // tp)
        self.aux_bytes_per_token = aux_bytes_per_token(model, self.heads, self.kv_heads, self.kv_dtype)

        g = tables.gemm
        self.gemm = self._gemm_grid(g, gemm_dtype, "gemm")
        self.gemm_bf16 = self.gemm if gemm_dtype == "bfloat16" else self._gemm_grid(g, "bfloat16", "lm_head_gemm")
        full_layers, sliding_layers = model.num_full_attention_layers, model.num_sliding_layers
        self.attention_layers = [(0, full_layers)] + ([(model.sliding_window_tokens, sliding_layers)]
                                                      if sliding_layers else [])
        self.context_attention = {w: self._attention_grid(tables.context_attention, "context_attention", "isl", w)
                                  for w, _ in self.attention_layers}
        self.generation_attention = {w: self._attention_grid(tables.generation_attention, "generation_attention",
                                                             "step", w) for w, _ in self.attention_layers}
        self.allreduce = self._allreduce_grids() if tp > 1 else {}
        self.moe = self._moe_grid() if model.is_moe else None
        self.quant = None
        if gemm_dtype == "fp8":  # per-tensor fp8 GEMMs quantise their bf16 input activations first
            sm = tables.scale_matrix
            if sm is None or sm[sm["quant_dtype"] == "fp8"].empty:
                raise ImportFailed(f"{tables.system}/{tables.framework} {tables.version}: no fp8 quantisation table")
            rows, self.kernels["fp8_activation_quant"] = _one_kernel(sm[sm["quant_dtype"] == "fp8"], "scale_matrix")
            self.quant = LogGrid.from_frame("scale_matrix", rows, ("m", "k"))

    def attention_aux_s(self, tokens: int, log: LookupLog) -> dict[str, float]:
        """Seconds per layer of the memory-bound ops around attention (calibration/aic_attention_ops.py)
        for a step of `tokens` tokens (op name -> seconds), and of the all-reduce that a q/k norm across heads needs under TP: it sums
        each token's two squared norms (q, k; fp32, so 4 bf16 elements' worth of bytes) over the group."""
        if tokens <= 0:
            return {}
        out = {name: sum(self._memory_op_s(tokens * b) for b in calls)
               for name, calls in self.aux_bytes_per_token.items()}
        if self.model.qk_norm == "across_heads" and self.tp > 1:
            out["qk_norm_allreduce"] = self._allreduce_elements_s(tokens, 4 * tokens, log)
        return out

    def _moe_grid(self) -> LogGrid:
        """The fused-MoE layer's latency by token count for this model's experts, dtype and split."""
        t, m = self.tables, self.model
        if t.moe is None:
            raise ImportFailed(f"{t.system}/{t.framework}: no MoE table, needed for {m.name}'s experts")
        moe_tp, moe_ep = (self.tp, 1) if self.moe_parallel == "tp" else (1, self.tp)
        shape = ((t.moe["num_experts"] == m.num_experts) & (t.moe["topk"] == m.experts_per_token)
                 & (t.moe["hidden_size"] == m.hidden_size) & (t.moe["inter_size"] == m.ffn_size))
        sub = t.moe[shape & (t.moe["moe_dtype"] == self.moe_dtype)]
        split = sub[(sub["moe_tp_size"] == moe_tp) & (sub["moe_ep_size"] == moe_ep)]
        if split.empty and moe_tp > 1:
            # Block-scaled fp8 experts cannot be sliced finer than the 128-wide scale blocks, so the tables
            # lack e.g. moe_tp 8 for a 1536-wide expert. The EP split at the same degree moves the same weight
            # bytes and FLOPs per GPU under balanced routing: use it, and say so in the profile.
            split = sub[(sub["moe_tp_size"] == 1) & (sub["moe_ep_size"] == moe_tp)]
            if not split.empty:
                self.kernels["moe_substitute"] = (f"moe_tp {moe_tp} not measured; the moe_ep {moe_tp} rows stand in "
                                                  "(same bytes and FLOPs per GPU)")
        if split.empty:
            have = sorted(set(zip(t.moe[shape]["moe_dtype"], t.moe[shape]["moe_tp_size"], t.moe[shape]["moe_ep_size"])))
            raise ImportFailed(f"{t.system}/{t.framework} {t.moe_version} moe: nothing measured for {m.name}'s experts "
                               f"({m.num_experts} x top-{m.experts_per_token}, hidden {m.hidden_size}, intermediate "
                               f"{m.ffn_size}) in {self.moe_dtype} at moe_tp {moe_tp} / moe_ep {moe_ep}; measured "
                               f"(dtype, moe_tp, moe_ep): {have}")
        for dist in MOE_DISTRIBUTIONS:
            if (split["distribution"] == dist).any():
                split = split[split["distribution"] == dist]
                self.kernels["moe_distribution"] = dist
                break
        rows, self.kernels["moe"] = _one_kernel(split, "moe")
        return LogGrid.from_frame("moe", rows, ("num_tokens",))

    def _gemm_grid(self, g: pd.DataFrame, gemm_dtype: str, role: str) -> LogGrid:
        sub = g[g["gemm_dtype"] == gemm_dtype]
        if sub.empty:
            have = sorted(g["gemm_dtype"].unique())
            raise ImportFailed(f"{self.tables.system}/{self.tables.framework} {self.tables.version}: no {gemm_dtype} "
                               f"GEMM measurements (the table has {have})")
        rows, self.kernels[role] = _one_kernel(sub, f"{gemm_dtype} GEMM")
        return LogGrid.from_frame(f"gemm[{gemm_dtype}]", rows, ("m", "n", "k"))

    def _attention_grid(self, a: pd.DataFrame, table: str, length_axis: str, window: int = 0) -> LogGrid:
        """Rows for this GPU's heads; `window` > 0: the sliding-window kernel's rows (0: full attention)."""
        keep = ((a["num_heads"] == self.heads) & (a["num_key_value_heads"] == self.kv_heads)
                & (a["head_dim"] == self.model.head_dim) & (a["kv_cache_dtype"] == KV_DTYPES[self.kv_dtype]))
        if "window_size" in a.columns:
            keep &= a["window_size"] == window
        elif window:
            raise ImportFailed(f"{self.tables.system}/{self.tables.framework} {self.tables.version} {table}: no "
                               f"sliding-window rows (window_size column), needed for {self.model.name}")
        if "beam_width" in a.columns:
            keep &= a["beam_width"] == 1
        if table == "context_attention" and "step" in a.columns:
            keep &= a["step"] == 0
        if not keep.any():
            have = sorted(set(zip(a["num_heads"], a["num_key_value_heads"], a["head_dim"], a["kv_cache_dtype"])))
            raise ImportFailed(f"{self.tables.system}/{self.tables.framework} {self.tables.version} {table}: nothing "
                               f"measured for {self.heads} heads / {self.kv_heads} KV heads / head_dim "
                               f"{self.model.head_dim} / KV {KV_DTYPES[self.kv_dtype]} / window {window}; measured "
                               f"(heads, kv heads, head_dim, kv dtype): {have[:40]}")
        name = table if not window else f"{table}[window {window}]"
        rows, self.kernels[name] = _one_kernel(a[keep], table)
        return LogGrid.from_frame(name, rows, ("batch_size", length_axis))

    def _allreduce_grids(self) -> dict[bool, LogGrid]:
        """{cuda_graph: grid} for this TP size; one grid for both when the table has no graph/eager split."""
        ar = self.tables.allreduce
        ar = ar[ar["num_gpus"] == self.tp]
        if "allreduce_dtype" in ar.columns:
            ar = ar[ar["allreduce_dtype"] == "bfloat16"]
        if ar.empty:
            raise ImportFailed(f"{self.tables.system}/{self.tables.framework} {self.tables.comm_version}: no bf16 "
                               f"all-reduce measured on {self.tp} GPUs")
        if "backend" not in ar.columns or ar["backend"].nunique() == 1:
            rows, self.kernels["allreduce"] = _one_kernel(ar, "all-reduce")
            grid = LogGrid.from_frame("allreduce", rows, ("message_size",))
            return {True: grid, False: grid}
        grids = {}
        for graph in (True, False):
            sub = ar[ar["backend"].str.contains("graph" if graph else "eager")]
            rows, self.kernels[f"allreduce_{'graph' if graph else 'eager'}"] = _one_kernel(sub, "all-reduce")
            grids[graph] = LogGrid.from_frame(f"allreduce[{'graph' if graph else 'eager'}]", rows, ("message_size",))
        return grids

    # -- lookups, in seconds -------------------------------------------------------------------

    def _gemm_s(self, grid: LogGrid, m: int, n: int, k: int, log: LookupLog) -> float:
        """A GEMM larger than any measured m or n is run as equal measured-size pieces (rows and output
        columns split without changing the work), summed."""
        if m <= 0:
            return 0.0
        pieces_m = -(-m // int(grid.max("m")))
        pieces_n = -(-n // int(grid.max("n")))
        if pieces_m * pieces_n > 1:
            log.split[grid.table] += 1
        return pieces_m * pieces_n * grid.lookup((m / pieces_m, n / pieces_n, k), log) * MS

    def _memory_op_s(self, bytes_moved: float) -> float:
        """aiconfigurator's analytic model of an element-wise op (not a measured table)."""
        t = self.tables
        return t.mem_latency_s + bytes_moved / (t.mem_bw_bytes_per_s * t.mem_bw_scaling)

    def _allreduce_s(self, tokens: int, log: LookupLog) -> float:
        grid = self.allreduce[tokens <= CUDA_GRAPH_MAX_TOKENS]
        return grid.lookup((tokens * self.model.hidden_size,), log) * MS

    def _allreduce_elements_s(self, tokens: int, elements: int, log: LookupLog) -> float:
        """An all-reduce of `elements` bf16 elements in a step of `tokens` tokens; a message smaller than
        any measured one is priced at the smallest measured size (launch-bound either way)."""
        grid = self.allreduce[tokens <= CUDA_GRAPH_MAX_TOKENS]
        return grid.lookup((max(elements, int(grid.axes[0][0])),), log) * MS

    def step(self, chunk_tokens, context_tokens, samples, log: LookupLog) -> dict[str, float]:
        """Seconds per op group for one step: sequence j computes chunk_tokens[j] tokens on top of
        context_tokens[j] cached ones and samples samples[j] positions (as sim.step_features.step_features)."""
        chunk = [int(x) for x in chunk_tokens]
        context = [int(x) for x in context_tokens]
        sampled = int(sum(int(s) for s in samples))
        T = sum(chunk)
        prompts, decodes = Counter(), Counter()
        for L, c in zip(chunk, context):
            if L <= 0:
                continue
            if c == 0:
                prompts[L] += 1
            elif L == 1:
                decodes[c] += 1
            else:
                raise ImportFailed(f"a {L}-token chunk on top of {c} cached tokens: the context-attention tables "
                                   "measure prompts from position 0 only")
        m, layers = self.model, self.model.num_layers
        gemm = sum(self._gemm_s(self.gemm, T, n, k, log) for n, k in self.shapes.values())
        if self.quant is not None:  # fp8 GEMMs quantise their bf16 input activations first
            gemm += sum(self.quant.lookup((T, k), log) * MS for _, k in self.shapes.values())
        attention = 0.0
        for window, n_layers in self.attention_layers:
            ctx_grid, gen_grid = self.context_attention[window], self.generation_attention[window]
            per_layer = sum(ctx_grid.lookup((cnt, L), log) * MS for L, cnt in prompts.items())
            per_layer += sum(gen_grid.lookup((cnt, self._window_context(gen_grid, c, window)), log) * MS
                             for c, cnt in decodes.items())
            attention += n_layers * per_layer
        h, f = m.hidden_size, m.ffn_size // self.tp
        parts = {}
        if self.moe is not None:
            # Router logits (bf16 GEMM, tokens x experts), then one fused-MoE call: routing, expert
            # GEMMs and the gated activation; residual-add + RMSNorm twice as for a dense layer.
            # A router narrower than any measured GEMM (Mixtral's 8 experts) is priced at the narrowest
            # measured n: launch-bound either way.
            router_n = max(m.num_experts, int(self.gemm_bf16.axes[self.gemm_bf16.axis_names.index("n")][0]))
            gemm += self._gemm_s(self.gemm_bf16, T, router_n, h, log)
            parts["moe_s"] = layers * self.moe.lookup((T,), log) * MS
            elementwise = 2 * self._memory_op_s(T * 4 * h * 2)
        else:
            # Two residual-add + RMSNorm (2h in, 2h out per token) and SiLU-and-mul (2f in, f out), bf16.
            elementwise = 2 * self._memory_op_s(T * 4 * h * 2) + self._memory_op_s(T * 3 * f * 2)
        comm = 2 * self._allreduce_s(T, log) if self.tp > 1 else 0.0
        aux = self.attention_aux_s(T, log)
        comm += aux.pop("qk_norm_allreduce", 0.0)
        elementwise += sum(aux.values())
        embedding = self._memory_op_s(T * 2 * h * 2) + (self._allreduce_s(T, log) if self.tp > 1 else 0.0)
        lm_head = self._gemm_s(self.gemm_bf16, sampled, self.lm_head_n, h, log)
        return {"gemm_s": layers * gemm, "attention_s": attention, "comm_s": layers * comm,
                "elementwise_s": layers * elementwise + embedding, "lm_head_s": lm_head, **parts,
                "overhead_s": self.step_overhead_s}

    @staticmethod
    def _window_context(grid: LogGrid, context: int, window: int) -> int:
        """A sliding-window decode reads at most `window` tokens: past the largest measured context the
        kernel's time no longer depends on it, so a longer context is looked up at that edge (not a clamp)
        when the table was measured beyond the window."""
        if window and context > grid.max("step") >= window:
            return int(grid.max("step"))
        return context
