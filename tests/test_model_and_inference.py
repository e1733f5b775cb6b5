import pickle

import numpy as np
import pytest
import torch

from micropatch.inference import gaussian_weight, sliding_window_probability, tiled_probability
from micropatch.io import InputError
from micropatch.model import INPUT_MEAN, INPUT_STD, build_model, load_checkpoint, save_checkpoint


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


class CountingIdentity(Identity):
    def __init__(self):
        super().__init__()
        self.tiles = 0

    def forward(self, x):
        self.tiles += len(x)
        return x


def test_tiles_blend_a_pixelwise_model_exactly_and_skip_tiles_outside_the_fov():
    image = np.random.default_rng(2).integers(0, 256, (700, 900), dtype=np.uint8)
    fov = np.zeros(image.shape, bool)
    fov[100:400, 50:300] = True  # tile starts y 0,192,384,444 and x 0,192,384,576,644: 3 x 2 tiles touch it
    model = CountingIdentity()
    prob = tiled_probability(model, image, fov, tile=256, overlap=64, batch_size=3)
    expected = 1 / (1 + np.exp(-((image / 255.0 - INPUT_MEAN) / INPUT_STD)))
    assert prob.shape == (1, 700, 900)
    assert np.abs(prob[0] - expected)[fov].max() < 1e-5  # Gaussian weights cancel for a pixelwise model
    assert model.tiles == 6 and (prob[0][:, 448:] == 0).all()  # far from the FOV: no tile ran, probability 0


def test_tiles_pad_images_smaller_than_a_tile():
    image = np.random.default_rng(3).integers(0, 256, (100, 150), dtype=np.uint8)
    prob = tiled_probability(Identity(), image, np.ones(image.shape, bool), tile=256, overlap=32)
    expected = 1 / (1 + np.exp(-((image / 255.0 - INPUT_MEAN) / INPUT_STD)))
    assert prob.shape == (1, 100, 150) and np.abs(prob[0] - expected).max() < 1e-5


def test_gaussian_weight_peaks_in_the_centre_and_stays_positive():
    weight = gaussian_weight(64)
    assert weight.shape == (64, 64) and weight.min() > 0 and weight[31, 31] == weight.max() == 1.0
    with pytest.raises(ValueError, match="multiple of 32"):
        tiled_probability(Identity(), np.zeros((64, 64), np.uint8), np.ones((64, 64), bool), tile=100)


def test_unet_shapes_and_checkpoint_roundtrip(tmp_path):
    model = build_model(2).eval()
    x = torch.zeros(1, 1, 128, 128)
    assert model(x).shape == (1, 2, 128, 128)
    save_checkpoint(tmp_path / "m.safetensors", model, {"lesions": ["MA", "HE"], "encoder": "resnet34", "attention": "scse"})
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
    save_checkpoint(tmp_path / "nan.safetensors", model, {"lesions": ["MA"], "encoder": "resnet34", "attention": "scse"})
    with pytest.raises(InputError, match="nan.safetensors: weight 'segmentation_head.0.weight' holds NaN"):
        load_checkpoint(tmp_path / "nan.safetensors")

    class Exploit:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Exploit(), "config": {}}))
    with pytest.raises(InputError, match="evil.pt: refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
