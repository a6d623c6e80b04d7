"""The one build step pyproject.toml cannot say: ``conf/`` (kept at the top of the
repository, as Hydra projects keep it) travels in the wheel as ``posegnn/conf``, every
group folder with its yaml files, so the commands find it once installed."""

from pathlib import Path

from setuptools import find_packages, setup

CONF = Path(__file__).resolve().parent / "conf"
conf_packages = ["posegnn.conf"] + sorted(
    "posegnn.conf." + ".".join(p.relative_to(CONF).parts)
    for p in CONF.rglob("*") if p.is_dir() and any(p.glob("*.yaml")))

setup(
    packages=find_packages(include=["posegnn", "posegnn.*"]) + conf_packages,
    package_dir={"posegnn.conf": "conf"},
    package_data={"posegnn.pretrained": ["*.ckpt"], **{p: ["*.yaml"] for p in conf_packages}},
)
