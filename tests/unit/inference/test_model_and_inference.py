import pickle

import numpy as np
import pytest
import torch
from helpers.workspace import REPO

from micropatch.core.fileio import InputError
from micropatch.data.patches import window_starts
from micropatch.evaluation.metrics import to_uint8
from micropatch.inference.modes import DEFAULTS, predict_probability
from micropatch.inference.windows import (
    calibration_batch,
    covering_subset,
    int8_copy,
    refined_probability,
    sliding_window_probability,
)
from micropatch.training.network import INPUT_MEAN, INPUT_STD, build_model, load_checkpoint, save_checkpoint


class Constant(torch.nn.Module):
    def forward(self, x):
        return torch.full_like(x, 0.3)  # logit 0.3 everywhere


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def test_blending_a_constant_model_is_exactly_constant():
    image = np.random.default_rng(0).integers(0, 256, (300, 410), dtype=np.uint8)
    prob = sliding_window_probability(Constant(), image, 128, 64, batch_size=7)
    assert prob.shape == (1, 300, 410)
    assert np.all(prob == torch.sigmoid(torch.tensor(0.3)).item())


def test_blending_a_pixelwise_model_reproduces_it():
    image = np.random.default_rng(1).integers(0, 256, (260, 333), dtype=np.uint8)
    prob = sliding_window_probability(Identity(), image, 128, 64)
    expected = 1 / (1 + np.exp(-((image / 255.0 - INPUT_MEAN) / INPUT_STD)))
    assert np.abs(prob[0] - expected).max() < 1e-6


class WindowContrast(torch.nn.Module):
    """Logits depend on the whole window (its mean), as the scSE squeeze does: wrong windows give wrong maps."""

    def __init__(self, gain: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.gain, self.bias, self.windows = gain, bias, []

    def forward(self, x):
        self.windows.append(len(x))
        return self.gain * (x - x.mean(dim=(2, 3), keepdim=True)) + self.bias


@pytest.mark.parametrize("shape", [(300, 410), (100, 90), (128, 300), (257, 129)])
def test_fast_refining_everywhere_runs_papers_windows_and_matches_it_exactly(shape):
    image = np.random.default_rng(4).integers(0, 256, shape, dtype=np.uint8)
    paper = sliding_window_probability(WindowContrast(), image, 128, 64, batch_size=5)
    model = WindowContrast()  # every logit > -5, so every pixel is above a 0.001 threshold: all windows run
    fast = refined_probability(model, image, np.ones(shape, bool), refine_threshold=0.001, batch_size=3)
    n_windows = len(window_starts(shape[0], 128, 64)) * len(window_starts(shape[1], 128, 64))
    assert fast.shape == paper.shape == (1, *shape)
    assert sum(model.windows) == n_windows and np.array_equal(fast, paper)


def test_fast_marks_only_what_paper_marks_and_is_exact_wherever_it_could_matter():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 20, (700, 900), dtype=np.uint8)
    for y, x in rng.integers(20, 680, (6, 2)):  # bright dots: the only places the model leans positive
        image[y:y + 9, x:x + 9] = 255
    fov = np.zeros(image.shape, bool)
    fov[30:670, 40:860] = True
    paper = sliding_window_probability(WindowContrast(3.0, -3.0), image, 128, 64)[0]
    model = WindowContrast(3.0, -3.0)
    fast = refined_probability(model, image, fov, refine_threshold=0.15)[0]
    n_windows = len(window_starts(700, 128, 64)) * len(window_starts(900, 128, 64))
    assert sum(model.windows) < 0.6 * n_windows  # the overlaps ran only around the dots
    at_risk = (fast >= 0.15) & fov
    assert at_risk.sum() > 400 and np.array_equal(fast[at_risk], paper[at_risk])
    assert ((paper >= 0.5) & fov).sum() > 0 and not ((fast >= 0.5) & ~(paper >= 0.5) & fov).any()


