"""Drop-ins for the pipelines researchers already run: posegnn's grouping behind the
call their code makes today.

- :mod:`posegnn.integrations.higherhrnet`: ``HeatmapParser`` with the contract of
  HigherHRNet's ``core.group.HeatmapParser.parse`` (one line in ``tools/valid.py``);
- :mod:`posegnn.integrations.mmpose`: ``PosegnnAEDecoder`` with the contract of
  mmpose's ``AssociativeEmbedding.batch_decode`` (one codec setting in a config).

Both take the tool's tensors as they come, group them with a posegnn checkpoint (the
shipped model of the layout by default, or ``grouping="ae"``) and answer in the tool's
format. docs/real_networks.md shows the one-line swaps.
"""
