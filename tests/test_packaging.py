"""A non-editable install (a wheel) ships the zoo cards and the configs, and emorl.zoo finds the cards."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (the working tree itself is never written)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("emorl", "zoo", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True, cwd=src,
    )
    (path,) = out.glob("emorl-*.whl")
    return path


def test_the_wheel_holds_every_zoo_card_and_config(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    cards = sorted(p.name for p in (ROOT / "zoo").glob("*.yaml"))
    assert cards and sorted(Path(n).name for n in data if n.startswith("share/emorl/zoo/")) == cards
    configs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml"))
    assert sorted(n.removeprefix("share/emorl/") for n in data if n.startswith("share/emorl/configs/")) == configs
    assert "emorl/report/published.yaml" in names  # EMO-RL's published numbers, read by `emorl report`
    assert "emorl/zoo.py" in names


def _install(wheel: Path, prefix: Path) -> Path:
    """Install a pure wheel as an installer does (package -> site-packages, ``*.data/data`` -> prefix).

    Not ``pip install --prefix``: pip would uninstall the environment's own (editable) emorl first.
    """
    site = prefix / "lib" / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith("/"):
                continue
            head, _, rest = name.partition(".data/data/")
            target = prefix / rest if rest else site / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    return site


def test_an_installed_wheel_finds_its_cards(wheel, tmp_path):
    prefix = tmp_path / "prefix"
    site = _install(wheel, prefix)
    assert (prefix / "share" / "emorl" / "zoo" / "wavlm-large.yaml").is_file()
    env = {k: v for k, v in os.environ.items() if k != "EMORL_ZOO_DIR"}
    # the prefix is where `pip install --user` puts data files with this user base
    env.update(PYTHONPATH=str(site), PYTHONUSERBASE=str(prefix))
    code = ("import emorl.zoo as z; print(z.__file__); print(z.ZOO_DIR); "
            "print(','.join(c.name for c in z.list_cards()))")
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    module, zoo_dir, names = result.stdout.strip().splitlines()
    assert Path(module).is_relative_to(site), "the installed copy is imported, not the source tree"
    assert Path(zoo_dir) == prefix / "share" / "emorl" / "zoo"
    assert "wavlm-large" in names.split(",")
    assert len(names.split(",")) == len(list((ROOT / "zoo").glob("*.yaml")))
