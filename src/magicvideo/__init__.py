"""magicvideo: MagicVideo-V2 text-to-video (arXiv 2401.04468), with a synthetic world to train and measure it."""

__version__ = "0.1.0"
