"""``rsna-lumbar recipes``: the packaged recipes of ``run``."""

from __future__ import annotations

import argparse

HELP = "list the packaged recipes of 'run', or show one with every setting"
DESCRIPTION = """\
'list': each packaged recipe with its one-line description. 'show NAME' (or a YAML path):
every setting, after KEY=VALUE overrides, validated; copy it to a file, edit, and pass the
path to 'rsna-lumbar run --recipe'.

examples:
  rsna-lumbar recipes list
  rsna-lumbar recipes show gpu > my-recipe.yaml
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "show"))
    parser.add_argument("name", nargs="?", help="recipe name or YAML path (show)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.recipes import describe, load_recipe, packaged

    if args.action == "list":
        for name, path in sorted(packaged().items()):
            print(f"{name:<8}{describe(path)}")
        return 0
    if not args.name:
        raise ValueError("recipes show NAME: name a recipe ('rsna-lumbar recipes list')")
    recipe = load_recipe(args.name, args.overrides)
    print(recipe.as_yaml(), end="")
    return 0
