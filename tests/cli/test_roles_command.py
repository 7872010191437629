"""``scanatlas roles``: the first admin is made from the server's shell, and it is audited."""

from __future__ import annotations

import pytest

from cli.main import main
from core.auth import AccessStore


def test_set_list_and_audit_from_the_command_line(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    monkeypatch.setenv("SCANATLAS_DB_URL", url)
    assert main(["roles", "set", "Root@Example.org", "admin"]) == 0
    assert main(["roles", "list"]) == 0
    out = capsys.readouterr().out
    assert "root@example.org: admin" in out and "root@example.org admin" in out
    assert AccessStore(url).role_for("root@example.org") == "admin"
    assert main(["roles", "audit"]) == 0
    assert "role.set" in capsys.readouterr().out
    (event,) = AccessStore(url).events().itertuples()
    assert event.user_id.startswith("cli:") and event.detail == "none -> admin"
    assert main(["roles", "set", "not-an-email", "viewer"]) == 2
    assert "is not an e-mail" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["roles", "set", "a@example.org", "boss"])
