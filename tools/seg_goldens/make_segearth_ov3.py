#!/usr/bin/env python
"""Golden outputs of SegEarth-OV3's own fusion code on visionfm's tiny SAM 3 (``tiny_checkpoint("sam3")``).

Reference: github.com/earth-insights/SegEarth-OV-3 @ 87e5cc18c8bc9c0b4713b975587281ac1c97c79a ("SegEarth-OV3:
Exploring SAM 3 for Open-Vocabulary Semantic Segmentation in Remote Sensing Images", arXiv:2512.08730), checked out
(unmodified) at REF_DIR/segearth_ov3/src by fetch_refs.py (REF_DIR: ref_paths.py).

What runs is theirs, unmodified: ``SegEarthOV3Segmentation.__init__``, ``_inference_single_view`` and ``predict``
(segearthov3_segmentor.py: prompting, instance aggregation, dual-head max fusion, presence weighting, synonym
merging, argmax, ``prob_thd``) and ``Sam3Processor.set_image`` / ``set_text_prompt`` / ``_forward_grounding``
(sam3/model/sam3_image_processor.py: their preprocessing, score = sigmoid(logit) * presence, the confidence
threshold, box scaling, mask and semantic upsampling), with their ``box_ops`` and ``data_misc``.

What is ours: the model behind their processor. Instead of Meta's SAM 3 (``build_sam3_image_model``, a 3.4 GB
checkpoint on CUDA) it is transformers' ``Sam3Model`` with the tiny weights, behind the three calls their processor
makes (:class:`TransformersSam3`): ``backbone.forward_image`` (``Sam3Model.get_vision_features``),
``backbone.forward_text`` (``Sam3Processor``'s CLIP tokenizer, 32 tokens) and ``forward_grounding``
(``Sam3Model(vision_embeds=..., input_ids=..., attention_mask=...)``, its outputs renamed to the keys their processor
reads; boxes back to cxcywh, which their processor turns into xyxy again). So the goldens are "SegEarth-OV3's fusion
fed with the same Sam3Model outputs" that visionfm's ``sam3_semantic`` reads.

Deviations (each because their defaults assume the released model on a GPU):

- their ``Sam3Processor`` is rebuilt with ``resolution=112`` (the tiny model's input side; the segmentor builds it
  with the default 1008 and exposes no option) and ``device="cpu"``; the segmentor gets ``device=cpu``;
- their ``torch.autocast("cuda", bfloat16)`` is inactive on this CPU-only run: float32 throughout.

One command (from the repository root, in the venv of README.md; one CPU thread):

    OMP_NUM_THREADS=1 python tools/seg_goldens/make_segearth_ov3.py

Writes OUT/work/segearth_ov3/{cls_*.txt, img*.png} and OUT/segearth_ov3.safetensors (+ metadata: repository, commit,
settings, every tensor described); OUT = $VISIONFM_GOLDEN_OUT, default a temporary folder (ref_paths.py).
"""

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

torch.set_num_threads(1)

import ref_paths  # noqa: E402

REPO = "earth-insights/SegEarth-OV-3"
COMMIT = "87e5cc18c8bc9c0b4713b975587281ac1c97c79a"
SRC = str(ref_paths.check_src("segearth_ov3", COMMIT))
WORK = ref_paths.work_dir("segearth_ov3")
os.environ["SEGEARTH_OV3_SRC"] = SRC
sys.path.insert(0, str(ref_paths.STUBS_DIR / "segearth_ov3"))
sys.path.insert(0, SRC)
sys.path.insert(0, str(ref_paths.REPO_ROOT))

#: Their class-file format: one class per line, synonyms separated by commas; line 0 is the background (bg_idx 0).
CLASSES = ["background,sky", "person,man,astronaut", "cup,mug", "cat", "table"]
#: (name, segmentor settings). "all": every released config's flags; "no_sem": the instance branch alone (on tiny
#: random weights the semantic head's sigmoid, ~0.5, would otherwise win every pixel over the instance scores, ~0.25).
CONFIGS = {
    "all": dict(prob_thd=0.2, confidence_threshold=0.25),
    "no_sem": dict(prob_thd=0.05, confidence_threshold=0.24, use_sem_seg=False),
}
#: The images: skimage.data's astronaut and coffee, every 4th pixel (128 x 128 and 100 x 150, so the goldens stay
#: small), written as PNG (lossless) because their predict() reads the image file itself.
IMAGES = {"astronaut": lambda d: d.astronaut()[::4, ::4], "coffee": lambda d: d.coffee()[::4, ::4]}
TINY_SIZE = 112


class _Backbone:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def forward_image(self, image):
        """Their processor's preprocessed batch ``[B, 3, R, R]`` -> the transformers vision output."""
        return {"hf_vision": self.model.get_vision_features(pixel_values=image)}

    def forward_text(self, prompts, device=None):
        enc = self.tokenizer(list(prompts), padding="max_length", max_length=32, return_tensors="pt")
        return {"language_features": enc["input_ids"], "language_mask": enc["attention_mask"]}


