"""What produced a result: library versions, recorded in every metrics file."""
import platform


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the numbers."""
    import cv2
    import monai
    import numpy
    import PIL
    import segmentation_models_pytorch
    import torch

    from . import __version__

    return {"micropatch": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "segmentation_models_pytorch": segmentation_models_pytorch.__version__, "monai": monai.__version__,
            "numpy": numpy.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__}
