"""Pack vLLM for a GPU lease whose image has no vLLM: wheels cut into parts that travel one call each.

Why: the `device` tool's GPU machines run PyTorch 2.11.0 (CUDA 13.0, Python 3.12) and no vLLM, nothing can
be fetched there, and one call carries at most 64 MiB of working tree. vLLM 0.26.0 is the newest release
that pins torch==2.11.0 (and torchvision 0.26.0, torchaudio 2.11.0: the image's; 0.27.0 and later pin
torch 2.13.0); its wheel alone is 290 MiB. But ignored paths already on a warm machine stay there between
calls, so the wheels can arrive in parts: each call carries one folder `.vllm_carry/pK` (K = 1..N) and the
last one reassembles and installs them (benchmarks/gpu_vllm_session.sh). The calls must follow one another
within the machine's warm window (30 s): prepare them all before the first. Parts of 56 MiB (the default)
beside the repo's ~6 MiB of tracked files: 4 parts, 4 calls.

What is packed (read `.vllm_carry/manifest.json`):
- vllm 0.26.0, slimmed: files a Hopper run of a dense model does not load are left out (FlashAttention-2's
  kernels, which vLLM imports in a try block and does not use on sm90 where FA3 is there; the Rust
  front-end binary, off unless VLLM_USE_RUST_FRONTEND is set; Blackwell's fmha sources; DeepGEMM's
  extensions for other Pythons); the list is SLIM_DROP below and the manifest records each file dropped;
- the packages of vLLM's dependency closure (resolved here for CPython 3.12 on x86-64, with stand-ins for
  torch, torchvision, torchaudio and triton so that the image's own are kept) that the image lacks
  (IMAGE_PACKAGES: KINDS.md's list as read on 2026-11-17), less SKIP (large optional kernels and codecs that
  a dense Llama run does not import).

    python benchmarks/gpu_vllm_pack.py [--out .vllm_carry] [--part-mib 50] [--cache .cache/vllm_wheels]

It needs network access to the package index (pip download), about 1.3 GB of disk for the cache and a
minute or two. Nothing here runs vLLM.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_VERSION = "0.26.0"
# What the image holds that vLLM pins (KINDS.md: torch 2.11.0, torchvision 0.26.0, torchaudio 2.11.0, triton 3.6.0).
IMAGE_PINS = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0", "triton": "3.6.0"}
# The device image's Python packages (KINDS.md, 'cuda' image, as read on a machine on 2026-11-17).
IMAGE_PACKAGES = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet
filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp""".split())
# Large and optional for a dense model on Hopper: Blackwell / CuTe-DSL kernels and their compilers, TileLang,
# video codecs, an SMT solver. vLLM imports each where a feature needs it, not at start-up.
SKIP = {"tokenspeed-triton", "nvidia-cutlass-dsl-libs-cu12", "nvidia-cutlass-dsl-libs-cu13", "nvidia-nvvm",
        "nvidia-cuda-nvcc", "nvidia-cuda-nvdisasm", "nvidia-cuda-cccl", "nvidia-cuda-crt", "tilelang",
        "pynvvideocodec", "z3-solver", "torchcodec"}
# Files of the vllm wheel left out (regular expressions on the archive path).
SLIM_DROP = (r"^vllm/vllm_flash_attn/_vllm_fa2_C\.abi3\.so$", r"^vllm/vllm-rs$", r"^vllm/third_party/fmha_sm100/",
             r"^vllm/third_party/deep_gemm/_C\.cpython-3(10|11|13|14)-")
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64", "any")


def norm(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    return norm(path.name.split("-")[0])


def stand_in(folder: Path, name: str, version: str) -> Path:
    """An empty wheel `name==version+image` that satisfies vLLM's pin without fetching the real one (a
    local version label sorts above the release, so pip takes it from --find-links)."""
    ver = f"{version}+image"
    dist = f"{name}-{ver}.dist-info"
    files = {f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: servesim\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode()},"
                     f"{len(v)}\n" for k, v in files.items()) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{ver}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{dist}/RECORD", record)
    return path


