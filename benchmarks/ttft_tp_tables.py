"""The inputs and tables of benchmarks/ttft_tp_diagnosis.py: per-row results, lone prefills composed
from the op tables the shipped profiles were built from (by op group, beside the profile's own price and
the package's NCCL all-reduce table), and the markdown tables built from them. See that script."""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.grid_bias import composer_of  # noqa: E402
from calibration.aic_tables import MS, LogGrid, LookupLog, require_package  # noqa: E402
from calibration.profile import list_shipped_profiles, load_profile  # noqa: E402
from sim.engine_terms import engine_terms  # noqa: E402
from sim.step_features import price, step_features  # noqa: E402

MAIN = ("llama-3.1-70b", ("fp8", "fp4"), (1024, 8192))  # fp8: the question; fp4 (B200 only): control
CONTROL = ("qwen3-32b", ("bf16",), (1024, 4096))  # in-sample rows on H100
GROUPS = ("gemm_s", "attention_s", "comm_s", "elementwise_s", "lm_head_s")
NEED = {"gpu", "model", "dtype", "tp", "isl", "osl", "concurrency", "split", "ttft_ms", "pred_ttft_ms",
        "pred_ttft_steady_ms", "lone_prefill_ms", "ttft_err_pct", "tpot_err_pct", "terms_version"}


# --------------------------------------------------------------------------- inputs

