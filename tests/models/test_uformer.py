"""Uformer: official parity (golden case, spandrel's independent copy), released key layouts, window resizing,
the official inference protocol, PnP-Nystra on every variant, strict loading and input errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import GOLDEN as SHARED_GOLDEN
from conftest import MANIFESTS, SHARED_MISSING, TESTSETS

import nystra_hub
from nystra_hub.attention import relative_position_index
from nystra_hub.io.variants import get_variant
from nystra_hub.measure.data import gaussian_noise_input, load_rgb, to_tensor
from nystra_hub.measure.metrics import score
from nystra_hub.models.uformer import LeWinTransformerBlock, Uformer

GOLDEN = SHARED_GOLDEN / "uformer_tiny_modulator"
TOL = 1e-4
HEADS = [1, 2, 4, 8, 16, 16, 8, 4, 2]
TINY = dict(img_size=128, embed_dim=8, depths=[2] * 9, num_heads=HEADS, modulator=True, shift_flag=True)

spandrel_arch = pytest.importorskip("spandrel.architectures.Uformer.__arch.Uformer")
SpandrelUformer = spandrel_arch.Uformer
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")  # spandrel's copy of the official code


def perturbed(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    """The model's state dict with every float tensor perturbed, so biases and modulators matter."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v + std * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: on a small, shared CPU a second intra-op thread mostly spins (measured 10x slower
    under load). Restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> tuple[Uformer, dict]:
    torch.manual_seed(0)
    model = Uformer(**TINY).eval()
    state = perturbed(model)
    model.load_state_dict(state)
    return model, state


# -- official parity ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["softmax", "sdpa"])
def test_golden_parity(impl):
    from safetensors.torch import load_file

    case = json.loads((GOLDEN / "case.json").read_text())
    io = load_file(str(GOLDEN / "io.safetensors"))
    model = nystra_hub.build_model(case["arch"], attn_impl=impl, **case["official_constructor_kwargs"])
    nystra_hub.load_original_checkpoint(model, GOLDEN / "checkpoint.pth")
    with torch.no_grad():
        out = model(io["input"])
    assert out.shape == io["output"].shape
    assert max_err(out, io["output"]) < TOL


SPANDREL_CASES = [
    # (constructor kwargs, input side): depths of 1 (no shifted block) and 2, clamped bottlenecks, no modulator,
    # plain MLP / FastLeFF, and img_size 256 run at 128 (a shifted bottleneck block on a map exactly one window).
    (dict(img_size=64, embed_dim=8, depths=[1] * 9, num_heads=[1, 2, 4, 8, 8, 8, 4, 2, 1], modulator=True), 64),
    (TINY, 128),
    (dict(img_size=64, embed_dim=8, depths=[2] * 9, num_heads=HEADS, shift_flag=False, token_mlp="mlp"), 64),
    (dict(img_size=64, embed_dim=8, depths=[2] * 9, num_heads=HEADS, modulator=True, token_mlp="fastleff"), 64),
    (dict(img_size=256, embed_dim=8, depths=[1, 1, 1, 1, 2, 1, 1, 1, 1], num_heads=HEADS, modulator=True), 128),
]


@pytest.mark.parametrize("kwargs,side", SPANDREL_CASES, ids=[f"case{i}" for i in range(len(SPANDREL_CASES))])
def test_matches_spandrel(kwargs, side):
    torch.manual_seed(1)
    reference = SpandrelUformer(**kwargs).eval()
    state = perturbed(reference, seed=2)
    reference.load_state_dict(state)
    x = torch.rand(1, 3, side, side)
    mask = (torch.rand(1, 1, side, side) > 0.3).float()
    with torch.no_grad():
        expected = reference(x)
        expected_masked = reference(x, mask)
        for impl in ("softmax", "sdpa"):
            model = Uformer(**kwargs, attn_impl=impl).eval()
            model.load_state_dict(state, strict=True)
            assert max_err(model(x), expected) < TOL, impl
            # The official optional input mask (built per forward, combined with the cached shift mask).
            assert max_err(model(x, mask), expected_masked) < TOL, impl
        assert max_err(model(x, mask), model(x)) > 1e-3  # the mask is not a no-op here


def test_batch_and_mask_broadcast(tiny):
    model, _ = tiny
    x = torch.rand(2, 3, 64, 64)
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    with torch.no_grad():
        batched = model(x, mask)
        single = torch.cat([model(x[i:i + 1], mask[i:i + 1]) for i in range(2)])
    # Per-image masks with shifted blocks (the official code only broadcasts one image's mask).
    assert max_err(batched, single) < TOL


