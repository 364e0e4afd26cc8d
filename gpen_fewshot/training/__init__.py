"""Few-shot GPEN training: Lightning module, staged freezing, schedules, EMA, callbacks and the pipeline.

Importing this package registers the OmegaConf resolvers the configs use.
"""

from gpen_fewshot.training.resolvers import register_resolvers

register_resolvers()
