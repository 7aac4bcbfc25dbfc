"""loraclf: LoRA text classifiers from the command line."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("loraclf")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