def download(cache: Path) -> list[Path]:
    """vllm==VLLM_VERSION and its closure for CPython 3.12 / x86-64 into `cache`/wheels, emptied first: a wheel
    left there by an earlier resolution (another version of a package) would be packed too, and two
    versions of one package stop the install on the GPU machine. (pip's own cache keeps a rerun fast.)"""
    wheels = cache / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    links = cache / "stand-ins"
    links.mkdir(parents=True, exist_ok=True)
    for name, version in IMAGE_PINS.items():
        stand_in(links, name, version)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--find-links", str(links), "-d", str(wheels)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    cmd += [f"vllm=={VLLM_VERSION}"] + [f"{n}=={v}+image" for n, v in IMAGE_PINS.items()]
    subprocess.run(cmd, check=True)
    return sorted(wheels.glob("*.whl"))


def slim(wheel: Path, out: Path) -> list[str]:
    """Copy `wheel` to `out` without the files SLIM_DROP names; returns them. (RECORD keeps their lines:
    pip installs a wheel whose RECORD lists files it lacks.)"""
    drop = [re.compile(p) for p in SLIM_DROP]
    dropped = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            if any(d.search(info.filename) for d in drop):
                dropped.append(info.filename)
                continue
            dst.writestr(info, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return dropped


def choose(wheels: list[Path]) -> tuple[list[Path], list[str]]:
    """The wheels to carry (the image lacks them and SKIP does not name them) and the names left out."""
    keep, left = [], []
    for w in wheels:
        n = wheel_name(w)
        if n in IMAGE_PINS or n in IMAGE_PACKAGES or n in SKIP:
            left.append(w.name)
        else:
            keep.append(w)
    return keep, left


def pack(wheels: list[Path], out: Path, part_bytes: int, dropped: list[str], left: list[str]) -> dict:
    """One uncompressed tar of `wheels` (already compressed), cut into parts out/pK/part, and a manifest."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tar_path = out / "wheels.tar"
    with tarfile.open(tar_path, "w") as tar:
        for w in wheels:
            tar.add(w, arcname=f"wheels/{w.name}")
    digest = hashlib.sha256(tar_path.read_bytes()).hexdigest()
    parts = []
    with open(tar_path, "rb") as f:
        k = 0
        while chunk := f.read(part_bytes):
            k += 1
            (out / f"p{k}").mkdir()
            (out / f"p{k}" / "part").write_bytes(chunk)
            parts.append({"folder": f"p{k}", "bytes": len(chunk)})
    tar_path.unlink()
    manifest = {"vllm": VLLM_VERSION, "python": "3.12", "tar_sha256": digest, "parts": parts,
                "wheels": [{"name": w.name, "bytes": w.stat().st_size} for w in wheels],
                "left_out_in_image_or_skipped": left, "dropped_from_vllm_wheel": dropped,
                "reassemble": "cat .vllm_carry/p*/part (in K order) > wheels.tar; sha256 = tar_sha256; tar x; "
                              "pip install --no-index --no-deps --target /tmp/site wheels/*.whl"}
    # The manifest travels with the first part (every call that carries p1 has it).
    (out / "p1" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def tracked_mib() -> float:
    """Size of the files git tracks here (they travel with every call)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file()) / 2 ** 20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / ".vllm_carry"), help="where the parts go (ignore it in git)")
    ap.add_argument("--part-mib", type=float, default=56.0,
                    help="size of each part (the working tree that travels, the repo's own files included, is at "
                         "most 64 MiB a call)")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "vllm_wheels"), help="download cache")
    a = ap.parse_args(argv)
    room_mib = 63.0 - tracked_mib()
    if not 1 <= a.part_mib <= room_mib:
        ap.error(f"--part-mib must be in 1..{room_mib:.1f} (64 MiB a call, less the repo's tracked files and the "
                 f"manifest), got {a.part_mib}")
    cache = Path(a.cache)
    wheels = download(cache)
    keep, left = choose(wheels)
    slimmed = cache / "slim"
    slimmed.mkdir(exist_ok=True)
    dropped: list[str] = []
    carried = []
    for w in keep:
        if wheel_name(w) == "vllm":
            target = slimmed / w.name
            dropped = slim(w, target)
            carried.append(target)
        else:
            carried.append(w)
    m = pack(carried, Path(a.out), int(a.part_mib * 2 ** 20), dropped, left)
    total = sum(p["bytes"] for p in m["parts"])
    print(f"{len(carried)} wheels, {total / 2 ** 20:.0f} MiB in {len(m['parts'])} parts under {a.out} "
          f"(vllm {VLLM_VERSION} slimmed by {len(dropped)} files; {len(left)} wheels left to the image or skipped)")
    print("carry one part per call, in order, on a warm machine: " + ", ".join(p["folder"] for p in m["parts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
