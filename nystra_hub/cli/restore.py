"""``nystra-hub restore``: restore image files and folders, on one process or split across several.

    nystra-hub restore --model nystra/swinir-x4 --attn nystra photos/ --out restored/
    nystra-hub restore --model swinir-s-x2 --weights 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth lr/ --out sr/
    torchrun --nproc_per_node 2 -m nystra_hub.cli restore --model ... --device cpu in/ --out out/

Behaviour:
- Inputs are files and folders (``-r`` recurses; hidden files and the output folder are skipped). Each output goes
  to the same relative path under ``--out``, named ``<stem><--suffix>.<--ext>`` (PNG by default; 16-bit inputs
  give 16-bit PNGs). Writes are atomic (temporary file + fsync + rename): a killed run leaves no partial image.
- ``--out`` is checked before any image is computed: it must not be an input folder or hold one, must be a folder
  (or creatable) and writable.
- Existing outputs are skipped (``--overwrite`` redoes them), so an interrupted run resumes where it stopped.
- Runs started separately on the same folder (two shells, a batch queue: no torchrun) share the work: each output
  is claimed first with an exclusive lock file next to it (``.<name>.lock``, holding PID, start time and host),
  so every image is computed once; a claim whose process is gone (same host), or from another host and older
  than ``--lock-timeout``, is taken over by the next run. (With ``--overwrite`` a later run redoes what an
  earlier one finished.)
- One progress bar over the images; the tiles of a large image show in its postfix.
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

import contextlib
import dataclasses
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from tqdm.auto import tqdm

from nystra_hub.cli.options import ATTN_CHOICES, NYSTRA_SPEED_NOTE, parse_nystra, positive_int, resolve_device
from nystra_hub.inference.backends import (
    BACKEND_CHOICES,
    auto_backend,
    check_backend,
    choose_route,
    make_runner,
    plan_cost,
    route_precision,
)
from nystra_hub.inference.precision import DTYPE_NAMES
from nystra_hub.inference.restore import PROTOCOLS, forward_shapes, one_shape_tilings, restore
from nystra_hub.io.checkpoints import load_original_checkpoint
from nystra_hub.io.hub import resolve_nystra
from nystra_hub.io.images import IMAGE_EXTENSIONS, format_for, read_image_size, read_image_with_meta, write_image
from nystra_hub.io.loading import load
from nystra_hub.models import ARCHITECTURES, build_model

MODEL_HELP = (
    "hub folder (config.json + model.safetensors), e.g. reference_models/swinir-ref-x2 (shipped with the "
    "repository, weights included; nystra-hub list shows them), Hugging Face repo id (org/name), catalogue variant "
    "with --weights (its released checkpoint file; without, the repo nystra/<variant>, not on the Hub yet), or a "
    "folder with case.json + checkpoint.pth (official constructor arguments + official checkpoint, as in the golden "
    "test cases), or a checkpoint file (.pth/.safetensors; architecture and arguments detected from its keys and "
    "shapes)"
)
EXIT_OK, EXIT_FAILURES, EXIT_SETUP = 0, 1, 2
DEFAULT_LOCK_TIMEOUT_S = 6 * 3600.0
LOCK_SUFFIX = ".lock"


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created if missing; must not be an input folder or contain one)")
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
    model.add_argument("--attn", choices=list(ATTN_CHOICES), default=None,
                       help="attention implementation (default: the folder's config, else softmax)")
    model.add_argument("--nystra", action="append", default=[], metavar="KEY=VALUE",
                       help="Nyström parameter override (landmarks, iters, tau, bias, mask); repeatable")
    model.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N "
                                                        "(default: %(default)s)")
    model.add_argument("--threads", type=int, default=None, metavar="N",
                       help="torch CPU threads (default: torch's choice, usually one per core)")
    model.add_argument("--dtype", choices=DTYPE_NAMES, default="auto",
                       help="compute precision: auto (bfloat16 on a GPU that supports it; on the OpenVINO CPU "
                            "route bfloat16 where the CPU has it natively and the architecture was measured within "
                            "the quality budget, SwinIR and DehazeFormer; float32 otherwise), "
                            "float32, bfloat16 or float16; half precision keeps the weights float32 and redoes any "
                            "tile that gives NaN/Inf in float32 (default: auto)")
    model.add_argument("--backend", choices=BACKEND_CHOICES, default=os.environ.get("NYSTRA_HUB_BACKEND") or "auto",
                       help="what runs the network: torch (eager), compile (torch.compile, once per tile shape), "
                            "cudagraphs (CUDA: the eager model captured once per tile shape and replayed), "
                            "onnxruntime or openvino (the model exported once per tile shape into "
                            "$NYSTRA_HUB_CACHE; the extras nystra_hub[onnxruntime] / [openvino]). auto: on a CPU "
                            "with OpenVINO installed, OpenVINO for the input shapes exported before or called often "
                            "enough to repay their export (precision: see --dtype), eager torch otherwise and on a "
                            "GPU; the chosen "
                            "route and why is printed first (default: $NYSTRA_HUB_BACKEND, else auto)")
    run = parser.add_argument_group("processing")
    run.add_argument("--tile", type=int, default=None,
                     help="tile side in input pixels, at least the architecture's smallest (12 windows for SwinIR, "
                          "256 for Uformer; smaller tiles change the output) (0: never tile; default: automatic "
                          "under --memory-budget-mb)")
    run.add_argument("--tile-overlap", type=int, default=None,
                     help="tile overlap in input pixels (default: the architecture's, 48 SwinIR, 64 Uformer; "
                          "at most half a small tile)")
    run.add_argument("--tile-batch", type=positive_int, default=None,
                     help="tiles stacked into one forward (default: as many as the memory budget holds on a GPU, "
                          "1 on a CPU)")
    run.add_argument("--memory-budget-mb", type=float, default=None,
                     help="activation-memory budget of one forward in MB "
                          "(default 1024 on CPU, half the free memory on CUDA)")
    run.add_argument("--gray", choices=["replicate", "error"], default="replicate",
                     help="gray image into an RGB model: replicate channels (result gray) or fail")
    run.add_argument("--color", choices=["error", "luma"], default="error",
                     help="RGB image into a gray model: fail or convert to luma (result gray)")
    run.add_argument("--alpha", choices=["resize", "drop"], default="resize",
                     help="alpha channel: keep it (bicubic-resized for super-resolution) or drop it "
                          "(default: %(default)s)")
    run.add_argument("--protocol", choices=PROTOCOLS, default="minimal",
                     help="padding: minimal (the smallest size the network runs, borders mirrored) or official "
                          "(each architecture's test script; differs for Uformer only: zeros to a square multiple "
                          "of 128) (default: %(default)s)")
    files = parser.add_argument_group("files")
    files.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    files.add_argument("--ext", default="png", help="output format by extension (default png)")
    files.add_argument("--suffix", default="", metavar="TEXT",
                       help="added to each output's name before the extension, e.g. --suffix _x2 writes "
                            "lr_x2.png for lr.png (default: none)")
    files.add_argument("--overwrite", action="store_true", help="redo images whose output exists")
    files.add_argument("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT_S, metavar="SECONDS",
                       help="a claim (lock file) left by a run on another machine counts as abandoned after this "
                            "long; on this machine a claim is abandoned as soon as its process is gone "
                            "(default: %(default)s)")
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
                  recursive: bool = False, name_suffix: str = "") -> list[Item]:
    """The sorted, deterministic work list: every process of a multi-process run computes the same one.
    Outputs are named ``<input stem><name_suffix>.<ext>``."""
    out_root = Path(out_dir).resolve()
    suffix = name_suffix + "." + ext.lstrip(".").lower()
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
                pairs.append((file, rel.with_name(rel.stem + suffix)))
        else:  # a file, or a missing path: reported per image
            pairs.append((path, Path(path.stem + suffix)))
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


# -- the output folder, checked before any work ----------------------------------------------------------------
def check_output_folder(inputs: list[str], out_dir: str | os.PathLike) -> None:
    """Raise (before any image is computed) when ``--out`` is an input folder or holds one (its images would be
    taken for outputs and skipped), is not a folder, or cannot be written."""
    out = Path(out_dir)
    out_root = out.resolve()
    for name in inputs:
        folder = Path(name).resolve()
        if not Path(name).is_dir():
            continue
        if folder == out_root:
            raise ValueError(f"--out {out_dir} is the input folder {name}: outputs must go to another folder "
                             f"(their names would be the inputs' names)")
        if out_root in folder.parents:
            raise ValueError(f"input folder {name} is inside --out {out_dir}: its images would be taken for "
                             f"outputs of this run and skipped; choose an --out outside it")
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--out {out_dir}: {existing} is a file, not a folder")
    if existing == out:
        probe_writable(out)
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out_dir}: cannot create it, {existing} is not writable")


def probe_writable(folder: Path) -> None:
    """Create and remove a hidden file in ``folder`` (permissions alone miss read-only mounts and root)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".nystra-hub-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise ValueError(f"--out {folder} is not writable ({err.strerror or err})") from None


