"""Default locations for translator training (override with flags or TRANSLATOR_WORK)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TRANSLATOR_DATA", ROOT.parent / "shared/data/translator/spa-eng/spa.txt"))
WORK = Path(os.environ.get("TRANSLATOR_WORK", ROOT / "work/translator"))
MODEL_DIR = ROOT / "models/translator"
