"""The recipe-file format of recipes_data/recipes.txt: parse it into `Recipe`s and write it back.

No command reads this format (the models train on the plain text), so it lives beside its users:
test_recipes_format.py checks the parser, test_recipes_data.py checks the shipped corpus with it.

    <title centred in 72 columns>
      Amount  Measure       Ingredient -- Preparation Method
    --------  ------------  --------------------------------
           1  cup           flour -- sifted          (amount right-aligned in 8, measure in 12)
    <blank>
      Direction paragraphs, indented two spaces, wrapped at 72 columns,
      separated by blank lines.
    <blank>
      Yield: 6 servings
    <blank line before the next recipe>

Blank lines separate both recipes and paragraphs, so recipes are found by structure: a recipe
starts at the line before each header line. `parse_recipes(format_recipes(rs)) == rs`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from seqtool.errors import InputError

WIDTH = 72
HEADER = "  Amount  Measure       Ingredient -- Preparation Method"
RULE = "--------  ------------  --------------------------------"
YIELD = "  Yield: "
INDENT = "  "
AMOUNT, MEASURE = 8, 12  # column widths; two spaces separate the columns
PREP = " -- "

Ingredient = tuple[str, str, str, str]  # (amount, measure, ingredient, preparation); "" when absent


@dataclass
class Recipe:
    title: str
    ingredients: list[Ingredient] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)  # paragraphs, each on one line
    yield_: str | None = None  # "6 servings"


# parsing ------------------------------------------------------------------------------------
def parse_recipes(text: str) -> list[Recipe]:
    """Every recipe in `text` (LF or CRLF). Raises InputError naming the line of a malformed one."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    starts = [i - 1 for i, line in enumerate(lines) if line == HEADER and i > 0]
    if any(line.strip() for line in lines[: starts[0] if starts else len(lines)]):
        first = next(i for i, line in enumerate(lines) if line.strip())
        raise InputError(f"line {first + 1}: text before the first recipe",
                         hint=f"a recipe starts with a title line followed by {HEADER.strip()!r}")
    ends = [*starts[1:], len(lines)] if starts else []
    return [_parse_one(lines, start, end) for start, end in zip(starts, ends, strict=True)]


def _parse_one(lines: list[str], start: int, end: int) -> Recipe:
    title = lines[start].strip()
    if not title:
        raise _malformed(start, "the line before the header must be the recipe's title")
    if start + 2 >= end or lines[start + 2] != RULE:
        raise _malformed(start + 2, "the header must be followed by the dashed rule line")
    i = start + 3
    ingredients = []
    while i < end and lines[i].strip():
        ingredients.append(_parse_row(lines[i], i))
        i += 1
    blocks = _blocks(lines[i:end])
    yield_ = None
    if blocks and len(blocks[-1]) == 1 and blocks[-1][0].startswith(YIELD):
        yield_ = blocks.pop()[0][len(YIELD):]
    directions = []
    for block in blocks:
        if not all(line.startswith(INDENT) for line in block):
            raise _malformed(i, f"direction paragraphs are indented two spaces (recipe {title!r})")
        directions.append(" ".join(line[len(INDENT):] for line in block))
    return Recipe(title, ingredients, directions, yield_)


def _parse_row(line: str, i: int) -> Ingredient:
    sep1, sep2 = line[AMOUNT:AMOUNT + 2], line[AMOUNT + 2 + MEASURE:AMOUNT + 4 + MEASURE]
    if sep1 != "  " or sep2 != "  " or len(line) <= AMOUNT + 4 + MEASURE:
        raise _malformed(i, "ingredient rows have fixed columns: amount (8), measure (12), ingredient")
    rest = line[AMOUNT + 4 + MEASURE:]
    ingredient, _, preparation = rest.partition(PREP)
    return (line[:AMOUNT].strip(), line[AMOUNT + 2:AMOUNT + 2 + MEASURE].strip(), ingredient, preparation)


def _blocks(lines: list[str]) -> list[list[str]]:
    """Runs of non-blank lines."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def _malformed(i: int, what: str) -> InputError:
    return InputError(f"line {i + 1}: malformed recipe: {what}")


# formatting ---------------------------------------------------------------------------------
def format_recipe(recipe: Recipe) -> str:
    """One recipe in the file layout, ending with its Yield line (or last line) and a newline.

    Raises ValueError for a recipe the layout cannot hold exactly (a field with surrounding or
    repeated whitespace, an amount over 8 or a measure over 12 characters, ...).
    """
    _check(recipe)
    lines = [" " * max(0, (WIDTH - len(recipe.title)) // 2) + recipe.title, HEADER, RULE]
    lines += [_format_row(row) for row in recipe.ingredients]
    paragraphs = [textwrap.wrap(p, WIDTH, initial_indent=INDENT, subsequent_indent=INDENT,
                                break_long_words=False, break_on_hyphens=False)
                  for p in recipe.directions]
    if recipe.yield_ is not None:
        paragraphs.append([YIELD + recipe.yield_])
    elif paragraphs and len(paragraphs[-1]) == 1 and paragraphs[-1][0].startswith(YIELD):
        raise ValueError("without a yield, the last paragraph may not read like a Yield line")
    for paragraph in paragraphs:
        lines += ["", *paragraph]
    return "\n".join(lines) + "\n"


def format_recipes(recipes: list[Recipe]) -> str:
    """Recipes separated by one blank line, as in the data set."""
    return "\n".join(format_recipe(r) for r in recipes)


def _format_row(row: Ingredient) -> str:
    amount, measure, ingredient, preparation = row
    row_text = f"{amount:>{AMOUNT}}  {measure:<{MEASURE}}  {ingredient}"
    return row_text + PREP + preparation if preparation else row_text


def _check(recipe: Recipe) -> None:
    def clean(value: str, what: str, single_spaced: bool = False) -> None:
        if not isinstance(value, str) or "\n" in value or "\r" in value or value != value.strip():
            raise ValueError(f"{what} {value!r} must be one line without surrounding whitespace")
        if single_spaced and value != " ".join(value.split()):
            raise ValueError(f"{what} {value!r} must separate words by single spaces")

    clean(recipe.title, "title")
    if not recipe.title:
        raise ValueError("a recipe needs a title")
    for row in recipe.ingredients:
        amount, measure, ingredient, preparation = row
        for value, what in zip(row, ("amount", "measure", "ingredient", "preparation"), strict=True):
            clean(value, what)
        if len(amount) > AMOUNT or len(measure) > MEASURE:
            raise ValueError(f"amount {amount!r} or measure {measure!r} is wider than its column")
        if not ingredient or PREP in ingredient or ingredient.endswith(PREP.rstrip()):
            raise ValueError(f"ingredient {ingredient!r} must be non-empty and free of ' -- '")
        if _format_row(row) == HEADER:
            raise ValueError("an ingredient row may not read like the header line")
    for paragraph in recipe.directions:
        clean(paragraph, "direction paragraph", single_spaced=True)
        if not paragraph:
            raise ValueError("direction paragraphs must not be empty")
    if recipe.yield_ is not None:
        clean(recipe.yield_, "yield")
        if not recipe.yield_:
            raise ValueError("yield must not be empty (use None for no Yield line)")
