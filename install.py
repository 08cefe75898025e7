"""Install RestoreKit's Python requirements.

ComfyUI-Manager runs this file after cloning the pack into ``custom_nodes/``; it also works
standalone (``python install.py [--dry-run]``). It installs ``requirements.txt`` into the
Python that runs it and never touches torch, torchvision or torchaudio (ComfyUI users bring
their own).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().with_name("requirements.txt")
PROTECTED = ("torch", "torchvision", "torchaudio")


def requirement_lines() -> list[str]:
    """The requirement lines, without comments and never a torch package."""
    lines = []
    for raw in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        name = line.split(";")[0].split("[")[0]
        for sep in ("==", ">=", "<=", "~=", "!=", ">", "<"):
            name = name.split(sep)[0]
        if line and name.strip().lower() not in PROTECTED:
            lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = [sys.executable, "-m", "pip", "install", *requirement_lines()]
    if "--dry-run" in args:
        print(" ".join(command))
        return 0
    print(f"RestoreKit: installing requirements into {sys.executable}")
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
