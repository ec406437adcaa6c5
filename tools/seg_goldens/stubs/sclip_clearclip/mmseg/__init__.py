"""Stand-in for mmsegmentation 1.x: only the names SCLIP/ClearCLIP import."""
