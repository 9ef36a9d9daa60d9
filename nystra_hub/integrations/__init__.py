"""Glue to the libraries users load models with; no model logic lives here.

``transformers``: the config, model and image-processor classes registered with the Auto classes;
``timm``: the registry entries and pretrained configs. ``import nystra_hub`` imports both when installed.
"""
