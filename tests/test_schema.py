"""The results schema: explicit Arrow types (no `null` columns), the same `algorithm` dictionary in
every file, schema and phasescan versions in the Parquet metadata and the manifest, old folders
still loading, and docs/columns.md listing exactly the columns a sweep writes."""
import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, TINY, compose

import phasescan
from phasescan.runner.sweep import run_sweep
from phasescan.core.classify import ALGORITHMS
from phasescan.store import history, results

SMALL = [*TINY, "train.steps=40", "sweep.seeds=1"]  # 2 models per sweep
NULLABLE = ["split_seed", "batch_size", "log_every"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Two sweeps whose nullable fields differ: `a` leaves split_seed and batch_size unset and logs
    a history; `b` sets them and leaves log_every unset."""
    root = tmp_path_factory.mktemp("schema")
    run_sweep(compose(*SMALL, "train.log_every=20"), root / "a")
    run_sweep(compose(*SMALL, "task.split_seed=3", "train.batch_size=40"), root / "b")
    return root / "a", root / "b"


def test_two_sweeps_combine_with_pyarrow_dataset(sweeps):
    a, b = sweeps
    for files in ([a / results.RUNS, b / results.RUNS], [b / results.RUNS, a / results.RUNS],
                  sorted(a.glob("chunks/chunk-*")) + sorted(b.glob("chunks/chunk-*"))):
        table = ds.dataset([str(f) for f in files]).to_table()  # raised "cast from int64 to null"
        assert table.num_rows == 4
        for name in NULLABLE:
            assert table.schema.field(name).type == pa.int64()
        assert table.schema.field("algorithm").type == pa.dictionary(pa.int32(), pa.string())
        assert table.column("split_seed").null_count == 2 and table.column("log_every").null_count == 2
    combined = ds.dataset([str(a / results.RUNS), str(b / results.RUNS)]).to_table().to_pandas()
    assert list(combined["algorithm"].cat.categories) == list(ALGORITHMS)


def test_two_sweeps_concat_with_pandas(sweeps):
    a, b = sweeps
    runs_a, runs_b = phasescan.load(a), phasescan.load(b)
    for name in NULLABLE:
        assert runs_a[name].dtype == "Int64" and runs_b[name].dtype == "Int64"
    for frame in (runs_a, runs_b):
        assert isinstance(frame["algorithm"].dtype, pd.CategoricalDtype)
        assert list(frame["algorithm"].cat.categories) == list(ALGORITHMS)
    both = pd.concat([runs_a, runs_b], ignore_index=True)
    assert both["split_seed"].dtype == "Int64" and both["split_seed"].isna().sum() == 2
    assert set(both["split_seed"].dropna()) == {3} and set(both["batch_size"].dropna()) == {40}
    assert set(both["log_every"].dropna()) == {20}
    assert isinstance(both["algorithm"].dtype, pd.CategoricalDtype)  # same categories: stays one
    assert list(both["algorithm"].cat.categories) == list(ALGORITHMS)


def test_files_have_the_registered_schema_and_load_returns_it(sweeps):
    a, b = sweeps
    for path, columns in [(a / results.RUNS, results.RUN_COLUMNS), (b / results.RUNS, results.RUN_COLUMNS),
                          (a / history.HISTORY, history.COLUMNS)]:
        schema = pq.read_schema(path)
        assert schema.equals(results.arrow_schema(columns), check_metadata=False), path
        frame = results.read_table(path)
        assert (frame.dtypes == pd.read_parquet(path).dtypes).all()  # pandas' metadata agrees
        for name in columns:
            dtype = results.TYPES[results.COLUMN_TYPES[name]][1]
            if dtype is not None:
                assert frame[name].dtype == dtype, name
    loaded = phasescan.load(a)
    assert (loaded.dtypes == results.read_table(a / results.RUNS).dtypes).all()
    assert list(loaded.columns) == results.RUN_COLUMNS
    joined = history.load(a)
    assert joined["algorithm"].dtype == loaded["algorithm"].dtype and joined["split_seed"].dtype == "Int64"


def test_metadata_and_manifest_hold_the_versions(sweeps):
    for folder in sweeps:
        files = [folder / results.RUNS, *folder.glob("chunks/*.parquet")]
        files += [folder / history.HISTORY] if (folder / history.HISTORY).is_file() else []
        for path in files:
            meta = pq.read_schema(path).metadata
            assert meta[b"phasescan.schema_version"] == str(results.SCHEMA_VERSION).encode()
            assert meta[b"phasescan.version"] == phasescan.__version__.encode()
            assert meta[b"phasescan.table"] == (b"history" if "history" in path.name else b"runs")
        manifest = json.loads((folder / results.MANIFEST).read_text())
        assert manifest["schema_version"] == results.SCHEMA_VERSION
        assert isinstance(manifest["schema_version"], int)
        assert manifest["phasescan_version"] == phasescan.__version__


def old_style(frame: pd.DataFrame) -> pd.DataFrame:
    """A table as phasescan wrote it before the schema: None in object columns, plain strings."""
    return frame.assign(**{name: [None if pd.isna(v) else int(v) for v in frame[name]]
                           for name in NULLABLE if name in frame},
                        algorithm=frame["algorithm"].astype(str).astype(object))


def test_folders_written_before_the_schema_still_load(sweeps, tmp_path):
    a, b = sweeps
    old = tmp_path / "old"
    (old / results.CHUNKS).mkdir(parents=True)
    runs = old_style(phasescan.load(a))
    runs.to_parquet(old / results.RUNS, index=False)  # as results.assemble wrote it
    old_style(results.read_table(a / history.HISTORY)).to_parquet(old / history.HISTORY, index=False)
    assert pq.read_schema(old / results.RUNS).field("split_seed").type == pa.null()  # the old bug
    loaded = phasescan.load(old)
    pd.testing.assert_frame_equal(loaded, phasescan.load(a))
    both = pd.concat([loaded, phasescan.load(b)], ignore_index=True)
    assert both["split_seed"].dtype == "Int64" and isinstance(both["algorithm"].dtype, pd.CategoricalDtype)
    hist = history.load(old)
    assert isinstance(hist["algorithm"].dtype, pd.CategoricalDtype) and hist["split_seed"].dtype == "Int64"
    # from its chunks, as an unfinished folder is read; and rewritten by assemble, typed
    (old / results.RUNS).rename(old / results.CHUNKS / f"chunk-{results.chunk_name(runs['run_id'])}.parquet")
    pd.testing.assert_frame_equal(phasescan.load(old), phasescan.load(a))
    results.assemble(old)
    assert pq.read_schema(old / results.RUNS).equals(results.arrow_schema(results.RUN_COLUMNS),
                                                     check_metadata=False)


def test_an_unknown_label_is_kept_not_turned_into_nan():
    frame = results.conform(pd.DataFrame({"algorithm": ["clock", "spiral"]}))
    assert list(frame["algorithm"]) == ["clock", "spiral"]
    assert list(frame["algorithm"].cat.categories) == [*ALGORITHMS, "spiral"]


# docs/columns.md


def doc_tables() -> dict[str, list[list[str]]]:
    """Each `## ` section of docs/columns.md -> the cells of its table rows (header excluded)."""
    sections, current = {}, None
    for line in (ROOT / "docs" / "columns.md").read_text().splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is not None and line.startswith("| `"):
            current.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return sections


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_columns_doc_lists_exactly_the_columns_written(sweeps):
    a, b = sweeps
    tables = doc_tables()
    runs_rows = tables["`runs.parquet`: one row per model"]
    history_rows = tables["`history.parquet`: one row per (run, logged step)"]
    documented = [names(row[0])[0] for row in runs_rows]
    for folder in sweeps:
        assert documented == pq.read_schema(folder / results.RUNS).names
    assert documented == results.RUN_COLUMNS
    metrics = [names(row[0])[0] for row in runs_rows if row[1] == "metric"]
    assert [names(row[0])[0] for row in history_rows] + metrics == pq.read_schema(a / history.HISTORY).names
    for row in runs_rows + history_rows:
        name, arrow, pandas = names(row[0])[0], names(row[2])[0], names(row[3])[0]
        assert arrow == str(results.arrow_schema([name]).field(0).type), name
        dtype = results.TYPES[results.COLUMN_TYPES[name]][1]
        if dtype is not None:  # (None: pandas' own string dtype, or object for lists)
            assert pandas == ("category" if isinstance(dtype, pd.CategoricalDtype) else str(dtype)), name
        assert row[4] and row[5], f"{name}: unit and definition"


def test_columns_doc_lists_the_metadata_and_manifest_keys(sweeps):
    tables = doc_tables()
    meta = {n for row in tables["Parquet key-value metadata"] for n in names(row[0])}
    assert {k.decode() for k in results.parquet_metadata("runs")} <= meta
    documented = {n for row in tables["`manifest.json`"] for n in names(row[0])}
    for folder in sweeps:
        written = set(json.loads((folder / results.MANIFEST).read_text()))
        assert written <= documented, f"document these manifest keys in docs/columns.md: {written - documented}"
