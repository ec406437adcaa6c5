"""Placeholder for ClearCLIP's BLIP retrieval model (used only when clip_type == 'BLIP')."""


def blip_retrieval(*args, **kwargs):
    raise NotImplementedError("BLIP is not reproduced")
