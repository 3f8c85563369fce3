"""One reader per public corpus (EmpatheticDialogues, ESConv, PersonaChat), shared by build, eval and judge.

Build seeds and profiles, eval items and judge calibration all read the same files; each corpus is parsed
and validated here once, so a bad row fails the same way (file, line, field) whoever reads it. Consumers
turn the parsed rows into their own objects. Foundation layer: only config/paths/records/emotions below.
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_file(*parts: str) -> Path:
    """A file of the real public data kept beside the repository (`../shared/data`, never copied in).

    Looked for under `$KARDIA_SHARED_DATA`, then `../shared/data` from the working directory, then beside
    the checkout this package runs from; the error names every folder tried.
    """
    roots = [os.environ.get("KARDIA_SHARED_DATA"), "../shared/data", str(Path(__file__).resolve().parents[3].parent / "shared" / "data")]
    tried = []
    for root in roots:
        if root:
            p = Path(root).joinpath(*parts)
            if p.exists():
                return p
            tried.append(str(p))
    raise FileNotFoundError(f"{Path(*parts)} not found in the shared data (tried {', '.join(tried)}): pass its path")
