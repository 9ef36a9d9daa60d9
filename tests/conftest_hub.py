"""Helpers shared by the hub/transformers/timm/convert tests (imported; pytest does not load this by itself).

Golden checkpoints are converted once per test process with the ``nystra-hub convert`` CLI into a temporary
folder; an offline Hugging Face cache (``models--org--name/refs/main``, ``snapshots/<commit>/``, ``blobs/``) is
built from those folders, and one subprocess with ``HF_HUB_CACHE``/``HF_HUB_OFFLINE=1`` set before any import
loads every folder by repo id through nystra_hub, transformers and timm.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import GOLDEN, golden_cases, load_golden

import nystra_hub

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4


@functools.cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="nystra_hub_hubtests_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def case_info(case: str) -> dict:
    return json.loads((GOLDEN / case / "case.json").read_text())


def available_cases() -> list[str]:
    """Golden cases whose architecture is implemented (the others are skipped with a reason)."""
    return [c for c in golden_cases() if case_info(c)["arch"] in nystra_hub.ARCHITECTURES]


def all_cases_params() -> list:
    marks = []
    for case in golden_cases():
        arch = case_info(case)["arch"]
        reason = f"architecture {arch!r} is not in nystra_hub.models.ARCHITECTURES yet"
        marks.append(pytest.param(case, marks=pytest.mark.skipif(arch not in nystra_hub.ARCHITECTURES,
                                                                 reason=reason)))
    return marks


def representative_cases_params() -> list:
    """One golden case per architecture, plus gray SwinIR (whose ``mean`` is the meta-init trap)."""
    chosen, seen = [], set()
    for case in golden_cases():
        arch = case_info(case)["arch"]
        if arch not in seen or case == "swinir_denoise_gray_3conv":
            seen.add(arch)
            chosen.append(case)
    return [p for p in all_cases_params() if p.values[0] in chosen]


@functools.cache
def reference(case: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input, golden output, output of the model built directly and loaded with the project's loader)."""
    model, io, _ = load_golden(case)
    with torch.no_grad():
        direct = model(io["input"])
    return io["input"], io["output"], direct


def check_parity(case: str, out: torch.Tensor) -> None:
    """``out`` must equal the direct model's output and the golden output (1e-4). When the architecture itself
    does not reach golden parity yet, that is its own tests' failure: skip the golden half with the reason."""
    _, golden, direct = reference(case)
    assert out.shape == golden.shape
    assert (out - direct).abs().max().item() < 1e-5, "loaded model differs from the directly loaded one"
    golden_err = (direct - golden).abs().max().item()
    if golden_err >= TOL:
        pytest.skip(f"{case}: the {case_info(case)['arch']} implementation misses golden parity by {golden_err:.3g} "
                    "(see its own tests)")
    assert (out - golden).abs().max().item() < TOL


def cli(*argv: str) -> int:
    from nystra_hub.cli import main

    return main([str(a) for a in argv])


@functools.cache
def converted(case: str) -> Path:
    """The golden case converted with ``nystra-hub convert --arch ... --kwargs case.json``."""
    out = workdir() / "converted" / case
    rc = cli("convert", GOLDEN / case / "checkpoint.pth", "--arch", case_info(case)["arch"],
             "--kwargs", GOLDEN / case / "case.json", "--out", out)
    assert rc == 0, f"convert {case} failed"
    return out


def repo_id_for(case: str) -> str:
    return f"nystra-test/{case.replace('_', '-')}"


def add_to_hf_cache(folder: Path, repo_id: str, cache: Path) -> Path:
    """Lay ``folder`` out as huggingface_hub's cache does: blobs by content hash, snapshot links, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.name
        if not link.exists():
            os.symlink(os.path.relpath(blob, snapshot), link)
    return snapshot


@functools.cache
def swinir_s_x2_checkpoint() -> Path:
    """A released-format ({'params': sd}) checkpoint of the catalogue variant swinir-s-x2 (random weights:
    no real checkpoint can be downloaded here), with a perturbed bias table so position terms matter."""
    model = nystra_hub.build_variant("swinir-s-x2")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if k.endswith("relative_position_bias_table"):
            v.normal_(0, 1.0)
    path = workdir() / "001_swinir_s_x2_released.pth"
    torch.save({"params": state}, path)
    return path


OFFLINE_SCRIPT = r"""
import json, sys, time
import torch
from safetensors.torch import load_file
import huggingface_hub.constants as C
t0 = time.perf_counter()
import nystra_hub, timm
from transformers import AutoModel