class BorderBlind(torch.nn.Module):
    """Sees bright pixels only at least 24 px inside its window, as a 128 px U-Net barely sees a lesion on its
    window's border."""

    def forward(self, x):
        logits = torch.where(x > 2, 6.0, -6.0)
        logits[..., :24, :], logits[..., -24:, :] = -6.0, -6.0
        logits[..., :, :24], logits[..., :, -24:] = -6.0, -6.0
        return logits


def test_two_first_pass_tilings_find_a_lesion_on_the_first_tilings_window_border():
    image = np.zeros((512, 512), np.uint8)
    image[252:260, 286:294] = 255  # on the border between first-pass windows at y 128 and 256 (x: well inside)
    fov = np.ones(image.shape, bool)
    paper = sliding_window_probability(BorderBlind(), image, 128, 64)[0]
    assert paper[256, 290] >= 0.15  # the windows starting at y 192 see it in their middle
    one = refined_probability(BorderBlind(), image, fov, refine_threshold=0.15)[0]
    two = refined_probability(BorderBlind(), image, fov, refine_threshold=0.15, tilings=2)[0]
    assert one[256, 290] < 0.15  # missed: no first-pass window saw it, so none around it was run
    lesion = paper >= 0.15
    assert np.array_equal(two[lesion], paper[lesion])


class BorderDim(torch.nn.Module):
    """Like BorderBlind, but a bright pixel in the 24 px border band leaves a faint trace (p 0.018, background
    0.0003), as a real model's does; counts the windows it runs."""

    def __init__(self):
        super().__init__()
        self.windows = 0

    def forward(self, x):
        self.windows += len(x)
        inner = torch.zeros_like(x, dtype=torch.bool)
        inner[..., 24:-24, 24:-24] = True
        return torch.where(x > 2, torch.where(inner, 6.0, -4.0), -8.0)


def test_the_shifted_tiling_runs_only_where_the_first_left_a_trace_and_still_finds_border_lesions():
    image = np.zeros((768, 768), np.uint8)
    image[252:260, 286:294] = 255  # on the border between first-pass windows at y 128 and 256, as above
    fov = np.ones(image.shape, bool)
    paper = sliding_window_probability(BorderDim(), image, 128, 64)[0]
    lesion = paper >= 0.15
    assert lesion[256, 290]
    full, traced, too_high = BorderDim(), BorderDim(), BorderDim()
    both = refined_probability(full, image, fov, tilings=2)[0]
    evidence = refined_probability(traced, image, fov, tilings=2, shifted_evidence=0.01)[0]
    missed = refined_probability(too_high, image, fov, tilings=2, shifted_evidence=0.05)[0]
    assert np.array_equal(both[lesion], paper[lesion]) and np.array_equal(evidence[lesion], paper[lesion])
    assert missed[256, 290] < 0.15  # the trace (0.018) is below 0.05: no shifted window ran near it
    # 36 first-tiling windows; of the 25 shifted ones only those holding the trace (1) ran, then the refinement
    assert traced.windows < full.windows - 20 and too_high.windows == 36
    with pytest.raises(ValueError, match="shifted_evidence"):
        refined_probability(BorderDim(), image, fov, tilings=2, shifted_evidence=0.15)


def test_fast_runs_no_window_without_fov_and_leaves_zeros_there():
    image = np.full((700, 900), 200, np.uint8)
    fov = np.zeros(image.shape, bool)
    fov[100:400, 50:300] = True  # windows starting at y 0..384 and x 0..256 touch it: 7 x 5
    model = WindowContrast(1.0, 5.0)  # every probability above the threshold: all 35 FOV windows run
    fast = refined_probability(model, image, fov, refine_threshold=0.15)[0]
    assert sum(model.windows) == 35 and (fast[:, 384:] == 0).all() and (fast[fov] > 0.99).all()


def test_covering_subset_tiles_every_axis_once_over():
    for length in (128, 200, 256, 2848, 4288):
        starts = window_starts(length, 128, 64)
        covered = np.zeros(length, int)
        for start in starts[covering_subset(len(starts), 2)]:
            covered[start:start + 128] += 1
        assert covered.min() == 1 and covered.max() <= 2


