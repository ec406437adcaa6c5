"""Minimal stand-in for mmsegmentation, just enough for corrclip_segmentor.py to import (see ../README.md)."""