jobs = json.loads(sys.argv[1])
res = {"import_seconds": round(time.perf_counter() - t0, 2), "offline": C.HF_HUB_OFFLINE, "cache": C.HF_HUB_CACHE,
       "runs": {}, "seconds": {}}

def run(key, fn):
    start = time.perf_counter()
    try:
        res["runs"][key] = fn()
    except Exception as err:
        res["runs"][key] = {"error": type(err).__name__, "message": str(err)[:2000]}
    res["seconds"][key] = round(time.perf_counter() - start, 2)

def output(model, x):
    with torch.no_grad():
        out = model(x)
    return getattr(out, "reconstruction", out)

for job in jobs:
    x = load_file(job["io"])["input"]
    def hub(job=job, x=x):
        m = nystra_hub.load_pretrained(job["repo"])
        torch.save(output(m, x), job["out"] + ".hub.pt")
        return {"attn": m.attn_impl}
    def hf(job=job, x=x):
        m, info = AutoModel.from_pretrained(job["repo"], output_loading_info=True)
        torch.save(output(m, x), job["out"] + ".hf.pt")
        out = {"cls": type(m).__name__, "info": {k: sorted(map(str, v)) for k, v in info.items()}}
        if job["extra"]:
            n = AutoModel.from_pretrained(job["repo"], attn_impl="nystra")
            out.update(nystra=n.attn_impl, hf_attn_implementation=n.config._attn_implementation)
        return out
    def tm(job=job, x=x):
        m = timm.create_model("hf-hub:" + job["repo"], pretrained=True)
        torch.save(output(m, x), job["out"] + ".timm.pt")
        out = {"cfg": {k: m.pretrained_cfg.get(k) for k in ("hf_hub_id", "source", "architecture")}}
        if job["extra"]:
            out["nystra"] = timm.create_model("hf-hub:" + job["repo"], pretrained=True, attn_impl="nystra").attn_impl
        return out
    run(job["case"] + "/hub", hub)
    run(job["case"] + "/hf", hf)
    run(job["case"] + "/timm", tm)

run("missing/hub", lambda: nystra_hub.load_pretrained("nystra-test/not-in-cache"))
run("variant/hub", lambda: {"attn": nystra_hub.load_pretrained("swinir-s-x2", attn_impl="nystra").attn_impl})
run("variant/hf", lambda: {"cls": type(AutoModel.from_pretrained("nystra/swinir-s-x2")).__name__})
def variant_timm():
    m = timm.create_model("swinir_s_x2", pretrained=True, attn_impl="nystra")
    ref = nystra_hub.load_pretrained("swinir-s-x2", attn_impl="nystra")
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        return {"attn": m.attn_impl, "source": m.pretrained_cfg.get("hf_hub_id"), "equal": torch.equal(m(x), ref(x))}
run("variant/timm", variant_timm)
print(json.dumps(res))
"""


@functools.cache
def offline_results() -> dict:
    """Run every golden folder by repo id through nystra_hub, transformers and timm in one offline subprocess."""
    cache = workdir() / "hf_cache"
    jobs = []
    for case in available_cases():
        add_to_hf_cache(converted(case), repo_id_for(case), cache)
        jobs.append(dict(case=case, repo=repo_id_for(case), io=str(GOLDEN / case / "io.safetensors"),
                         out=str(workdir() / f"offline_{case}"), extra=not jobs))
    # the catalogue variant swinir-s-x2 under its default repo id nystra/swinir-s-x2
    variant_dir = workdir() / "converted" / "swinir-s-x2"
    assert cli("convert", swinir_s_x2_checkpoint(), "--variant", "swinir-s-x2", "--out", variant_dir) == 0
    add_to_hf_cache(variant_dir, "nystra/swinir-s-x2", cache)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_HOME=str(workdir() / "hf_home"))
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(jobs)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["cache_dir"] = str(cache)
    return res


def offline_output(case: str, path: str) -> torch.Tensor:
    result = offline_results()["runs"][f"{case}/{path}"]
    assert "error" not in result, result
    return torch.load(str(workdir() / f"offline_{case}.{path}.pt"))
