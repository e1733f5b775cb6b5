"""What produced a result: library versions, recorded in every metrics file."""
import platform
from importlib.metadata import version

import cv2


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the numbers. MONAI's, smp's, NumPy's and Pillow's from
    their installed distributions (the same strings as their __version__, without importing them: MONAI and smp
    take seconds to import, which every score stage of the study paid); torch's and OpenCV's from the modules,
    whose strings carry what the distribution's do not (torch's build tag, such as +cpu)."""
    import torch

    from micropatch import __version__

    return {"micropatch": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "segmentation_models_pytorch": version("segmentation-models-pytorch"), "monai": version("monai"),
            "numpy": version("numpy"), "opencv": cv2.__version__, "pillow": version("pillow")}
