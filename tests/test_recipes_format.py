"""The recipe-file format: an exact golden layout, parse(format(r)) == r, and clear parse errors."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from recipes_format import Recipe, format_recipe, format_recipes, parse_recipes

from seqtool.errors import InputError

GOLDEN = """\
                          Salted Yogurt Ayran
  Amount  Measure       Ingredient -- Preparation Method
--------  ------------  --------------------------------
       2  cups          plain whole-milk yogurt
   1 1/2  cups          cold water
       1                lemon -- juiced, strained
                        salt -- to taste

  Whisk the yogurt, cold water and salt together vigorously, or blend
  for 20 seconds, until frothy.

  Serve at once.

  Yield: 4 servings
"""

AYRAN = Recipe(
    title="Salted Yogurt Ayran",
    ingredients=[("2", "cups", "plain whole-milk yogurt", ""), ("1 1/2", "cups", "cold water", ""),
                 ("1", "", "lemon", "juiced, strained"), ("", "", "salt", "to taste")],
    directions=["Whisk the yogurt, cold water and salt together vigorously, or blend for 20 seconds, "
                "until frothy.", "Serve at once."],
    yield_="4 servings",
)


def test_golden_layout():
    assert format_recipe(AYRAN) == GOLDEN
    assert parse_recipes(GOLDEN) == [AYRAN]
    assert parse_recipes(GOLDEN.replace("\n", "\r\n")) == [AYRAN]


def test_several_recipes_and_optional_parts():
    bare = Recipe("Toast")
    no_yield = Recipe("Tea", [("1", "cup", "water", "boiling")], ["Pour.", "Wait."])
    only_directions = Recipe("Ice", directions=["Freeze water."], yield_="1 tray")
    recipes = [AYRAN, bare, no_yield, only_directions, AYRAN]
    text = format_recipes(recipes)
    assert "\n\n                                 Toast\n" in text  # one blank line between recipes
    assert parse_recipes(text) == recipes


def line(max_size: int, min_size: int = 0):
    chars = st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r")
    return st.text(chars, min_size=min_size, max_size=max_size).map(str.strip).filter(
        lambda s: len(s) >= min_size)


word = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=15).filter(
    lambda w: w.split() == [w])
paragraph = st.lists(word, min_size=1, max_size=40).map(" ".join)
ingredient = st.tuples(line(8), line(12), line(40, min_size=1).filter(
    lambda s: " -- " not in s and not s.endswith(" --")), line(40))
recipe = st.builds(Recipe, title=line(80, min_size=1), ingredients=st.lists(ingredient, max_size=5),
                   directions=st.lists(paragraph, max_size=4), yield_=st.none() | line(20, min_size=1))


@settings(max_examples=200, deadline=None)
@given(recipes=st.lists(recipe, min_size=1, max_size=3))
def test_parse_inverts_format(recipes):
    try:
        text = format_recipes(recipes)
    except ValueError:  # the rare recipe the layout cannot hold (e.g. a last paragraph "Yield: x")
        assume(False)
    assert parse_recipes(text) == recipes
    assert all(len(line) <= 72 or " " not in line.strip() for line in text.split("\n")
               if line.startswith("  ") and not line.startswith("   "))


@pytest.mark.parametrize("bad", [
    Recipe(" padded title"),
    Recipe("T", [("123456789", "cup", "flour", "")]),
    Recipe("T", [("1", "a very long measure", "flour", "")]),
    Recipe("T", [("1", "cup", "flour -- sifted", "")]),
    Recipe("T", [("1", "cup", "", "")]),
    Recipe("T", directions=["two  spaces"]),
    Recipe("T", directions=["Yield: 3 cups"]),
    Recipe("T", yield_=""),
])
def test_unrepresentable_recipes_are_refused(bad):
    with pytest.raises(ValueError):
        format_recipe(bad)


def test_malformed_files_name_the_line():
    with pytest.raises(InputError, match="line 1: text before the first recipe"):
        parse_recipes("stray text\n" + GOLDEN)
    with pytest.raises(InputError, match="line 3:.*dashed rule"):
        parse_recipes(GOLDEN.replace("--------  ------------", "-------- -------------"))
    with pytest.raises(InputError, match="line 4:.*fixed columns"):
        parse_recipes(GOLDEN.replace("       2  cups", "       2 cups"))
    with pytest.raises(InputError, match="indented two spaces"):
        parse_recipes(GOLDEN.replace("  Serve at once.", "Serve at once."))
    assert parse_recipes("") == [] and parse_recipes("\n\n") == []
