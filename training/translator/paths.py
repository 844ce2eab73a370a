"""Default locations for translator training (override with flags or TRANSLATOR_WORK)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TRANSLATOR_DATA", ROOT.parent / "shared/data/translator/spa-eng/spa.txt"))
WORK = Path(os.environ.get("TRANSLATOR_WORK", ROOT / "work/translator"))
#: The version directory tools read and export to by default: the one the server would serve
#: (``models/translator/<highest or pinned version>``); pass --model-dir / --out
#: models/translator/<new version> to make a new version.
def _served() -> Path:
    from app.serving.repository import version_dir
    return version_dir("translator")


MODEL_DIR = _served()
