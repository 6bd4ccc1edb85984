"""benchmarks/gpu_vllm_pack.py and the reassembly in benchmarks/gpu_vllm_session.sh, without network or GPU:
what is carried, what the vllm wheel loses, and that parts carried one call each come back to the same
wheels (and are refused when one is damaged)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_vllm_pack as pack  # noqa: E402

SESSION = ROOT / "benchmarks" / "gpu_vllm_session.sh"


def test_choose_leaves_the_image_and_the_skipped_packages_behind(tmp_path):
    names = ["vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl", "torch-2.11.0+image-py3-none-any.whl",
             "numpy-2.3.5-cp312-cp312-manylinux_2_28_x86_64.whl", "pyzmq-27.3.0-cp312-abi3-manylinux_2_28_x86_64.whl",
             "tilelang-0.1.9-cp38-abi3-manylinux_2_28_x86_64.whl", "Typing_Extensions-4.15.0-py3-none-any.whl"]
    keep, left = pack.choose([tmp_path / n for n in names])
    assert [w.name for w in keep] == [names[0], names[3]]
    assert set(left) == {names[1], names[2], names[4], names[5]}  # image (torch, numpy, typing-extensions), SKIP


def test_slim_drops_exactly_the_named_files(tmp_path):
    src, out = tmp_path / "vllm-0.26.0-cp38-abi3-x.whl", tmp_path / "slim.whl"
    files = {"vllm/__init__.py": "x", "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": "fa2",
             "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so": "fa3", "vllm/vllm-rs": "rs",
             "vllm/third_party/fmha_sm100/a.hpp": "h", "vllm/third_party/deep_gemm/_C.cpython-311-x86_64-linux-gnu.so": "a",
             "vllm/third_party/deep_gemm/_C.cpython-312-x86_64-linux-gnu.so": "b"}
    with zipfile.ZipFile(src, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    dropped = pack.slim(src, out)
    assert sorted(dropped) == sorted(["vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "vllm/vllm-rs",
                                      "vllm/third_party/fmha_sm100/a.hpp",
                                      "vllm/third_party/deep_gemm/_C.cpython-311-x86_64-linux-gnu.so"])
    with zipfile.ZipFile(out) as z:  # FA3 and this Python's DeepGEMM stay, with their contents
        assert sorted(z.namelist()) == sorted(set(files) - set(dropped))
        assert z.read("vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so") == b"fa3"


def _packed(tmp_path: Path) -> tuple[Path, dict]:
    wheels = tmp_path / "w"
    wheels.mkdir()
    made = [pack.stand_in(wheels, name, "1.0") for name in ("alpha", "beta", "gamma")]
    work = tmp_path / "repo"
    work.mkdir()
    manifest = pack.pack(made, work / ".vllm_carry", part_bytes=400, dropped=[], left=["x"])
    return work, manifest


def _session(work: Path, site: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"INSTALL_ONLY": "1", "SITE": str(site), "OUT": str(work / "out")}
    return subprocess.run(["bash", str(SESSION)], cwd=work, env=env, capture_output=True, text=True, timeout=120)


def test_parts_carried_one_call_each_reassemble_and_install(tmp_path):
    work, manifest = _packed(tmp_path)
    assert len(manifest["parts"]) >= 3  # small parts: the wheels span several calls
    assert (work / ".vllm_carry" / "p1" / "manifest.json").is_file()  # the first call brings the manifest
    assert all(p["bytes"] <= 400 for p in manifest["parts"])
    r = _session(work, tmp_path / "site")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sha256 ok" in r.stdout
    installed = sorted(p.name for p in (tmp_path / "site").glob("*.dist-info"))
    assert installed == ["alpha-1.0+image.dist-info", "beta-1.0+image.dist-info", "gamma-1.0+image.dist-info"]


def test_a_damaged_or_missing_part_is_refused(tmp_path):
    work, manifest = _packed(tmp_path)
    part = work / ".vllm_carry" / "p2" / "part"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    r = _session(work, tmp_path / "site")
    assert r.returncode != 0 and "do not match the manifest" in r.stdout + r.stderr
    part.unlink()
    r = _session(work, tmp_path / "site2")
    assert r.returncode != 0 and "part p2 missing" in r.stdout + r.stderr


def test_a_part_leaves_room_for_the_repo_in_one_call():
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: the tracked files are not known")
    # Default part + the tracked files + the manifest must fit the device tool's 64 MiB a call.
    assert pack.tracked_mib() + 56.0 + 0.2 < 64.0


@pytest.mark.parametrize("name", ["torch", "torchvision", "torchaudio", "triton"])
def test_stand_ins_satisfy_the_image_pins(tmp_path, name):
    w = pack.stand_in(tmp_path, name, pack.IMAGE_PINS[name])
    with zipfile.ZipFile(w) as z:
        meta = z.read(f"{name}-{pack.IMAGE_PINS[name]}+image.dist-info/METADATA").decode()
    assert f"Version: {pack.IMAGE_PINS[name]}+image" in meta and "Requires-Dist" not in meta
