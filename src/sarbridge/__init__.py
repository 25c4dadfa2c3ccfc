"""sarbridge: SAR ship detection from BNN pretraining to a satellite's onboard computer.

This module holds the version only and imports nothing heavy: the on-board
runtime must start fast on a Jetson board, where importing torch takes seconds.
"""

__version__ = "0.1.0"