# -- claims: two runs on the same folder share the work ---------------------------------------------------------
def lock_path(target: str | os.PathLike) -> Path:
    """The claim of an output: a hidden file next to it (and to its temporary file), skipped as an input."""
    target = Path(target)
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def claim(target: str | os.PathLike, stale_after_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Path | None:
    """Claim ``target`` for this process: create its lock file exclusively (``O_EXCL``), holding who claimed it.
    Returns the lock, or None while another live run holds it. An abandoned lock (:func:`lock_is_stale`) is
    removed and the claim tried again once."""
    lock = lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if not lock_is_stale(lock, stale_after_s):
                return None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(_holder(), handle)
        return lock
    return None  # another run took the abandoned lock over first


def release(lock: Path) -> None:
    """Remove this process's lock (not one that another run took over meanwhile)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            lock.unlink()


def _holder() -> dict:
    me = psutil.Process()
    return {"pid": me.pid, "started": me.create_time(), "host": socket.gethostname(), "claimed": time.time()}


def lock_is_stale(lock: Path, stale_after_s: float) -> bool:
    """A lock is abandoned when its process is gone (same host: no process with that PID and start time), when
    it comes from another host and is older than ``stale_after_s``, or when it stayed unreadable for a minute (a
    claimant writes it right after creating it)."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return True  # released meanwhile: claim again
    except OSError:
        return False  # cannot tell: leave it to its holder
    try:
        holder = json.loads(lock.read_text())
        pid, started, host = int(holder["pid"]), float(holder["started"]), str(holder["host"])
    except FileNotFoundError:
        return True
    except (OSError, ValueError, TypeError, KeyError):
        return age > 60
    if host != socket.gethostname():
        return age > stale_after_s
    return not _alive(pid, started)


def _alive(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0  # not a reused PID
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # cannot tell: leave it to its holder


# -- model ---------------------------------------------------------------------------------------------------------
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
def _one(model, item: Item, args, progress=None) -> str:
    array, meta = read_image_with_meta(item.source)
    result = restore(
        model, array, tile=args.tile, tile_overlap=args.tile_overlap, memory_budget_mb=args.memory_budget_mb,
        gray=args.gray, color=args.color, alpha=args.alpha, dtype=args.dtype, protocol=args.protocol,
        progress=progress or False, backend=getattr(args, "runner", "torch"), tile_batch=args.tile_batch,
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
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be at least 1, got {args.threads}")
            torch.set_num_threads(args.threads)
    except (ValueError, RuntimeError) as err:
        print(f"nystra-hub restore: {err}", file=sys.stderr)
        return EXIT_SETUP
    procs = Processes(cpu=device.type == "cpu")
    try:
        return _run(args, procs, started)
    finally:
        procs.close()


def _setup(args, procs: Processes) -> tuple[list[Item], object, str | None]:
    """(work list, model, setup error): everything checked before the first image is computed."""
    try:
        format_for("x." + args.ext.lstrip("."))
        if any(sep in args.suffix for sep in ("/", os.sep)):
            raise ValueError(f"--suffix {args.suffix!r} must not contain a path separator")
        check_output_folder(args.inputs, args.out)
        items = collect_items(args.inputs, args.out, args.ext, args.recursive, args.suffix)
        if procs.device is not None and procs.device.type == "cuda" and args.device in ("auto", "cuda"):
            args.device = str(procs.device)  # one GPU per process
        model = load_model(args)
        if args.attn == "nystra" and procs.rank == 0:
            print(NYSTRA_SPEED_NOTE, file=sys.stderr)
        # one runner for the whole run: its compiled graphs and export sessions are reused across images and tiles
        device = next(model.parameters()).device
        if check_backend(args.backend) == "auto":
            args.runner = _auto_runner(model, items, args, device, procs)
        else:
            if args.backend in ("onnxruntime", "openvino") and device.type != "cpu":
                raise ValueError(f"--backend {args.backend} runs on the CPU; add --device cpu")
            precision = route_precision(args.dtype, model) if args.backend == "openvino" else "float32"
            args.runner = "torch" if args.backend == "torch" else make_runner(
                model, args.backend, threads=args.threads, precision=precision)
        return items, model, None if items else "no input images found"
    except Exception as err:  # bad model/arguments/output folder: nothing can start
        return [], None, f"{type(err).__name__}: {err}"


def _auto_runner(model, items: list[Item], args, device, procs: Processes):
    """``--backend auto``: the route :func:`choose_route` picks for the forward calls this run will make (the
    images' sizes read from their headers, tiled as they will be), said in one line. With automatic tiling, the
    run may tile every image with one tile side instead (:func:`_cheapest_tiling`), which sets ``args.tile``."""
    if device.type != "cpu" or auto_backend(device) != "openvino":
        route, runner = choose_route(device, calls={}, dtype=args.dtype, model=model), "torch"
    else:
        precision = route_precision(args.dtype, model)
        runner = make_runner(model, "openvino", threads=args.threads, precision=precision, export_shapes=())
        tile, calls = _cheapest_tiling(model, [read_image_size(item.source) for item in items], args, runner,
                                       precision)
        route = choose_route(device, calls=calls, cached=[s for s in calls if runner.is_cached(s)], dtype=args.dtype,
                             model=model)
        if tile is not None and route.backend == "openvino":
            args.tile = tile
            route = dataclasses.replace(route, reason=f"{route.reason}; every image in {tile}-px tiles, so that one "
                                                      f"export serves them all")
        runner.export_shapes = set(route.export_shapes)
        runner = runner if route.backend == "openvino" else "torch"
    if procs.rank == 0:
        print(f"route: {route.reason}", file=sys.stderr)
    return runner


def _cheapest_tiling(model, sizes: list[tuple[int, int]], args, runner, precision: str) -> tuple[int | None, dict]:
    """(tile side or None for the tiling asked, its forward calls): the way of tiling the run that costs least
    (:func:`plan_cost`) on the route it would take. Tiles of one side for every image (:func:`one_shape_tilings`)
    compute more pixels than the default plan (each image whole, or in tiles as large as memory allows) but can
    share one export: SwinIR-M x2 on 6 images around 300×200 ran 10 calls over 5 shapes, none repaying an export,
    or 38 tiles of 136 px."""
    options = dict(tile_overlap=args.tile_overlap, memory_budget_mb=args.memory_budget_mb, dtype=args.dtype,
                   protocol=args.protocol, tile_batch=args.tile_batch)
    plans = {None: forward_shapes(model, sizes, tile=args.tile, **options)}
    if args.tile is None:
        plans.update(one_shape_tilings(model, sizes, **options))
    costs = {tile: plan_cost(calls, [s for s in calls if runner.is_cached(s)], precision)
             for tile, calls in plans.items()}
    tile = min(costs, key=lambda t: (costs[t], t is not None))  # a tie keeps the tiling asked
    return tile, plans[tile]


def _run(args, procs: Processes, started: float) -> int:
    prefix = f"[process {procs.rank}/{procs.world}] " if procs.world > 1 else ""
    items, model, setup_error = _setup(args, procs)
    errors = [e for e in procs.gather(setup_error) if e]
    if errors:
        if procs.is_main:
            print(f"nystra-hub restore: {errors[0]}", file=sys.stderr)
        return EXIT_SETUP
    # split the full sorted list first, skip afterwards: existence checks could differ between processes
    mine = procs.split(items)
    counts, failures = _process(model, mine, args, procs, prefix)
    gathered = procs.gather({"counts": counts, "failures": failures})
    if not procs.is_main and procs.collective:
        return EXIT_FAILURES if failures else EXIT_OK
    return _summarise(gathered, args, procs, prefix, started)


def _process(model, items: list[Item], args, procs: Processes, prefix: str) -> tuple[dict, list]:
    """Every item of this process, in order: one progress bar over the images, the current image's tiles in its
    postfix. Returns (counts per status, [(input, error)])."""
    counts = {"restored": 0, "skipped": 0, "claimed": 0, "failed": 0}
    failures: list[tuple[str, str]] = []
    log = None
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(args.log_dir) / f"process-{procs.rank}.jsonl", "a")
    bar = tqdm(items, desc=f"{prefix}restore", unit="img", disable=args.no_progress or not procs.is_main,
               file=sys.stderr)
    try:
        for item in bar:
            bar.set_postfix_str(Path(item.source).name, refresh=False)
            status, error = _claim_and_restore(model, item, args, _tile_postfix(bar, item))
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
    return counts, failures


def _tile_postfix(bar, item: Item):
    """progress(done, total) for restore: the tiles of the current image, shown in the image bar's postfix."""
    name = Path(item.source).name
    return lambda done, total: bar.set_postfix_str(f"{name}: tile {done}/{total}")


def _claim_and_restore(model, item: Item, args, progress) -> tuple[str, str | None]:
    """(status, error) of one item. Its output is claimed first (:func:`claim`), so that runs started
    separately on the same folder compute every image once; an output finished meanwhile is skipped."""
    if item.error is not None:
        return "failed", item.error
    if Path(item.target).exists() and not args.overwrite:
        return "skipped", None
    lock = claim(item.target, args.lock_timeout)
    if lock is None:
        return "claimed", None
    try:
        if Path(item.target).exists() and not args.overwrite:  # finished by another run before our claim
            return "skipped", None
        return _one(model, item, args, progress), None
    except Exception as err:  # per-image: report and go on
        _release_memory()
        return "failed", f"{type(err).__name__}: {err}"
    finally:
        release(lock)


def _summarise(gathered: list[dict], args, procs: Processes, prefix: str, started: float) -> int:
    total = {k: sum(g["counts"][k] for g in gathered) for k in gathered[0]["counts"]}
    all_failures = sorted(f for g in gathered for f in g["failures"])
    scope = f"{procs.world} processes" if procs.collective else (prefix.strip() or "1 process")
    claimed = f", {total['claimed']} left to another run (claimed)" if total["claimed"] else ""
    print(f"{prefix if not procs.collective else ''}nystra-hub restore: {sum(total.values())} image(s): "
          f"{total['restored']} restored, {total['skipped']} skipped (output exists){claimed}, {total['failed']} "
          f"failed [{scope}, {time.monotonic() - started:.1f} s] -> {args.out}")
    if all_failures:
        print("failed:")
        for source, error in all_failures:
            print(f"  {source}: {error}")
    return EXIT_FAILURES if all_failures else EXIT_OK
