"""The version, on the ground floor: setup.py reads it from here, every floor may import it."""
__version__ = "0.1.0"
