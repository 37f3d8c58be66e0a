"""The docs stand alone (issue 18, item 7): every repository path that README.md and docs/*.md name
exists, every relative link resolves, and no page points outside the repository."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: a path into the repository's top folders; <placeholders>, {a,b}, * and N are templates (globbed)
_PATH = re.compile(r"(?<![\w./$-])((?:emorl|configs|tools|tests|docs|zoo|\.github)/(?:<[^>\n]*>|[\w./{}*,-])*(?:[\w/}*]|<[^>\n]*>))")
#: a naming rule for folders that do not exist yet (docs/configs.md: where a paper row's LoRA variant goes)
RULES = {"configs/<family>/lora/"}
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
#: paths that leave the repository: a sibling folder, a home machine's files
_OUTSIDE = re.compile(r"(?<![\w.])(\.\./\.\.?/|\.\./shared|/work/|/home/\w+)")


def _glob(template: str) -> str:
    text = re.sub(r"<[^>]*>|\{[^}]*\}", "*", template)
    return re.sub(r"(?<=[_-])N(?=[._/]|$)", "*", text)


def _exists(path: str) -> bool:
    path = path.rstrip("/.")
    if any(ch in path for ch in "<{*") or re.search(r"[_-]N(?:[._/]|$)", path):
        return any(REPO.glob(_glob(path)))
    return (REPO / path).exists()


def test_the_checker_finds_a_missing_path_and_accepts_templates():
    assert _exists("configs/sft/sft_ir_<corpus>.yaml") and _exists("configs/demo/tiny_{sft_ir,ptr}.yaml")
    assert not _exists("configs/sft/nothing_<corpus>.yaml") and not _exists("tools/bench_grpo_7b.py")
    assert _PATH.findall("see `tools/bench_grpo_7b.py`.") == ["tools/bench_grpo_7b.py"]
    assert _OUTSIDE.search("(`../shared/papers/emo-rl.txt`)") and not _OUTSIDE.search("runs/x/../y")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_path_a_page_names_exists(page):
    text = page.read_text(encoding="utf-8")
    missing = sorted({m for m in _PATH.findall(text) if m not in RULES and not _exists(m)})
    links = sorted({link for link in _LINK.findall(text)
                    if not link.startswith(("http:", "https:", "mailto:")) and not (page.parent / link).exists()})
    outside = sorted({m.group(0) + text[m.end():m.end() + 30].split()[0] for m in _OUTSIDE.finditer(text)})
    assert (missing, links, outside) == ([], [], []), page.name
