"""What every card and run page shares: the front matter's constants and paper tags, numbers as the cards print
them (a change is never -0.000), the facts of one run (date, machine, commit, timing), the reading of a report or a
``reference.json``, and :func:`check_card`, the guarantees every rendered card is checked against."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import EvalResult

from nystra_hub.models import ARCHITECTURES

LIBRARY_NAME = "nystra_hub"
PIPELINE_TAG = "image-to-image"
PNP_NYSTRA_ARXIV = "2506.08520"
MAX_CARD_LINES = 150  # the longest card tests/io/test_cards.py accepts

TASK_TAGS = {
    "classical-sr": ["super-resolution"],
    "lightweight-sr": ["super-resolution"],
    "real-sr": ["super-resolution", "real-world-super-resolution"],
    "denoise-gray": ["denoising"],
    "denoise-color": ["denoising"],
    "jpeg-gray": ["jpeg-artifact-removal"],
    "jpeg-color": ["jpeg-artifact-removal"],
    "denoise-real": ["denoising"],
    "deblur": ["deblurring"],
    "dehaze": ["dehazing"],
}
INSTALL = ("**Install** (from a clone of the nystra_hub repository; it is not on PyPI yet): "
           "`pip install \".[openvino]\"` (`[openvino]` adds the exported CPU route).")
NOT_MEASURED = "not measured on this device"
# a machine's own folders in a recorded command (the output of a run written to /tmp, a GPU machine's /root/out)
_MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:tmp|work|root|home|mnt|scratch|var)/\S*")


def arch_title(arch: str) -> str:
    return ARCHITECTURES[arch].spec.title


def arch_arxiv(arch: str) -> str | None:
    """The arXiv id of the architecture's paper, as its spec cites it."""
    found = re.search(r"arXiv (\d{4}\.\d{4,5})", ARCHITECTURES[arch].spec.paper)
    return found.group(1) if found else None


def paper_tags(arch: str) -> list[str]:
    return [f"arxiv:{i}" for i in (arch_arxiv(arch), PNP_NYSTRA_ARXIV) if i]


def papers(arch: str) -> str:
    spec = ARCHITECTURES[arch].spec
    paper = re.sub(r"arXiv (\d{4}\.\d{4,5})", r"[arXiv \1](https://arxiv.org/abs/\1)", spec.paper)
    return (f"Papers: {paper}; PnP-Nystra, [arXiv {PNP_NYSTRA_ARXIV}](https://arxiv.org/abs/{PNP_NYSTRA_ARXIV}) "
            "(training-free Nyström approximation of window attention).")


def public_command(command: str) -> str:
    """A recorded command without the machine's own paths (``/tmp/bench/x.json`` -> ``…/x.json``)."""
    return _MACHINE_PATH.sub(lambda m: "…/" + m.group().rstrip("/").rsplit("/", 1)[-1], command)


def _headings(markdown: str) -> list[str]:
    """The markdown headings outside fenced code blocks."""
    headings, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            headings.append(line.strip())
    return headings


def check_card(markdown: str, eval_results: Iterable[EvalResult] | None) -> None:
    """Raise ValueError when a card repeats a heading, names a model-index metric of one dataset twice, prints a
    negative zero or puts a speed figure into the model-index: what the renderer guarantees (see
    :mod:`nystra_hub.io.cards`)."""
    headings = _headings(markdown)
    problems = [f"repeated heading {h!r}" for h in sorted({h for h in headings if headings.count(h) > 1})]
    keys = [(r.dataset_name, r.metric_name) for r in eval_results or []]
    problems += [f"model-index lists {k} twice" for k in sorted({k for k in keys if keys.count(k) > 1})]
    problems += [f"model-index holds the speed figure {r.metric_name!r}" for r in eval_results or []
                 if re.search(r"speed|latency|time|throughput", f"{r.metric_type} {r.metric_name}", re.I)]
    problems += [f"negative zero {z!r}" for z in re.findall(r"(?<![\w.-])-0(?:\.0+)?(?![\d.])", markdown)]
    if problems:
        raise ValueError("inconsistent model card: " + "; ".join(problems))


