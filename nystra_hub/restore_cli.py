"""``nystra-hub restore``: restore image files and folders, on one process or split across several.

    nystra-hub restore --model nystra/swinir-x4 --attn nystra photos/ --out restored/
    nystra-hub restore --model swinir-s-x2 --weights 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth lr/ --out sr/
    torchrun --nproc_per_node 2 -m nystra_hub.cli restore --model ... --device cpu in/ --out out/

Behaviour:
- Inputs are files and folders (``-r`` recurses; hidden files and the output folder are skipped). Each output goes
  to the same relative path under ``--out`` with the ``--ext`` extension (PNG by default; 16-bit inputs give
  16-bit PNGs). Writes are atomic (temporary file + fsync + rename): a killed run leaves no partial image.
- Existing outputs are skipped (``--overwrite`` redoes them), so an interrupted run resumes where it stopped.
- One image's failure (unreadable file, wrong channels for the model, too small, out of memory) is reported and
  the batch goes on; the summary lists every failure and the exit code is 1 when any image failed (2 when nothing
  could start: bad model, no inputs).
- Under ``torchrun`` / ``accelerate launch --multi_gpu`` the sorted input list is split between the processes
  with ``accelerate.PartialState(cpu=...).split_between_processes`` before anything is skipped, so every image is
  done by exactly one process; failures are gathered and only the main process prints the summary.
  ``accelerate launch --cpu --num_processes N`` starts one process (accelerate's simple launcher): use torchrun or
  ``accelerate launch --multi_gpu --num_processes N ... --device cpu`` for N CPU processes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import load_original_checkpoint
from .hub import resolve_nystra
from .imageio import IMAGE_EXTENSIONS, format_for, read_image_with_meta, write_image
from .loading import load
from .models import ARCHITECTURES, build_model
from .precision import DTYPE_NAMES
from .restore import restore

MODEL_HELP = (
    "hub folder (config.json + model.safetensors), Hugging Face repo id (org/name), catalogue variant (with "
    "--weights: a released checkpoint file; without: the repo nystra/<variant>), or a folder with case.json + "
    "checkpoint.pth (official constructor arguments + official checkpoint, as in the golden test cases), or a "
    "checkpoint file (.pth/.safetensors; architecture and arguments detected from its keys and shapes)"
)
EXIT_OK, EXIT_FAILURES, EXIT_SETUP = 0, 1, 2


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="NAME_OR_PATH", help=MODEL_HELP)
    model.add_argument("--weights", metavar="FILE",
                       help="official checkpoint (.pth/.safetensors) for a variant or --arch; alone, what it is "
                            "is detected")
    model.add_argument("--arch", choices=sorted(ARCHITECTURES),
                       help="build from official constructor arguments (--kwargs) instead of a variant")
    model.add_argument("--kwargs", metavar="JSON",
                       help="official constructor arguments for --arch, or those that settle what detection leaves "
                            "open, e.g. '{\"img_size\": 256}' (JSON or @file)")
    model.add_argument("--attn", choices=["softmax", "sdpa", "nystra"], default=None,
                       help="attention implementation (default: the folder's config, else softmax)")
    model.add_argument("--nystra", action="append", default=[], metavar="KEY=VALUE",
                       help="Nyström parameter override (landmarks, iters, tau, bias, mask); repeatable")
    model.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    model.add_argument("--dtype", choices=DTYPE_NAMES, default="auto",
                       help="compute precision: auto (bfloat16 on a GPU that supports it, float32 otherwise), "
                            "float32, bfloat16 or float16; half precision keeps the weights float32 and redoes any "
                            "tile that gives NaN/Inf in float32 (default: auto)")
    run = parser.add_argument_group("processing")
    run.add_argument("--tile", type=int, default=None,
                     help="tile side in input pixels (0: never tile; default: automatic under --memory-budget-mb)")
    run.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in input pixels")
    run.add_argument("--memory-budget-mb", type=float, default=None,
                     help="activation-memory budget of one forward in MB "
                          "(default 1024 on CPU, half the free memory on CUDA)")
    run.add_argument("--gray", choices=["replicate", "error"], default="replicate",
                     help="gray image into an RGB model: replicate channels (result gray) or fail")
    run.add_argument("--color", choices=["error", "luma"], default="error",
                     help="RGB image into a gray model: fail or convert to luma (result gray)")
    run.add_argument("--alpha", choices=["resize", "drop"], default="resize", help="what to do with alpha")
    files = parser.add_argument_group("files")
    files.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    files.add_argument("--ext", default="png", help="output format by extension (default png)")
    files.add_argument("--overwrite", action="store_true", help="redo images whose output exists")
    files.add_argument("--log-dir", metavar="DIR",
                       help="write one JSON-lines log per process (process-<rank>.jsonl) of what it did")
    files.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- inputs --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    source: str  # input file
    target: str  # output file
    error: str | None = None  # known before processing (name collision)


def collect_items(inputs: list[str], out_dir: str | os.PathLike, ext: str = "png",
                  recursive: bool = False) -> list[Item]:
    """The sorted, deterministic work list: every process of a multi-process run computes the same one."""
    out_root = Path(out_dir).resolve()
    suffix = "." + ext.lstrip(".").lower()
    pairs: list[tuple[Path, Path]] = []  # (source, relative output)
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            for file in walker:
                rel = file.relative_to(path)
                if any(part.startswith(".") for part in rel.parts) or not file.is_file():
                    continue
                if file.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                resolved = file.resolve()
                if resolved == out_root or out_root in resolved.parents:
                    continue  # our own outputs when --out is inside an input folder
                pairs.append((file, rel.with_suffix(suffix)))
        else:  # a file, or a missing path: reported per image
            pairs.append((path, Path(path.name).with_suffix(suffix)))
    by_target: dict[Path, list[Path]] = {}
    for source, rel in pairs:
        by_target.setdefault(rel, []).append(source)
    items = []
    for rel, sources in by_target.items():
        unique = sorted({str(s) for s in sources})
        for source in unique:
            error = None
            if len(unique) > 1:
                others = [s for s in unique if s != source]
                error = f"output name collision: {rel} would also be written for {', '.join(others)}"
            items.append(Item(source, str(Path(out_dir) / rel), error))
    return sorted(items, key=lambda it: (it.target, it.source))


# -- model ---------------------------------------------------------------------------------------------------------
def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_nystra(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--nystra takes KEY=VALUE, got {pair!r}")
        params[key.strip()] = _parse_value(value.strip())
    return params


def parse_kwargs(text: str | None) -> dict:
    """--kwargs: a JSON object, inline or as @file."""
    text = text or "{}"
    return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)


def load_model(args):
    """The model the arguments name (see MODEL_HELP), on its device, weights in float32, in eval mode."""
    nystra = parse_nystra(args.nystra)
    kwargs = parse_kwargs(args.kwargs)
    if args.arch:  # an explicit configuration for a checkpoint outside the catalogue
        if not args.weights:
            raise ValueError("--arch needs --weights (an official checkpoint)")
        model = build_model(args.arch, attn_impl=args.attn or "softmax",
                            nystra=resolve_nystra(args.arch, None, **nystra), **kwargs)
        load_original_checkpoint(model, args.weights)
    elif not args.model and not args.weights:
        raise ValueError("give --model or --weights (or --arch with --kwargs and --weights)")
    elif not args.model:  # a checkpoint alone: detected
        model = load(args.weights, attn_impl=args.attn, official_kwargs=kwargs, **nystra)
    else:
        model = load(args.model, weights=args.weights, attn_impl=args.attn, official_kwargs=kwargs, **nystra)
    device = resolve_device(args.device)
    return model.to(device=device).eval()


def resolve_device(name: str):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available")
    return device


# -- processes -----------------------------------------------------------------------------------------------------
_WORLD_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def _env_world_size() -> int:
    sizes = [int(os.environ[v]) for v in _WORLD_VARS if os.environ.get(v, "").isdigit()]
    return max(sizes, default=1)


def _accelerate_cpu_trap() -> int | None:
    """N when this single process was started by ``accelerate launch --cpu --num_processes N`` (N > 1), which
    starts one process only. Best effort: reads the parent's command line (Linux)."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true":
        return None
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for i, arg in enumerate(argv):
        value = None
        if arg == "--num_processes" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--num_processes="):
            value = arg.split("=", 1)[1]
        if value and value.isdigit() and int(value) > 1:
            return int(value)
    return None


