"""The training options the proxy experiments try: bf16 autocast, OHEM, Poisson-blended MAs, a working scale."""
import numpy as np
import pytest
import torch
from helpers.workspace import PARAMS as REPO_PARAMS

from micropatch.data.patches import resample
from micropatch.inference.modes import predict_probability
from micropatch.training.config import TrainConfig
from micropatch.training.dataset import harmonic_fill, lesion_bank, paste_lesions, poisson_paste
from micropatch.training.loss import OHEM_MIN_NEGATIVES, make_loss, ohem_bce
from micropatch.training.network import build_model
from micropatch.training.trainer import train_step


def test_ohem_averages_the_lesion_pixels_and_only_the_hardest_negatives():
    target = torch.zeros(1, 1, 64, 64)
    target[0, 0, :2, :10] = 1  # 20 lesion pixels
    logits = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    pixel = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    negatives = pixel[target == 0].sort(descending=True).values
    k = max(OHEM_MIN_NEGATIVES, 3 * 20)
    expected = (pixel[target == 1].sum() + negatives[:k].sum()) / (20 + k)
    assert ohem_bce(logits, target, 3.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ohem_bce(logits, target, 3.0).item() > torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target).item()  # the easy background no longer dilutes it


def test_ohem_needs_a_bce_term():
    with pytest.raises(ValueError, match="ohem_ratio"):
        TrainConfig.from_params(REPO_PARAMS, ohem_ratio=3.0, bce_weight=0.0)
    loss = make_loss(1, TrainConfig.from_params(REPO_PARAMS, ohem_ratio=3.0, bce_weight=0.5, dice_weight=0.5))
    assert torch.isfinite(loss(torch.randn(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) < 0.05).float()))


def test_a_harmonic_fill_keeps_its_border_and_solves_laplaces_equation():
    border = np.zeros((12, 15))
    border[0] = np.linspace(0, 10, 15)
    border[:, -1] = 10
    filled = harmonic_fill(border)
    assert np.allclose(filled[0], border[0]) and np.allclose(filled[:, -1], 10)
    laplacian = filled[:-2, 1:-1] + filled[2:, 1:-1] + filled[1:-1, :-2] + filled[1:-1, 2:] - 4 * filled[1:-1, 1:-1]
    assert np.abs(laplacian).max() < 1e-9


def test_a_poisson_paste_keeps_the_lesions_contrast_and_the_targets_level():
    target = np.full((64, 64), 150.0)
    source = np.full((13, 13), 90.0)
    source[4:9, 4:9] = 40.0  # a lesion 50 below its own surroundings
    out = poisson_paste(target, source, 20, 30)
    assert out[26, 36] == pytest.approx(100.0, abs=1.0)  # 150 - 50: the contrast, at the target's level
    assert np.array_equal(out[:20], target[:20]) and out[20, 30] == pytest.approx(150.0)


def test_pasted_lesions_land_in_lesion_free_patches_with_their_masks():
    images = np.full((3, 64, 64), 120, np.uint8)
    masks = np.zeros((3, 1, 64, 64), np.uint8)
    images[0, 20:26, 20:26] = 40
    masks[0, 0, 20:26, 20:26] = 1  # one 6x6 lesion, well inside its patch
    masks[1, 0, 0:3, 0:3] = 1  # touches its patch border: not in the bank
    bank = lesion_bank(images, masks)
    assert len(bank) == 1 and bank[0][0].shape == (14, 14) and bank[0][1].sum() == 36
    image, mask = paste_lesions(images[2].astype(np.float32), masks[2], bank, np.random.default_rng(0))
    pasted = mask[0].astype(bool)
    assert pasted.sum() in (36, 72, 108) and mask.dtype == np.uint8
    assert image[pasted].mean() < 60 and image[~pasted].mean() > 110  # dark where the mask says, level elsewhere


def test_the_training_dataset_pastes_lesions_into_its_float_masks(tmp_path):
    """What training does (PatchDataset with train.synthetic_ma): float32 masks, not the uint8 masks on disk. The
    first proxy run of synthetic MA stopped here with a TypeError (bitwise-or on float32)."""
    from micropatch.data.patches import write_patch_set
    from micropatch.training.dataset import PatchDataset

    images = np.full((4, 64, 64), 120, np.uint8)
    masks = np.zeros((4, 1, 64, 64), np.uint8)
    images[0, 20:26, 20:26] = 40
    masks[0, 0, 20:26, 20:26] = 1
    write_patch_set(tmp_path, images, masks, [], {"split": "train"})
    dataset = PatchDataset(tmp_path, augment=True, seed=0, synthetic_ma=1.0)
    for index in (1, 2, 3):  # lesion-free: each gets 1 to 3 pasted lesions, whatever rotation and flip follow
        image, mask = dataset[index]
        assert mask.dtype == torch.float32 and set(mask.unique().tolist()) == {0.0, 1.0}
        assert mask.sum() in (36, 72, 108) and image[mask.bool()].mean() < 70


def test_a_bf16_training_step_runs_and_moves_the_weights():
    torch.manual_seed(0)
    model = build_model(1, "resnet18", None, "scse").to(memory_format=torch.channels_last).train()
    before = model.segmentation_head[0].weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = TrainConfig.from_params(REPO_PARAMS)
    loss = train_step(model, optimizer, torch.amp.GradScaler(enabled=False), make_loss(1, cfg),
                      torch.randint(0, 255, (2, 1, 64, 64)).float(), (torch.rand(2, 1, 64, 64) < 0.05).float(),
                      torch.device("cpu"), "bf16")
    assert np.isfinite(loss) and not torch.equal(before, model.segmentation_head[0].weight)
    assert model.segmentation_head[0].weight.dtype == torch.float32  # weights stay float32


def test_a_half_scale_keeps_lesion_areas_unbiased():
    image = np.random.default_rng(0).integers(0, 255, (200, 300), dtype=np.uint8)
    fov = np.ones((200, 300), bool)
    lesion = np.zeros((1, 200, 300), bool)
    lesion[0, 40:60, 40:80] = True  # 800 px: 200 at half scale
    small_image, small_fov, small_lesion = resample(image, fov, lesion, 0.5)
    assert small_image.shape == small_fov.shape == small_lesion.shape[1:] == (100, 150)
    assert small_lesion.sum() == 200
    assert resample(image, fov, lesion, 1.0)[0] is image


class SeesScale(torch.nn.Module):
    """Logit +10 wherever its input is bright; records the window sizes it was given."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, batch):
        self.calls.append(tuple(batch.shape[-2:]))
        return torch.where(batch > 0, 10.0, -10.0)


def test_a_model_of_working_scale_half_sees_the_image_at_half_and_maps_come_back_native():
    image = np.zeros((512, 768), np.uint8)
    image[200:216, 300:316] = 255  # a 16 px bright square: 8 px at half scale
    fov = np.ones(image.shape, bool)
    params = {"mode": "paper", "window": 128, "stride": 64, "batch_size": 8, "scale": 0.5}
    model = SeesScale()
    probability = predict_probability(model, image, fov, params)[0]
    assert probability.shape == image.shape and probability[208, 308] > 0.99 and probability[100, 100] < 0.01
    windows = sum(1 for _ in model.calls)
    native = SeesScale()
    predict_probability(native, image, fov, params | {"scale": 1.0})
    assert windows < len(native.calls)  # the half-scale image holds fewer windows
