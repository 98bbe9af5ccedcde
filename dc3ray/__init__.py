"""dc3ray: Dataset Condensation with Color Compensation on Ray."""
__version__ = "0.1.0"