def read_results(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = sorted(NEED - set(df.columns))
    if missing:
        raise SystemExit(f"--results: {path} lacks columns {missing} (write it with validate_silicon.py --csv)")
    return df


def rows_of(df: pd.DataFrame, spec: tuple) -> pd.DataFrame:
    model, dtypes, _ = spec
    out = df[(df["model"] == model) & df["dtype"].isin(dtypes)]
    if out.empty:
        raise SystemExit(f"--results: no {model} rows in {list(dtypes)}")
    return out.copy()


def profile_name(model: str, gpu: str, tp: int, dtype: str) -> str:
    """The shipped profile a row of this GPU, TP and dtype runs on (as calibration.silicon.Row.profile)."""
    base = f"{gpu}_{model}_tp{tp}_{dtype}"
    shipped = list_shipped_profiles()
    return base if base in shipped else next(n for n in shipped if n.startswith(base + "_kv"))


@lru_cache(maxsize=32)
def nccl_allreduce(system: str, tp: int) -> LogGrid | None:
    """aiconfigurator-core's NCCL all-reduce (fp16) by message size on `tp` GPUs, newest NCCL version."""
    folder = require_package() / "data" / system / "comm" / "nccl"
    if not folder.is_dir():
        return None
    versions = sorted((p for p in folder.iterdir() if (p / "nccl_perf.parquet").is_file()),
                      key=lambda p: tuple(int(x) if x.isdigit() else -1 for x in p.name.split(".")))
    if not versions:
        return None
    t = pd.read_parquet(versions[-1] / "nccl_perf.parquet")
    t = t[(t["op_name"] == "all_reduce") & (t["nccl_dtype"] == "half") & (t["num_gpus"] == tp)]
    return LogGrid.from_frame(f"nccl all_reduce {versions[-1].name}", t, ("message_size",)) if len(t) else None


def composed_prefill(model: str, gpu: str, tp: int, dtype: str, isl: int) -> dict[str, float]:
    """A lone prefill of `isl` tokens (one step, one sampled position), ms per op group, from the op
    tables and kernel choices the shipped profile was composed with; plus the profile's own price."""
    prof = load_profile(profile_name(model, gpu, tp, dtype))
    system = prof.provenance["system"]
    comp = composer_of(prof)
    log = LookupLog()
    parts = comp.step([isl], [0], [1], log)
    layers = comp.model.num_layers
    out = {k: 1e3 * parts[k] for k in GROUPS}
    out["quant_s"] = 0.0
    if comp.quant is not None:  # the fp8 activation quantisation inside gemm_s
        out["quant_s"] = 1e3 * layers * sum(comp.quant.lookup((isl, k), log) * MS for _, k in comp.shapes.values())
    out["total"] = sum(out[k] for k in GROUPS)
    out["profile"] = 1e3 * price(prof.cost_model(), step_features(np.array([isl]), np.array([0]), np.array([1])))
    flops = 2.0 * isl * layers * sum(n * k for n, k in comp.shapes.values())
    out["gemm_tflops"] = flops / (out["gemm_s"] - out["quant_s"]) / 1e9  # per GPU, TFLOP/s
    out["ar_call_ms"] = 1e3 * comp._allreduce_s(isl, log) if tp > 1 else float("nan")
    grid = nccl_allreduce(system, tp) if tp > 1 else None
    out["nccl_call_ms"] = grid.lookup((isl * comp.model.hidden_size,), LookupLog()) if grid else float("nan")
    out["clamped"] = sum(log.clamped.values())
    return out


def terms_for(gpu: str, version: str) -> tuple[float, float]:
    """(compute_scale, response latency ms) of the engine terms a row of `gpu` was simulated with."""
    t = engine_terms("vllm", str(version), gpu=gpu)
    return t.overhead.compute_scale, 1e3 * t.overhead.response_latency_s


# --------------------------------------------------------------------------- tables

def fmt(v: float, signed: bool = False, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def med(s: pd.Series) -> float:
    return float(s.median()) if len(s) else float("nan")


def md_table(header: list[str], rows: list[list[str]], left: int) -> list[str]:
    align = ["---" if i < left else "---:" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def setups(df: pd.DataFrame, dtypes: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """(gpu, dtype, tp), by dtype, GPU, then TP (so the first of a GPU and dtype is its lowest TP)."""
    return sorted({(g, d, int(t)) for g, d, t in zip(df["gpu"], df["dtype"], df["tp"])},
                  key=lambda s: (dtypes.index(s[1]), s[0], s[2]))


def select(df: pd.DataFrame, gpu: str, dtype: str, tp: int) -> pd.DataFrame:
    return df[(df["gpu"] == gpu) & (df["dtype"] == dtype) & (df["tp"] == tp)]


def error_by_concurrency(df: pd.DataFrame, spec: tuple) -> list[str]:
    _, dtypes, isls = spec
    concs = sorted(int(c) for c in df["concurrency"].unique())
    header = ["gpu", "dtype", "tp", "rows", "TTFT all", *[f"c{c}" for c in concs],
              *[f"c{concs[0]} ISL {i}" for i in isls], "TPOT all"]
    rows = []
    for gpu, dtype, tp in setups(df, dtypes):
        s = select(df, gpu, dtype, tp)
        lo = s[s["concurrency"] == concs[0]]
        rows.append([gpu, dtype, str(tp), str(len(s)), fmt(med(s["ttft_err_pct"]), True),
                     *[fmt(med(s.loc[s["concurrency"] == c, "ttft_err_pct"]), True) for c in concs],
                     *[fmt(med(lo.loc[lo["isl"] == i, "ttft_err_pct"]), True) for i in isls],
                     fmt(med(s["tpot_err_pct"]), True)])
    return md_table(header, rows, 3)


def compose_all(df: pd.DataFrame, spec: tuple) -> dict:
    model, dtypes, isls = spec
    return {(gpu, dtype, tp, isl): composed_prefill(model, gpu, tp, dtype, isl)
            for gpu, dtype, tp in setups(df, dtypes) for isl in isls}


def breakdown(comp: dict) -> list[str]:
    header = ["gpu", "dtype", "tp", "ISL", "GEMM ms", "of which fp8 quant", "GEMM TFLOP/s", "attention",
              "all-reduce", "element-wise", "LM head", "composed", "all-reduce %", "element-wise %", "profile ms",
              "profile vs composed %"]
    rows = []
    for (gpu, dtype, tp, isl), c in comp.items():
        rows.append([gpu, dtype, str(tp), str(isl), fmt(c["gemm_s"]), fmt(c["quant_s"]), fmt(c["gemm_tflops"], digits=0),
                     fmt(c["attention_s"]), fmt(c["comm_s"]), fmt(c["elementwise_s"]), fmt(c["lm_head_s"]),
                     fmt(c["total"]), fmt(100 * c["comm_s"] / c["total"]), fmt(100 * c["elementwise_s"] / c["total"]),
                     fmt(c["profile"]), fmt(100 * (c["profile"] / c["total"] - 1), True)])
    return md_table(header, rows, 4)


def allreduce_vs_nccl(comp: dict) -> list[str]:
    header = ["gpu", "dtype", "tp", "ISL", "all-reduce per call, composer's table ms", "NCCL table ms",
              "composer / NCCL", "step all-reduce ms", "at NCCL's price ms"]
    rows = []
    for (gpu, dtype, tp, isl), c in comp.items():
        if tp == 1 or dtype != "fp8":  # one row per GPU x TP: the message size does not depend on the dtype
            continue
        r = c["ar_call_ms"] / c["nccl_call_ms"]
        rows.append([gpu, dtype, str(tp), str(isl), fmt(c["ar_call_ms"], digits=3), fmt(c["nccl_call_ms"], digits=3),
                     fmt(r, digits=2), fmt(c["comm_s"]), fmt(c["comm_s"] / r)])
    return md_table(header, rows, 4)


def lowest_c_means(df: pd.DataFrame, gpu: str, dtype: str, tp: int, isls) -> dict[int, pd.Series]:
    """Mean of the lowest-concurrency rows of each ISL (over its OSLs)."""
    s = select(df, gpu, dtype, tp)
    s = s[s["concurrency"] == s["concurrency"].min()]
    cols = ["ttft_ms", "pred_ttft_ms", "pred_ttft_steady_ms", "lone_prefill_ms"]
    return {isl: s.loc[s["isl"] == isl, cols].mean() for isl in isls if (s["isl"] == isl).any()}


def implied_prefill(df: pd.DataFrame, comp: dict, spec: tuple) -> tuple[list[str], dict]:
    """(c) What the rows say about the prefill: at the lowest concurrency, TTFT(long) - TTFT(short), where
    the response latency and other per-request constants cancel, against the composer's difference.
    Returns the table and {(gpu, dtype, tp): measured / composed}."""
    _, dtypes, (short, long) = spec
    header = ["gpu", "dtype", "tp", "measured Δ ms", "predicted Δ ms", "composed Δ ms", "x compute_scale",
              "measured / composed", "predicted / (composed x scale)", "all-reduce Δ ms", "excess vs lowest TP ms",
              "excess / all-reduce Δ"]
    rows, ratios, base = [], {}, {}
    for gpu, dtype, tp in setups(df, dtypes):
        m = lowest_c_means(df, gpu, dtype, tp, (short, long))
        if set(m) != {short, long}:
            continue
        scale, _ = terms_for(gpu, select(df, gpu, dtype, tp)["terms_version"].iloc[0])
        d_meas = m[long]["ttft_ms"] - m[short]["ttft_ms"]
        d_pred = m[long]["pred_ttft_ms"] - m[short]["pred_ttft_ms"]
        cl, cs = comp[(gpu, dtype, tp, long)], comp[(gpu, dtype, tp, short)]
        d_comp, d_comm = cl["total"] - cs["total"], cl["comm_s"] - cs["comm_s"]
        ratios[(gpu, dtype, tp)] = ratio = d_meas / d_comp
        base.setdefault((gpu, dtype), ratio)  # setups() is sorted by TP: the first is the lowest
        excess = d_comp * base[(gpu, dtype)] - d_meas
        rows.append([gpu, dtype, str(tp), fmt(d_meas, digits=0), fmt(d_pred, digits=0), fmt(d_comp, digits=0),
                     fmt(d_comp * scale, digits=0), fmt(ratio, digits=2), fmt(d_pred / (d_comp * scale), digits=2),
                     fmt(d_comm, digits=0), fmt(excess, True, 0),
                     fmt(excess / d_comm, digits=2) if d_comm > 0 else "—"])
    return md_table(header, rows, 3), ratios


WHAT_IFS = ("all-reduce at NCCL's price", "GEMMs at lowest TP's TFLOP/s", "no fp8 quant", "no element-wise ops")


def _cut_ms(comp: dict, gpu: str, dtype: str, tp: int, tp0: int, isl: int) -> tuple[float, ...]:
    """Composed ms each what-if (WHAT_IFS) takes off one lone prefill."""
    c = comp[(gpu, dtype, tp, isl)]
    ar = c["comm_s"] * (1 - c["nccl_call_ms"] / c["ar_call_ms"]) if c["comm_s"] else 0.0
    gemm = (c["gemm_s"] - c["quant_s"]) * (1 - c["gemm_tflops"] / comp[(gpu, dtype, tp0, isl)]["gemm_tflops"])
    return ar, gemm, c["quant_s"], c["elementwise_s"]


def attribution(df: pd.DataFrame, comp: dict, spec: tuple) -> tuple[list[str], dict]:
    """Section 3's excess (composed ms: composed Δ - measured Δ / the lowest TP's measured/composed ratio)
    left after each what-if in WHAT_IFS, applied to the composer at every TP of the setup (its lowest
    TP included, so the baseline ratio moves with it), alone and all together.
    Returns the table and {(gpu, dtype, tp): {what-if or "as composed" or "together": excess}}."""
    _, dtypes, (short, long) = spec
    header = ["gpu", "dtype", "tp", "excess as composed", *[f"after {w}" for w in WHAT_IFS], "after all four"]
    rows, out = [], {}
    for gpu, dtype in sorted({(g, d) for g, d, _ in setups(df, dtypes)}, key=lambda s: (dtypes.index(s[1]), s[0])):
        tps = [t for g, d, t in setups(df, dtypes) if g == gpu and d == dtype
               and set(lowest_c_means(df, g, d, t, (short, long))) == {short, long}]
        if len(tps) < 2:
            continue
        tp0 = tps[0]
        d_meas = {t: (lambda m: m[long]["ttft_ms"] - m[short]["ttft_ms"])(lowest_c_means(df, gpu, dtype, t, (short, long)))
                  for t in tps}

        def excess(keep: tuple[bool, ...]) -> dict[int, float]:
            d = {}
            for t in tps:
                cut_l, cut_s = _cut_ms(comp, gpu, dtype, t, tp0, long), _cut_ms(comp, gpu, dtype, t, tp0, short)
                d[t] = (comp[(gpu, dtype, t, long)]["total"] - comp[(gpu, dtype, t, short)]["total"]
                        - sum(a - b for a, b, k in zip(cut_l, cut_s, keep) if k))
            r0 = d_meas[tp0] / d[tp0]
            return {t: d[t] - d_meas[t] / r0 for t in tps}

        n = len(WHAT_IFS)
        cases = {"as composed": excess((False,) * n),
                 **{w: excess(tuple(i == j for j in range(n))) for i, w in enumerate(WHAT_IFS)},
                 "together": excess((True,) * n)}
        for t in tps[1:]:
            out[(gpu, dtype, t)] = {k: v[t] for k, v in cases.items()}
            rows.append([gpu, dtype, str(t), *[fmt(v[t], True, 0) for v in cases.values()]])
    return md_table(header, rows, 3), out


def decomposition(df: pd.DataFrame, spec: tuple) -> list[str]:
    """(d) The parts of the predicted TTFT at the lowest concurrency, ms and % of the prediction."""
    _, dtypes, isls = spec
    header = ["gpu", "dtype", "tp", "ISL", "measured ms", "predicted ms", "err %", "response latency",
              "prefill kernels (lone x scale)", "first wave", "rest of steady state", "response latency %",
              "first wave %", "rest %", "measured - RL - prefill kernels", "err % with RL 0"]
    rows = []
    for gpu, dtype, tp in setups(df, dtypes):
        scale, rl = terms_for(gpu, select(df, gpu, dtype, tp)["terms_version"].iloc[0])
        for isl, m in lowest_c_means(df, gpu, dtype, tp, isls).items():
            meas, pred, steady = m["ttft_ms"], m["pred_ttft_ms"], m["pred_ttft_steady_ms"]
            kern = scale * m["lone_prefill_ms"]
            wave = pred - steady  # bench mean = (first wave + (N - 1) x steady) / N
            rest = steady - rl - kern
            rows.append([gpu, dtype, str(tp), str(isl), fmt(meas, digits=0), fmt(pred, digits=0),
                         fmt(100 * (pred / meas - 1), True), fmt(rl), fmt(kern), fmt(wave), fmt(rest),
                         fmt(100 * rl / pred), fmt(100 * wave / pred), fmt(100 * rest / pred),
                         fmt(meas - rl - kern, True), fmt(100 * ((pred - rl) / meas - 1), True)])
    return md_table(header, rows, 4)
