"""DehazeFormer: parity with the official outputs, key compatibility, bias caching, windows, input checks."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GOLDEN, SHARED_MISSING, read_manifest
from safetensors.torch import load_file

import nystra_hub
from nystra_hub.attention import log_relative_positions
from nystra_hub.io.variants import build_variant
from nystra_hub.models.dehazeformer import DehazeFormer, WindowAttention

CASES = ["dehazeformer_tiny_conv", "dehazeformer_tiny_dwconv"]

# The tiny DWConv golden configuration: attention in stages 1-3, shifted blocks in stages 1 and 3.
if not GOLDEN.is_dir():  # every test here builds the golden configuration below
    pytest.skip(SHARED_MISSING, allow_module_level=True)
TINY = json.loads((GOLDEN / "dehazeformer_tiny_dwconv" / "case.json").read_text())
TINY = TINY["official_constructor_kwargs"]


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def load_case(case: str, attn_impl: str = "softmax"):
    folder = GOLDEN / case
    config = json.loads((folder / "case.json").read_text())
    kwargs = config["official_constructor_kwargs"]
    model = nystra_hub.build_model(config["arch"], attn_impl=attn_impl, **kwargs)
    nystra_hub.load_original_checkpoint(model, folder / "checkpoint.pth")
    io = load_file(str(folder / "io.safetensors"))
    return model.eval(), io["input"], io["output"]


def tiny_model(seed: int = 0, **overrides) -> DehazeFormer:
    torch.manual_seed(seed)
    return nystra_hub.build_model("dehazeformer", **{**TINY, **overrides}).eval()


def meta_modules(model):
    return [m.meta for m in model.modules() if isinstance(m, WindowAttention)]


# -- parity ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn_impl", ["softmax", "sdpa"])
@pytest.mark.parametrize("case", CASES)
def test_golden_parity(case, attn_impl):
    model, x, expected = load_case(case, attn_impl)
    with torch.no_grad():
        out = model(x)
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("case", CASES)
def test_golden_nystra_is_an_approximation(case):
    model, x, expected = load_case(case, "nystra")
    with torch.no_grad():
        out = model(x)
    error = (out - expected).abs()
    assert torch.isfinite(out).all()
    assert error.max().item() > 1e-3  # the Nyström path really ran (the output differs from exact)
    assert error.mean().item() < 0.05  # and it is an approximation, not noise (measured ≈ 0.01)


def test_window_round_trip_restores_parity():
    model, x, expected = load_case("dehazeformer_tiny_dwconv")
    model.set_window_size(16)
    with torch.no_grad():
        enlarged = model(x)
    model.set_window_size(8)
    with torch.no_grad():
        back = model(x)
    assert (enlarged - expected).abs().max().item() > 1e-3
    assert (back - expected).abs().max().item() < 1e-4


# -- keys, shapes and sizes of the full variants -----------------------------------------------------------
@pytest.mark.parametrize("size", ["t", "b", "m"])
def test_variant_matches_manifest(size):
    expected = read_manifest(f"dehazeformer_{size}")
    with torch.device("meta"):  # shapes only: no memory, no init
        model = build_variant(f"dehazeformer-{size}-indoor")
    params = {name for name, _ in model.named_parameters()}

    def kind(key: str) -> str:
        return "param" if key in params else "BUFFER"

    own = {
        key: (str(tuple(t.shape)), str(t.dtype).removeprefix("torch."), kind(key))
        for key, t in model.state_dict().items()
    }
    assert sorted(own) == sorted(expected)
    assert own == expected


@pytest.mark.parametrize(
    "size, millions",
    [("t", 0.69), ("s", 1.28), ("b", 2.52), ("m", 4.64), ("l", 25.45), ("w", 9.69), ("d", 4.98)],
)
def test_parameter_counts(size, millions):
    with torch.device("meta"):
        model = build_variant(f"dehazeformer-{size}-indoor")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions


def test_attention_only_in_last_blocks_and_shift_by_half_window():
    model = build_variant("dehazeformer-s-indoor")  # depths 8,8,8,4,4, attn_ratio 1/4, 1/2, 3/4, 0, 0
    flags = [[blk.use_attn for blk in layer.blocks] for layer in model.layers]
    assert flags[0] == [False] * 6 + [True] * 2
    assert flags[1] == [False] * 4 + [True] * 4
    assert flags[2] == [False] * 2 + [True] * 6
    assert flags[3] == flags[4] == [False] * 4
    shifts = [blk.attn.shift_size for blk in model.layer3.blocks]
    assert shifts == [0, 4] * 4


def test_official_kwargs_are_json_and_rebuild_the_model():
    with torch.device("meta"):
        model = build_variant("dehazeformer-m-indoor")
        kwargs = json.loads(json.dumps(model.official_kwargs))
        rebuilt = nystra_hub.build_model("dehazeformer", **kwargs)
    assert kwargs["norm_layer"] == ["RLN"] * 5 and kwargs["conv_type"] == ["Conv"] * 5
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_norm_layer_accepts_class_and_rejects_others():
    from nystra_hub.models.dehazeformer import RLN

    model = tiny_model(norm_layer=[RLN] * 5)
    assert model.official_kwargs["norm_layer"] == ["RLN"] * 5
    with pytest.raises(ValueError, match="norm_layer"):
        tiny_model(norm_layer=["LayerNorm"] * 5)
    with pytest.raises(ValueError, match="conv_type"):
        tiny_model(conv_type=["Conv3"] * 5)


# -- the position-bias MLP is evaluated once and cached ----------------------------------------------------
def test_bias_mlp_cached_and_refreshed_after_weight_change():
    model = tiny_model()
    metas = meta_modules(model)
    assert len(metas) == 4  # one attending block in stages 1 and 2, two in stage 3
    calls = [0] * len(metas)
    for i, meta in enumerate(metas):
        meta.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    torch.manual_seed(1)
    x = torch.rand(1, 3, 40, 36) * 2 - 1
    with torch.no_grad():
        first = model(x)
        second = model(x)
    assert calls == [1, 1, 1, 1]
    assert torch.equal(first, second)
    with torch.no_grad():
        metas[-1][2].weight.mul_(-2.0)  # in place (a bias shift alone is softmax-invariant): must be noticed
        third = model(x)
    assert calls == [1, 1, 1, 2]
    assert (third - first).abs().max().item() > 1e-4
    # Gradients flowing through the bias: recomputed on every call, never cached.
    model(x).sum().backward()
    model(x)
    assert calls == [3, 3, 3, 4]
    assert metas[0][0].weight.grad is not None and metas[0][0].weight.grad.abs().sum() > 0


def test_cached_bias_is_the_mlp_of_the_relative_positions():
    model = tiny_model()
    attn = next(m for m in model.modules() if isinstance(m, WindowAttention))
    with torch.no_grad():
        expected = attn.meta(log_relative_positions((8, 8))).permute(2, 0, 1)
        cached = attn.position_bias(torch.float32, torch.device("cpu"))
    assert cached.shape == (attn.num_heads, 64, 64)
    torch.testing.assert_close(cached, expected, rtol=0, atol=1e-6)
    assert cached.std() > 0.05  # not a constant (constants would vanish in the softmax)


def test_reset_constants_rebuilds_relative_positions():
    model = tiny_model()
    torch.manual_seed(2)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        reference = model(x)
        for name, buffer in model.named_buffers():
            if name.endswith("relative_positions"):
                buffer.fill_(7.0)
        garbage = model(x)
        model.reset_constants()
        restored = model(x)
    assert (garbage - reference).abs().max().item() > 1e-4
    assert torch.equal(restored, reference)


def test_meta_device_build_then_reset_constants():
    with torch.device("meta"):
        model = nystra_hub.build_model("dehazeformer", **TINY)
    model.to_empty(device="cpu")
    model.reset_constants()
    buffers = [v for k, v in model.state_dict().items() if k.endswith("relative_positions")]
    assert len(buffers) == 4
    assert all(torch.equal(v, log_relative_positions((8, 8))) for v in buffers)


def test_foreign_relative_positions_of_another_shape_are_rejected(tmp_path):
    state = nystra_hub.read_state_dict(GOLDEN / "dehazeformer_tiny_dwconv" / "checkpoint.pth")
    key = "layer3.blocks.0.attn.attn.relative_positions"
    state[key] = torch.rand(256, 256, 2)  # right shape for window 16, but not the official buffer
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(nystra_hub.CheckpointMismatchError, match=key.replace(".", r"\.")):
        nystra_hub.load_original_checkpoint(tiny_model(), path)


# -- windows and nystra ------------------------------------------------------------------------------------
def test_set_window_size_rebuilds_positions_and_loads_trained_checkpoint():
    folder = GOLDEN / "dehazeformer_tiny_dwconv"
    model = tiny_model()
    model.set_window_size(16)
    buffers = {k: v for k, v in model.state_dict().items() if k.endswith("relative_positions")}
    assert buffers and all(torch.equal(v, log_relative_positions((16, 16))) for v in buffers.values())
    shifts = {blk.attn.shift_size for blk in model.blocks() if blk.use_attn}
    assert shifts == {0, 8}
    nystra_hub.load_original_checkpoint(model, folder / "checkpoint.pth")  # window-8 buffers accepted
    state = model.state_dict()
    assert all(v.shape == (256, 256, 2) for k, v in state.items() if k.endswith("relative_positions"))
    assert model.window_sizes() == [16] * 4
    assert model.min_size == 49


@pytest.mark.parametrize("window, side", [(8, 29), (16, 50), (32, 100)])
def test_nystra_runs_tiny_at_trained_and_enlarged_windows(window, side):
    model = tiny_model(attn_impl="nystra")
    model.set_window_size(window)
    torch.manual_seed(3)
    x = torch.rand(1, 3, side, side + 6) * 2 - 1
    with torch.no_grad():
        out = model(x)
        model.set_attn_impl("sdpa")
        exact = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert (out - exact).abs().max().item() > 1e-5  # the approximation ran at every window


@pytest.mark.parametrize("window, side", [(8, 32), (16, 52), (32, 100)])
def test_nystra_runs_dehazeformer_t(window, side):
    torch.manual_seed(4)
    model = build_variant("dehazeformer-t-indoor", attn_impl="nystra")
    model.set_window_size(window)
    x = torch.rand(1, 3, side, side + 3) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_attn_impl_switch_and_default_nystra():
    model = tiny_model(attn_impl="nystra")
    assert model.attn_impl == "nystra"
    attn = next(m for m in model.modules() if isinstance(m, WindowAttention))
    assert attn.nystra == nystra_hub.NystraParams(landmarks=16, iters=2, tau=5.0)
    model.set_attn_impl("softmax")
    assert model.attn_impl == "softmax"


# -- input checks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window, minimum", [(8, 25), (16, 49)])
def test_minimum_size_is_enforced_and_tight(window, minimum):
    model = tiny_model()
    model.set_window_size(window)
    assert model.min_size == minimum
    with torch.no_grad():
        assert model(torch.zeros(1, 3, minimum, minimum + 3)).shape == (1, 3, minimum, minimum + 3)
        with pytest.raises(ValueError, match=f"at least {minimum}x{minimum}"):
            model(torch.zeros(1, 3, minimum - 1, 64))
        with pytest.raises(ValueError, match=f"at least {minimum}x{minimum}"):
            model(torch.zeros(1, 3, 64, minimum - 1))
        # Tight: without the check, one pixel less fails inside a reflect pad.
        with pytest.raises(RuntimeError):
            model.forward_features(model.check_image_size(torch.zeros(1, 3, minimum - 1, 64)))


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    with torch.no_grad():
        with pytest.raises(ValueError, match="4-D"):
            model(torch.zeros(3, 32, 32))
        with pytest.raises(ValueError, match="3 input channel"):
            model(torch.zeros(1, 1, 32, 32))
        with pytest.raises(TypeError, match="floating-point"):
            model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
        with pytest.raises(TypeError, match="torch.Tensor"):
            model([[0.0]])
        for bad in (float("nan"), float("inf")):
            x = torch.zeros(1, 3, 32, 32)
            x[0, 1, 5, 7] = bad
            with pytest.raises(ValueError, match="NaN or Inf"):
                model(x)


def test_strict_loading_names_the_offending_key(tmp_path):
    folder = GOLDEN / "dehazeformer_tiny_dwconv"
    state = nystra_hub.read_state_dict(folder / "checkpoint.pth")
    del state["layer3.blocks.1.attn.QK.weight"]
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    with pytest.raises(nystra_hub.CheckpointMismatchError, match=r"layer3\.blocks\.1\.attn\.QK\.weight"):
        nystra_hub.load_original_checkpoint(tiny_model(), path)
    # A checkpoint of the other conv type: mis-shaped and unexpected keys, never silently skipped.
    with pytest.raises(nystra_hub.CheckpointMismatchError, match=r"attn\.conv"):
        nystra_hub.load_original_checkpoint(tiny_model(), GOLDEN / CASES[0] / "checkpoint.pth")


# -- [0, 1] convention -------------------------------------------------------------------------------------
def test_official_inference_maps_unit_range():
    model, x_signed, _ = load_case("dehazeformer_tiny_conv")
    x = (x_signed + 1) / 2
    with torch.no_grad():
        out = model.official_inference(x)
        manual = (model(2 * x - 1).clamp(-1, 1) + 1) / 2
    assert out.shape == x.shape
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert torch.equal(out, manual)
    assert (out - x).abs().max().item() > 1e-3  # the model did something
