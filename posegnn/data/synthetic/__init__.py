"""The synthetic pose-maps world: people and poses, a simulated network, the writer.

``generate_dataset(out, SyntheticConfig(...))`` writes a dataset in the DESIGN.md
contract, from articulated synthetic people or from a real COCO/CrowdPose keypoint file.
"""

from .detector import DetectorNoise, letterbox, render_maps
from .poses import PoseFile
from .scene import CROWD_LEVELS, Scene, crowd_index, synthetic_scene
from .writer import SyntheticConfig, generate_dataset, save_npz

__all__ = [
    "CROWD_LEVELS", "DetectorNoise", "PoseFile", "Scene", "SyntheticConfig", "crowd_index",
    "generate_dataset", "letterbox", "render_maps", "save_npz", "synthetic_scene",
]
