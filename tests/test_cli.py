"""The ``ragopt`` command's module stays light: spawned workers import it again as their ``__main__``."""

import subprocess
import sys


def test_importing_the_cli_loads_no_rag_library():
    code = "import sys, ragopt.cli; print(sorted(m for m in ('raganything', 'lightrag', 'pandas', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
