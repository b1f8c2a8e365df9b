"""Dataset and model card templates (Markdown with YAML front matter the Hub understands)."""

from pathlib import Path

CARDS_DIR = Path(__file__).parent


def template(name: str) -> str:
    """The text of a card template shipped with the package, e.g. ``template("dataset_card.md")``."""
    return (CARDS_DIR / name).read_text(encoding="utf-8")
