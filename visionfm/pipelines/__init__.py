"""Task pipelines built on the foundation encoders."""
