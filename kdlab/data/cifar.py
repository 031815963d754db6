"""Where configs written before the reader layer point (``kdlab.data.cifar.CIFARDataModule``)."""

from kdlab.data.module import CIFARDataModule, ImageDataModule

__all__ = ["CIFARDataModule", "ImageDataModule"]
