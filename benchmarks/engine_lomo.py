"""Would the engine terms transfer better if they were fitted on more models? An experiment, not the fit.

A: the chosen structure (o2) fitted on the training models (calibration/engine_rows.TRAIN_MODELS), scored on the
held-out models' rows. B: the same structure, leave-one-model-out over every model with rows (each model
scored by terms fitted on all the others, held-out models included). Both on engine_cv's linear surrogate of
the simulation, on the same thinned rows (engine_cv's selection and screens, held-out rows with a recorded
vLLM version: Llama-3.1-70B's rows record none, so it is in neither). If B scored the held-out models better than A, fitting on every model would be the better
shipped fit (with leave-one-model-out as its report); on 2026-11-26 it scored them worse (TPOT 29.5 % vs
15.5 %), so the split stays.

    python benchmarks/engine_lomo.py --basis TRAIN.npz --held-basis HELD.npz   # each built if missing (~4 + ~2 min)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.engine_basis import BASIS_FIELDS, Basis, cached_basis  # noqa: E402
from calibration.engine_cv import STRUCTURES, fit_structure, folds, predict, training_rows  # noqa: E402
from calibration.engine_rows import TRAIN_MODELS, screen_fit_rows, thin  # noqa: E402
from calibration.plausibility import screen  # noqa: E402
from calibration.silicon import read_rows  # noqa: E402


def _line(label: str, e_tp: np.ndarray, e_tt: np.ndarray) -> str:
    return (f"{label:<44} rows {len(e_tp):4d}  TPOT {np.median(np.abs(e_tp)):5.1f} % ({np.median(e_tp):+5.1f})  "
            f"TTFT {np.median(np.abs(e_tt)):5.1f} % ({np.median(e_tt):+5.1f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--basis", default="", help="npz cache of the training rows' basis (engine_cv --basis)")
    ap.add_argument("--held-basis", default="", help="npz cache of the held-out rows' basis")
    ap.add_argument("--structure", default="o2", help="a structure of calibration/engine_structures.py, by prefix")
    args = ap.parse_args(argv)
    names = [s.name.split(":")[0] for s in STRUCTURES]
    if args.structure not in names:
        ap.error(f"--structure: got {args.structure!r}; allowed: {', '.join(names)}")
    st = STRUCTURES[names.index(args.structure)]
    train, _ = screen_fit_rows(training_rows(4)[0])
    rows, _ = read_rows()
    held = [r for r in rows if r.concurrency_recorded and r.backend_version != "not recorded"
            and r.model not in TRAIN_MODELS]
    held, _ = screen_fit_rows(thin(screen(held)[0], 4))
    bt = cached_basis(train, Path(args.basis) if args.basis else None)
    bh = cached_basis(held, Path(args.held_basis) if args.held_basis else None)
    b = Basis(train + held, *(np.concatenate([getattr(bt, k), getattr(bh, k)]) for k in BASIS_FIELDS))
    tr, ho = list(range(len(train))), list(range(len(train), len(b.rows)))

    def err(idx, t):
        ptp, ptt = predict(b, idx, t)
        return 100 * (ptp / b.tpot[idx] - 1), 100 * (ptt / b.ttft[idx] - 1)

    print(f"structure {st.name}; {len(train)} training rows, {len(held)} held-out rows (surrogate)")
    print(_line("A: fitted on the training models", *err(ho, fit_structure(b, tr, st))))
    models = sorted({r.model for r in b.rows})
    out = {}
    for model, fit_idx, test_idx in folds(b.rows, models):
        out[model] = err(test_idx, fit_structure(b, fit_idx, st))
        print(_line(f"  B: {model} (fitted on the other {len(models) - 1})", *out[model]))
    held_models = [m for m in models if m not in TRAIN_MODELS]
    print(_line("B: leave-one-model-out, held-out models", *(np.concatenate([out[m][i] for m in held_models])
                                                             for i in (0, 1))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
