"""The released file carries the map-changing inference settings its operating point was chosen with (infer.tta),
so that `micropatch predict` runs the maps the record measured (micropatch.inference.entrypoints)."""
from micropatch.core.recipe import INFER_DEFAULTS, resolve
from micropatch.inference.entrypoints import released_inference
from micropatch.inference.modes import DEFAULTS


def test_the_release_carries_the_tta_its_point_was_chosen_with():
    recipe = INFER_DEFAULTS | {"window": 128, "stride": 64, "scale": 0.5}
    chosen_with = resolve({"inference": recipe}, "inference", {"tta": "flips", "mode": "fast"}, DEFAULTS)
    released = released_inference(recipe, chosen_with, [3400, 3414, 3420])
    assert released["tta"] == "flips" and released["fov_diameter"] == 3414 and released["scale"] == 0.5
    assert released["mode"] == "paper"  # how fast the maps come is predict's own choice, not the recipe's
    # predict without --tta then runs the flips
    assert resolve({"inference": released}, "inference", {"tta": None}, DEFAULTS)["tta"] == "flips"


def test_without_tta_the_release_recipe_is_what_it_was():
    recipe = INFER_DEFAULTS | {"window": 128, "stride": 64}
    chosen_with = resolve({"inference": recipe}, "inference", {"tta": "none"}, DEFAULTS)
    assert released_inference(recipe, chosen_with, [3414]) == recipe | {"fov_diameter": 3414}
    assert list(released_inference(recipe, chosen_with, [3414])) == [*recipe, "fov_diameter"]  # same JSON bytes
