"""micropatch: native-resolution segmentation of diabetic-retinopathy lesions with auditable patient splits."""
__version__ = "0.1.0"
