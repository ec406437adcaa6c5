"""Stand-in for the ``sam3`` package that SegEarth-OV-3 vendors: only its top-level ``build_sam3_image_model`` is
replaced (it would build Meta's SAM 3 from ``weights/sam3/sam3.pt`` on CUDA). ``sam3.model.*`` resolves to THEIR
files: this package's path is extended with ``$SEGEARTH_OV3_SRC/sam3``, so ``sam3.model.sam3_image_processor``,
``sam3.model.box_ops`` and ``sam3.model.data_misc`` are their code, unmodified.

``make_segearth_ov3.py`` sets ``MODEL`` to its stand-in model (transformers ``Sam3Model`` behind the interface their
``Sam3Processor`` calls) before the segmentor is built.
"""

import os

__path__.append(os.path.join(os.environ["SEGEARTH_OV3_SRC"], "sam3"))  # noqa: F821  (the package's own __path__)

MODEL = None


def build_sam3_image_model(bpe_path=None, checkpoint_path=None, device=None, **kwargs):
    if MODEL is None:
        raise RuntimeError("set sam3.MODEL before building the segmentor (make_segearth_ov3.py does)")
    return MODEL
