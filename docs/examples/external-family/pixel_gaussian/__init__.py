"""An example model family kept outside pipeline_lib (docs/external-family.md)."""