def eval_result(task_name: str, dataset_type: str, dataset: str, metric_type: str, name: str,
                value: float) -> EvalResult:
    # the dataset name is also its config: huggingface_hub groups a model-index by type and config
    return EvalResult(task_type=PIPELINE_TAG, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset,
                      dataset_config=dataset, metric_type=metric_type, metric_name=name, metric_value=_rounded(value))


# -- numbers as the cards print them ---------------------------------------------------------------------------------
def _rounded(value: float, digits: int = 3) -> float:
    """``round`` without negative zero (a -0.0004 dB change is 0.0, not -0.0)."""
    return round(value, digits) + 0.0


def signed(value: float | None, digits: int = 3) -> str:
    """A change with its sign; one that rounds to zero is printed as 0 (never -0.000)."""
    if value is None:
        return "–"
    value = _rounded(value, digits)
    return f"{value:.{digits}f}" if value == 0 else f"{value:+.{digits}f}"


def num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def fmt_time(seconds: float) -> str:
    """A median as the cards print it: seconds with 2 decimals from 1 s, else milliseconds with 1."""
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def fmt_ratio(ratio: float | None) -> str:
    return "–" if not ratio else f"{ratio:.2f}×"


# -- facts of one run ------------------------------------------------------------------------------------------------
def is_gpu(report: dict) -> bool:
    return str(report.get("settings", {}).get("device", "")).startswith("cuda") or "cases" in report


def run_date(report: dict) -> str:
    return str(report.get("created", ""))[:10] or "date not recorded"


def run_commit(report: dict) -> tuple[str, bool]:
    """(short commit, whether the tree had uncommitted changes). A GPU report's own ``git_commit`` (written by
    gpu.sh) is the one of its run; its environment's may be the machine's stale checkout."""
    commit = str(report.get("git_commit") or report.get("environment", {}).get("git_commit") or "")
    return (commit.split("+")[0][:7] or "not recorded"), commit.endswith("+dirty")


def run_machine(report: dict) -> str:
    env = report.get("environment", {})
    if is_gpu(report):
        return f"one {env.get('device_name')}"
    threads = report.get("settings", {}).get("threads", env.get("torch_threads"))
    return (f"{env.get('cpu_model')} ({env.get('cpu_count')} logical cores), {threads} torch "
            f"thread{'' if threads == 1 else 's'}")


def run_page_link(report: dict) -> str:
    return report.get("_page") or ""


def run_name(report: dict) -> str:
    return report.get("_name") or f"{report.get('schema', 'run').split('/')[0].split('.')[-1]} run"


def run_reference(report: dict) -> str:
    """``[name](page) (date, machine, commit abc1234)``: which run a number comes from."""
    name, link = run_name(report), run_page_link(report)
    label = f"[{name}]({link})" if link else f"`{name}`"
    return f"{label} ({run_date(report)}, {run_machine(report)}, commit {run_commit(report)[0]})"


def run_timing(report: dict) -> str:
    settings = report.get("settings", {})
    if is_gpu(report):
        return f"{settings.get('runs')} timed rounds after a warm-up round, medians."
    warmup = settings.get("warmup")
    return (f"{'no warm-up' if not warmup else f'{warmup} warm-up'} + {settings.get('runs')} timed rounds, "
            "medians.")


def timed(entry: dict | None) -> float | None:
    return (entry or {}).get("median_s") or None


# -- facts of a reference model --------------------------------------------------------------------------------------
def image_sets(names: Iterable[str]) -> str:
    return " + ".join(dict.fromkeys(str(n).split("/")[0] for n in names))


UNDERTRAINED_DB = 0.3  # a larger window raising held-out PSNR by more than this: the model is not trained out


def training_extent(training: dict | None) -> str:
    """How much training a reference model had, from its reference.json ``training``: "1200 steps of batch 16,
    2.2 minutes on one NVIDIA H200" ('' when not recorded)."""
    if not training or not training.get("steps"):
        return ""
    devices = {piece.get("device_name") if piece.get("device") == "cuda" else "CPU"
               for piece in training.get("pieces", [])}
    where = " and ".join(sorted(f"one {d}" if d != "CPU" else "a CPU" for d in devices))
    batch = f" of batch {training['batch']}" if training.get("batch") else ""
    minutes = f", {training['train_seconds'] / 60:.1f} minutes" if training.get("train_seconds") else ""
    return f"{training['steps']} steps{batch}{minutes}" + (f" on {where}" if where else "")


