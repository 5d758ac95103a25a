"""Holds sitecustomize.py: put this folder on PYTHONPATH to load the probe at startup."""
