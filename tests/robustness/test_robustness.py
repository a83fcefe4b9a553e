"""Issue 15's robustness suite: each case of ``corpus.CASES`` (bad and tricky inputs of every reader and command)
must end as it declares: an error naming the input, a skip or a recovery that says so, or a correct read."""

import collections
import re
import warnings

import pytest

from keras_insightface.data.decode import MAX_PIXELS_VARIABLE
from keras_insightface.errors import DataError
from tests.robustness.corpus import CASES, OUTCOMES, READERS, CliExit, Context, counts, summary_table


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A folder shared by the cases of this module (the tiny model file)."""
    return tmp_path_factory.mktemp("shared")


def _error_message(case, error, result):
    """The message of the error ``case`` expects; anything else than a clean error fails with its traceback."""
    if error is None:
        pytest.fail(f"expected an error matching {case.check!r}, the call returned {result!r}")
    if isinstance(error, CliExit):
        printed = error.out + error.err
        assert "Traceback" not in printed, printed
        assert error.code == 2, f"exit code {error.code}: {printed}"
        errors = [line for line in error.err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and errors[0] == str(error), f"not one error line at the end: {error.err!r}"
    elif not isinstance(error, DataError) and type(error) is not ValueError:
        raise AssertionError(f"{type(error).__name__} from inside instead of a DataError: {error}") from error
    if case.raises is not None and not isinstance(error, case.raises):
        raise AssertionError(f"{type(error).__name__} instead of {case.raises.__name__}: {error}") from error
    return str(error)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case, tmp_path, monkeypatch, capsys, shared):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the signing key and rebuilt indexes go there
    monkeypatch.delenv(MAX_PIXELS_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    probe = case.build(Context(tmp_path / "case", monkeypatch, capsys, shared))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            error = result = None
            try:
                result = probe.run()
            except Exception as raised:  # judged below: the outcome decides which exceptions are right
                error = raised
        reports = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if case.outcome == "error":
            message = _error_message(case, error, result)
        elif error is not None:
            raise AssertionError(f"expected {case.outcome}, got {type(error).__name__}: {error}") from error
        else:
            assert case.outcome != "ok" or not reports, f"a valid input was warned about: {reports}"
            message = "\n".join([*reports, str(result)])
        assert re.search(case.check, message, re.S), f"{message!r} does not match {case.check!r}"
        if probe.after is not None:
            probe.after()
    finally:
        if probe.cleanup is not None:
            probe.cleanup()


def test_corpus_table():
    """Enough cases, every reader covered, names unique, outcomes known; the table adds up. Writes nothing."""
    names = collections.Counter(case.name for case in CASES)
    assert not [name for name, count in names.items() if count > 1]
    assert {case.outcome for case in CASES} <= set(OUTCOMES) and {case.reader for case in CASES} == set(READERS)
    table = counts()
    assert sum(sum(found.values()) for found in table.values()) == len(CASES) >= 160
    assert all(sum(found.values()) >= 5 for found in table.values()), table
    lines = summary_table().splitlines()
    assert lines[0] == "| reader | cases | error | skip | recovered | ok |" and len(lines) == len(READERS) + 3
    for reader, line in zip(READERS, lines[2:]):
        name, total, *by_outcome = [cell.strip() for cell in line.strip("|").split("|")]
        assert name == reader and int(total) == sum(map(int, by_outcome)) == sum(table[reader].values())
    assert f"**{len(CASES)}**" in lines[-1]
