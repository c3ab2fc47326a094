"""Dual-task Consistency (DTC, Luo et al., AAAI 2021) semi-supervised 3D segmentation."""

__version__ = "0.1.0"
