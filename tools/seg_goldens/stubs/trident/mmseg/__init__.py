"""Minimal stand-in for mmsegmentation, just enough for trident.py to import (see ../README.md)."""
