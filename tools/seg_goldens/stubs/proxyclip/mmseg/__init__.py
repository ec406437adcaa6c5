"""Minimal stand-in for mmsegmentation, just enough for ProxyCLIP's proxyclip_segmentor.py to import.

Only what that module touches is provided (BaseSegmentor, SegDataPreProcessor, MODELS.register_module).
Behaviour follows mmsegmentation 1.1.1 / mmengine 0.8.4 (ProxyCLIP requirements.txt) where it matters for
inference: SegDataPreProcessor.forward in test mode (mmseg/models/data_preprocessor.py): optional BGR->RGB
channel flip, float(), (x - mean) / std, torch.stack (no padding: ProxyCLIP passes no size/size_divisor/test_cfg).
"""
