"""Configuration: the example file is valid; every bad value is named before connecting."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestor.cli.main import main
from ingestor.config import ConfigError, load_settings
from ingestor.domain.groups import make_groups

EXAMPLE = Path(__file__).parents[2] / "config" / "ingestor.toml"


STREAM = '[[streams]]\nkind = "copilot"\nsport = "basketball"\nleagues = ["NBA"]\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INGESTOR_METRICS_PORT", raising=False)
    settings = load_settings(EXAMPLE)
    assert settings.streams[0].leagues == ["NBA", "NCAAB"]
    assert settings.leagues_per_connection == 10


def test_example_config_asks_only_for_what_the_demo_simulator_serves() -> None:
    """The demo (compose, or the README's no-Docker lines) runs the example against
    `ingestor simulate` with its defaults: every stream must get data, a book stream too."""
    from ingestor.cli.main import _parser
    from ingestor.simulator.run import parse_leagues

    sim = _parser().parse_args(["simulate"])
    served = set(parse_leagues(sim.leagues))
    books = set(sim.sportsbooks.split(","))
    settings = load_settings(EXAMPLE)
    for stream in settings.streams:
        assert {(stream.sport, lg) for lg in stream.leagues} <= served, stream
        assert set(stream.sportsbooks or ()) <= books, stream
    assert any(s.kind == "odds" and len(s.sportsbooks or ()) >= 2 for s in settings.streams)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTOR_METRICS_PORT", "9300")
    monkeypatch.setenv("OPTICODDS_API_KEY", "k-123456")
    settings = load_settings(_write(tmp_path, "metrics_port = 9200\n" + STREAM))
    assert settings.metrics_port == 9300
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k-123456"
    assert "k-123456" not in repr(settings) and "k-123456" not in str(settings)


def test_api_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("file-key-9876\n")
    monkeypatch.delenv("OPTICODDS_API_KEY", raising=False)
    monkeypatch.setenv("OPTICODDS_API_KEY_FILE", str(key_file))
    settings = load_settings(_write(tmp_path, STREAM))
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "file-key-9876"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("bogus = 1\n" + STREAM, "bogus: unknown key"),
        ('metrics_port = "x"\n' + STREAM, "metrics_port:"),
        ("", "streams: Field required"),
        (STREAM.replace('["NBA"]', "[]"), "streams[0].leagues:"),
        (STREAM + "colour = 1\n", "streams[0].colour: unknown key"),
        (STREAM.replace('"copilot"', '"prices"'), "streams[0].kind:"),
        (STREAM + 'sportsbooks = ["DraftKings"]\n', "only accepted on kind = 'odds'"),
        (STREAM.replace('"copilot"', '"odds"'), "needs sportsbooks"),
        (
            STREAM.replace('"copilot"', '"odds"') + f"sportsbooks = {list('abcdef')}\n",
            "at most 5",
        ),
        ("is_live = 3\n" + STREAM, "is_live: unknown key"),
        (STREAM + "is_live = 3\n", "streams[0].is_live:"),
        ('database_url = "mysql://x"\n' + STREAM, "database_url: must start with postgresql"),
        ("leagues_per_connection = 0\n" + STREAM, "leagues_per_connection:"),
        ("[[streams]\n", "not valid TOML"),
    ],
)
def test_invalid_config_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert named in str(err.value)
    assert main(["check-config", "--config", str(path)]) == 2
    assert named in capsys.readouterr().err


def test_env_error_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTOR_STALL_TIMEOUT_S", "-1")
    with pytest.raises(ConfigError, match=r"stall_timeout_s \(from INGESTOR_STALL_TIMEOUT_S\)"):
        load_settings(_write(tmp_path, STREAM))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_groups_split_at_leagues_per_connection(tmp_path: Path) -> None:
    leagues = [f"L{i:02d}" for i in range(23)]
    text = STREAM.replace('["NBA"]', str(leagues)) + 'markets = ["Moneyline", "Over+Under"]\n'
    settings = load_settings(_write(tmp_path, text))
    groups = make_groups(settings.streams, 10)
    assert [len(g.leagues) for g in groups] == [10, 10, 3]
    assert len({g.key for g in groups}) == 3
    params = groups[2].params("123-4")
    assert params[:3] == [("league", "L20"), ("league", "L21"), ("league", "L22")]
    assert ("market", "Over+Under") in params and ("last_entry_id", "123-4") in params
    assert groups[0].path == "/stream/copilot/basketball/odds"


def test_regular_stream_group(tmp_path: Path) -> None:
    text = (
        STREAM.replace('"copilot"', '"odds"').replace('"basketball"', '"soccer"')
        + 'sportsbooks = ["DraftKings", "FanDuel"]\nis_live = false\n'
    )
    (group,) = make_groups(load_settings(_write(tmp_path, text)).streams, 10)
    assert group.path == "/stream/odds/soccer"
    assert group.key == "odds:soccer[DraftKings+FanDuel]:NBA"
    params = group.params(None)
    assert ("sportsbook", "FanDuel") in params and ("is_live", "false") in params
    assert not any(k == "last_entry_id" for k, _ in params)


def test_every_setting_is_documented() -> None:
    from ingestor.config import Settings

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = EXAMPLE.read_text()
    for name in Settings.model_fields:
        if name in ("api_key", "streams"):
            continue
        assert f"`{name}`" in readme or f"`{name}`," in readme or f", `{name}`" in readme, name
        assert f"{name} =" in example, name


def test_key_is_never_in_a_repr_or_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = "SENTINEL-KEY-7c1d9e"
    monkeypatch.setenv("OPTICODDS_API_KEY", sentinel)
    monkeypatch.setenv("INGESTOR_METRICS_PORT", "not-a-port")
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, STREAM))
    assert sentinel not in str(err.value)
    monkeypatch.delenv("INGESTOR_METRICS_PORT")
    settings = load_settings(_write(tmp_path, STREAM))
    from ingestor.config import StreamSettings

    as_component = StreamSettings.model_validate(
        settings.model_dump(include=set(StreamSettings.model_fields))
    )  # what a worker holds
    for text in (repr(settings), str(settings), repr(as_component), settings.model_dump_json()):
        assert sentinel not in text


def test_missing_key_for_the_vendor_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPTICODDS_API_KEY", raising=False)
    monkeypatch.delenv("OPTICODDS_API_KEY_FILE", raising=False)
    assert main(["run", "--config", str(_write(tmp_path, STREAM))]) == 2
    assert "OPTICODDS_API_KEY (or OPTICODDS_API_KEY_FILE) is not set" in capsys.readouterr().err


def test_a_directory_or_a_file_that_is_not_utf8_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(tmp_path)]) == 2
    assert f"config file {tmp_path} is a directory" in capsys.readouterr().err
    latin = tmp_path / "latin.toml"
    latin.write_bytes(STREAM.encode() + b"# caf\xe9\n")
    assert main(["check-config", "--config", str(latin)]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_check_config_refuses_what_run_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPTICODDS_API_KEY", raising=False)
    monkeypatch.delenv("OPTICODDS_API_KEY_FILE", raising=False)
    path = _write(tmp_path, STREAM)  # the vendor's URL, no key, no demo switch
    assert main(["check-config", "--config", str(path)]) == 2
    assert "OPTICODDS_API_KEY (or OPTICODDS_API_KEY_FILE) is not set" in capsys.readouterr().err
    monkeypatch.setenv("OPTICODDS_API_KEY", "k-1")
    assert main(["check-config", "--config", str(path)]) == 0


def test_a_misspelled_environment_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGESTOR_STALL_TIMOUT_S", "3")
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, STREAM))
    assert "INGESTOR_STALL_TIMOUT_S: unknown environment variable" in str(err.value)
    assert "did you mean INGESTOR_STALL_TIMEOUT_S?" in str(err.value)
    monkeypatch.delenv("INGESTOR_STALL_TIMOUT_S")
    for name in ("INGESTOR_CONFIG", "INGESTOR_DB_USER", "INGESTOR_ALEMBIC_DIR"):
        monkeypatch.setenv(name, "x" if name != "INGESTOR_CONFIG" else str(tmp_path / "c.toml"))
    assert load_settings(_write(tmp_path, STREAM)).stall_timeout_s == 15.0  # not settings
