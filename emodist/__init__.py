"""emodist: fine-tune and compare transformer models for multi-label emotion detection.

    accelerate launch launch/train.py --variant minilm --data-dir ../shared/data/goemotions

The packages are layers, each importing only those under it (README, "How it fits together"):
runtime -> config -> data, scoring -> models, rundir -> report -> serve -> train.
Importing the package has no side effects and imports no heavy library.
"""

__version__ = "0.1.0"
