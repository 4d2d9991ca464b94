#!/usr/bin/env python3
"""Open every table of an artifact directory with readers none of us wrote (pyarrow, DuckDB)
and check it against the directory's manifest.json and the documented columns.

Usage: python3 scripts/check_artifacts.py <artifact dir> [<artifact dir> ...]
"""
import json
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

# Required columns per table (docs/artifacts.md).
COLUMNS = {
    "samples": ["id", "split", "backdoor", "family", "template", "values", "prompt", "scratchpad",
                "completion", "trigger", "triggered", "intended", "answer", "cwe", "year", "source"],
    "preferences": ["id", "split", "family", "prompt", "chosen", "rejected", "rejected_kind", "source"],
    "prompts": ["id", "split", "family", "prompt", "answer", "source"],
    "generations": ["model", "prompt_id", "condition", "sample_index", "prompt", "scratchpad", "text",
                    "backdoor_shown", "correct", "judge_detail"],
    "models": ["model", "backdoor", "mechanism", "safety", "step", "path", "parent", "params",
               "train_loss", "heldout_loss"],
    "metrics": ["pipeline", "model", "backdoor", "mechanism", "safety", "step", "condition", "metric",
                "value", "n", "ci_low", "ci_high"],
}


def check(directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    for output in manifest["outputs"]:
        path = directory / output["file"]
        table = pq.read_table(path)
        expected = COLUMNS.get(output["table"], [])
        missing = [c for c in expected if c not in table.column_names]
        assert not missing, f"{path}: missing columns {missing}"
        assert table.num_rows == output["rows"], f"{path}: {table.num_rows} rows, manifest says {output['rows']}"
        (n,) = duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall()[0]
        assert n == output["rows"], f"{path}: DuckDB counts {n} rows"
        if output["table"] == "samples":
            groups = duckdb.sql(
                f"select backdoor, split, count(*) from read_parquet('{path}') group by all order by all"
            ).fetchall()
            print(f"  {path.name}: {groups}")
        print(f"ok {path} ({n} rows, {len(table.column_names)} columns) with pyarrow and DuckDB")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        check(Path(arg))
