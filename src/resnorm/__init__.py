"""resnorm: a study of normalization layers in a 6n+2-layer ResNet."""

__version__ = "0.1.0"
