"""The learned-detector world: a small bottom-up network, trained as HigherHRNet is, on
rendered images of people, whose outputs are written as a pose-maps dataset.

``posegnn-detector train out=PATH [poses=FILE]`` trains it; ``posegnn-detector write
out=DIR [weights=PATH] [poses=FILE]`` runs it with the flip test and writes its maps
through :class:`~posegnn.writer.PoseMapsWriter`, as docs/real_networks.md tells a user to.
"""
