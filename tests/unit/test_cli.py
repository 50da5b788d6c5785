from __future__ import annotations

import pytest

from pipeline.cli import build_parser, main


def test_help_lists_the_smoke_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "smoke" in capsys.readouterr().out


def test_no_command_prints_help_and_fails() -> None:
    assert main([]) == 2
    assert build_parser().prog == "hdfs2kafka"


def test_an_import_error_inside_a_command_surfaces_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # An async command whose code needs a module that is not installed: the user must see that
    # module's name, not the event loop's fallback tripping over the spent coroutine.
    from pipeline.commands import smoke

    async def needs_a_missing_module(args: object) -> int:
        import hdfs2kafka_not_installed  # type: ignore[import-not-found]  # noqa: F401
        return 0

    monkeypatch.setattr(smoke, "run", needs_a_missing_module)
    with pytest.raises(ModuleNotFoundError, match="hdfs2kafka_not_installed"):
        main(["smoke"])
