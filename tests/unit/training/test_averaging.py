"""Weight averaging (SWA, soups) against torch's AveragedModel, BatchNorm recomputed (not averaged), the greedy
soup's rule, ensembles of maps, and the held-out test split the study's leave-one-out reads."""
import numpy as np
import pytest
import torch

from micropatch.training.averaging import (
    PARTS,
    average_states,
    averaged_model,
    bn_batches,
    ensemble_maps,
    greedy_soup,
    in_part,
    recompute_batchnorm,
)
from micropatch.training.network import build_model, save_checkpoint


def small_unet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(2, "resnet18", None, "scse")
    with torch.no_grad():  # distinct BatchNorm statistics per model, so an average of them would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return model


@pytest.fixture(scope="module")
def ingredients(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ingredients")
    paths = []
    for seed in range(3):
        path = folder / f"m{seed}.safetensors"
        save_checkpoint(path, small_unet(seed), {"lesions": ["MA", "EX"], "encoder": "resnet18", "attention": "scse"})
        paths.append(path)
    return paths


def patches(n: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8)


def test_full_average_is_torch_averaged_model(ingredients):
    """The full model's parameters are AveragedModel's (torch.optim.swa_utils, the SWA oracle) over the same runs."""
    from torch.optim.swa_utils import AveragedModel

    models = [small_unet(seed) for seed in range(3)]
    oracle = AveragedModel(models[0])
    for model in models:  # its first update copies (n_averaged starts at 0), the later ones average
        oracle.update_parameters(model)
    ours = average_states([m.state_dict() for m in models], "full", models[0].state_dict())
    for name, param in oracle.module.named_parameters():
        assert torch.allclose(ours[name], param, atol=1e-6, rtol=0), name


@pytest.mark.parametrize("part", PARTS)
def test_a_part_is_averaged_and_the_rest_is_the_base(part):
    models = [small_unet(seed) for seed in range(3)]
    base = models[2].state_dict()
    ours = average_states([m.state_dict() for m in models], part, base)
    for key, value in base.items():
        if not value.is_floating_point():
            assert torch.equal(ours[key], value), key  # num_batches_tracked: never averaged
        elif in_part(key, part):
            assert torch.allclose(ours[key], torch.stack([m.state_dict()[key] for m in models]).mean(0), atol=1e-6)
        else:
            assert torch.equal(ours[key], value), key
    averaged = {k for k in base if in_part(k, part)}
    assert any(k.startswith("encoder.") for k in averaged) == (part != "decoder")
    assert any(k.startswith(("decoder.", "segmentation_head.")) for k in averaged) == (part != "encoder")


def test_batchnorm_is_recomputed_on_training_patches_not_averaged(ingredients):
    """After averaging, the first BatchNorm's running mean is the mean of conv1's output over the patches (one
    batch: update_bn's cumulative average is exact), not the average of the ingredients' running means."""
    images = patches()
    model, _ = averaged_model(ingredients, "full", ingredients[0], lambda: bn_batches(images, 64, 1000, 0))
    stats = model.encoder.bn1.running_mean
    batch = next(bn_batches(images, 64, 1000, 0))
    with torch.no_grad():
        expected = model.encoder.conv1(batch).mean((0, 2, 3))
    assert torch.allclose(stats, expected, atol=1e-4)
    ingredient_means = torch.stack([torch.from_numpy(np.asarray(small_unet(s).encoder.bn1.running_mean.numpy()))
                                    for s in range(3)]).mean(0)
    assert not torch.allclose(stats, ingredient_means, atol=1e-2)
    assert not model.training


def test_encoder_soup_recomputes_every_batchnorm(ingredients):
    """The decoder keeps the base's weights but not its statistics: they described another encoder's features."""
    images = patches()
    base = small_unet(0)
    model, _ = averaged_model(ingredients, "encoder", ingredients[0], lambda: bn_batches(images, 64, 1000, 0))
    decoder_bn = [m for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    base_bn = [m for m in base.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not torch.allclose(decoder_bn.running_mean, base_bn.running_mean, atol=1e-3)
    conv = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert torch.equal(conv.weight, [m for m in base.decoder.modules() if isinstance(m, torch.nn.Conv2d)][0].weight)


def test_recompute_batchnorm_ignores_old_statistics():
    images = patches()
    a, b = small_unet(0), small_unet(1)
    b.load_state_dict({k: v if "running" not in k else a.state_dict()[k] * 0 + 5 for k, v in a.state_dict().items()})
    batches = list(bn_batches(images, 8, 1000, 0))
    recompute_batchnorm(a, batches)
    recompute_batchnorm(b, batches)
    assert torch.allclose(a.encoder.bn1.running_var, b.encoder.bn1.running_var, atol=1e-6)


def test_architectures_that_differ_are_refused():
    from micropatch.core.fileio import InputError

    other = build_model(2, "resnet34", None, "scse").state_dict()
    with pytest.raises(InputError, match="architecture"):
        average_states([small_unet(0).state_dict(), other], "full", small_unet(0).state_dict())


def test_bn_batches_are_a_seeded_bounded_choice():
    images = patches(50)
    first = torch.cat(list(bn_batches(images, 16, 20, 3)))
    again = torch.cat(list(bn_batches(images, 16, 20, 3)))
    assert first.shape == (20, 1, 64, 64) and torch.equal(first, again)
    assert not torch.equal(first, torch.cat(list(bn_batches(images, 16, 20, 4))))


def test_greedy_soup_keeps_an_ingredient_only_when_held_out_score_does_not_drop():
    value = {"a": 0.5, "b": 0.4, "c": 0.3}
    # the soup's held-out score: the mean of its ingredients', plus 0.2 when it holds c (c helps the soup)
    score = lambda kept: np.mean([value[k] for k in kept]) + (0.2 if "c" in kept else 0)  # noqa: E731
    kept, best = greedy_soup(["a", "b", "c"], score)
    assert kept == ["a", "c"] and best == pytest.approx(0.6)  # b lowered the score, c raised it
    assert greedy_soup(["a"], score) == (["a"], 0.5)
    with pytest.raises(ValueError):
        greedy_soup([], score)


def test_ensemble_is_the_mean_probability():
    a = np.array([[0, 255], [100, 51]], np.uint8)
    b = np.array([[255, 255], [0, 50]], np.uint8)
    assert ensemble_maps([a, b]).tolist() == [[128, 255], [50, 51]]
    with pytest.raises(ValueError):
        ensemble_maps([a, np.zeros((3, 3), np.uint8)])


def test_held_out_images_do_not_depend_on_the_training_sets():
    """Every combination of training sets reads each dataset on the same held-out images, patient-isolated."""
    from micropatch.data.audit import audit_manifest
    from micropatch.data.manifest import HELD_OUT
    from micropatch.data.split import assign_splits

    fingerprints = []
    for dataset, n in (("a", 14), ("b", 8), ("c", 8)):
        for i in range(n):
            fingerprints.append({"dataset": dataset, "image_id": f"{dataset}{i:02d}",
                                 "patient_key": f"{dataset}{i // 2}",
                                 "official_split": "", "sha256": f"{dataset}{i}",
                                 "phash": f"{i * 97 + ord(dataset):064x}",
                                 "height": 10, "width": 10, "source": "", "lesion_pixels": {"MA": i % 3}})
    held = {}
    for train_on in (["a"], ["b", "c"], ["a", "b", "c"]):
        rows = assign_splits(fingerprints, train_on, 0.2, 42, merge_near_duplicates=False, test_fraction=0.25)
        held[tuple(train_on)] = {r["image_id"] for r in rows if r["split"] == HELD_OUT}
        assert not audit_manifest(rows, 0)
        for r in rows:
            if r["dataset"] in train_on and r["image_id"] not in held[tuple(train_on)]:
                assert r["split"] in ("train", "val")
    assert len(set(map(frozenset, held.values()))) == 1
    chosen = next(iter(held.values()))
    assert {i[0] for i in chosen} == {"a", "b", "c"}  # every dataset holds some out, whole patients at a time
    assert all(f"{i[0]}{int(i[1:]) ^ 1:02d}" in chosen for i in chosen)
    without = assign_splits(fingerprints, ["a"], 0.2, 42, merge_near_duplicates=False)
    assert not any(r["split"] == HELD_OUT for r in without)
