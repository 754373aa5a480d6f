"""saliency-replication: a reproducible replication of three papers on saliency maps.

Public entry points live in the sub-packages (``replication.data``, ``replication.claims``,
``replication.report``); ``python -m replication --help`` lists the pipeline commands.
"""

__version__ = "0.1.0"