def _warn(message: str) -> None:
    print(f"nystra-hub restore: warning: {message}", file=sys.stderr)


class Processes:
    """Who does what: rank, world size, splitting and gathering (accelerate when distributed)."""

    def __init__(self, cpu: bool) -> None:
        self.state = None
        self.rank, self.world = 0, 1
        self.device = None
        self.fallback = False
        env_world = _env_world_size()
        if env_world > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=cpu)
            self.rank, self.world = self.state.process_index, self.state.num_processes
            self.device = self.state.device
            if self.world == 1:
                # e.g. a launcher that set WORLD_SIZE but no process group came up: every process would
                # otherwise do every image. Split by the launcher's RANK instead, and say so.
                self.rank = int(os.environ.get("RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
                self.world, self.fallback = env_world, True
                _warn(f"WORLD_SIZE={env_world} but the distributed state has 1 process; splitting the inputs by "
                      f"RANK={self.rank} without a process group (each process prints its own summary)")
        else:
            trap = _accelerate_cpu_trap()
            if trap:
                _warn(f"'accelerate launch --cpu --num_processes {trap}' starts ONE process: this process restores "
                      f"every image. For {trap} CPU processes use 'torchrun --nproc_per_node {trap} -m "
                      f"nystra_hub.cli restore ...' or 'accelerate launch --multi_gpu --num_processes {trap} -m "
                      f"nystra_hub.cli restore ... --device cpu'")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def collective(self) -> bool:
        return self.state is not None and not self.fallback

    def split(self, items: list) -> list:
        if self.collective:
            with self.state.split_between_processes(items) as mine:
                return list(mine)
        if self.world == 1:
            return list(items)
        per, extra = divmod(len(items), self.world)  # same contiguous chunks as accelerate
        start = self.rank * per + min(self.rank, extra)
        return list(items[start:start + per + (1 if self.rank < extra else 0)])

    def gather(self, obj) -> list:
        """Every process's ``obj``, in rank order (only this process's when not collective)."""
        if not self.collective:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def close(self) -> None:
        if self.collective:
            try:
                self.state.wait_for_everyone()
                self.state.destroy_process_group()
            except Exception:  # pragma: no cover - shutting down anyway
                pass


# -- the run -------------------------------------------------------------------------------------------------------
def _one(model, item: Item, args) -> str:
    array, meta = read_image_with_meta(item.source)
    result = restore(
        model, array, tile=args.tile, tile_overlap=args.tile_overlap, memory_budget_mb=args.memory_budget_mb,
        gray=args.gray, color=args.color, alpha=args.alpha, dtype=args.dtype,
    )
    write_image(item.target, result, icc_profile=meta.get("icc_profile"))
    return "restored"


def _release_memory() -> None:
    """After a failed image (possibly out of memory), give cached accelerator memory back."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(args) -> int:
    started = time.monotonic()
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as err:
        print(f"nystra-hub restore: {err}", file=sys.stderr)
        return EXIT_SETUP
    procs = Processes(cpu=device.type == "cpu")
    try:
        return _run(args, procs, started)
    finally:
        procs.close()


def _run(args, procs: Processes, started: float) -> int:
    prefix = f"[process {procs.rank}/{procs.world}] " if procs.world > 1 else ""
    try:
        format_for("x." + args.ext.lstrip("."))
        items = collect_items(args.inputs, args.out, args.ext, args.recursive)
        if procs.device is not None and procs.device.type == "cuda" and args.device in ("auto", "cuda"):
            args.device = str(procs.device)  # one GPU per process
        model = load_model(args)
        setup_error = None if items else "no input images found"
    except Exception as err:  # bad model/arguments: nothing can start
        items, model, setup_error = [], None, f"{type(err).__name__}: {err}"
    errors = [e for e in procs.gather(setup_error) if e]
    if errors:
        if procs.is_main:
            print(f"nystra-hub restore: {errors[0]}", file=sys.stderr)
        return EXIT_SETUP

    # split the full sorted list first, skip afterwards: existence checks could differ between processes
    mine = procs.split(items)
    log = None
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(args.log_dir) / f"process-{procs.rank}.jsonl", "a")
    from tqdm.auto import tqdm

    counts = {"restored": 0, "skipped": 0, "failed": 0}
    failures: list[tuple[str, str]] = []
    bar = tqdm(mine, desc=f"{prefix}restore", unit="img", disable=args.no_progress or not procs.is_main,
               file=sys.stderr)
    try:
        for item in bar:
            error = item.error
            status = "failed"
            if error is None:
                if Path(item.target).exists() and not args.overwrite:
                    status = "skipped"
                else:
                    try:
                        status = _one(model, item, args)
                    except Exception as err:  # per-image: report and go on
                        error = f"{type(err).__name__}: {err}"
                        _release_memory()
            counts[status] += 1
            if error:
                failures.append((item.source, error))
                tqdm.write(f"{prefix}failed: {item.source}: {error}", file=sys.stderr)
            if log:
                log.write(json.dumps(dict(process=procs.rank, input=item.source, output=item.target,
                                          status=status, error=error)) + "\n")
                log.flush()
    finally:
        bar.close()
        if log:
            log.close()

    gathered = procs.gather({"counts": counts, "failures": failures})
    if not procs.is_main and procs.collective:
        return EXIT_FAILURES if failures else EXIT_OK
    total = {k: sum(g["counts"][k] for g in gathered) for k in counts}
    all_failures = sorted(f for g in gathered for f in g["failures"])
    scope = f"{procs.world} processes" if procs.collective else (prefix.strip() or "1 process")
    print(f"{prefix if not procs.collective else ''}nystra-hub restore: {sum(total.values())} image(s): "
          f"{total['restored']} restored, {total['skipped']} skipped (output exists), {total['failed']} failed "
          f"[{scope}, {time.monotonic() - started:.1f} s] -> {args.out}")
    if all_failures:
        print("failed:")
        for source, error in all_failures:
            print(f"  {source}: {error}")
    return EXIT_FAILURES if all_failures else EXIT_OK
