"""emodist: fine-tune and compare transformer models for multi-label emotion detection.

    accelerate launch launch/train.py --variant minilm --data-dir ../shared/data/goemotions

Importing the package has no side effects and imports no heavy library; see DESIGN in README.md.
"""

__version__ = "0.1.0"
