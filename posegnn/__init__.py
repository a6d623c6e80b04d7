"""posegnn: learned keypoint grouping for bottom-up multi-person pose estimation."""

__version__ = "0.1.0"