def further_cost(training: dict | None) -> str:
    """Why the further training has not run, from the measured CPU step time that ``read_reference`` attached
    (``training-cost.json``, written by ``benchmarks/reference_step_time.py``): '' when not measured."""
    cost = (training or {}).get("further")
    if not cost:
        return ""
    cpu = cost["cpu"]
    return (f": the {cost['planned_steps']} further steps planned (`{cost['planned_by']}`) would take "
            f"{cpu['planned_hours']:.0f} hours on this project's {cost['environment']['cpu_count']}-core CPU "
            f"({cpu['seconds_per_step']:.1f} s a step of batch {cpu['batch']}, measured {cost['created'][:10]}), "
            "so they wait for a GPU")


def window_limits(ablations: dict | None, training: dict | None = None) -> str:
    """A sentence when exact attention at twice the window *raises* the reference model's held-out PSNR by more
    than :data:`UNDERTRAINED_DB` (the model is limited by its window: not trained to convergence), saying how
    much training it had, else ''."""
    entry = (ablations or {}).get("window_x2") or {}
    if entry.get("change_db", 0.0) <= UNDERTRAINED_DB:
        return ""
    extent = training_extent(training)
    why = f" (all its training: {extent}; it has not been trained further yet{further_cost(training)})" \
        if extent else ""
    return (f" **Its window limits it:** exact attention at twice the window raises its held-out PSNR by "
            f"{entry['change_db']:.2f} dB, so it is not trained to convergence{why} and the costs are those of an "
            "unfinished model.")


def attention_verdict(ablations: dict | None) -> tuple[int, int, str]:
    """(checks passed, checks run, the checks in words) of a reference model's attention-matters ablations."""
    if not ablations:
        return 0, 0, ""
    limits = ablations.get("thresholds_db", {})
    parts, passed, run = [], 0, 0
    for key in ("position_bias_dropped", "window_x2"):
        entry = ablations.get(key)
        if not entry:
            continue
        run += 1
        passed += bool(entry.get("matters"))
        parts.append(f"{entry['what']}: {signed(entry['change_db'])} dB, "
                     f"{'at least' if entry.get('matters') else 'under'} {limits.get(key)} dB")
    return passed, run, "; ".join(parts)


# the arms whose change of quality a card quotes (their page lists every arm)
QUALITY_ARMS = ("nystra", "nystromformer", "performer", "exact-w{W}-paper", "nystra-w{W}-paper")


# -- reading the JSON ------------------------------------------------------------------------------------------------
def repo_link(path: str | Path) -> str:
    """The link from a card to the page of the JSON at ``path``: through ``../`` to the repository root when the
    JSON lies under ``benchmarks/``, else its page's file name."""
    parts = Path(path).with_suffix(".md").parts
    if "benchmarks" in parts:
        i = len(parts) - 1 - parts[::-1].index("benchmarks")
        return "../" + "/".join(parts[i:])
    return parts[-1]


def read_report(path: Path, kind: str) -> dict:
    report = json.loads(Path(path).read_text())
    if not str(report.get("schema", "")).startswith(f"nystra_hub.{kind}/"):
        what = "benchmarks/gpu.sh" if kind == "gpu_bench" else kind
        raise ValueError(f"{path}: not a {what} report (schema {report.get('schema')!r})")
    report["_name"], report["_page"] = Path(path).stem, repo_link(path)
    return report


TRAINING_COST = "training-cost.json"  # optional, next to reference.json: what training it further would cost


def read_reference(folder: str | Path) -> dict:
    """A reference model's ``reference.json``, with the measured cost of training it further (``TRAINING_COST``,
    where the folder has one) as ``training["further"]``."""
    info = json.loads((Path(folder) / "reference.json").read_text())
    cost = Path(folder) / TRAINING_COST
    if cost.is_file() and info.get("training"):
        info["training"]["further"] = json.loads(cost.read_text())
    return info
