import sys
from pathlib import Path

# tests/ holds helper scripts (nbval_chapters.py) that the tests import.
sys.path.insert(0, str(Path(__file__).resolve().parent))
