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


def test_every_command_takes_verbose_and_log_level(capsys, monkeypatch):
    import logging

    import lightning  # noqa: F401 - Lightning sets up its own loggers; emorl's INFO lines must still show
    from emorl.cli import main, overview, take_global_options

    assert take_global_options(["test", "--verbose", "--log-level", "debug", "--config", "x"]) == (
        ["test", "--config", "x"], True, "debug")
    assert take_global_options(["--log-level=ERROR", "zoo", "list"]) == (["zoo", "list"], False, "ERROR")
    assert "--verbose" in overview() and "--log-level LEVEL" in overview()
    monkeypatch.setattr(logging.getLogger("emorl"), "level", logging.NOTSET)
    with pytest.raises(SystemExit):
        main(["--log-level", "WARNING", "zoo", "list"])
    logging.getLogger("emorl.upstreams.cache").info("extracting 3 clips")
    assert "extracting" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["zoo", "list"])  # INFO by default
    logging.getLogger("emorl.upstreams.cache").info("extracting 3 clips")
    logging.getLogger("another_library").info("not emorl's")
    err = capsys.readouterr().err
    assert err.count("INFO emorl.upstreams.cache: extracting 3 clips") == 1 and "not emorl's" not in err
    with pytest.raises(SystemExit) as done:
        main(["--log-level", "LOUD", "zoo", "list"])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == "emorl: error: --log-level 'LOUD': choose DEBUG, INFO, WARNING or ERROR"