class TransformersSam3:
    """transformers' ``Sam3Model`` behind the interface SegEarth-OV3's ``Sam3Processor`` calls."""

    inst_interactive_predictor = None

    def __init__(self, model, tokenizer):
        self.model = model
        self.backbone = _Backbone(model, tokenizer)

    def _get_dummy_prompt(self):
        return None  # text prompts only: their processor passes it through to forward_grounding

    def forward_grounding(self, backbone_out, find_input, geometric_prompt, find_target):
        from transformers.models.sam3.processing_sam3 import box_xyxy_to_cxcywh

        assert geometric_prompt is None
        out = self.model(
            vision_embeds=backbone_out["hf_vision"],
            input_ids=backbone_out["language_features"],
            attention_mask=backbone_out["language_mask"],
        )
        return {
            "pred_boxes": box_xyxy_to_cxcywh(out.pred_boxes),  # [1, Q, 4]: Meta's model returns cxcywh
            "pred_logits": out.pred_logits[..., None],  # [1, Q, 1]
            "pred_masks": out.pred_masks,  # [1, Q, h, w] logits
            "presence_logit_dec": out.presence_logits,  # [1, 1]
            "semantic_seg": out.semantic_seg,  # [1, 1, h, w] logits
        }


def main() -> None:
    import skimage.data
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import Sam3Model
    from transformers import Sam3Processor as HFProcessor

    from visionfm.testing import tiny_checkpoint

    ckpt = tiny_checkpoint("sam3")
    model = Sam3Model.from_pretrained(ckpt).eval()
    tokenizer = HFProcessor.from_pretrained(ckpt).tokenizer

    import sam3 as sam3_stub  # our stand-in package; sam3.model.* is theirs

    sam3_stub.MODEL = TransformersSam3(model, tokenizer)
    import segearthov3_segmentor as S  # theirs
    from mmseg.structures import SegDataSample  # stub
    from sam3.model.sam3_image_processor import Sam3Processor  # theirs

    assert os.path.realpath(S.__file__).startswith(os.path.realpath(SRC)), S.__file__
    assert os.path.realpath(sys.modules[Sam3Processor.__module__].__file__).startswith(os.path.realpath(SRC))

    cls_file = WORK / "cls_tiny.txt"
    cls_file.write_text("\n".join(CLASSES))  # no trailing newline, as their demo writes it
    cpu = torch.device("cpu")
    tensors, desc, settings = {}, {}, {}
    for img_name, make in IMAGES.items():
        arr = np.ascontiguousarray(make(skimage.data))
        path = WORK / f"{img_name}.png"
        Image.fromarray(arr).save(path)
        tensors[f"{img_name}/image"] = torch.from_numpy(arr)
        desc[f"{img_name}/image"] = "uint8 [H, W, 3]: the input (skimage.data, every 4th pixel)"
        for cfg_name, cfg in CONFIGS.items():
            seg = S.SegEarthOV3Segmentation(classname_path=str(cls_file), device=cpu, **cfg)
            seg.processor = Sam3Processor(  # their class; only resolution and device differ from the segmentor's
                sam3_stub.MODEL, resolution=TINY_SIZE, device=cpu, confidence_threshold=cfg["confidence_threshold"]
            )
            sample = SegDataSample()
            sample.set_metainfo({"img_path": str(path), "ori_shape": arr.shape[:2]})
            with torch.no_grad():
                out = seg.predict(torch.zeros(1, 3, *arr.shape[:2]), data_samples=[sample])[0]
            key = f"{img_name}/{cfg_name}"
            tensors[f"{key}/seg_logits"] = out.seg_logits.data.float().contiguous()
            tensors[f"{key}/pred"] = out.pred_sem_seg.data[0].to(torch.int64).contiguous()
            desc[f"{key}/seg_logits"] = "float32 [K, H, W]: their seg_logits after synonym merging (class maps)"
            desc[f"{key}/pred"] = "int64 [H, W]: their pred_sem_seg (argmax, prob_thd -> bg_idx 0)"
            settings[cfg_name] = {k: v for k, v in cfg.items()}
            print(key, tuple(out.seg_logits.data.shape), torch.bincount(tensors[f"{key}/pred"].flatten()).tolist())
    golden = ref_paths.out_dir() / "segearth_ov3.safetensors"
    metadata = {
        "repo": REPO,
        "commit": COMMIT,
        "classes": json.dumps(CLASSES),
        "configs": json.dumps(settings),
        "model": "visionfm tiny_checkpoint('sam3', seed=0): transformers Sam3Model + Sam3Processor (112 px)",
        "deviations": "their Sam3Processor rebuilt with resolution=112, device=cpu; float32 (no CUDA autocast)",
        "generator": "tools/seg_goldens/make_segearth_ov3.py",
        "note": "tools/seg_goldens/README.md",
        "tensors": json.dumps(desc),
    }
    save_file(tensors, str(golden), metadata=metadata)
    print(f"wrote {golden} ({golden.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
