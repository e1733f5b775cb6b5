"""micropatch: native-resolution segmentation of diabetic-retinopathy lesions with auditable patient splits.

The public API, imported on first use (PEP 562), so that `import micropatch` loads no torch:

- load_model(model=None, ...): the shipped model, a model file or an https URL with its sha256, ready to predict;
- predict_image(model, photo, out): one photograph's maps, masks, overlay and lesion list, as `micropatch predict`;
- evaluate(pred, truth, fov=None, threshold=0.5, min_area=0): any method's maps scored against masks, by stem.
"""
__version__ = "0.1.0"
__all__ = ["load_model", "predict_image", "evaluate"]

_PUBLIC = {"load_model": "micropatch.inference.api", "predict_image": "micropatch.inference.api",
           "evaluate": "micropatch.evaluation.folders"}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'micropatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
