"""The bottom layer: data keys, errors, the label space, the camera model and scene files.

Every other subpackage may import it; it imports none of them (tests/test_layering.py checks this).
"""
