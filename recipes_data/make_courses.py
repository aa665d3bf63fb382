#!/usr/bin/env python3
"""Label every recipe of recipes_data/recipes.txt with its course, for text classification.

Usage: python recipes_data/make_courses.py   (rewrites courses/{train,valid,test}.tsv)

Each row is `TITLE | INGREDIENT, INGREDIENT, ...<TAB>COURSE`: the title and the ingredient names (no
amounts, measures or directions). The course comes from a deterministic rule on the title, checked by
hand (see OVERRIDES for the few titles where the rule and a reader disagreed):

  1. OVERRIDES, when the title is listed there;
  2. the title's head, the words before " with ", " in ", " over ", " for " or " from " (so that "Beef and
     Broccoli in Oyster Sauce" is a main, not a sauce), is matched against the keyword lists of RULES in
     order: drink, soup, breakfast, condiment, dessert, baking, side; the first list with a keyword wins;
  3. anything else is a main.

Keywords match whole words (lower-cased; a keyword of several words matches as a phrase). Because the rule
reads titles, a model that sees the title can often spot the keyword; the ingredients carry the rest.

Each recipe goes to a split by the SHA-256 of its lower-cased title: the first 15% in hash order to test,
the next 15% to valid, the rest to train, so the assignment does not depend on the order of the corpus.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = "  Amount  Measure       Ingredient -- Preparation Method"
RULE = "--------  ------------  --------------------------------"
TEST_SHARE = VALID_SHARE = 0.15

RULES = {
    "drink": "tea coffee smoothie lassi lemonade punch cooler cider toddy mojito daiquiri spritzer fizz "
             "agua fresca horchata ayran chai milk tonic hot chocolate shake whiskey sour shrub",
    "soup": "soup chowder gazpacho vichyssoise pho ramen borscht bouillabaisse harira caldo verde ribollita "
            "mulligatawny sopa tom yum jjigae tonjiru congee pozole gumbo ajiaco fagioli",
    "breakfast": "oats granola pancake pancakes pannkakor french toast dutch baby waffles shakshuka poha "
                 "tamagoyaki eggs smoothie bowl",
    "condiment": "sauce dressing vinaigrette dip salsa chutney pesto relish jam jelly marmalade preserves "
                 "pickles pickle pickled kimchi sauerkraut giardiniera tsukemono chimichurri harissa paste "
                 "hummus guacamole tzatziki raita muhammara romesco ganoush glaze hollandaise béchamel "
                 "beurre blanc marinara mustard oil seasoning blend togarashi spread labneh chermoula ají "
                 "shito ezme ssamjang mix lemons",
    "dessert": "cake pie tart tarte torte pudding mousse cream sorbet granita cheesecake brûlée flan custard "
               "toffee fudge caramels brittle truffles brownies baklava tiramisu cotta kheer ladoo barfi "
               "kulfi paletas semifreddo cookies shortbread biscotti macarons madeleines snickerdoodles "
               "florentines amaretti alfajores polvorones crescents rings thins nankhatai ma'amoul linzer "
               "brigadeiros cocadas katli lokum daifuku dango dorayaki jamun kunafa basbousa karydopita "
               "churros profiteroles apfelstrudel galette crostata pastiera kladdkaka castella bars "
               "squares malabi leche risalamande sticky rice crème swiss roll christstollen gingerbread "
               "kaka pecans",
    "baking": "bread loaf rolls naan pita pitas focaccia challah sourdough boule pretzels biscuits muffins "
              "cornbread croissants kouign-amann simit queijo paratha tortillas flatbreads manakish conchas "
              "knots crust gougères",
    "side": "salad slaw tabbouleh fattoush panzanella caprese beans greens carrots sprouts potatoes okra "
            "corn broccolini choy namul edamame polenta pilaf olives popcorn chips chickpeas rémoulade "
            "almondine cauliflower solterito crostini bites mushrooms pakoras spanakopita triangles rice "
            "zaalouk",
}

# Titles where the rule above and a reader disagree, with the course a reader gives them.
OVERRIDES = {
    "Apple Pie Steel-Cut Oats": "breakfast",  # "pie" is a flavour here
    "Blood Orange Olive Oil Loaf": "dessert",  # a loaf cake, not a bread
    "Chicken Pot Pie with Flaky Crust": "main",
    "Shepherd's Pie with Cheddar Mash": "main",
    "Spanakopita Family Pie": "main",
    "Mushroom and Walnut Lentil Loaf": "main",
    "Pesto Genovese with Potatoes and Beans": "main",  # a pasta dish named after its sauce
    "Peach Bourbon Butter": "condiment",
    "Vietnamese Fresh Spring Rolls With Peanut Sauce": "side",
    "Tropical Sunrise Smoothie Bowl": "breakfast",
    "Golden Turmeric Milk": "drink",
    "Rose Water Malabi Milk Pudding": "dessert",
    "Toasted Black Sesame Ice Cream": "dessert",
    "Rich Vanilla Custard Ice Cream": "dessert",
    "Cinnamon Arroz con Leche": "dessert",
    "Lime Pickle With Mustard Oil": "condiment",
    "Sichuan Chili Crisp Oil": "condiment",
    "Ratatouille Baked in Layers": "side",
    "Slow-Baked Provençal Ratatouille": "side",
    "Saffron Pistachio Rice Kheer": "dessert",
    "Thai Coconut Mango Sticky Rice": "dessert",
    "Persian Jeweled Rice": "side",
    "Coconut Rice With Lemongrass": "side",
    "Mujadara Lentils and Rice With Crispy Onions": "main",
    "Shrimp Fried Rice with Lap Cheong": "main",
    "Chicken and Chorizo Rice Skillet": "main",
    "Jollof Rice with Smoky Tomato Base": "main",
    "Japanese Curry Rice from Scratch": "main",
    "Baked Brie With Honey and Thyme": "side",
    "Homemade Tortilla Chips With Lime Salt": "side",
    "Sweet Corn and Poblano Chowder": "soup",
    "Moroccan Fresh Mint Tea": "drink",
    "Spiced Candied Pecans": "side",  # a snack
    "Blackberry Sage Shrub Syrup": "drink",
    "Buttermilk Panna Cotta with Balsamic Strawberries": "dessert",
    "Cinnamon Swirl Sour Cream Coffee Cake": "dessert",  # "coffee" would make it a drink
    "Sicilian Coffee Granita with Cream": "dessert",
    "Hokkaido Milk Bread Pullman": "baking",  # "milk" would make it a drink
    "Classic Deviled Eggs With Paprika": "side",  # eggs, but a starter, not breakfast
    "Korean Scallion Pancakes Pajeon": "side",  # a savoury pancake served as a starter
    "Hazelnut Linzer Jam Cookies": "dessert",  # "jam" would make it a condiment
    "Marmalade Bread and Butter Pudding": "dessert",
    "Sheet Pan Harissa Chicken and Chickpeas": "main",
    "Tex-Mex Chile con Queso": "condiment",  # a dip
    "All-Butter Flaky Double Pie Crust": "baking",  # a pastry, not a pie
    "Istanbul Sesame Simit Rings": "baking",  # a bread ring
    "Crisp Pita Fattoush with Sumac": "side",  # a salad with pita
    "Singapore Curry Rice Noodles": "main",
    "Bangkok Green Papaya Som Tam": "side",  # a salad
    "Anchovy Caesar with Garlic Croutons": "side",  # a salad
    "Victoria Sponge with Raspberry Jam": "dessert",
}
SPLITTERS = re.compile(r" (?:with|in|over|for|from) ", re.IGNORECASE)


def read_recipes(path: Path) -> list[tuple[str, list[str]]]:
    """(title, ingredient names) of every recipe: a title line, the header, the rule, ingredient rows."""
    lines = path.read_text(encoding="utf-8").split("\n")
    recipes = []
    for i, line in enumerate(lines):
        if line != HEADER:
            continue
        if i < 1 or lines[i + 1] != RULE:
            raise SystemExit(f"{path}:{i + 1}: a header without a title line before it or a rule after it")
        names = []
        for row in lines[i + 2:]:
            if not row.strip():
                break
            names.append(row[24:].split(" -- ")[0].strip())  # past the amount (8) and measure (12) columns
        recipes.append((lines[i - 1].strip(), names))
    return recipes


def course(title: str) -> str:
    if title in OVERRIDES:
        return OVERRIDES[title]
    head = SPLITTERS.split(title)[0].lower()
    words = " " + " ".join(re.findall(r"[\w'’-]+", head)) + " "
    for label, keywords in RULES.items():
        for keyword in _phrases(keywords):
            if f" {keyword} " in words:
                return label
    return "main"


def _phrases(keywords: str) -> list[str]:
    """The keyword list, with the few two-word phrases kept together."""
    pairs = ("agua fresca", "hot chocolate", "whiskey sour", "caldo verde", "tom yum", "french toast",
             "dutch baby", "smoothie bowl", "beurre blanc", "sticky rice", "swiss roll")
    text, out = keywords, []
    for pair in pairs:
        if pair in text:
            out.append(pair)
            text = text.replace(pair, " ")
    return out + text.split()


def main() -> None:
    rows = []
    for title, names in read_recipes(HERE / "recipes.txt"):
        if "\t" in title or any("\t" in n for n in names):
            raise SystemExit(f"a tab in recipe {title!r}")
        rows.append((title, f"{title} | {', '.join(names)}\t{course(title)}"))
    ordered = sorted(rows, key=lambda r: hashlib.sha256(r[0].lower().encode("utf-8")).hexdigest())
    n_test, n_valid = round(len(rows) * TEST_SHARE), round(len(rows) * VALID_SHARE)
    splits = {"test": ordered[:n_test], "valid": ordered[n_test:n_test + n_valid],
              "train": ordered[n_test + n_valid:]}
    out = HERE / "courses"
    out.mkdir(exist_ok=True)
    for name, part in splits.items():
        (out / f"{name}.tsv").write_text("".join(row + "\n" for _, row in part), encoding="utf-8")
        counts = Counter(row.rsplit("\t", 1)[1] for _, row in part)
        print(f"{name}: {len(part)} recipes; " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))


if __name__ == "__main__":
    main()
