"""Secrets stay where they belong: private files, redacted logs and tracebacks."""

from __future__ import annotations

import io
import logging
import stat

from core.secrets import SecretFilter, private_dir, url_passwords, write_private


def test_a_logged_traceback_and_its_arguments_never_show_a_known_secret():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter(["db-pass-word", "sidecar-token-value"]))
    logger = logging.getLogger("test.secrets")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("connect to postgresql://u:db-pass-word@h/db failed")
        except RuntimeError:
            logger.exception("request with %s", "Bearer sidecar-token-value")
        logger.warning("GET /bot123456789:AAbbccddeeffgghhiijjkkllmmnnooppqq/getMe")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "db-pass-word" not in text and "sidecar-token-value" not in text
    assert "AAbbccddeeff" not in text  # shaped like a bot token: redacted though nobody named it
    for redacted in ("Bearer [redacted]", "u:[redacted]@h", "/bot[redacted]/getMe"):
        assert redacted in text
    assert "RuntimeError: connect to" in text


def test_a_url_password_is_found_as_written_and_decoded():
    assert url_passwords("postgresql+psycopg://u:p%40ss@h/db") == ["p%40ss", "p@ss"]
    assert url_passwords("postgresql://u@h/db") == []
    assert url_passwords("postgresql://u:pw@h:notaport/db") == ["pw"]


def test_private_files_and_dirs_are_never_readable_by_others(tmp_path):
    loose = tmp_path / "data"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    write_private(loose / "secret.json", b"{}")
    assert stat.S_IMODE((loose / "secret.json").stat().st_mode) == 0o600
    assert [p.name for p in loose.iterdir()] == ["secret.json"]  # no temporary file left
