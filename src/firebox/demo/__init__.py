"""The generated demo state: a fictional 9-1-1 authority built from a seed, no data files."""

from firebox.demo.state import DemoState, generate_state, sample_callers

__all__ = ["DemoState", "generate_state", "sample_callers"]
