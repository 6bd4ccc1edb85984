"""What tokenising a prompt costs the API server, per prompt token (docs/ttft_gpu.md, "Response latency per
prompt token").

    python benchmarks/tokenizer_cost.py [--json OUT]

vLLM's OpenAI server tokenises every text prompt in its own process before the engine sees the request, with
the Hugging Face fast tokenizer the model ships (`tokenizer(prompt)`). No real model's tokenizer is available
offline here, so two stand-ins are timed the way the server calls them (transformers' PreTrainedTokenizerFast):

- a byte-level BPE with a Llama-3-style split pattern and a 32k vocabulary, trained here in seconds on the
  installed vLLM's own Python sources (the kind of tokenizer Llama 3 / Qwen3 ship: regex pre-split, then BPE);
- the word-level tokenizer of the tiny test model (`--wordlevel FILE`, skipped when absent).

Prompts as `vllm bench serve`'s random dataset builds them (random token ids decoded to text, which the server
encodes again) and natural text (source code) of the same token count. CPU seconds (process_time), one thread
per call. The per-token figure is what ServingOverhead.response_latency_per_prompt_token_s would carry.
"""
from __future__ import annotations

import argparse
import glob
import json
import random
import time
from pathlib import Path

LENGTHS_TOKENS = (128, 1024, 4096, 8192)
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+")


def corpus(limit_files: int = 1500) -> list[str]:
    import vllm

    root = Path(vllm.__file__).parent
    files = sorted(glob.glob(f"{root}/**/*.py", recursive=True))[:limit_files]
    return [Path(f).read_text(errors="ignore") for f in files]


def bpe_tokenizer(text: list[str], vocab_size: int = 32000):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=vocab_size,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def cpu_s_per_call(fn, reps: int) -> float:
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t0) / reps


def measure(tok, text: list[str], seed: int = 0) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    natural_ids = tok(" ".join(text[:400]))["input_ids"]
    out = {}
    for n in LENGTHS_TOKENS:
        random_prompt = tok.decode([rng.randrange(300, tok.vocab_size - 10) for _ in range(n)])
        natural_prompt = tok.decode(natural_ids[:n])
        reps = max(3, 20000 // n)
        row = {}
        for kind, prompt in (("random", random_prompt), ("natural", natural_prompt)):
            tokens = len(tok(prompt)["input_ids"])
            s = cpu_s_per_call(lambda p=prompt: tok(p), reps)
            row[f"{kind}_tokens"] = tokens
            row[f"{kind}_ms"] = round(s * 1e3, 3)
            row[f"{kind}_us_per_token"] = round(s / tokens * 1e6, 3)
        out[str(n)] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordlevel", default="/tmp/h13_real/model/tokenizer.json",
                    help="a tokenizer.json to time beside the BPE (skipped when absent)")
    ap.add_argument("--json", default="", help="write the figures here")
    args = ap.parse_args(argv)
    text = corpus()
    res = {"bpe32k_bytelevel": measure(bpe_tokenizer(text), text)}
    if Path(args.wordlevel).is_file():
        from transformers import PreTrainedTokenizerFast

        res["wordlevel_test_model"] = measure(PreTrainedTokenizerFast(tokenizer_file=args.wordlevel), text)
    for name, rows in res.items():
        for n, row in rows.items():
            print(f"{name:22s} {n:>5} tokens: random {row['random_ms']:7.2f} ms "
                  f"({row['random_us_per_token']:.2f} us/token)  natural {row['natural_ms']:7.2f} ms "
                  f"({row['natural_us_per_token']:.2f} us/token)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