# -- key layouts of the released variants ------------------------------------------------------------------------
def read_manifest(name: str) -> list[tuple[str, tuple[int, ...], str, str]]:
    rows = []
    for line in (MANIFESTS / f"{name}.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype, kind = line.split("\t")
        rows.append((key, tuple(int(s) for s in re.findall(r"\d+", shape)), dtype, kind.lower()))
    return rows


@pytest.mark.parametrize(
    "variant,manifest", [("uformer-t", "uformer_T_ps128"), ("uformer-b-sidd", "uformer_B_ps128")]
)
def test_manifest(variant, manifest):
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = Uformer(**get_variant(variant).kwargs)
    buffers = {k for k, _ in model.named_buffers()}
    ours = [
        (k, tuple(v.shape), str(v.dtype).removeprefix("torch."), "buffer" if k in buffers else "param")
        for k, v in model.state_dict().items()
    ]
    assert ours == read_manifest(manifest)


def test_reset_constants_after_meta_init():
    with torch.device("meta"):
        model = Uformer(**get_variant("uformer-t").kwargs)
    model.to_empty(device="cpu")
    model.reset_constants()
    for _, blk in model.blocks():
        assert torch.equal(blk.attn.relative_position_index, relative_position_index(blk.attn.window_size))


def test_gopro_build_differs():
    """GoPro was trained on 256 patches: built with img_size 256 the second bottleneck block is shifted."""
    with torch.device("meta"):
        gopro = Uformer(**get_variant("uformer-b-gopro").kwargs)
        sidd = Uformer(**get_variant("uformer-b-sidd").kwargs)
    assert get_variant("uformer-b-gopro").kwargs["img_size"] == 256
    assert [b.shift_size for b in gopro.conv.blocks] == [0, 4]
    assert [b.shift_size for b in sidd.conv.blocks] == [0, 0]
    assert [b.win_size for b in gopro.conv.blocks] == [b.win_size for b in sidd.conv.blocks] == [8, 8]
    assert {k: v.shape for k, v in gopro.state_dict().items()} == {k: v.shape for k, v in sidd.state_dict().items()}
    # Same weights, different function.
    small = dict(TINY, depths=[1, 1, 1, 1, 2, 1, 1, 1, 1])
    torch.manual_seed(3)
    at_128 = Uformer(**small).eval()
    at_256 = Uformer(**dict(small, img_size=256)).eval()
    at_256.load_state_dict(perturbed(at_128))
    at_128.load_state_dict(perturbed(at_128))
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert max_err(at_128(x), at_256(x)) > 1e-3


# -- runtime rules where the official code crashes --------------------------------------------------------------------
def _spandrel_block(dim, heads, window, modulator):
    return spandrel_arch.LeWinTransformerBlock(
        dim, (window, window), heads, win_size=window, shift_size=0, modulator=modulator
    ).eval()


def test_small_stage_uses_exact_centre_of_bias_table_and_top_left_modulator():
    """A block trained at window 8 on a 4x4 map = the official block built for window 4 with the centre 7x7 of the
    15x15 bias table and the top-left 4x4 of the 8x8 modulator."""
    torch.manual_seed(4)
    dim, heads = 16, 2
    block = LeWinTransformerBlock(dim, (16, 16), heads, win_size=8, shift_size=4, modulator=True).eval()
    block.load_state_dict(perturbed(block, std=0.5))
    reference = _spandrel_block(dim, heads, 4, modulator=True)
    state = block.state_dict()
    table = state["attn.relative_position_bias_table"].view(15, 15, heads)[4:11, 4:11].reshape(49, heads)
    state["attn.relative_position_bias_table"] = table
    state["attn.relative_position_index"] = reference.attn.relative_position_index
    state["modulator.weight"] = state["modulator.weight"].view(8, 8, dim)[:4, :4].reshape(16, dim)
    reference.load_state_dict(state)
    x = torch.randn(2, 16, dim)
    with torch.no_grad():
        expected = reference(x)
        for impl in ("softmax", "sdpa", "nystra"):
            block.attn.set_attn_impl(impl)
            assert max_err(block(x, (4, 4)), expected) < TOL, impl
    assert block.attn.window_size == (8, 8)  # the runtime window does not stick


def test_small_inputs_and_small_builds_run(tiny):
    model, _ = tiny
    # Built with img_size 32: decoder stage 0 is 4x4 at build but its modulator is 8x8 (the official crashes).
    small_build = Uformer(**dict(TINY, img_size=32)).eval()
    assert small_build.decoderlayer_0.blocks[0].win_size == 4
    assert small_build.decoderlayer_0.blocks[0].modulator.weight.shape == (64, 8 * 16)
    before = {k: v.clone() for k, v in small_build.state_dict().items()}
    small_build.set_window_size(8)  # the trained window: nothing changes
    assert all(torch.equal(v, before[k]) for k, v in small_build.state_dict().items())
    with torch.no_grad():
        for net in (model, small_build):
            for side in (16, 32, 64):
                for impl in ("softmax", "sdpa", "nystra"):
                    net.set_attn_impl(impl)
                    x = torch.rand(1, 3, side, side)
                    out = net(x)
                    assert out.shape == x.shape and torch.isfinite(out).all()
    model.set_attn_impl("softmax")


# -- window resizing ------------------------------------------------------------------------------------------------
def test_set_window_size_is_the_official_build_at_that_window(tiny):
    """After set_window_size(16) our state dict loads strictly into the official model built with win_size=16
    and both compute the same function."""
    _, state = tiny
    model = Uformer(**TINY).eval()
    model.load_state_dict(state)
    model.set_window_size(16)
    reference = SpandrelUformer(**dict(TINY, win_size=16)).eval()
    reference.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected = reference(x)
        for impl in ("softmax", "sdpa"):
            model.set_attn_impl(impl)
            assert max_err(model(x), expected) < TOL, impl
        model.set_attn_impl("nystra")
        approx = model(x)
    assert torch.isfinite(approx).all() and 1e-6 < max_err(approx, expected) < 0.5


def test_set_window_size_resizes_tables_and_modulators(tiny):
    _, state = tiny
    model = Uformer(**TINY).eval()
    model.load_state_dict(state)
    old = model.decoderlayer_3.blocks[1].modulator.weight.detach().clone()
    model.set_window_size(32, method="centre")
    # Build rule at 32: stages of 32 and more take window 32, smaller ones their own size, unshifted.
    assert model.window_sizes() == [32] * 6 + [16, 16, 8, 8, 16, 16] + [32] * 6
    assert [b.shift_size for _, b in model.blocks()] == [0, 16] * 2 + [0] * 10 + [0, 16] * 2
    blk = model.decoderlayer_3.blocks[1]
    assert blk.attn.relative_position_bias_table.shape == (63 * 63, HEADS[8])
    assert blk.modulator.weight.shape == (32 * 32, 16)
    # "centre" tiles the trained 8x8 grid: every value is a trained one.
    tiled = blk.modulator.weight.view(32, 32, 16)
    assert torch.equal(tiled[8:16, 16:24].reshape(64, 16), old)
    # Clamped decoder stage: modulator resized to the block's window (16), like its bias table.
    assert model.decoderlayer_0.blocks[0].modulator.weight.shape == (16 * 16, 128)
    x = torch.rand(1, 3, 64, 64)  # small: stages of 16 and less run below their resized window
    with torch.no_grad():
        exact = model(x)
        model.set_attn_impl("nystra")
        approx = model(x)
    assert torch.isfinite(approx).all() and 1e-6 < max_err(approx, exact) < 0.5
    with pytest.raises(ValueError, match="resize method"):
        model.set_window_size(16, method="nearest")


# -- PnP-Nystra on every variant --------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["uformer-t", "uformer-s", "uformer-b-sidd", "uformer-b-gopro"])
def test_nystra_on_scaled_down_variants(variant):
    """Every catalogue configuration (channels scaled down to 8) at the trained window and at window 16."""
    torch.manual_seed(5)
    model = Uformer(**dict(get_variant(variant).kwargs, embed_dim=8), attn_impl="nystra").eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        for window in (8, 16):
            model.set_window_size(window)
            approx = model(x)
            model.set_attn_impl("softmax")
            exact = model(x)
            model.set_attn_impl("nystra")
            assert approx.shape == x.shape and torch.isfinite(approx).all()
            assert 0 < max_err(approx, exact) < 0.1, window


def test_nystra_full_uformer_t():
    torch.manual_seed(6)
    model = nystra_hub.build_model("uformer", attn_impl="nystra", **get_variant("uformer-t").kwargs)
    assert model.attn_impl == "nystra" and model.default_nystra.tau == 0.0
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        for window in (8, 16):
            model.set_window_size(window)
            out = model(x)
            assert out.shape == x.shape and torch.isfinite(out).all(), window


# -- official inference protocol --------------------------------------------------------------------------------------
def test_official_inference_any_size(tiny):
    model, _ = tiny
    x = torch.rand(1, 3, 70, 100)
    with torch.no_grad():
        out = model.official_inference(x)
        # expand2square(x, factor=128): centred in a 128x128 zero square, cropped back, clamped.
        square = torch.zeros(1, 3, 128, 128)
        square[:, :, 29:99, 14:114] = x
        expected = model(square)[:, :, 29:99, 14:114].clamp(0, 1)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert max_err(out, expected) == 0
    assert max_err(out, x) > 1e-3  # the model did something


# -- minimal padding (the default of nystra_hub.restore) ---------------------------------------------------------------
def test_minimal_size_is_the_smallest_square_the_forward_runs(tiny):
    model, _ = tiny
    assert model.min_side == 16
    for h in (16, 17, 24, 40, 64, 65, 100, 128, 129, 500, 1080, 1920):
        w = h // 2 + 16
        minimal, _ = model.minimal_size(h, w)
        assert model.size_fits(minimal) and not any(model.size_fits(s) for s in range(max(h, w), minimal))
        assert minimal <= model.official_size(h, w)[0]
    assert model.minimal_size(40, 56) == (64, 64) and model.official_size(40, 56) == (128, 128)
    assert model.minimal_size(1080, 1920) == model.official_size(1080, 1920) == (1920, 1920)  # the forward is square


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_minimal_pad_mirrors_or_repeats_the_borders(tiny, mode):
    model, _ = tiny
    x = torch.rand(1, 3, 20, 30)
    padded, (top, left) = model.minimal_pad(x, mode)
    assert padded.shape[-2:] == (32, 32) and (top, left) == (6, 1)
    assert torch.equal(padded[:, :, top:top + 20, left:left + 30], x)
    expected = torch.nn.functional.pad(x, (1, 1, 6, 6), mode=mode)
    assert torch.equal(padded, expected)
    far, (top, left) = model.minimal_pad(torch.rand(1, 3, 16, 100), mode)  # padding far larger than the image
    assert far.shape[-2:] == (128, 128) and top == 56 and torch.isfinite(far).all()


def test_minimal_pad_refuses_images_below_the_smallest_forward(tiny):
    model, _ = tiny
    for shape in ((1, 1), (3, 3), (15, 200)):
        with pytest.raises(ValueError, match=r"is \d+x\d+, but Uformer needs at least 16x16 pixels"):
            model.minimal_pad(torch.rand(1, 3, *shape))
        with pytest.raises(ValueError, match="at least 16x16"):
            nystra_hub.restore(model, torch.rand(3, *shape))
    assert nystra_hub.restore(model, torch.rand(3, 3, 3), protocol="official").shape == (3, 3, 3)  # kept as is
    with pytest.raises(ValueError, match="reflect"):
        model.minimal_pad(torch.rand(1, 3, 20, 20), mode="zeros")


@pytest.mark.skipif(not (TESTSETS / "Set5").is_dir(), reason=SHARED_MISSING)
def test_minimal_padding_restores_small_crops_better_than_the_official_zeros():
    """The reference denoiser on held-out crops whose sizes are not multiples of 128 (σ=25): the official
    protocol surrounds the crop with zeros the model never saw; the minimal one mirrors the crop into a smaller
    square. Measured on more crops in benchmarks/uformer-padding-ref-denoise25-cpu.json."""
    model = nystra_hub.load(str(Path(__file__).resolve().parents[2] / "reference_models" / "uformer-ref-denoise25"))
    clean = load_rgb("Set5/HR/baby.png")[200:240, 200:256]  # 40x56
    noisy = to_tensor(gaussian_noise_input(clean, 25.0))
    gt = to_tensor(clean)
    with pytest.warns(UserWarning, match="outside"):  # unclipped noisy input, as the test protocol gives it
        minimal = nystra_hub.restore(model, noisy)
        official = nystra_hub.restore(model, noisy, protocol="official")
    gain = score(minimal, gt, "rgb-uint8")["psnr"] - score(official, gt, "rgb-uint8")["psnr"]
    assert gain > 1.0


# -- strict loading --------------------------------------------------------------------------------------------------
def _save(state: dict, path: Path) -> Path:
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    return path


def test_strict_loading_errors(tiny, tmp_path):
    _, state = tiny
    model = Uformer(**TINY)
    nystra_hub.load_original_checkpoint(model, _save(state, tmp_path / "ok.pth"))
    missing = dict(state)
    del missing["decoderlayer_1.blocks.0.modulator.weight"]
    with pytest.raises(nystra_hub.CheckpointMismatchError, match=r"decoderlayer_1\.blocks\.0\.modulator\.weight"):
        nystra_hub.load_original_checkpoint(model, _save(missing, tmp_path / "missing.pth"))
    wrong = dict(state, **{"conv.blocks.0.attn.relative_position_bias_table": torch.zeros(961, 16)})
    with pytest.raises(nystra_hub.CheckpointMismatchError, match=r"conv\.blocks\.0\.attn\.relative_position_bias"):
        nystra_hub.load_original_checkpoint(model, _save(wrong, tmp_path / "wrong.pth"))
    corrupt = dict(state)
    key = "encoderlayer_0.blocks.0.attn.relative_position_index"
    corrupt[key] = corrupt[key].flip(0)
    with pytest.raises(nystra_hub.CheckpointError, match=re.escape(key)):
        nystra_hub.load_original_checkpoint(model, _save(corrupt, tmp_path / "corrupt.pth"))


# -- errors ---------------------------------------------------------------------------------------------------------
def test_bad_inputs(tiny):
    model, _ = tiny
    nan = torch.rand(1, 3, 64, 64)
    nan[0, 0, 3, 3] = float("nan")
    cases = [
        (torch.rand(3, 64, 64), ValueError, "4-D"),
        (torch.rand(1, 4, 64, 64), ValueError, "3 input channel"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), TypeError, "floating-point"),
        (nan, ValueError, "NaN"),
        (torch.rand(1, 3, 8, 8), ValueError, "at least 16x16"),
        (torch.rand(1, 3, 64, 128), ValueError, "square.*official_inference"),
        (torch.rand(1, 3, 48, 48), ValueError, r"nearest valid sides: 32 or 64.*official_inference"),
        (torch.rand(1, 3, 200, 200), ValueError, r"multiple of 128"),
    ]
    for x, error, message in cases:
        with pytest.raises(error, match=message):
            model(x)
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[0.0]])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.rand(1, 3, 64, 64), mask=torch.ones(1, 64, 64))
    with pytest.raises(ValueError, match="NaN"):
        model.official_inference(nan)