def test_fast_refuses_settings_that_would_break_its_guarantee():
    image, fov = np.zeros((64, 64), np.uint8), np.ones((64, 64), bool)
    with pytest.raises(ValueError, match="divides the window"):
        refined_probability(Identity(), image, fov, window=128, stride=48)
    with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
        refined_probability(Identity(), image, fov, refine_threshold=0.6)


def dotted_image(seed: int, shape=(300, 380)) -> np.ndarray:
    """uint8 (H, W): dim noise with a few bright 6 px dots."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 90, shape, dtype=np.uint8)
    for y, x in rng.integers(10, min(shape) - 10, (8, 2)):
        image[y:y + 6, x:x + 6] = 230
    return image


def small_convnet() -> torch.nn.Module:
    """A well-conditioned conv-BN-ReLU net with a 1-map head: int8 should track its float output closely."""
    torch.manual_seed(3)
    layers = [torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
              torch.nn.Conv2d(16, 1, 3, padding=1)]
    with torch.no_grad():
        layers[-1].weight *= 20  # logits of a few units, so sigmoid maps spread over (0, 1) as a trained model's do
    return torch.nn.Sequential(*layers).eval()


def test_int8_copy_tracks_the_float_model_when_calibrated_on_the_same_images():
    model = small_convnet()
    image = dotted_image(7)
    windows = calibration_batch(image, np.ones(image.shape, bool), 128, 64, 32)
    quantized = int8_copy(model, windows[:8])
    with torch.no_grad():
        exact, approximate = torch.sigmoid(model(windows)), torch.sigmoid(quantized(windows))
    assert any(isinstance(m, torch.ao.nn.quantized.Conv2d) for m in quantized.modules())
    assert (exact - approximate).abs().mean() < 0.02 and (exact - approximate).abs().max() < 0.1
    # ranges seen on a tenth of the contrast clip the real activations: the calibration is what makes it accurate
    narrow = int8_copy(model, windows[:8] * 0.1)
    with torch.no_grad():
        assert (exact - torch.sigmoid(narrow(windows))).abs().mean() > 0.1


def test_int8_unet_keeps_stem_and_head_float_and_leaves_the_model_untouched():
    model = build_model(1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = dotted_image(8)
    quantized = int8_copy(model, calibration_batch(image, np.ones(image.shape, bool), 128, 64, 4))
    int8 = [name for name, m in quantized.named_modules() if isinstance(m, torch.ao.nn.quantized.Conv2d)]
    assert len(int8) > 60 and not [n for n in int8 if n.startswith(("encoder.conv1", "segmentation_head"))]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", ["paper", "fast"])
def test_int8_maps_depend_only_on_their_own_image(mode):
    """A network whose int8 maps vary (a random-init U-Net's are constant and could not show a leak): an image's
    int8 maps are the same before and after a very different image was predicted, while calibrating on that other
    image would have changed them, so a calibration carried over from image to image would be seen."""
    model = small_convnet()
    first, second = dotted_image(9, (200, 260)), dotted_image(10, (150, 300)) // 4  # a quarter of the contrast
    fov_first, fov_second = np.ones(first.shape, bool), np.ones(second.shape, bool)
    params = DEFAULTS | {"mode": mode, "precision": "int8", "refine_threshold": 0.001}
    alone = predict_probability(model, first, fov_first, params)
    assert alone.shape == (1, 200, 260) and len(np.unique(to_uint8(alone))) > 50  # the maps carry structure
    predict_probability(model, second, fov_second, params)
    again = predict_probability(model, first, fov_first, params)
    assert np.array_equal(alone, again)
    leaked = int8_copy(model, calibration_batch(second, fov_second, 128, 64, params["calibration_windows"]))
    with torch.no_grad():
        windows = calibration_batch(first, fov_first, 128, 64, 4)
        assert not torch.equal(leaked(windows), int8_copy(model, calibration_batch(
            first, fov_first, 128, 64, params["calibration_windows"]))(windows))
    float_maps = predict_probability(model, first, fov_first, params | {"precision": "fp32"})
    assert not np.array_equal(alone, float_maps)  # int8 did run


def test_calibration_windows_are_spread_over_the_fov_first_pass():
    image = np.arange(700 * 900, dtype=np.int64).reshape(700, 900).astype(np.uint8)
    fov = np.zeros(image.shape, bool)
    fov[200:500, 300:700] = True
    batch = calibration_batch(image, fov, 128, 64, 5)
    assert batch.shape == (5, 1, 128, 128) and batch.dtype == torch.float32
    assert calibration_batch(image, fov, 128, 64, 500).shape[0] == 3 * 4  # never more than the first pass has
    assert calibration_batch(image, np.zeros_like(fov), 128, 64, 3).shape[0] == 3  # no FOV: still calibrates


def test_precision_and_mode_are_checked_before_any_work():
    image, fov = np.zeros((64, 64), np.uint8), np.ones((64, 64), bool)
    with pytest.raises(ValueError, match="infer.precision 'fp16'"):
        predict_probability(Identity(), image, fov, DEFAULTS | {"precision": "fp16"})
    with pytest.raises(ValueError, match="CPU only"):
        predict_probability(Identity(), image, fov, DEFAULTS | {"precision": "int8"}, device="cuda")
    with pytest.raises(ValueError, match="infer.mode 'tiles'"):
        predict_probability(Identity(), image, fov, DEFAULTS | {"mode": "tiles", "precision": "int8"})


def test_unet_shapes_and_checkpoint_roundtrip(tmp_path):
    model = build_model(2).eval()
    x = torch.zeros(1, 1, 128, 128)
    assert model(x).shape == (1, 2, 128, 128)
    save_checkpoint(tmp_path / "m.safetensors", model,
                    {"lesions": ["MA", "HE"], "encoder": "resnet34", "attention": "scse"})
    loaded, config = load_checkpoint(tmp_path / "m.safetensors")
    assert config["lesions"] == ["MA", "HE"]
    assert torch.equal(loaded(x), model(x))


def test_imagenet_weights_come_only_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InputError, match="never downloads"):
        build_model(1, encoder_weights="imagenet")
    import torchvision

    reference = torchvision.models.resnet34()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth")
    model = build_model(1, encoder_weights="imagenet")
    assert torch.equal(model.encoder.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)
    assert torch.allclose(model.encoder.conv1.weight[:, 0], reference.conv1.weight.sum(1))


def test_nan_weights_and_code_running_pickles_are_refused(tmp_path):
    model = build_model(1)
    with torch.no_grad():
        model.segmentation_head[0].weight[0] = float("nan")
    save_checkpoint(tmp_path / "nan.safetensors", model,
                    {"lesions": ["MA"], "encoder": "resnet34", "attention": "scse"})
    with pytest.raises(InputError, match="nan.safetensors: weight 'segmentation_head.0.weight' holds NaN"):
        load_checkpoint(tmp_path / "nan.safetensors")

    class Exploit:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Exploit(), "config": {}}))
    with pytest.raises(InputError, match="evil.pt: refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("params_file", ["params.yaml", "results/idrid-ma-best/params.yaml"])
def test_each_params_files_infer_section_runs_both_modes(params_file):
    """params.yaml `infer` on top of a model's recipe (window and stride come from the recipe, as in the stage)."""
    from micropatch.core.fileio import load_params
    from micropatch.core.recipe import resolve
    from micropatch.inference.modes import DEFAULTS, predict_probability

    params = resolve({}, "inference", load_params("infer", REPO / params_file), DEFAULTS)
    image = np.random.default_rng(6).integers(0, 256, (200, 260), dtype=np.uint8)
    fov = np.ones(image.shape, bool)
    paper = predict_probability(WindowContrast(), image, fov, params | {"mode": "paper"})
    fast = predict_probability(WindowContrast(), image, fov, params | {"mode": "fast"})
    at_risk = fast >= params["refine_threshold"]
    assert at_risk.any() and np.array_equal(fast[at_risk], paper[at_risk])
