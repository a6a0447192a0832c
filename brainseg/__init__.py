"""brainseg: brain tumour segmentation in multimodal MRI with a 3D U-Net.

The calls a notebook needs are here, imported on first use (``import brainseg`` stays instant)::

    import brainseg
    case = brainseg.load_case("path/to/case_folder")
    result = brainseg.segment_case(case, brainseg.load_checkpoint(brainseg.default_checkpoint()))
    brainseg.save_labels(result.labels, case, "seg.nii.gz", case.convention)
    scores = brainseg.evaluate_files("seg.nii.gz", "path/to/case_folder/case_seg.nii.gz")
"""

from importlib import import_module

__version__ = "0.1.0"

MODALITIES = ("flair", "t1", "t1ce", "t2")

# name -> module that defines it
_EXPORTS = {
    "Case": "io", "load_case": "io",
    "save_labels": "labelmaps", "save_probabilities": "labelmaps", "read_label_map": "labelmaps",
    "load_checkpoint": "checkpoint", "default_checkpoint": "checkpoint",
    "segment_case": "pipeline", "Segmentation": "pipeline",
    "evaluate_files": "scoring", "lesion_wise_scores": "lesion_metrics",
    "TrainConfig": "config", "BrainsegConfig": "config",  # train() is brainseg.train.train: the module has its name
}
__all__ = ["MODALITIES", "__version__", *_EXPORTS]


def __dir__():  # tab completion shows the lazy names too
    return sorted(set(globals()) | set(_EXPORTS))


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"brainseg.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'brainseg' has no attribute {name!r}")