def test_size_rules(tiny):
    model, _ = tiny
    assert model.pad_multiple == 128
    assert [s for s in range(1, 400) if model.size_fits(s)] == [16, 32, 64, 128, 256, 384]


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(token_projection="conv"), NotImplementedError, "token_projection"),
        (dict(cross_modulator=True), NotImplementedError, "cross_modulator"),
        (dict(token_mlp="eca"), ValueError, "token_mlp"),
        (dict(depths=[2] * 8), ValueError, "9 stages"),
        (dict(num_heads=[3, *HEADS[1:]]), ValueError, "not divisible"),
        (dict(img_size=(64, 64)), ValueError, "img_size"),
        (dict(norm_layer=torch.nn.Identity), ValueError, "norm_layer"),
    ],
)
def test_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        Uformer(**dict(TINY, **kwargs))


def test_official_kwargs_round_trip():
    model = nystra_hub.build_model("uformer", **TINY)
    assert model.arch == "uformer" and not model.training
    kwargs = json.loads(json.dumps(model.official_kwargs))
    rebuilt = Uformer(**kwargs)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert math.isclose(kwargs["mlp_ratio"], 4.0) and kwargs["win_size"] == 8


def test_in_place_gelu_only_where_autograd_does_not_need_the_input():
    from nystra_hub.models.common import gelu_on_fresh_output

    act = torch.nn.GELU()
    x = torch.randn(4, 64)
    expected = torch.nn.functional.gelu(x)
    with torch.no_grad():
        fresh = x.clone()
        assert gelu_on_fresh_output(fresh, act) is fresh and torch.equal(fresh, expected)  # in place, same bits
    leaf = x.clone().requires_grad_()
    y = leaf * 1.0
    out = gelu_on_fresh_output(y, act)
    assert out is not y and torch.equal(y, x)  # training: the input autograd saved is untouched
    out.sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
