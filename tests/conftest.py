import sys
from pathlib import Path

# tests/ holds helper scripts (nbval_chapters.py) that the tests import; the root holds the assignments package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
