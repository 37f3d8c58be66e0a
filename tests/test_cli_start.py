"""``emorl --help``, ``emorl data --help``, ``emorl zoo list`` (and the other argparse commands' help) start
without importing torch, Lightning or transformers: the dispatcher and the parsers import nothing heavy."""

import subprocess
import sys

import pytest

from tests.lalm_fixtures import REPO

HEAVY = ("torch", "lightning", "transformers", "datasets")
PROBE = """
import sys
from emorl.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("HEAVY", sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["zoo", "list"], ["export", "--help"],
                                  ["report", "--help"], ["demo", "--help"]])
def test_help_and_listing_import_nothing_heavy(argv):
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert len(done.stdout) > 200  # it printed the help / the listing


def test_the_overview_lists_every_command_once():
    from emorl.cli import LIGHTNING_SUBCOMMANDS, overview
    from emorl.commands import COMMANDS

    text = overview()
    assert text.startswith("usage: emorl {" + ",".join([*LIGHTNING_SUBCOMMANDS, *COMMANDS]) + "}")
    for child in ("data prepare", "data import-hf", "data export-hf", "zoo tiny"):
        assert sum(line.lstrip().startswith(child + " ") for line in text.splitlines()) == 1, child
