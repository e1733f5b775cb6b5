import pickle

import numpy as np
import pytest
import torch

from micropatch.inference import sliding_window_probability
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
