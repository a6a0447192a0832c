"""brainseg: brain tumour segmentation in multimodal MRI with a 3D U-Net."""

__version__ = "0.1.0"

MODALITIES = ("flair", "t1", "t1ce", "t2")
