"""Inference: a competition split in, a valid submission out, whatever fails on the way."""
