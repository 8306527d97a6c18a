"""`%%remote key=value` options: `hetflow.options` and the typed option table of `hetflow_server.models`."""

import pytest

from hetflow.options import help_text, parse_line
from hetflow_server.models import COMMON_OPTIONS, Option, parse_seconds, read_executor_options
from hetflow_server.protocol import SpecError

FULL = "executor=local retries=2 timeout=00:01:30 cache=false inputs=a,b outputs=c name=fit partition=debug"


def test_every_option_is_read_into_its_type():
    options = parse_line(FULL)
    assert options.executor == "local"
    assert options.name == "fit"
    assert options.retries == 2
    assert options.timeout == 90.0
    assert options.cache is False
    assert options.inputs == ["a", "b"]
    assert options.outputs == ["c"]
    assert options.executor_options == {"partition": "debug"}


def test_empty_line_gives_the_defaults():
    options = parse_line("")
    assert (options.executor, options.name, options.retries, options.timeout) == (None, None, 0, None)
    assert options.cache is True
    assert options.inputs is None and options.outputs is None
    assert options.executor_options == {}


def test_quoted_value_keeps_its_spaces_and_equals_signs():
    assert parse_line('env="A=1 B=2"').executor_options == {"env": "A=1 B=2"}
    assert parse_line("env='A=1 B=2' partition=x").executor_options == {"env": "A=1 B=2", "partition": "x"}


def test_unknown_keys_are_left_as_raw_strings_for_the_executor():
    assert parse_line("nodes=4 mem=8G").executor_options == {"nodes": "4", "mem": "8G"}


@pytest.mark.parametrize(
    ("text", "cache"),
    [("true", True), ("yes", True), ("1", True), ("On", True), ("false", False), ("no", False), ("0", False)],
)
def test_cache_reads_the_usual_boolean_words(text, cache):
    assert parse_line(f"cache={text}").cache is cache


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("oops", r"'oops' is not a key=value option"),
        ("=3", r"'=3' is not a key=value option"),
        ("retries=1 retries=2", r"option 'retries' is given twice"),
        ("partition=a partition=b", r"option 'partition' is given twice"),
        ("retries=abc", r"retries=abc: expected a whole number"),
        ("retries=-1", r"retries=-1: must be 0 or more"),
        ("timeout=-1", r"timeout=-1: must be a positive number of seconds"),
        ("timeout=0", r"timeout=0: must be a positive number of seconds"),
        ("timeout=abc", r"timeout=abc: expected seconds"),
        ("retries=9223372036854775808", r"retries=9223372036854775808: must be at most 1,000,000"),
        ("retries=99999999999999999999999", r"must be at most 1,000,000"),
        ("timeout=1e-9", r"timeout=1e-9: must be between 0.01 s and 366 days"),
        ("timeout=1e12", r"timeout=1e12: must be between"),
        ("cache=maybe", r"cache=maybe: expected true or false"),
        ("inputs=1x", r"inputs=1x: '1x' is not a Python name"),
        ("outputs=a,b-c", r"outputs=a,b-c: 'b-c' is not a Python name"),
        ("executor=a/b", r"executor=a/b: use letters, digits"),
        ('env="A=1', r"cannot read the options \(No closing quotation\)"),
    ],
)
def test_bad_option_is_a_spec_error_that_names_the_problem(line, message):
    with pytest.raises(SpecError, match=message):
        parse_line(line)


def test_bad_value_error_shows_an_example():
    with pytest.raises(SpecError, match=r"\(e\.g\. retries=2\)"):
        parse_line("retries=abc")


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


# ---------------------------------------------------------------------------------------------- seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        (" 5 ", 5.0),
        ("01:30", 90.0),
        ("00:01:30", 90.0),
        ("1:00:00", 3600.0),
        ("2-00:00:00", 172800.0),
        ("1-01:01:01", 90061.0),
    ],
)
def test_seconds_are_read_as_numbers_or_clock_times(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "abc", "nan", "inf", "", "00:00:00"])
def test_seconds_reject_anything_not_positive_and_finite(text):
    with pytest.raises(ValueError):
        parse_seconds(text)


# ------------------------------------------------------------------------------------------- executor options

TABLE = {
    "partition": Option("partition", str, "Slurm partition", "debug"),
    "nodes": Option("nodes", int, "node count", "1"),
}


def test_executor_options_are_read_by_their_own_table():
    assert read_executor_options("slurm", TABLE, {"partition": "gpu", "nodes": "3"}) == {
        "partition": "gpu",
        "nodes": 3,
    }


def test_unknown_executor_option_lists_the_known_keys():
    with pytest.raises(SpecError) as info:
        read_executor_options("slurm", TABLE, {"qos": "high"})
    message = str(info.value)
    assert "unknown option 'qos' for a slurm executor" in message
    for key in [*COMMON_OPTIONS, *TABLE]:
        assert key in message


def test_bad_executor_option_value_is_a_spec_error_with_an_example():
    with pytest.raises(SpecError, match=r"nodes=many: .*\(e\.g\. nodes=1\)"):
        read_executor_options("slurm", TABLE, {"nodes": "many"})


# ---------------------------------------------------------------------------------------------- help


def test_help_text_mentions_every_common_option():
    text = help_text()
    for name, option in COMMON_OPTIONS.items():
        assert f"{name}={option.example}" in text
        assert option.help in text
